"""Today's line-up end to end: the K3 models in their own stream shape and rules, reasoning sent back
only where the catalogue says so, `reasoning_effort`, and a model the upstream no longer knows.

The fake enforces what Moonshot refuses (K3's fixed sampling, k2.7-code's thinking, a preserved-
thinking history missing reasoning, retired ids), so a call that passes here would pass upstream.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from tests.mcp.helpers import Progress, body_of, call, error_of, ok, structured, text
from tests.support.fake_ace import DEFAULT_CONTENT, DEFAULT_REASONING, FakeAce, reply
from tests.support.models import CURRENT_IDS, DEFAULT_ID

pytestmark = pytest.mark.anyio

K3_FAMILY = ["kimi-k3", "kimi-k3.1-pro", "kimi-k3.1-pro-highspeed"]


async def test_the_default_model_is_kimi_k3(memory: Client, fake: FakeAce) -> None:
    out = ok(await memory.call_tool("kimi_chat", {"prompt": "hi"}))
    assert out["model"] == DEFAULT_ID == body_of(fake.requests[0])["model"]
    models = json.loads((await memory.read_resource("kimi://models")).contents[0].text)  # type: ignore[union-attr]
    assert models["default_model"] == "kimi-k3"
    row = next(m for m in models["models"] if m["id"] == "kimi-k3")
    assert (row["context_window"], row["thinking"], row["vision"], row["status"]) == (1_048_576, "always", True,
                                                                                    "current")
    assert row["reasoning_efforts"] == ["low", "high", "max"] and row["reasoning_replay"] == "none"
    retired = next(m for m in models["models"] if m["id"] == "kimi-k2.5")
    assert retired["status"] == "reported_retired" and "2026-08-31" in retired["status_note"]


@pytest.mark.parametrize("model", K3_FAMILY)
async def test_k3_models_stream_in_their_own_shape(remote: Client, fake: FakeAce, model: str) -> None:
    """The K3 stream (msg_ ids, compact JSON, reasoning_content only, a separate stop chunk, a bare
    usage chunk) gives the same answer, reasoning, usage and progress as k2.5's."""
    fake.script(reply("The answer is 42.", reasoning="Six times seven.", chunk_size=4, chunk_delay=0.05))
    progress = Progress()
    result = await call(remote, "kimi_chat", {"prompt": "6*7?", "model": model, "include_reasoning": True},
                        progress)
    out = structured(result)
    assert text(result) == "The answer is 42."
    assert out["reasoning"] == "Six times seven."
    assert out["finish_reason"] == "stop" and out["id"].startswith("msg_")
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"] > 0
    assert progress.events and progress.progress == sorted(set(progress.progress))
    assert body_of(fake.requests[0])["stream"] is True


async def test_k3_sampling_is_fixed_and_reported(memory: Client, fake: FakeAce) -> None:
    out = ok(await memory.call_tool("kimi_chat", {"prompt": "p", "temperature": 0.2, "top_p": 0.5}))
    sent = body_of(fake.requests[0])
    assert sent["temperature"] == 1.0 and "top_p" not in sent
    assert {(a["param"], a["used"]) for a in out["adjusted"]} == {("temperature", 1.0), ("top_p", None)}
    assert sent["max_tokens"] == 16_384  # the catalogue's generous default for a thinking model


@pytest.mark.parametrize("tool", ["kimi_chat", "kimi_json"])
async def test_reasoning_effort_is_sent_where_the_model_takes_it(memory: Client, fake: FakeAce,
                                                                 tool: str) -> None:
    ok(await memory.call_tool(tool, {"prompt": "p", "reasoning_effort": "low"}))
    assert body_of(fake.requests[0])["reasoning_effort"] == "low"
    refused = error_of(await memory.call_tool(tool, {"prompt": "p", "model": "kimi-k2.6", "reasoning_effort": "low"}))
    assert refused["kind"] == "invalid_arguments"
    assert "kimi-k3" in refused["message"] and refused["reasoning_efforts"] == []
    assert len(fake.requests) == 1


async def test_reasoning_effort_outside_the_schema_is_refused(memory: Client, fake: FakeAce) -> None:
    result = await memory.call_tool("kimi_chat", {"prompt": "p", "reasoning_effort": "none"})
    assert result.is_error and fake.requests == []


async def test_kimi_json_on_k3(memory: Client, fake: FakeAce) -> None:
    fake.script(reply('{"n": 42}', reasoning="Count."))
    out = ok(await memory.call_tool("kimi_json", {"prompt": "n?", "schema": '{"type": "object"}'}))
    assert out["value"] == {"n": 42}
    assert body_of(fake.requests[0])["response_format"] == {"type": "json_object"}


async def test_k3_conversations_do_not_send_reasoning_back(memory: Client, fake: FakeAce) -> None:
    first = ok(await memory.call_tool("kimi_chat", {"prompt": "one"}))
    ok(await memory.call_tool("kimi_chat", {"prompt": "two", "conversation_id": first["conversation_id"]}))
    history = body_of(fake.requests[1])["messages"]
    assistant = [m for m in history if m["role"] == "assistant"]
    assert assistant and assistant[0]["content"] == DEFAULT_CONTENT
    assert "reasoning_content" not in assistant[0]  # K3 does not need it: it would cost input tokens


@pytest.mark.parametrize("model", ["kimi-k2.7-code", "kimi-k2.6"])
async def test_models_that_keep_reasoning_get_it_from_the_stored_conversation(
        memory: Client, fake: FakeAce, model: str) -> None:
    """The fake refuses a preserved-thinking history whose assistant turn lacks reasoning_content."""
    fake.script(reply("first answer", reasoning="first thoughts"), reply("second", reasoning="more"),
                reply("third", reasoning="yet more"))
    first = ok(await memory.call_tool("kimi_chat", {"prompt": "one", "model": model}))
    cid = first["conversation_id"]
    ok(await memory.call_tool("kimi_chat", {"prompt": "two", "conversation_id": cid}))
    ok(await memory.call_tool("kimi_chat", {"prompt": "three", "conversation_id": cid}))
    sent = body_of(fake.requests[2])
    replayed = [m["reasoning_content"] for m in sent["messages"] if m["role"] == "assistant"]
    assert replayed == ["first thoughts", "more"]
    if model == "kimi-k2.6":
        assert sent["thinking"] == {"type": "enabled", "keep": "all"}
    else:
        assert "thinking" not in sent


async def test_k2_6_with_thinking_off_sends_no_reasoning(memory: Client, fake: FakeAce) -> None:
    fake.script(reply("a", reasoning="r"), reply("b"))
    first = ok(await memory.call_tool("kimi_chat", {"prompt": "one", "model": "kimi-k2.6"}))
    ok(await memory.call_tool("kimi_chat", {"prompt": "two", "conversation_id": first["conversation_id"],
                                            "thinking": "disabled"}))
    sent = body_of(fake.requests[1])
    assert sent["thinking"] == {"type": "disabled"}
    assert all("reasoning_content" not in m for m in sent["messages"])


async def test_k2_7_code_refuses_thinking_switches_before_calling(memory: Client, fake: FakeAce) -> None:
    refused = error_of(await memory.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k2.7-code",
                                                            "thinking": "disabled"}))
    assert refused["kind"] == "invalid_arguments" and "kimi-k2.7-code" in refused["message"]
    assert fake.requests == []


@pytest.mark.parametrize("how", ["404", "400-naming-the-model"])
async def test_a_model_the_upstream_no_longer_knows_is_not_found_naming_current_ones(
        memory: Client, fake: FakeAce, how: str) -> None:
    if how == "404":
        fake.retired = {"kimi-k2.5"}
    else:
        from tests.support.fake_ace import moonshot_error

        fake.script(moonshot_error(400, "invalid_request_error", "Model kimi-k2.5 has been retired"))
    result = await memory.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k2.5"})
    error = error_of(result)
    assert error["kind"] == "not_found" and error["retryable"] is False
    assert error["current_models"] == [*CURRENT_IDS, "kimi-next-preview"]  # the operator's extra ids too
    assert "kimi-k3" in error["hint"] and "kimi-k2.5" in error["hint"]
    assert len(fake.requests) == 1  # never retried


async def test_a_retired_default_model_says_to_change_the_setting(fake: FakeAce) -> None:
    from tests.support.harness import connect

    fake.retired = {"kimi-k2-thinking"}
    async with connect("memory", fake, env={"KIMI_DEFAULT_MODEL": "kimi-k2-thinking"}) as client:
        error = error_of(await client.call_tool("kimi_chat", {"prompt": "p"}))
    assert error["kind"] == "not_found" and "KIMI_DEFAULT_MODEL" in error["hint"]


async def test_the_fake_really_refuses_what_k3_refuses(fake: FakeAce) -> None:
    """The fake's rules are what makes the tests above meaningful: an extra model id with the K3
    prefix passes our catalogue's rules untouched, and the fake refuses its temperature."""
    from tests.support.harness import connect

    async with connect("memory", fake, env={"KIMI_EXTRA_MODELS": "kimi-k3-next"}) as client:
        error = error_of(await client.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k3-next",
                                                              "temperature": 0.5}))
        assert error["kind"] == "bad_request" and "only 1 is allowed" in error["message"]
        out: dict[str, Any] = ok(await client.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k3-next"}))
    assert out["text"] == DEFAULT_CONTENT
    assert DEFAULT_REASONING  # unscripted K3 answers carry reasoning, as a thinking model's do


async def test_kimi_json_streams_in_the_k3_shape(remote: Client, fake: FakeAce) -> None:
    fake.script(reply('{"n": 42}', reasoning="Counting.", chunk_size=3, chunk_delay=0.02))
    progress = Progress()
    result = await call(remote, "kimi_json", {"prompt": "n?", "schema": {"type": "object"}}, progress)
    out = structured(result)
    assert out["value"] == {"n": 42} and out["id"].startswith("msg_")
    assert body_of(fake.requests[0])["stream"] is True and progress.events


async def test_a_k2_6_conversation_with_a_turn_without_reasoning_drops_preserved_thinking(
        memory: Client, fake: FakeAce) -> None:
    """Thinking on, then off (no reasoning stored), then on again: preserved thinking would be refused
    (an earlier answer lacks reasoning), so the call goes without it rather than failing for good."""
    fake.script(reply("a", reasoning="r1"), reply("b"), reply("c", reasoning="r3"))
    cid = ok(await memory.call_tool("kimi_chat", {"prompt": "one", "model": "kimi-k2.6"}))["conversation_id"]
    ok(await memory.call_tool("kimi_chat", {"prompt": "two", "conversation_id": cid, "thinking": "disabled"}))
    ok(await memory.call_tool("kimi_chat", {"prompt": "three", "conversation_id": cid}))
    sent = body_of(fake.requests[2])
    assert sent.get("thinking") in (None, {"type": "enabled"})  # not {"keep": "all"}: that would be refused
    assert all("reasoning_content" not in m for m in sent["messages"])


async def test_switching_to_k2_7_code_leaves_out_turns_it_cannot_accept(memory: Client, fake: FakeAce) -> None:
    fake.script(reply("plain answer"), reply("code answer", reasoning="code thoughts"))
    cid = ok(await memory.call_tool("kimi_chat", {"prompt": "one", "model": "kimi-k2-instruct-0905"}))[
        "conversation_id"]
    out = ok(await memory.call_tool("kimi_chat", {"prompt": "two", "conversation_id": cid,
                                                  "model": "kimi-k2.7-code"}))
    assert out["text"] == "code answer"
    assert "2 earlier turns were left out" in (out["notice"] or "")
    sent = body_of(fake.requests[1])
    assert [m["content"] for m in sent["messages"] if m["role"] != "system"] == ["two"]

"""Thinking models and the sampling rules through a real in-memory MCP client against the loopback fake.

The thinking switch (sent, or refused on models without one, passed through on models the
catalogue does not know), sampling values adjusted to what the model accepts and reported, the
reasoning kept out of the answer (returned only on request, cut at 20,000 characters, its tokens
counted), and an empty answer cut by the token budget explained, blaming thinking only when the
model was thinking. What goes back to the upstream in a continued conversation is in
test_conversations.py; the catalogue's rules themselves in tests/unit/test_catalogue.py and test_wire.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from tests.mcp.helpers import body_of, call, error_of, ok, only_request, structured, text
from tests.support.fake_ace import FakeAce, reply

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- thinking switch


async def test_thinking_disabled_path(memory: Client, fake: FakeAce) -> None:
    """thinking disabled: the upstream is told so, and an empty answer cut by the budget is not
    blamed on thinking."""
    fake.script(reply("", finish_reason="length"))

    result = await call(memory, "kimi_chat", {"prompt": "Fast.", "model": "kimi-k2.5", "thinking": "disabled",
                                              "max_tokens": 5})

    sent = body_of(fake.requests[0])
    assert sent["thinking"] == {"type": "disabled"}
    assert sent["max_tokens"] == 5
    assert "while the model was still thinking" not in text(result)
    assert "larger max_tokens" in text(result)


async def test_chat_thinking_disabled(memory: Client, fake: FakeAce) -> None:
    out = ok(await memory.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k2.5", "thinking": "disabled",
                                                  "temperature": 0.3}))
    body = only_request(fake)
    assert body["thinking"] == {"type": "disabled"}
    assert body["temperature"] == 0.6
    assert out["adjusted"][0]["used"] == 0.6


@pytest.mark.parametrize("tool", ["kimi_chat", "kimi_json"])
@pytest.mark.parametrize("model", ["kimi-k2-thinking", "kimi-k2-thinking-turbo", "kimi-k2-instruct-0905"])
@pytest.mark.parametrize("thinking", ["enabled", "disabled"])
async def test_thinking_switch_is_refused_on_other_models(
    memory: Client, fake: FakeAce, tool: str, model: str, thinking: str
) -> None:
    result = await call(memory, tool, {"prompt": "Think?", "model": model, "thinking": thinking})

    error = error_of(result)
    assert error["kind"] == "invalid_arguments"
    assert model in error["message"] and "thinking" in error["message"]
    assert fake.requests == []


@pytest.mark.parametrize("model_id", ["kimi-k2-instruct-0905", "kimi-k2-thinking", "kimi-k2-turbo-preview"])
async def test_thinking_refused_on_other_models(memory: Client, fake: FakeAce, model_id: str) -> None:
    error = error_of(await memory.call_tool("kimi_chat", {"prompt": "p", "model": model_id,
                                                          "thinking": "disabled"}))
    assert error["kind"] == "invalid_arguments"
    assert model_id in error["message"] and "thinking" in error["message"]
    assert fake.requests == []


async def test_thinking_switch_passes_through_on_an_extra_model(memory: Client, fake: FakeAce) -> None:
    """A KIMI_EXTRA_MODELS id is unknown to the catalogue: no rules, so thinking and sampling go
    through untouched instead of being refused."""
    fake.script(reply("Next answer."))

    result = await call(memory, "kimi_chat", {"prompt": "New model?", "model": "kimi-next-preview",
                                              "thinking": "enabled", "temperature": 0.3})

    assert text(result) == "Next answer."
    sent = body_of(fake.requests[0])
    assert (sent["model"], sent["thinking"], sent["temperature"]) == ("kimi-next-preview", {"type": "enabled"}, 0.3)
    assert structured(result)["adjusted"] == []


# --------------------------------------------------------------------------- sampling rules


@pytest.mark.parametrize(
    ("thinking", "temperature_used", "reason"),
    [
        (None, 1.0, "kimi-k2.5 accepts only temperature 1.0 with thinking on"),
        ("enabled", 1.0, "kimi-k2.5 accepts only temperature 1.0 with thinking on"),
        ("disabled", 0.6, "kimi-k2.5 accepts only temperature 0.6 with thinking off"),
    ],
)
async def test_kimi_k25_sampling_is_adjusted_and_reported(
    memory: Client, fake: FakeAce, thinking: str | None, temperature_used: float, reason: str
) -> None:
    fake.script(reply("Adjusted answer."))
    args: dict[str, Any] = {"prompt": "Sample.", "model": "kimi-k2.5", "temperature": 0.3, "top_p": 0.5}
    if thinking is not None:
        args["thinking"] = thinking

    result = await call(memory, "kimi_chat", args)

    sent = body_of(fake.requests[0])
    assert sent["temperature"] == temperature_used
    assert sent["top_p"] == 0.95
    if thinking is None:
        assert "thinking" not in sent
    else:
        assert sent["thinking"] == {"type": thinking}
    out = structured(result)
    assert out["adjusted"] == [
        {"param": "temperature", "requested": 0.3, "used": temperature_used, "reason": reason},
        {"param": "top_p", "requested": 0.5, "used": 0.95, "reason": "kimi-k2.5 accepts only top_p 0.95"},
    ]
    assert f"temperature 0.3 -> {temperature_used:g}" in out["notice"]
    assert "top_p 0.5 -> 0.95" in out["notice"]
    assert text(result) == "Adjusted answer."  # the notice rides in structured content, not the answer


async def test_chat_sampling_adjusted(memory: Client, fake: FakeAce) -> None:
    """kimi-k2.5 accepts only fixed sampling values: the server sends them and says so."""
    out = ok(await memory.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k2.5", "temperature": 0.3,
                                                  "top_p": 0.5}))
    body = only_request(fake)
    assert (body["temperature"], body["top_p"]) == (1.0, 0.95)
    assert [(a["param"], a["requested"], a["used"]) for a in out["adjusted"]] == [
        ("temperature", 0.3, 1.0), ("top_p", 0.5, 0.95)]
    assert "Adjusted" in out["notice"]


async def test_allowed_values_are_not_adjusted(memory: Client, fake: FakeAce) -> None:
    fake.script(reply("As asked."))

    result = await call(memory, "kimi_chat", {"prompt": "Fine.", "model": "kimi-k2.5", "thinking": "disabled",
                                              "temperature": 0.6, "top_p": 0.95})

    assert body_of(fake.requests[0])["temperature"] == 0.6
    assert structured(result)["adjusted"] == []
    assert structured(result)["notice"] is None


async def test_chat_instruct_temperature_capped(memory: Client, fake: FakeAce) -> None:
    out = ok(await memory.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k2-instruct-0905",
                                                  "temperature": 1.5}))
    assert only_request(fake)["temperature"] == 1.0
    assert [(a["requested"], a["used"]) for a in out["adjusted"]] == [(1.5, 1.0)]


async def test_kimi_json_reports_adjustments(memory: Client, fake: FakeAce) -> None:
    fake.script(reply('{"x": 1}'))

    result = await call(memory, "kimi_json", {"prompt": "JSON.", "model": "kimi-k2-turbo-preview",
                                              "temperature": 1.7})

    assert body_of(fake.requests[0])["temperature"] == 1.0
    assert structured(result)["adjusted"] == [{"param": "temperature", "requested": 1.7, "used": 1.0,
                                               "reason": "Moonshot accepts temperature 0-1 on this model"}]


# --------------------------------------------------------------------------- reasoning kept apart


async def test_reasoning_stays_out_of_the_answer(memory: Client, fake: FakeAce) -> None:
    """Text content (and the stored turn) is the answer alone; reasoning only on request."""
    reasoning = "SECRET-REASONING: the user asks for a colour, blue is common."
    fake.script(reply("Blue.", reasoning=reasoning, reasoning_tokens=17, chunk_size=5),
                reply("Blue.", reasoning=reasoning, reasoning_tokens=17, chunk_size=5))

    without = await call(memory, "kimi_chat", {"prompt": "A colour?", "model": "kimi-k2.5"})
    with_it = await call(memory, "kimi_chat", {"prompt": "A colour?", "model": "kimi-k2.5", "include_reasoning": True})

    for result in (without, with_it):
        assert text(result) == "Blue."
        assert structured(result)["text"] == "Blue."
        assert "SECRET-REASONING" not in text(result)
        assert structured(result)["usage"]["reasoning_tokens"] == 17
    assert structured(without)["reasoning"] is None
    assert structured(without)["reasoning_truncated"] is None
    assert structured(with_it)["reasoning"] == reasoning
    assert structured(with_it)["reasoning_truncated"] is False
    cid = structured(without)["conversation_id"]
    read = await call(memory, "kimi_read_conversation", {"conversation_id": cid})
    assert [t["content"] for t in structured(read)["turns"]] == ["A colour?", "Blue."]
    assert "SECRET-REASONING" not in text(read)


async def test_chat_reasoning(memory: Client, fake: FakeAce) -> None:
    fake.script(reply("42", reasoning="Six times seven.", reasoning_tokens=4),
                reply("42", reasoning="Six times seven."))
    result = await memory.call_tool("kimi_chat", {"prompt": "6*7?", "model": "kimi-k2.5", "include_reasoning": True})
    out = ok(result)
    assert text(result) == "42"
    assert (out["text"], out["reasoning"], out["reasoning_truncated"]) == ("42", "Six times seven.", False)
    assert out["usage"]["reasoning_tokens"] == 4
    out = ok(await memory.call_tool("kimi_chat", {"prompt": "6*7?"}))
    assert out["reasoning"] is None
    assert "Six" not in out["text"]


@pytest.mark.parametrize(("size", "truncated"), [(20_000, False), (25_000, True)])
async def test_long_reasoning_is_cut_at_20000_characters(
    memory: Client, fake: FakeAce, size: int, truncated: bool
) -> None:
    reasoning = "".join(f"{i:05d} " for i in range(size // 6 + 1))[:size]
    fake.script(reply("Done thinking.", reasoning=reasoning, chunk_size=4096))

    result = await call(memory, "kimi_chat", {"prompt": "Think long.", "include_reasoning": True})

    assert text(result) == "Done thinking."
    assert structured(result)["reasoning"] == reasoning[:20_000]
    assert structured(result)["reasoning_truncated"] is truncated


@pytest.mark.parametrize("moonshot_usage", [False, True], ids=["ace-usage", "moonshot-usage"])
async def test_reasoning_tokens_are_reported(memory: Client, fake: FakeAce, moonshot_usage: bool) -> None:
    fake.script(reply("Yes.", reasoning="Hmm.", reasoning_tokens=123, moonshot_usage=moonshot_usage),
                reply("No.", moonshot_usage=moonshot_usage))

    thought = await call(memory, "kimi_chat", {"prompt": "Think?", "model": "kimi-k2.5"})
    plain = await call(memory, "kimi_chat", {"prompt": "Don't.", "model": "kimi-k2-instruct-0905"})

    assert structured(thought)["usage"]["reasoning_tokens"] == 123
    assert structured(thought)["usage"]["completion_tokens"] == 1 + 123
    assert structured(plain)["usage"]["reasoning_tokens"] is None


async def test_k3_streams_report_no_reasoning_tokens(memory: Client, fake: FakeAce) -> None:
    """The K3 stream's usage chunk has only the three counts: reasoning_tokens is unknown (None),
    not made up, while the reasoning itself and the counts come through."""
    fake.script(reply("Yes.", reasoning="Hmm.", reasoning_tokens=123))

    out = structured(await call(memory, "kimi_chat", {"prompt": "Think?", "include_reasoning": True}))

    assert (out["model"], out["reasoning"]) == ("kimi-k3", "Hmm.")
    assert out["usage"]["reasoning_tokens"] is None
    assert out["usage"]["completion_tokens"] == 1 + 123


async def test_reasoning_tokens_on_the_plain_path(memory: Client, fake: FakeAce) -> None:
    """kimi_json without progress takes the non-streamed path; usage details come through too."""
    fake.script(reply('{"a": 1}', reasoning="Think.", reasoning_tokens=9))

    result = await call(memory, "kimi_json", {"prompt": "JSON please"})

    assert "stream" not in body_of(fake.requests[0])
    assert structured(result)["usage"]["reasoning_tokens"] == 9
    assert text(result) == '{"a": 1}'


# --------------------------------------------------------------------------- empty answers


@pytest.mark.parametrize(
    ("model", "reasoning", "content", "blames_thinking"),
    [
        ("kimi-k2.5", "Thinking and thinking and thinking...", "", True),
        ("kimi-k2-thinking", "Deep thought.", " \n ", True),
        ("kimi-k2.5", None, "", False),
        ("kimi-k2-instruct-0905", None, "", False),
    ],
    ids=["k2.5-reasoning", "thinking-model-whitespace", "k2.5-no-reasoning", "instruct"],
)
async def test_empty_answer_cut_by_the_budget_says_so(
    memory: Client, fake: FakeAce, model: str, reasoning: str | None, content: str, blames_thinking: bool
) -> None:
    fake.script(reply(content, reasoning=reasoning, finish_reason="length"))

    result = await call(memory, "kimi_chat", {"prompt": "Long task.", "model": model, "max_tokens": 50})

    assert not result.is_error
    shown = text(result)
    assert shown.strip(), "an empty answer must not come back as a silent empty string"
    assert "token budget" in shown and "larger max_tokens" in shown
    assert ("while the model was still thinking" in shown) is blames_thinking
    out = structured(result)
    assert out["finish_reason"] == "length"
    assert out["text"] == content
    assert out["notice"] is not None and out["notice"] in shown


async def test_chat_empty_answer_at_length(memory: Client, fake: FakeAce) -> None:
    """The token budget spent on reasoning: say so instead of returning a silent empty answer."""
    fake.script(reply("", reasoning="long thought", finish_reason="length"))
    result = await memory.call_tool("kimi_chat", {"prompt": "p", "max_tokens": 10})
    out = ok(result)
    assert out["text"] == ""
    assert out["finish_reason"] == "length"
    assert "max_tokens" in out["notice"]
    assert "max_tokens" in result.content[0].text

"""Streamed answers through real MCP clients (stdio and Streamable HTTP subprocesses in both protocol
eras; in memory where the transport is not under test) against the loopback fake.

Every stream shape the upstream sends parses end to end; a result is the same streamed or not
(and kimi_chat streams upstream only when that helps); a cut stream or one that ends without
[DONE] is a network error that keeps the text so far, with no retry; cancelling a call aborts the
upstream request at once and stores nothing. Servers come from tests/mcp/conftest.py (retries on,
so the request counts below prove no retry follows a partial answer or a cancel). Progress
notifications are in test_progress.py, thinking and reasoning in test_thinking.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult

from tests.mcp.helpers import Progress, body_of, call, error_of, structured, text, wait_close, wait_requests
from tests.support.fake_ace import FakeAce, FakeResponse, RecordedRequest, raw, reply, stall, stream_raw
from tests.support.harness import connect

pytestmark = pytest.mark.anyio

QUIET_S = 0.6
"""How long to watch for a request that must not come (a retry's first backoff is at most 0.5 s)."""

USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 22,
    "total_tokens": 33,
    "prompt_tokens_details": {"cached_tokens": 5},
    "completion_tokens_details": {"reasoning_tokens": 7},
}


async def conversations(client: Client) -> list[dict[str, Any]]:
    result = await call(client, "kimi_list_conversations", {"limit": 500})
    assert not result.is_error, text(result)
    found: list[dict[str, Any]] = structured(result)["conversations"]
    return found


async def cancel_midway(
    client: Client, fake: FakeAce, tool: str, args: dict[str, Any], *, requests: int, after_progress: bool
) -> float:
    """Start a call, wait until the fake has its request (and, if asked, a progress notification
    arrived), then cancel the scope awaiting it. Returns the monotonic time of the cancel."""
    progress = Progress()
    returned: list[CallToolResult] = []

    async def run() -> None:
        returned.append(await call(client, tool, args, progress))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await wait_requests(fake, requests)
        if after_progress:
            with anyio.fail_after(10):
                await progress.arrived.wait()
        cancelled_at = time.monotonic()
        tg.cancel_scope.cancel()
    assert returned == [], "the call finished before it could be cancelled"
    return cancelled_at


def assert_aborted(record: RecordedRequest, cancelled_at: float) -> None:
    """The server hung up on the fake after the cancel, before the (stalled) answer ended."""
    assert record.client_closed
    assert record.finished_at is None
    assert record.closed_at is not None and record.closed_at >= cancelled_at


def prompt_of(record: RecordedRequest) -> str:
    last: str = body_of(record)["messages"][-1]["content"]
    return last


# --------------------------------------------------------------------------- stream shapes


def sse(delta: dict[str, Any] | None = None, *, finish: str | None = None, usage: dict[str, Any] | None = None,
        choice_usage: dict[str, Any] | None = None, nl: str = "\n") -> str:
    """One SSE event with a chat.completion.chunk (no choices when `delta` is None)."""
    chunk: dict[str, Any] = {"id": "chatcmpl-raw", "object": "chat.completion.chunk", "model": "kimi-k2.5",
                             "choices": [], "usage": usage}
    if delta is not None:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if choice_usage is not None:
            choice["usage"] = choice_usage
        chunk["choices"] = [choice]
    return f"data: {json.dumps(chunk)}{nl}{nl}"


RAW_USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
SPLIT_DATA = (
    'data: {"id": "chatcmpl-raw", "object": "chat.completion.chunk",\n'
    'data:  "model": "kimi-k2.5", "choices": [{"index": 0,\n'
    'data: "delta": {"content": "split "}, "finish_reason": null}]}\n\n'
)
COMPLETION = {
    "id": "chatcmpl-plain", "object": "chat.completion", "model": "kimi-k2.5",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Plain despite stream.",
                                         "reasoning_content": "Gateway."}, "finish_reason": "stop"}],
    "usage": RAW_USAGE,
}


@dataclass(frozen=True)
class Shape:
    response: FakeResponse
    text: str
    reasoning: str = ""
    usage: dict[str, int] = field(default_factory=lambda: dict(RAW_USAGE))
    finish_reason: str = "stop"
    model: str = "kimi-k2.5"
    """The model asked for: Ace's k2.5 stream shapes, unless the case is about another model's."""
    id_prefix: str = "chatcmpl-"


SHAPES: dict[str, Shape] = {
    "ace-usage-last": Shape(reply("Ace shape answer.", usage=RAW_USAGE), "Ace shape answer."),
    "moonshot-usage-in-choice": Shape(reply("Moonshot shape.", usage=RAW_USAGE, moonshot_usage=True),
                                      "Moonshot shape."),
    "crlf": Shape(reply("Line endings\r\nkept.", usage=RAW_USAGE, crlf=True), "Line endings\r\nkept."),
    "comment-lines": Shape(reply("With comments.", usage=RAW_USAGE, comments=True), "With comments."),
    "mixed-reasoning-content-chunk": Shape(
        reply("Answer part.", reasoning="Reason part.", usage=RAW_USAGE, chunk_size=5, mixed_chunk=True),
        "Answer part.", "Reason part."),
    "everything-at-once": Shape(
        reply("All 的 shapes together.", reasoning="思考 first.", usage=RAW_USAGE, chunk_size=3, crlf=True,
              comments=True, moonshot_usage=True, finish_reason="length"),
        "All 的 shapes together.", "思考 first.", finish_reason="length"),
    "data-split-across-data-lines": Shape(stream_raw([
        SPLIT_DATA, sse({"content": "event."}, finish="stop"), sse(usage=RAW_USAGE),
    ]), "split event."),
    "event-id-retry-fields": Shape(stream_raw([
        "event: message\nid: 1\nretry: 5000\n" + sse({"role": "assistant", "content": ""}),
        "id: 2\n" + sse({"content": "Fields "}) ,
        "event: message\n" + sse({"content": "ignored."}, finish="stop"),
        "event: usage\n" + sse(usage=RAW_USAGE),
    ]), "Fields ignored."),
    "events-split-and-joined-across-http-chunks": Shape(stream_raw([
        sse({"content": "One "})[:25],
        sse({"content": "One "})[25:] + sse({"content": "two "}) + 'data: {"id": "x", "choi',
        'ces": [{"index": 0, "delta": {"content": "three."}, "finish_reason": "stop"}]}\n\n',
        sse(usage=RAW_USAGE),
    ]), "One two three."),
    "no-space-after-colon": Shape(stream_raw([
        sse({"content": "Tight"}).replace("data: ", "data:"), sse({"content": " fit."}, finish="stop"),
        sse(usage=RAW_USAGE).replace("data: ", "data:"),
    ]), "Tight fit."),
    "reasoning-key-and-content-parts": Shape(stream_raw([
        sse({"reasoning": "Only the reasoning key."}),
        sse({"content": [{"type": "text", "text": "Parts "}, {"type": "image_url", "image_url": {}},
                         {"type": "text", "text": "joined."}]}, finish="stop", choice_usage=RAW_USAGE),
    ]), "Parts joined.", "Only the reasoning key."),
    "done-without-final-blank-line": Shape(stream_raw([
        sse({"content": "Flushed at EOF."}, finish="stop"), sse(usage=RAW_USAGE), "data: [DONE]",
    ], done=False), "Flushed at EOF."),
    "gateway-answers-json-to-a-stream-request": Shape(raw(200, json.dumps(COMPLETION)),
                                                      "Plain despite stream.", "Gateway."),
    "k3-shape": Shape(  # msg_ ids, compact JSON, reasoning_content only, a separate stop chunk, bare usage
        reply("K3 的 answer.", reasoning="K3 thinks first.", usage=RAW_USAGE, chunk_size=3, shape="k3"),
        "K3 的 answer.", "K3 thinks first.", model="kimi-k3", id_prefix="msg_"),
}


@pytest.mark.parametrize("name", list(SHAPES))
async def test_every_stream_shape_parses_end_to_end(memory: Client, fake: FakeAce, name: str) -> None:
    shape = SHAPES[name]
    fake.script(shape.response)

    result = await call(memory, "kimi_chat", {"prompt": f"Shape {name}", "model": shape.model,
                                              "include_reasoning": True})

    assert not result.is_error, text(result)
    assert body_of(fake.requests[0])["stream"] is True
    out = structured(result)
    assert text(result) == out["text"] == shape.text
    assert out["reasoning"] == shape.reasoning
    assert out["finish_reason"] == shape.finish_reason
    assert {k: out["usage"][k] for k in shape.usage} == shape.usage
    assert out["model"] == shape.model
    assert out["id"].startswith(shape.id_prefix)


async def test_stream_error_chunk_is_reported_with_partial_text(memory: Client, fake: FakeAce) -> None:
    """An error object in the middle of a stream ends the call as the same code would in a status
    body (`server_error`: an upstream failure), keeping the text so far, without a retry."""
    error_event = 'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    fake.script(stream_raw([sse({"content": "Before the error"}), error_event]))

    error = error_of(await call(memory, "kimi_chat", {"prompt": "Error mid-stream"}))

    assert error["kind"] == "upstream"
    assert "overloaded" in error["message"]
    assert error["partial_text"] == "Before the error"
    assert len(fake.requests) == 1


# --------------------------------------------------------------------------- streamed or not, same result


async def test_kimi_json_result_is_the_same_streamed_or_not(remote: Client, fake: FakeAce) -> None:
    """Without a progress callback kimi_json asks for a plain completion; with one it streams.
    Everything in the result but the upstream's random completion id is identical."""
    answer = json.dumps({"city": "Paris", "population_millions": 2.1, "tags": ["capital", "seine"]})
    same = reply(answer, reasoning="The user wants a JSON object about Paris.", usage=USAGE, chunk_size=6)
    fake.script(same, same)
    args = {"prompt": "Describe Paris as JSON.", "model": "kimi-k2.5", "temperature": 0.3}

    plain = await call(remote, "kimi_json", args)
    progress = Progress()
    streamed = await call(remote, "kimi_json", args, progress)

    first, second = fake.requests
    assert "stream" not in body_of(first)
    assert body_of(second)["stream"] is True
    assert {k: v for k, v in body_of(first).items() if k not in ("stream", "stream_options")} == {
        k: v for k, v in body_of(second).items() if k not in ("stream", "stream_options")
    }
    assert not plain.is_error and not streamed.is_error, (text(plain), text(streamed))
    assert progress.events, "the streamed call sent no progress"
    assert progress.progress[-1] == len(answer) + len("The user wants a JSON object about Paris.")
    assert text(plain) == text(streamed) == answer
    a, b = structured(plain), structured(streamed)
    assert a["id"] and b["id"] and a["id"] != b["id"]  # the fake's ids differ; all else must not
    assert {k: v for k, v in a.items() if k != "id"} == {k: v for k, v in b.items() if k != "id"}
    assert a["value"] == json.loads(answer)
    assert a["usage"] == {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33,
                          "reasoning_tokens": 7, "cached_tokens": 5}
    assert a["adjusted"] == [{"param": "temperature", "requested": 0.3, "used": 1.0,
                              "reason": "kimi-k2.5 accepts only temperature 1.0 with thinking on"}]


async def test_kimi_chat_result_is_the_same_with_or_without_progress(remote: Client, fake: FakeAce) -> None:
    """kimi_chat always streams upstream; a progress callback changes nothing in the result."""
    same = reply("Ein kurzer Satz auf Deutsch.", reasoning="Translate it.", usage=USAGE, chunk_size=4)
    fake.script(same, same)
    args = {"prompt": "Say something in German.", "include_reasoning": True}

    quiet = await call(remote, "kimi_chat", args)
    loud = await call(remote, "kimi_chat", args, Progress())

    assert [body_of(r)["stream"] for r in fake.requests] == [True, True]
    assert text(quiet) == text(loud) == "Ein kurzer Satz auf Deutsch."
    ignore = ("id", "conversation_id")
    a, b = structured(quiet), structured(loud)
    assert {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}
    assert a["reasoning"] == "Translate it."


async def test_kimi_chat_streams_upstream_only_when_it_helps(fake: FakeAce) -> None:
    """With nobody listening for progress and the soft deadline off, one plain completion is
    cheaper than a stream; with a listener, or a deadline that may need the partial text, it streams."""
    async with connect("memory", fake, era="legacy", env={"KIMI_SOFT_DEADLINE": "0"}) as client:
        fake.reset()
        plain = await client.call_tool("kimi_chat", {"prompt": "plain please"})

        async def ignore(progress: float, total: float | None, message: str | None) -> None:
            pass

        streamed = await client.call_tool("kimi_chat", {"prompt": "stream please"}, progress_callback=ignore)
    assert not plain.is_error and not streamed.is_error
    assert plain.structured_content is not None and streamed.structured_content is not None
    assert plain.structured_content["text"] == streamed.structured_content["text"]
    first, second = fake.requests
    assert first.json is not None and "stream" not in first.json
    assert second.json is not None and second.json["stream"] is True
    async with connect("memory", fake, env={"KIMI_SOFT_DEADLINE": "50"}) as client:
        fake.reset()
        await client.call_tool("kimi_chat", {"prompt": "deadline on"})
    assert fake.requests[0].json is not None and fake.requests[0].json["stream"] is True


# --------------------------------------------------------------------------- cut streams


async def test_cut_stream_is_a_network_error_keeping_the_partial_text(remote: Client, fake: FakeAce) -> None:
    """The connection drops mid-stream after two content chunks: a network error whose
    structured error keeps the text so far; no retry (it arrived); the server answers next."""
    fake.script(FakeResponse(kind="cut", after="mid_stream", content="abcdefgh12345678-never-seen",
                             chunk_size=8))
    progress = Progress()

    result = await call(remote, "kimi_chat", {"prompt": "Go."}, progress)

    error = error_of(result)
    assert error["kind"] == "network"
    assert error["partial_text"] == "abcdefgh12345678"
    assert error["attempts"] == 1
    assert "never-seen" not in text(result)
    assert progress.messages and all("abcdefgh12345678".startswith(m or "-") for m in progress.messages)
    before = await conversations(remote)
    assert len(fake.requests) == 1  # no retry once text had arrived
    assert all(c["title"] != "Go." for c in before), "a failed call stored its turn"

    fake.script(reply("Back again."))
    after = await call(remote, "kimi_chat", {"prompt": "Still there?"})
    assert text(after) == "Back again."
    assert len(fake.requests) == 2


async def test_stream_cut_during_reasoning_keeps_empty_partial_text(memory: Client, fake: FakeAce) -> None:
    """Cut while only reasoning had arrived: partial_text is empty (reasoning never leaks into
    it), and the reasoning already received still counts as a begun answer (no retry)."""
    fake.script(FakeResponse(kind="cut", after="mid_stream", content="answer", reasoning="r" * 40, chunk_size=8))

    error = error_of(await call(memory, "kimi_chat", {"prompt": "Think."}))

    assert error["kind"] == "network"
    assert error["partial_text"] == ""
    assert error["partial_reasoning_chars"] == 16
    assert len(fake.requests) == 1


async def test_stream_ending_without_done_is_a_network_error(memory: Client, fake: FakeAce) -> None:
    """A stream that just stops (no [DONE]) after some text is not taken as a complete answer."""
    fake.script(stream_raw([sse({"content": "Half an ans"}), sse({"content": "wer"})], done=False))

    error = error_of(await call(memory, "kimi_chat", {"prompt": "Whole answer?"}))

    assert error["kind"] == "network"
    assert error["partial_text"] == "Half an answer"
    assert len(fake.requests) == 1


# --------------------------------------------------------------------------- cancellation


async def test_cancel_aborts_the_upstream_request_and_stores_nothing(remote: Client, fake: FakeAce) -> None:
    """Cancelling mid-stream (stdio: notifications/cancelled; HTTP: the request stream closes)
    makes the server hang up on the fake within the bounded wait, with no further request; the
    conversation list stays as it was, and the server answers the next call."""
    before = await conversations(remote)
    fake.script(stall(after_chunks=2, seconds=30))

    cancelled_at = await cancel_midway(remote, fake, "kimi_chat", {"prompt": "Never finished"},
                                       requests=1, after_progress=True)

    assert_aborted(await wait_close(fake, 0), cancelled_at)
    await anyio.sleep(QUIET_S)
    assert len(fake.requests) == 1, "the server sent another upstream request after the cancel"
    assert await conversations(remote) == before

    fake.script(reply("Fresh answer."))
    result = await call(remote, "kimi_chat", {"prompt": "After the cancel"})
    assert text(result) == "Fresh answer."
    assert [prompt_of(r) for r in fake.requests] == ["Never finished", "After the cancel"]
    titles = [c["title"] for c in await conversations(remote)]
    assert "After the cancel" in titles and "Never finished" not in titles


async def test_cancel_before_the_first_byte_leaves_the_conversation_unchanged(
    remote: Client, fake: FakeAce
) -> None:
    """Cancelled while the upstream has not even sent headers, on a continued conversation: the
    request is aborted, the conversation keeps its turns, and the cancelled prompt is not in the
    history sent with the next turn."""
    fake.script(reply("First answer."))
    first = await call(remote, "kimi_chat", {"prompt": "First question"})
    cid = structured(first)["conversation_id"]
    before = await conversations(remote)
    fake.script(reply("Too late.", delay=30))

    cancelled_at = await cancel_midway(remote, fake, "kimi_chat",
                                       {"prompt": "Cancelled question", "conversation_id": cid},
                                       requests=2, after_progress=False)

    assert_aborted(await wait_close(fake, 1), cancelled_at)
    read = await call(remote, "kimi_read_conversation", {"conversation_id": cid})
    assert [t["content"] for t in structured(read)["turns"]] == ["First question", "First answer."]
    assert await conversations(remote) == before

    fake.script(reply("Second answer."))
    second = await call(remote, "kimi_chat", {"prompt": "Second question", "conversation_id": cid})
    assert text(second) == "Second answer."
    sent = [m["content"] for m in body_of(fake.requests[-1])["messages"]]
    assert sent == ["First question", "First answer.", "Second question"]
    assert len(fake.requests) == 3


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "plain"])
async def test_cancel_kimi_json_aborts_the_upstream_request(remote: Client, fake: FakeAce, streamed: bool) -> None:
    """kimi_json is cancelled too: mid-stream with progress, or waiting for a plain answer's
    headers without it."""
    fake.script(stall(after_chunks=2, seconds=30))
    progress = Progress()
    returned: list[CallToolResult] = []

    async def run() -> None:
        returned.append(await call(remote, "kimi_json", {"prompt": "Slow JSON"}, progress if streamed else None))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        (record,) = await wait_requests(fake, 1)
        if streamed:
            with anyio.fail_after(10):
                await progress.arrived.wait()
        cancelled_at = time.monotonic()
        tg.cancel_scope.cancel()

    assert returned == []
    assert ("stream" in body_of(record)) is streamed
    assert_aborted(await wait_close(fake, 0), cancelled_at)
    fake.script(reply('{"ok": true}'))
    assert structured(await call(remote, "kimi_json", {"prompt": "Quick JSON"}))["value"] == {"ok": True}

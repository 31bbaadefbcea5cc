"""Streaming, thinking models and cancellation, end to end (issue 3).

Real MCP clients (stdio and Streamable HTTP subprocesses, both protocol eras; in memory where the
transport is not under test) against the loopback fake: progress notifications as the answer
grows, the throttle, reasoning kept apart from the answer, every stream shape the upstream sends,
sampling adjustments and the thinking switch, empty answers, cut streams, and cancellation that
aborts the upstream request at once and stores nothing.

Retries stay ON in these servers (`KIMI_MAX_RETRIES=2`) on purpose: the cut-stream and
cancellation tests count the fake's requests to prove that no retry follows a partial answer or
a cancel.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from anyio.abc import TaskGroup
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from kimi_mcp.chat.progress import MESSAGE_TAIL_CHARS, ProgressThrottle, describe
from kimi_mcp.upstream.sse import StreamAccumulator
from tests.fake_ace import (
    FakeAce,
    FakeResponse,
    RecordedRequest,
    raw,
    reply,
    stall,
    stream_raw,
)
from tests.harness import ServerLog, client_mode, connect, http_server, server_env

pytestmark = pytest.mark.anyio

ENV = {"KIMI_MAX_RETRIES": "2", "KIMI_EXTRA_MODELS": "kimi-next-preview"}
REMOTES = [("stdio", "modern"), ("http", "modern"), ("http", "legacy")]
CALL_TIMEOUT = 30.0
QUIET_S = 0.6
"""How long to watch for a request that must not come (a retry's first backoff is at most 0.5 s)."""

USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 22,
    "total_tokens": 33,
    "prompt_tokens_details": {"cached_tokens": 5},
    "completion_tokens_details": {"reasoning_tokens": 7},
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAce]:
    with FakeAce() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(fake: FakeAce) -> None:
    """Every test starts with an empty script and no recorded requests."""
    fake.reset()


@pytest.fixture(scope="module")
def http_port(fake: FakeAce) -> Iterator[int]:
    """One Streamable HTTP subprocess for the module; it answers both eras, so both clients share it."""
    with http_server(server_env(fake, **ENV), "streamable-http", ServerLog()) as port:
        yield port


@pytest.fixture(scope="module", params=REMOTES, ids=[f"{k}-{e}" for k, e in REMOTES])
async def remote(request: pytest.FixtureRequest, fake: FakeAce) -> AsyncIterator[Client]:
    """A client of a subprocess server (shared by the module's tests); its calls carry progress tokens."""
    kind, era = request.param
    if kind == "stdio":
        async with connect(kind, fake, era=era, env=ENV) as client:
            yield client
        return
    url = f"http://127.0.0.1:{request.getfixturevalue('http_port')}/mcp"
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(60)) as http,
        Client(streamable_http_client(url, http_client=http), mode=client_mode(era)) as client,
    ):
        yield client


@pytest.fixture(scope="module")
async def memory(fake: FakeAce) -> AsyncIterator[Client]:
    """An in-process server, for what does not depend on the transport."""
    async with connect("memory", fake, env=ENV) as client:
        yield client


@pytest.fixture(scope="module")
async def memory_legacy(fake: FakeAce) -> AsyncIterator[Client]:
    """In process, legacy era: the one in-memory combination whose calls carry a progress token."""
    async with connect("memory", fake, era="legacy", env=ENV) as client:
        yield client


# --------------------------------------------------------------------------- helpers


@dataclass
class Progress:
    """A progress callback that records every notification, in arrival order."""

    events: list[tuple[float, float | None, str | None]] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))
        self.arrived.set()

    async def reaches(self, value: float) -> None:
        """Wait until a notification with this progress value arrived."""
        while value not in self.progress:
            self.arrived = anyio.Event()
            await self.arrived.wait()

    @property
    def progress(self) -> list[float]:
        return [p for p, _, _ in self.events]

    @property
    def messages(self) -> list[str | None]:
        return [m for _, _, m in self.events]


async def call(
    client: Client, tool: str, args: dict[str, Any], progress: Progress | None = None
) -> CallToolResult:
    return await client.call_tool(tool, args, read_timeout_seconds=CALL_TIMEOUT, progress_callback=progress)


def text(result: CallToolResult) -> str:
    block = result.content[0]
    assert block.type == "text"
    return block.text


def structured(result: CallToolResult) -> dict[str, Any]:
    content = result.structured_content
    assert isinstance(content, dict)
    return content


def error_of(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, text(result)
    error = structured(result)["error"]
    assert isinstance(error, dict)
    return error


async def conversations(client: Client) -> list[dict[str, Any]]:
    result = await call(client, "kimi_list_conversations", {"limit": 500})
    assert not result.is_error, text(result)
    found: list[dict[str, Any]] = structured(result)["conversations"]
    return found


def thinking_message(chars: int) -> str:
    return f"thinking… {chars:,} characters of reasoning"


def boundaries(content: str, reasoning: str, chunk_size: int) -> set[int]:
    """Characters received after each text-bearing chunk of the fake's stream (mixed chunk on)."""
    r = [len(reasoning[i : i + chunk_size]) for i in range(0, len(reasoning), chunk_size)]
    c = [len(content[i : i + chunk_size]) for i in range(0, len(content), chunk_size)]
    if r and c:
        r[-1] += c.pop(0)
    out, total = set(), 0
    for size in (*r, *c):
        total += size
        out.add(total)
    return out


async def wait_requests(fake: FakeAce, n: int) -> list[RecordedRequest]:
    return await anyio.to_thread.run_sync(lambda: fake.wait_for_requests(n, timeout=10))


async def wait_close(fake: FakeAce, index: int) -> RecordedRequest:
    return await anyio.to_thread.run_sync(lambda: fake.wait_for_close(index, timeout=5))


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


def body_of(record: RecordedRequest) -> dict[str, Any]:
    """The JSON body the fake received."""
    assert isinstance(record.json, dict)
    return record.json


def prompt_of(record: RecordedRequest) -> str:
    last: str = body_of(record)["messages"][-1]["content"]
    return last


# --------------------------------------------------------------------------- 1. progress as the answer grows


async def test_progress_follows_reasoning_then_the_growing_answer(remote: Client, fake: FakeAce) -> None:
    """Chunks 150 ms apart: one notification per chunk or so, all before the result, progress
    strictly increasing and equal to the characters received, "thinking…" while only reasoning
    has come, then the partial answer growing by extension; the last one is the whole answer."""
    reasoning = "Let me think it over."  # 2 reasoning chunks, the second shared with the answer's first
    content = "The answer is forty-two, it said."  # 3 content chunks
    size = 12
    fake.script(reply(content, reasoning=reasoning, chunk_size=size, chunk_delay=0.15))
    progress = Progress()

    result = await call(remote, "kimi_chat", {"prompt": "What is the answer?"}, progress)

    assert not result.is_error, text(result)
    assert text(result) == content
    assert structured(result)["text"] == content
    assert body_of(fake.requests[0])["stream"] is True
    assert body_of(fake.requests[0])["stream_options"] == {"include_usage": True}
    assert len(progress.events) >= 3  # 5 text chunks, 150 ms apart; the throttle allows one per 100 ms
    values = progress.progress
    assert values == sorted(set(values)), "progress must strictly increase"
    assert set(values) <= boundaries(content, reasoning, size)
    assert values[-1] == len(reasoning) + len(content)
    thinking: list[str | None] = []
    answer: list[str] = []
    for value, message in zip(values, progress.messages, strict=True):
        if value <= len(reasoning):
            assert message == thinking_message(int(value))
            assert not answer, "a reasoning-phase message came after the answer started"
            thinking.append(message)
        else:
            assert message == content[: int(value) - len(reasoning)]
            answer.append(message)
    assert thinking, "no 'thinking…' notification while the reasoning streamed"
    assert len(answer) >= 2
    assert all(later.startswith(earlier) and later != earlier for earlier, later in itertools.pairwise(answer))
    assert answer[-1] == content


# --------------------------------------------------------------------------- 9. the throttle


async def test_fast_stream_is_throttled_but_final_state_is_sent(remote: Client, fake: FakeAce) -> None:
    """600 one-character chunks in one burst: a handful of notifications (at most one per 100 ms
    plus the final flush), the first never held back, and the last one is the complete answer."""
    content = "".join(chr(ord("a") + i % 26) for i in range(600))
    fake.script(reply(content, chunk_size=1))
    progress = Progress()

    started = time.monotonic()
    result = await call(remote, "kimi_chat", {"prompt": "Alphabet, please."}, progress)
    elapsed = time.monotonic() - started

    assert text(result) == content
    count = len(progress.events)
    assert 1 <= count < len(content)
    assert count <= 2 + elapsed / 0.1  # throttle: first at once, then <= 1 per 100 ms, then the flush
    assert progress.progress == sorted(set(progress.progress))
    assert progress.progress[-1] == len(content)
    assert progress.messages == [content[: int(p)] for p in progress.progress]  # no reasoning: no "thinking…"


@pytest.mark.parametrize("tool", ["kimi_chat", "kimi_json"])
async def test_held_back_update_goes_out_when_the_stream_pauses(
    memory_legacy: Client, fake: FakeAce, tool: str
) -> None:
    """Two content chunks arrive in one burst, then the stream pauses (a thinking model often
    does): the throttle holds the second back and sends it once the 100 ms have passed, not
    only when the next chunk comes. Bounded wait of 5 s, then the call is cancelled."""
    fake.script(FakeResponse(kind="stall", content="abcdefgh12345678tail", chunk_size=8, after_chunks=2,
                             seconds=30))
    progress = Progress()

    async def run() -> None:
        await call(memory_legacy, tool, {"prompt": "Pause midway."}, progress)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.move_on_after(5):
            await progress.reaches(16)
        tg.cancel_scope.cancel()

    assert (await wait_close(fake, 0)).client_closed
    assert [(p, m) for p, _, m in progress.events] == [(8, "abcdefgh"), (16, "abcdefgh12345678")]


async def test_kimi_json_repair_round_keeps_reporting_progress(memory_legacy: Client, fake: FakeAce) -> None:
    """The first answer is not JSON, so kimi_json asks again. The host must keep hearing
    progress during that second answer (hosts that reset their timeout on progress would
    otherwise give up on a long repair), and the final state sent is the accepted answer's."""
    rejected = "Sure! Here is a long preamble and not JSON at all, sorry."
    fake.script(reply(rejected, chunk_size=8), reply('{"a": 1}', chunk_size=2))
    progress = Progress()

    result = await call(memory_legacy, "kimi_json", {"prompt": "JSON, please."}, progress)

    assert structured(result)["value"] == {"a": 1}
    assert structured(result)["attempts"] == 2
    assert len(fake.requests) == 2
    assert progress.progress == sorted(set(progress.progress))
    assert progress.messages[0] == rejected[:8]
    assert progress.messages[-1] == '{"a": 1}'


# --------------------------------------------------------------------------- 3. streamed or not, same result


async def test_kimi_json_result_is_the_same_streamed_or_not(remote: Client, fake: FakeAce) -> None:
    """Without a progress callback kimi_json asks for a plain completion; with one it streams.
    Everything in the result but the upstream's random completion id is identical."""
    answer = json.dumps({"city": "Paris", "population_millions": 2.1, "tags": ["capital", "seine"]})
    same = reply(answer, reasoning="The user wants a JSON object about Paris.", usage=USAGE, chunk_size=6)
    fake.script(same, same)
    args = {"prompt": "Describe Paris as JSON.", "temperature": 0.3}

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


# --------------------------------------------------------------------------- 7. cut streams


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


# --------------------------------------------------------------------------- 8. cancellation


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


# --------------------------------------------------------------------------- 2. reasoning kept apart


async def test_reasoning_stays_out_of_the_answer(memory: Client, fake: FakeAce) -> None:
    """Text content (and the stored turn) is the answer alone; reasoning only on request."""
    reasoning = "SECRET-REASONING: the user asks for a colour, blue is common."
    fake.script(reply("Blue.", reasoning=reasoning, reasoning_tokens=17, chunk_size=5),
                reply("Blue.", reasoning=reasoning, reasoning_tokens=17, chunk_size=5))

    without = await call(memory, "kimi_chat", {"prompt": "A colour?"})
    with_it = await call(memory, "kimi_chat", {"prompt": "A colour?", "include_reasoning": True})

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

    thought = await call(memory, "kimi_chat", {"prompt": "Think?"})
    plain = await call(memory, "kimi_chat", {"prompt": "Don't.", "model": "kimi-k2-instruct-0905"})

    assert structured(thought)["usage"]["reasoning_tokens"] == 123
    assert structured(thought)["usage"]["completion_tokens"] == 1 + 123
    assert structured(plain)["usage"]["reasoning_tokens"] is None


async def test_reasoning_tokens_on_the_plain_path(memory: Client, fake: FakeAce) -> None:
    """kimi_json without progress takes the non-streamed path; usage details come through too."""
    fake.script(reply('{"a": 1}', reasoning="Think.", reasoning_tokens=9))

    result = await call(memory, "kimi_json", {"prompt": "JSON please"})

    assert "stream" not in body_of(fake.requests[0])
    assert structured(result)["usage"]["reasoning_tokens"] == 9
    assert text(result) == '{"a": 1}'


# --------------------------------------------------------------------------- 4. stream shapes


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
}


@pytest.mark.parametrize("name", list(SHAPES))
async def test_every_stream_shape_parses_end_to_end(memory: Client, fake: FakeAce, name: str) -> None:
    shape = SHAPES[name]
    fake.script(shape.response)

    result = await call(memory, "kimi_chat", {"prompt": f"Shape {name}", "include_reasoning": True})

    assert not result.is_error, text(result)
    assert body_of(fake.requests[0])["stream"] is True
    out = structured(result)
    assert text(result) == out["text"] == shape.text
    assert out["reasoning"] == shape.reasoning
    assert out["finish_reason"] == shape.finish_reason
    assert {k: out["usage"][k] for k in shape.usage} == shape.usage
    assert out["model"] == "kimi-k2.5"


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


# --------------------------------------------------------------------------- 5. sampling rules, thinking switch


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


async def test_allowed_values_are_not_adjusted(memory: Client, fake: FakeAce) -> None:
    fake.script(reply("As asked."))

    result = await call(memory, "kimi_chat", {"prompt": "Fine.", "thinking": "disabled", "temperature": 0.6,
                                              "top_p": 0.95})

    assert body_of(fake.requests[0])["temperature"] == 0.6
    assert structured(result)["adjusted"] == []
    assert structured(result)["notice"] is None


async def test_thinking_disabled_path(memory: Client, fake: FakeAce) -> None:
    """thinking disabled: the upstream is told so, and an empty answer cut by the budget is not
    blamed on thinking."""
    fake.script(reply("", finish_reason="length"))

    result = await call(memory, "kimi_chat", {"prompt": "Fast.", "thinking": "disabled", "max_tokens": 5})

    sent = body_of(fake.requests[0])
    assert sent["thinking"] == {"type": "disabled"}
    assert sent["max_tokens"] == 5
    assert "while the model was still thinking" not in text(result)
    assert "larger max_tokens" in text(result)


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


async def test_kimi_json_reports_adjustments(memory: Client, fake: FakeAce) -> None:
    fake.script(reply('{"x": 1}'))

    result = await call(memory, "kimi_json", {"prompt": "JSON.", "model": "kimi-k2-turbo-preview",
                                              "temperature": 1.7})

    assert body_of(fake.requests[0])["temperature"] == 1.0
    assert structured(result)["adjusted"] == [{"param": "temperature", "requested": 1.7, "used": 1.0,
                                               "reason": "Moonshot accepts temperature 0-1 on this model"}]


# --------------------------------------------------------------------------- 6. empty answers


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


async def test_empty_answer_progress_ends_in_the_thinking_phase(remote: Client, fake: FakeAce) -> None:
    """Only reasoning arrived: every notification is a "thinking…" one, the last with the total."""
    reasoning = "Pondering the question for a long while without an answer."
    fake.script(reply("", reasoning=reasoning, finish_reason="length", chunk_size=12))
    progress = Progress()

    result = await call(remote, "kimi_chat", {"prompt": "Budget?", "max_tokens": 20}, progress)

    assert "while the model was still thinking" in text(result)
    assert progress.events
    assert progress.progress[-1] == len(reasoning)
    assert progress.messages == [thinking_message(int(p)) for p in progress.progress]


# --------------------------------------------------------------------------- pure parts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_throttle_sends_a_held_back_update_after_the_interval_and_close_cancels_it() -> None:
    """With a task group, a held-back state goes out on its own once the interval has passed;
    `close` cancels such a pending send (nothing may go out after the request is over)."""
    sent: list[tuple[float, str]] = []
    arrived = anyio.Event()

    async def sink(progress: float, message: str) -> None:
        sent.append((progress, message))
        arrived.set()

    async def exercise(tg: TaskGroup) -> None:
        nonlocal arrived
        throttle = ProgressThrottle(sink, interval=0.05, task_group=tg)
        await throttle.update(accumulator(content="a"))
        await throttle.update(accumulator(content="ab"))  # held back
        assert sent == [(1, "a")]
        arrived = anyio.Event()
        with anyio.fail_after(5):
            await arrived.wait()
        assert sent == [(1, "a"), (2, "ab")]

        closing = ProgressThrottle(sink, interval=30, task_group=tg)
        await closing.update(accumulator(content="xyz"))
        await closing.update(accumulator(content="xyzw"))  # held back for 30 s
        closing.close()

    with anyio.fail_after(5):  # bounds the wait for a send that `close` failed to cancel
        async with anyio.create_task_group() as tg:
            await exercise(tg)
    assert sent[-1] == (3, "xyz")


def accumulator(reasoning: str = "", content: str = "") -> StreamAccumulator:
    acc = StreamAccumulator()
    acc.feed_chunk({"choices": [{"delta": {"reasoning_content": reasoning, "content": content}}]})
    return acc


async def test_throttle_first_at_once_then_one_per_interval_and_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("kimi_mcp.chat.progress.time.monotonic", clock)
    sent: list[tuple[float, str]] = []

    async def sink(progress: float, message: str) -> None:
        sent.append((progress, message))

    throttle = ProgressThrottle(sink, interval=0.1)
    acc = StreamAccumulator()
    for piece, step in (("a", 0.0), ("b", 0.03), ("c", 0.03), ("d", 0.05), ("e", 0.01)):
        clock.now += step
        acc.feed_chunk({"choices": [{"delta": {"content": piece}}]})
        await throttle.update(acc)
    assert sent == [(1, "a"), (4, "abcd")]  # first at once; "d" 110 ms later; "b", "c", "e" held
    await throttle.flush()
    assert sent[-1] == (5, "abcde")
    await throttle.flush()
    await throttle.update(acc)  # nothing new: nothing sent
    assert len(sent) == 3


def test_describe_reasoning_then_answer_tail() -> None:
    assert describe(accumulator(reasoning="x" * 1234)) == (1234, thinking_message(1234))
    assert describe(accumulator(reasoning="xy", content="Hi")) == (4, "Hi")
    long = "".join(str(i % 10) for i in range(MESSAGE_TAIL_CHARS + 500))
    progress, message = describe(accumulator(content=long))
    assert progress == len(long)
    assert message == "…" + long[-MESSAGE_TAIL_CHARS:]


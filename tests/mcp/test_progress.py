"""Progress notifications through real MCP clients (stdio and Streamable HTTP subprocesses in both
protocol eras; in memory where the transport is not under test) against the loopback fake.

Notifications arrive while the answer grows, before the result: "thinking…" while only reasoning
has come, then the partial answer growing by extension; progress strictly increases and counts
the characters received; the throttle sends at most one per 100 ms, never holds back the first,
sends a held-back state once the stream pauses, and always sends the final state; kimi_json keeps
reporting through its repair round. The throttle itself is unit-tested in tests/unit/test_progress.py.
"""

from __future__ import annotations

import itertools
import time

import anyio
import pytest
from mcp import Client

from tests.mcp.helpers import Progress, body_of, call, ok, structured, text, wait_close
from tests.support.fake_ace import FakeAce, FakeResponse, reply
from tests.support.harness import connect

pytestmark = pytest.mark.anyio


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


# --------------------------------------------------------------------------- as the answer grows


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


async def test_chat_progress_legacy(fake: FakeAce) -> None:
    """With a progress token (legacy era in memory) progress rises strictly and ends on the answer."""
    answer = "The answer, in several small pieces."
    fake.script(reply(answer, reasoning="thinking about it", chunk_size=4))
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect("memory", fake, era="legacy") as c:
        result = await c.call_tool("kimi_chat", {"prompt": "p"}, progress_callback=on_progress)
    assert ok(result)["text"] == answer
    assert seen, "no progress notifications"
    progress = [p for p, _, _ in seen]
    assert progress == sorted(set(progress))
    assert seen[-1][2] == answer
    assert seen[-1][0] == len(answer) + len("thinking about it")


# --------------------------------------------------------------------------- the throttle


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

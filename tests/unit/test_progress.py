"""`kimi_mcp.chat.progress`: the progress throttle (the first update at once, then at most one per
interval, a held-back state sent once the interval passed or on flush, nothing after close), and
`describe`, which turns a stream so far into (characters, message)."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import TaskGroup

from kimi_mcp.chat.progress import MESSAGE_TAIL_CHARS, ProgressThrottle, describe
from kimi_mcp.upstream.sse import StreamAccumulator
from tests.unit.samples import chunk


def content_acc(*pieces: str, reasoning: str = "") -> StreamAccumulator:
    acc = StreamAccumulator()
    if reasoning:
        acc.feed_chunk(chunk({"reasoning_content": reasoning}))
    for piece in pieces:
        acc.feed_chunk(chunk({"content": piece}))
    return acc


def thinking_message(chars: int) -> str:
    return f"thinking… {chars:,} characters of reasoning"


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[float, str]] = []

    async def __call__(self, progress: float, message: str) -> None:
        self.sent.append((progress, message))


@pytest.mark.anyio
class TestProgress:
    async def test_first_at_once_then_held_then_flushed(self) -> None:
        sink = Sink()
        throttle = ProgressThrottle(sink, interval=3600)
        acc = StreamAccumulator()
        acc.feed_chunk(chunk({"content": "Hel"}))
        await throttle.update(acc)
        assert sink.sent == [(3, "Hel")]
        acc.feed_chunk(chunk({"content": "lo"}))
        await throttle.update(acc)
        acc.feed_chunk(chunk({"content": " you"}))
        await throttle.update(acc)
        assert sink.sent == [(3, "Hel")]  # held back within the interval
        await throttle.flush()
        assert sink.sent == [(3, "Hel"), (9, "Hello you")]  # the final state, once
        await throttle.flush()
        assert len(sink.sent) == 2

    async def test_without_interval_every_update_goes(self) -> None:
        sink = Sink()
        throttle = ProgressThrottle(sink, interval=0)
        acc = StreamAccumulator()
        for piece in ("a", "b", "c"):
            acc.feed_chunk(chunk({"content": piece}))
            await throttle.update(acc)
            await throttle.update(acc)  # no new progress: nothing sent
        await throttle.flush()
        assert sink.sent == [(1, "a"), (2, "ab"), (3, "abc")]

    async def test_strictly_increasing_with_status(self) -> None:
        sink = Sink()
        throttle = ProgressThrottle(sink, interval=0)
        await throttle.status("queued")
        await throttle.update(content_acc(reasoning="abcd"))
        await throttle.status("still queued")
        await throttle.update(content_acc("xy", reasoning="abcd"))
        progress = [p for p, _ in sink.sent]
        assert progress == sorted(set(progress))
        assert sink.sent[0] == (0.0, "queued")
        assert sink.sent[1] == (4, "thinking… 4 characters of reasoning")
        assert sink.sent[-1] == (6, "xy")

    async def test_describe_tail(self) -> None:
        acc = content_acc("x" * 3000, "END")
        progress, message = describe(acc)
        assert progress == 3003
        assert message.startswith("…") and message.endswith("END") and len(message) == 2001


# --------------------------------------------------------------------------- with a clock and a task group


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def accumulator(reasoning: str = "", content: str = "") -> StreamAccumulator:
    acc = StreamAccumulator()
    acc.feed_chunk({"choices": [{"delta": {"reasoning_content": reasoning, "content": content}}]})
    return acc


@pytest.mark.anyio
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


@pytest.mark.anyio
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

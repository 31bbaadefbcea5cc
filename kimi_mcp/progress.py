"""Progress notifications for a streamed answer: what to say, and not too often.

The first update goes out at once, later ones at most every `interval` seconds, and the final
state always goes out, so a fast stream cannot flood the host and a slow one is never silent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from .stream import StreamAccumulator

__all__ = ["ProgressSink", "ProgressThrottle", "StreamListener", "describe"]

ProgressSink = Callable[[float, str], Awaitable[None]]
"""Sends one notification: (progress, message). Progress must strictly increase."""


class StreamListener(Protocol):
    """Who hears about a streamed answer as it grows."""

    async def update(self, acc: StreamAccumulator) -> None: ...
    async def status(self, message: str) -> None: ...
    async def flush(self) -> None: ...

MESSAGE_TAIL_CHARS = 2000


def describe(acc: StreamAccumulator) -> tuple[int, str]:
    """(progress, message) for the stream so far: reasoning status, then the partial answer."""
    progress = acc.reasoning_chars + acc.content_chars
    if not acc.content_chars:
        return progress, f"thinking… {acc.reasoning_chars:,} characters of reasoning"
    text = acc.text
    if len(text) > MESSAGE_TAIL_CHARS:
        text = "…" + text[-MESSAGE_TAIL_CHARS:]
    return progress, text


class ProgressThrottle:
    """Wraps a sink: first update at once, then one per interval, and `flush` for the last state."""

    def __init__(self, sink: ProgressSink, interval: float = 0.1) -> None:
        self._sink = sink
        self._interval = interval
        self._last_sent_at = -float("inf")
        self._last_progress = -1.0
        self._pending: tuple[float, str] | None = None

    async def status(self, message: str) -> None:
        """A status line (e.g. "queued") that does not advance the count past the answer's."""
        await self._send(self._last_progress + 0.001 if self._last_progress >= 0 else 0.0, message)

    async def update(self, acc: StreamAccumulator) -> None:
        progress, message = describe(acc)
        if progress <= self._last_progress:
            return
        if time.monotonic() - self._last_sent_at >= self._interval:
            await self._send(progress, message)
        else:
            self._pending = (progress, message)

    async def flush(self) -> None:
        """Send the final state if the throttle held it back."""
        if self._pending is not None:
            await self._send(*self._pending)

    async def _send(self, progress: float, message: str) -> None:
        if progress <= self._last_progress:
            return
        self._pending = None
        self._last_progress = progress
        self._last_sent_at = time.monotonic()
        await self._sink(progress, message)

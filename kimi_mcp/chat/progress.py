"""Progress notifications for a streamed answer: what to say, and not too often.

The first update goes out at once, later ones at most every `interval` seconds, and the final
state always goes out, so a fast stream cannot flood the host and a slow one is never silent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from ..upstream import StreamAccumulator

__all__ = ["ProgressSink", "ProgressThrottle", "StreamListener", "describe"]

ProgressSink = Callable[[float, str], Awaitable[None]]
"""Sends one notification: (progress, message). Progress must strictly increase."""


class StreamListener(Protocol):
    """Who hears about a streamed answer as it grows."""

    async def update(self, acc: StreamAccumulator) -> None: ...
    async def status(self, message: str) -> None: ...
    async def flush(self) -> None: ...
    def new_attempt(self) -> None: ...

MESSAGE_TAIL_CHARS = 2000
log = logging.getLogger(__name__)


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
    """Wraps a sink: first update at once, then at most one per interval, and `flush` for the last.

    With a task group, an update held back is sent when its interval has passed even if no new
    chunk arrives (a thinking model often pauses); `close` cancels that pending send, so nothing
    goes out after the request is over.
    """

    def __init__(self, sink: ProgressSink, interval: float = 0.1, task_group: TaskGroup | None = None) -> None:
        self._sink = sink
        self._interval = interval
        self._tg = task_group
        self._last_sent_at = -float("inf")
        self._last_progress = -1.0
        self._pending: StreamAccumulator | None = None
        self._timer: anyio.CancelScope | None = None
        self._base = 0.0

    def new_attempt(self) -> None:
        """A new upstream answer starts (e.g. kimi_json's repair): count on from where we are."""
        self.close()
        self._pending = None
        self._base = max(self._last_progress, 0.0)

    def _describe(self, acc: StreamAccumulator) -> tuple[float, str]:
        progress, message = describe(acc)
        return self._base + progress, message

    async def status(self, message: str) -> None:
        """A status line (e.g. "queued") that does not advance the count past the answer's."""
        await self._send(self._last_progress + 0.001 if self._last_progress >= 0 else 0.0, message)

    async def update(self, acc: StreamAccumulator) -> None:
        progress = self._base + acc.reasoning_chars + acc.content_chars
        if progress <= self._last_progress:
            return
        wait = self._interval - (time.monotonic() - self._last_sent_at)
        if wait <= 0:
            await self._send(*self._describe(acc))
            return
        self._pending = acc  # described when sent: by then it may have grown
        if self._tg is not None and self._timer is None:
            self._timer = anyio.CancelScope()
            self._tg.start_soon(self._send_later, self._timer, wait)

    async def _send_later(self, scope: anyio.CancelScope, wait: float) -> None:
        with scope:
            await anyio.sleep(wait)
            self._timer = None
            if self._pending is not None:
                try:
                    await self._send(*self._describe(self._pending))
                except Exception:
                    log.debug("progress listener gone", exc_info=True)
                    self.close()

    def close(self) -> None:
        """Cancel a held-back send; nothing is sent after this unless `flush` is called."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def flush(self) -> None:
        """Send the final state if the throttle held it back."""
        self.close()
        if self._pending is not None:
            await self._send(*self._describe(self._pending))

    async def _send(self, progress: float, message: str) -> None:
        if progress <= self._last_progress:
            return
        self._pending = None
        self._last_progress = progress
        self._last_sent_at = time.monotonic()
        await self._sink(progress, message)

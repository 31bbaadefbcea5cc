"""Answers that outlive a host's deadline: a generation runs as a background task of the server.

A tool call starts a `Generation` and waits for it up to the soft deadline. If it finishes, the
call returns it. If not, the call returns the partial text and detaches; the generation keeps
streaming and stores its turn when it ends, and a later `resume` call picks up the rest. A call
cancelled before the deadline cancels its generation (and so the upstream request) at once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

from .. import telemetry
from ..errors import Cancelled, KimiError
from ..upstream import StreamAccumulator
from .progress import ProgressSink, ProgressThrottle, StreamListener

__all__ = ["Generation", "Generations"]

log = logging.getLogger(__name__)

T = TypeVar("T")
KEEP_FINISHED_S = 900.0
"""How long a finished, never-resumed generation waits for its resume call."""
MAX_DETACHED_PER_PRINCIPAL = 8
MAX_DETACHED = 64
"""Answers handed over incomplete and not yet resumed (running or finished), per caller and in all:
past either, the oldest is dropped (a running one is stopped, and with it its upstream request)."""
SWEEP_EVERY_S = 30.0


@dataclass(eq=False)
class Generation(Generic[T]):
    """One answer being produced; also the `StreamListener` its upstream call reports to."""

    key: tuple[str, str]
    model: str = ""
    answer_id: str = field(default_factory=lambda: "ans_" + secrets.token_urlsafe(9))
    """The resume handle: two incomplete answers on one conversation are never mixed up."""
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    acc: StreamAccumulator | None = None
    result: T | None = None
    error: BaseException | None = None
    delivered: int = 0
    detached: bool = False
    """Handed over incomplete: its caller left and may come back with resume."""
    finished_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)
    task_group: TaskGroup | None = None
    _listener: StreamListener | None = None

    @property
    def text(self) -> str:
        return self.acc.text if self.acc is not None else ""

    def attach(self, sink: ProgressSink | None) -> None:
        """Progress goes to this sink (a new tool call) from now on; None: to nobody."""
        self.listen(ProgressThrottle(sink, task_group=self.task_group) if sink is not None else None)

    def listen(self, listener: StreamListener | None) -> None:
        """The answer's updates go to this listener (a task's recorder, or a sink's throttle)."""
        if isinstance(self._listener, ProgressThrottle):
            self._listener.close()
        self._listener = listener

    async def update(self, acc: StreamAccumulator) -> None:
        self.acc = acc
        if self._listener is not None:
            await self._guard(self._listener.update(acc))

    async def status(self, message: str) -> None:
        if self._listener is not None:
            await self._guard(self._listener.status(message))

    async def flush(self) -> None:
        if self._listener is not None:
            await self._guard(self._listener.flush())

    def new_attempt(self) -> None:
        if self._listener is not None:
            self._listener.new_attempt()

    async def _guard(self, sending: Awaitable[None]) -> None:
        """A listener that went away must not end the generation."""
        try:
            await sending
        except Exception:
            log.debug("progress listener gone; generation continues", exc_info=True)
            self.attach(None)

    async def wait(self, seconds: float) -> bool:
        """True when finished within `seconds` (0 or less: wait as long as it takes)."""
        if seconds <= 0:
            await self.done.wait()
            return True
        with anyio.move_on_after(seconds):
            await self.done.wait()
        return self.done.is_set()

    def outcome(self) -> T:
        """The result, or the error raised again."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Generations:
    """Background generations by (principal, conversation id), oldest first."""

    def __init__(self, task_group: TaskGroup) -> None:
        self._tg = task_group
        self._by_key: dict[tuple[str, str], list[Generation[object]]] = {}
        task_group.start_soon(self._sweep)
        telemetry.watch_background(self)

    def background(self) -> int:
        """Answers still generating that no tool call waits for (handed over incomplete), for the metrics."""
        return sum(1 for gs in self._by_key.values() for g in gs if g.detached and not g.done.is_set())

    async def _sweep(self) -> None:
        """Expiry runs on its own, not only when someone looks."""
        while True:
            await anyio.sleep(SWEEP_EVERY_S)
            self._expire()

    def start(
        self, key: tuple[str, str], model: str, job: Callable[[Generation[T]], Awaitable[T]]
    ) -> Generation[T]:
        self._expire()
        self._bound(key[0])
        generation: Generation[T] = Generation(key, model, task_group=self._tg)
        self._by_key.setdefault(key, []).append(generation)  # type: ignore[arg-type]
        self._tg.start_soon(self._run, generation, job)
        return generation

    async def _run(self, generation: Generation[T], job: Callable[[Generation[T]], Awaitable[T]]) -> None:
        try:
            with generation.scope:
                try:
                    generation.result = await job(generation)
                except KimiError as error:
                    generation.error = error
                except Exception as error:
                    log.exception("generation for %s failed unexpectedly", generation.key[1])
                    generation.error = error
        finally:
            # Also when the whole task group is cancelled (shutdown): whoever waits must hear of it.
            if generation.result is None and generation.error is None:
                generation.error = Cancelled("the answer was stopped before it finished")
                self.forget(generation)
            generation.finished_at = time.monotonic()
            generation.done.set()
            generation.attach(None)

    def pending(self, key: tuple[str, str]) -> Generation[object] | None:
        """The oldest generation of this conversation whose answer was not fully handed over."""
        waiting = self.waiting(key)
        return waiting[0] if waiting else None

    def waiting(self, key: tuple[str, str]) -> list[Generation[object]]:
        """Every generation of this conversation whose answer was not fully handed over, oldest first."""
        self._expire()
        return list(self._by_key.get(key, ()))

    def forget(self, generation: Generation[T]) -> None:
        waiting = self._by_key.get(generation.key, [])
        if generation in waiting:
            waiting.remove(generation)  # type: ignore[arg-type]
        if not waiting:
            self._by_key.pop(generation.key, None)

    def detach(self, generation: Generation[T]) -> None:
        """Its caller took what had arrived and left."""
        generation.detached = True
        generation.attach(None)

    def reattach(self, generation: Generation[T], sink: ProgressSink | None) -> None:
        """A resume call waits for it again (and hears its progress)."""
        generation.detached = False
        generation.attach(sink)

    def _bound(self, principal: str) -> None:
        """Drop the oldest detached answers past the caps, so abandoned work cannot pile up."""
        detached = sorted((g for gs in self._by_key.values() for g in gs if g.detached),
                          key=lambda g: g.started_at)
        mine = [g for g in detached if g.key[0] == principal]
        drop = mine[: max(0, len(mine) - MAX_DETACHED_PER_PRINCIPAL + 1)]
        rest = [g for g in detached if g not in drop]
        drop += rest[: max(0, len(rest) - MAX_DETACHED + 1)]
        for generation in drop:
            log.info("dropping an incomplete answer nobody resumed (%s)", generation.answer_id)
            generation.scope.cancel()
            self.forget(generation)

    def _expire(self) -> None:
        now = time.monotonic()
        for generations in list(self._by_key.values()):
            for generation in list(generations):
                if generation.finished_at is not None and now - generation.finished_at > KEEP_FINISHED_S:
                    self.forget(generation)

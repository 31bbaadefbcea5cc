"""Tool calls run as tasks (the MCP Tasks extension), recorded durably in the store.

`Tasks.run` starts a job (a whole tool call, rendered to its result by the MCP surface) in the
background and waits a moment: a quick answer comes back directly; a slow one gets a task id, but
only once its record is in the store, so `view` can resolve that id at once, from this process
or another sharing the store. The record grows with the answer (throttled), ends with the result,
and keeps it for the TTL. A record whose process stopped beating (a restart, a crash) is reported
as interrupted with its partial text, never as working forever. A task belongs to its principal:
for anyone else it does not exist. Imports the store, redaction and the standard library.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from ..redaction import redact
from ..store import AnswerRecord, ConversationStore, StorageError
from ..upstream import StreamAccumulator
from .conversations import storage

__all__ = ["PieceState", "TaskFailure", "TaskLimits", "TaskRecorder", "TaskStarted", "TaskView", "Tasks"]

log = logging.getLogger(__name__)

Job = Callable[["TaskRecorder"], Awaitable[dict[str, Any]]]
"""A whole tool call: reports to the recorder, returns the tool's result (a CallToolResult as JSON)."""

WRITE_EVERY_S = 2.0
"""The record follows the answer at most this often (the store is not written per chunk)."""
_LIVE_OWNERS: set[str] = set()
"""The owners of this process's open `Tasks` (a process may run several runtimes, e.g. in tests)."""
INTERRUPTED = "interrupted: the server stopped before the answer was finished; call again"
MAX_RECORD_CHARS = 4_000_000
"""The text and reasoning kept in a record (each); the whole answer is in the final result."""


@dataclass(frozen=True, slots=True)
class PieceState:
    """What a soft-deadline piece's record says beyond its text (kept as its `result` JSON): how much
    was handed over, and once finished how it ended, so any process can hand over the rest."""

    delivered: int = 0
    model: str = ""
    finish_reason: str = ""
    usage: dict[str, int | None] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"delivered": self.delivered, "model": self.model, "finish_reason": self.finish_reason,
                           "usage": self.usage})

    @classmethod
    def loads(cls, raw: str | None) -> PieceState:
        """Lenient: a record written by an older version (or none) reads as nothing delivered."""
        try:
            data = json.loads(raw or "{}")
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        usage = data.get("usage")
        return cls(
            delivered=data["delivered"] if isinstance(data.get("delivered"), int) else 0,
            model=str(data.get("model") or ""),
            finish_reason=str(data.get("finish_reason") or ""),
            usage={str(k): v for k, v in usage.items() if v is None or isinstance(v, int)}
            if isinstance(usage, dict) else {},
        )


@dataclass(slots=True)
class _Piece:
    principal: str
    keep_s: float
    source: Callable[[], str]
    finished: bool = False  # whole and recorded: no more heartbeats (its record expires on its own)


class TaskFailure(Exception):
    """A job's JSON-RPC-level failure (not a tool error result): the task's `failed` state."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TaskLimits:
    wait_s: float = 3.0
    """How long a call waits before it becomes a task (quick answers stay direct)."""
    ttl_s: float = 3_600.0
    lease_s: float = 30.0
    """A working record nobody touched for this long belongs to a process that stopped (another
    replica, a killed process): it is interrupted. Its owner touches it every `heartbeat_s`."""
    poll_ms: int = 2_000
    per_principal: int = 16
    total: int = 256

    @property
    def heartbeat_s(self) -> float:
        """A third of the lease: a record survives two lost heartbeats before it reads as stale."""
        return self.lease_s / 3


@dataclass(frozen=True, slots=True)
class TaskStarted:
    """What a `CreateTaskResult` says about a new task."""

    id: str
    status_message: str
    created_at: float
    ttl_s: float
    poll_ms: int


@dataclass(frozen=True, slots=True)
class TaskView:
    """A task as `tasks/get` shows it: `result` once completed; `partial_text` when interrupted."""

    id: str
    status: Literal["working", "completed", "failed", "cancelled", "interrupted"]
    status_message: str
    created_at: float
    updated_at: float
    ttl_s: float
    poll_ms: int
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    """The JSON-RPC error of a failed task: {code, message}."""
    partial_text: str = ""


class TaskRecorder:
    """The `StreamListener` of a task's answer: keeps the latest state, written to the record throttled."""

    def __init__(self, tasks: Tasks, run: _Run) -> None:
        self._tasks = tasks
        self._run = run
        self.acc: StreamAccumulator | None = None
        self.message = "working"
        self._written_at = -float("inf")

    async def update(self, acc: StreamAccumulator) -> None:
        self.acc = acc
        if acc.content_chars:
            self.message = f"answering… {acc.content_chars:,} characters"
        else:
            self.message = f"thinking… {acc.reasoning_chars:,} characters of reasoning"
        if time.monotonic() - self._written_at >= WRITE_EVERY_S:
            self._written_at = time.monotonic()
            await self._tasks._write_progress(self._run)

    async def status(self, message: str) -> None:
        self.message = message

    async def flush(self) -> None:
        return None

    def new_attempt(self) -> None:
        return None

    @property
    def text(self) -> str:
        return self.acc.text if self.acc is not None else ""

    @property
    def reasoning(self) -> str:
        return self.acc.reasoning if self.acc is not None else ""


@dataclass(eq=False)
class _Run:
    id: str
    principal: str
    created_at: float
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    recorder: TaskRecorder | None = None
    result: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    cancelled: bool = False
    recorded: bool = False
    finished_at: float | None = None
    settled: bool = False
    """Its final state was written (or could not be): shown from then on, so a final write that
    loses to a cancel stored first is never seen as another final state."""
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class Tasks:
    """This process's tasks, and the store's records of everyone's."""

    def __init__(self, store: ConversationStore, task_group: TaskGroup, limits: TaskLimits,
                 secrets_: tuple[str, ...] = ()) -> None:
        self.store = store
        self.limits = limits
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_urlsafe(9)}/{limits.lease_s:g}"
        """This process, as record owner: a restart is a new owner, so its old records read as lost.
        It ends with the owner's lease, so a process with a shorter one never calls it dead early."""
        _LIVE_OWNERS.add(self.owner)
        self._tg = task_group
        self._secrets = secrets_
        self._runs: dict[str, _Run] = {}
        self._pieces: dict[str, _Piece] = {}
        """Incomplete answers running here: answer id -> (principal, how long they are kept)."""
        task_group.start_soon(self._beat)

    # ---- starting

    def has_room(self, principal: str) -> bool:
        """Within the bounds on tasks in progress (per principal and in all)."""
        working = [r for r in self._runs.values() if not r.done.is_set()]
        mine = sum(1 for r in working if r.principal == principal)
        return mine < self.limits.per_principal and len(working) < self.limits.total

    async def run(self, principal: str, job: Job) -> dict[str, Any] | TaskStarted:
        """The job's result if it is quick, else a task recorded durably (then it runs on alone)."""
        run = _Run("task_" + secrets.token_urlsafe(15), principal, time.time())
        run.recorder = TaskRecorder(self, run)
        self._runs[run.id] = run
        self._tg.start_soon(self._execute, run, job)
        handed_over = False
        try:
            with anyio.move_on_after(self.limits.wait_s):
                await run.done.wait()
            if run.done.is_set() and (run.result is not None or run.failure is not None):
                self._runs.pop(run.id, None)
                handed_over = True
                if run.failure is not None:  # a quick protocol-level failure is the call's own error
                    raise TaskFailure(int(run.failure["code"]), str(run.failure["message"]))
                assert run.result is not None
                return run.result
            started = await self._record(run)
            handed_over = True
            return started
        finally:
            if not handed_over:  # the caller went away before it was a task: stop it too
                run.scope.cancel()
                self._runs.pop(run.id, None)

    async def _record(self, run: _Run) -> TaskStarted:
        """The durable record, written before the id is handed out (then any final state already reached)."""
        now = time.time()
        text, reasoning = self._so_far(run)
        record = AnswerRecord(id=run.id, principal=run.principal, kind="task", conversation_id=None,
                              owner=self.owner, status="working", status_message=self._message(run), text=text,
                              reasoning=reasoning, created_at=run.created_at, updated_at=now,
                              expires_at=now + self.limits.ttl_s)
        async with run.lock:
            with storage():
                await self.store.create_answer(record)
            run.recorded = True
            if run.done.is_set():
                await self._write_final(run)
        return TaskStarted(run.id, record.status_message, run.created_at, self.limits.ttl_s, self.limits.poll_ms)

    async def _execute(self, run: _Run, job: Job) -> None:
        assert run.recorder is not None
        try:
            with run.scope:
                run.result = await job(run.recorder)
            if run.result is None:
                run.cancelled = True
        except TaskFailure as failure:
            run.failure = {"code": failure.code, "message": redact(failure.message, self._secrets)}
        except Exception:
            log.exception("task %s failed", run.id)
            run.failure = {"code": -32603, "message": "internal error"}
        finally:
            run.finished_at = time.time()
            run.done.set()
            async with run.lock:
                if run.recorded and not run.settled:  # (`_record` may have written it already)
                    with anyio.CancelScope(shield=True):
                        await self._write_final(run)

    async def _write_final(self, run: _Run) -> None:
        now = time.time()
        status: Literal["completed", "failed", "cancelled"] = (
            "failed" if run.failure is not None else "completed" if run.result is not None and not run.cancelled
            else "cancelled")
        result = json.dumps(run.result) if run.result is not None else (
            json.dumps({"failure": run.failure}) if run.failure is not None else None)
        message = str(run.failure["message"]) if run.failure is not None else status
        text, reasoning = self._so_far(run)
        try:
            stored = await self.store.update_answer(run.principal, run.id, now=now, status=status,
                                                    status_message=message, result=result, text=text,
                                                    reasoning=reasoning, expires_at=now + self.limits.ttl_s)
        except (StorageError, ValueError, OSError) as exc:
            log.warning("task %s: its final state could not be stored (%s)", run.id, type(exc).__name__)
            run.settled = True
            return
        if stored is None:  # finished first through the store (another process's cancel) or expired:
            self._runs.pop(run.id, None)  # the record, not this run, is the task from now on
        run.settled = True

    async def _write_progress(self, run: _Run) -> None:
        if not run.recorded or run.done.is_set():
            return
        text, reasoning = self._so_far(run)
        try:
            await self.store.update_answer(run.principal, run.id, now=time.time(),
                                           status_message=self._message(run), text=text, reasoning=reasoning)
        except (StorageError, ValueError, OSError) as exc:
            log.warning("task %s: its progress could not be stored (%s)", run.id, type(exc).__name__)

    def _so_far(self, run: _Run) -> tuple[str, str]:
        """The answer and reasoning so far, masked, for the record."""
        recorder = run.recorder
        if recorder is None:
            return "", ""
        return (redact(recorder.text[:MAX_RECORD_CHARS], self._secrets),
                redact(recorder.reasoning[:MAX_RECORD_CHARS], self._secrets))

    def _message(self, run: _Run) -> str:
        return run.recorder.message if run.recorder is not None else "working"

    def _lease(self, record: AnswerRecord) -> float:
        """How long the record's owner may go without a heartbeat: its own lease (from its owner id)
        when longer than ours, so replicas configured differently never call a live owner dead."""
        return max(self.limits.lease_s, lease_of(record.owner) or 0.0)

    # ---- reading and cancelling

    async def view(self, principal: str, task_id: str) -> TaskView | None:
        """The task as its principal sees it; None when unknown, expired or someone else's."""
        run = self._runs.get(task_id)
        if run is not None and run.principal == principal and run.recorded:
            return self._live_view(run)
        with storage():
            record = await self.store.get_answer(principal, task_id)
        if record is None or record.kind != "task":
            return None
        now = time.time()
        if record.status == "working" and run is None and (record.owner == self.owner or owner_gone(record.owner)
                                                            or record.updated_at < now - self._lease(record)):
            # Ours but no longer running here, a process of this machine that is gone, or one that
            # stopped beating: lost.
            with storage():
                record = await self.store.update_answer(principal, task_id, now=now, status="interrupted",
                                                        status_message=INTERRUPTED) or record
        return _record_view(record, self.limits)

    def _live_view(self, run: _Run) -> TaskView:
        now = time.time()
        view = TaskView(id=run.id, status="working", status_message=self._message(run), created_at=run.created_at,
                        updated_at=now, ttl_s=self.limits.ttl_s, poll_ms=self.limits.poll_ms)
        if not run.settled:
            return view
        updated = run.finished_at or now
        if run.cancelled:
            return replace(view, status="cancelled", status_message="cancelled", updated_at=updated)
        if run.failure is not None:
            return replace(view, status="failed", status_message=str(run.failure["message"]), updated_at=updated,
                           error=run.failure)
        return replace(view, status="completed", status_message="completed", updated_at=updated, result=run.result)

    async def cancel(self, principal: str, task_id: str) -> bool:
        """Stop a task (cooperatively: an answer that finished first stays finished); False when unknown."""
        run = self._runs.get(task_id)
        if run is not None and run.principal == principal:
            if not run.done.is_set():
                run.cancelled = True
                run.scope.cancel()
            return run.recorded
        with storage():
            record = await self.store.get_answer(principal, task_id)
            if record is None or record.kind != "task":
                return False
            # Another process's task: its heartbeat reads the cancelled record and stops it.
            await self.store.update_answer(principal, task_id, now=time.time(), status="cancelled",
                                           status_message="cancelled")
        return True

    # ---- soft-deadline pieces (kimi_chat's own resume flow, for hosts without the extension)

    async def note_piece(self, principal: str, conversation_id: str, answer_id: str, text: str,
                         keep_s: float, *, model: str, source: Callable[[], str]) -> None:
        """An answer was handed over incomplete and runs on: recorded, so that a resume on another
        process sharing the store (a replica) can follow it, and one after a restart can say it
        was lost instead of "nothing to resume". `source` gives its text so far (for the heartbeat)."""
        now = time.time()
        record = AnswerRecord(id=answer_id, principal=principal, kind="answer", conversation_id=conversation_id,
                              owner=self.owner, status="working", status_message="writing",
                              text=redact(text[:MAX_RECORD_CHARS], self._secrets),
                              result=PieceState(delivered=len(text), model=model).dumps(),
                              created_at=now, updated_at=now, expires_at=now + keep_s)
        try:
            await self.store.create_answer(record)
            self._pieces[answer_id] = _Piece(principal, keep_s, source)
        except (StorageError, ValueError, OSError) as exc:
            log.warning("an incomplete answer could not be recorded (%s)", type(exc).__name__)

    def has_piece(self, answer_id: str) -> bool:
        return answer_id in self._pieces

    async def piece_delivered(self, principal: str, answer_id: str, text: str) -> None:
        """A process handed over the piece's text up to here (the record follows, so the next
        resume on any process goes on from there)."""
        await self._write_piece(principal, answer_id, text=text, delivered=len(text))

    async def piece_finished(self, principal: str, answer_id: str, end: PieceState, text: str) -> None:
        """The piece's answer is whole and stored, but its rest not yet handed over: the record keeps
        the whole text and `end` (still "working", no longer extended), so a resume on any process,
        this one's gone included, can hand over the rest."""
        piece = self._pieces.get(answer_id)
        if piece is not None:
            piece.finished = True
        await self._write_piece(principal, answer_id, text=text, end=end)

    async def piece_done(self, principal: str, answer_id: str, status: Literal["completed", "cancelled"],
                         delivered: int | None = None) -> None:
        """The piece's answer was handed over whole (`delivered`: its length), or stopped: its record
        is final, and a later resume anywhere finds nothing to resume."""
        self._pieces.pop(answer_id, None)
        await self._write_piece(principal, answer_id, status=status, delivered=delivered)

    async def _write_piece(self, principal: str, answer_id: str, *, status: Literal["completed", "cancelled"] | None
                           = None, text: str | None = None, delivered: int | None = None,
                           end: PieceState | None = None) -> None:
        """Update a piece's record (its state merged with what is stored: another process may have
        handed over more of it); a failure to write is logged, never the caller's error."""
        try:
            record = await self.store.get_answer(principal, answer_id)
            if record is None or record.status != "working":
                return
            state = PieceState.loads(record.result)
            if end is not None:
                state = replace(end, delivered=state.delivered, model=end.model or state.model)
            if delivered is not None:
                state = replace(state, delivered=max(state.delivered, delivered))
            # Only the owner's writes are heartbeats: another process handing over a piece keeps the
            # record's time, or a resume elsewhere would keep a dead owner's answer "working" forever.
            now = time.time() if record.owner == self.owner else record.updated_at
            await self.store.update_answer(
                principal, answer_id, now=now, status=status, status_message=status,
                text=None if text is None else redact(text[:MAX_RECORD_CHARS], self._secrets),
                result=state.dumps())
        except (StorageError, ValueError, OSError) as exc:
            log.warning("an incomplete answer's record could not be updated (%s)", type(exc).__name__)

    async def delivered(self, principal: str, answer_id: str) -> int:
        """How much of a piece any process has handed over (0 when unknown or unreadable)."""
        try:
            record = await self.store.get_answer(principal, answer_id)
        except (StorageError, ValueError, OSError):
            return 0
        return PieceState.loads(record.result).delivered if record is not None else 0

    async def piece_record(self, principal: str, conversation_id: str,
                           answer_id: str | None) -> tuple[AnswerRecord, PieceState] | None:
        """The record of an incomplete answer not running here, as `lost_piece` sees it, with its state."""
        record = await self.lost_piece(principal, conversation_id, answer_id)
        return None if record is None else (record, PieceState.loads(record.result))

    async def lost_piece(self, principal: str, conversation_id: str, answer_id: str | None) -> AnswerRecord | None:
        """The record of an incomplete answer no process runs any more (marked interrupted), or of one
        that ended; None when there is none. Only for answers not running here."""
        with storage():
            records = [r for r in await self.store.answers_in(principal, conversation_id)
                       if r.kind == "answer" and (answer_id is None or r.id == answer_id)]
        if not records:
            return None
        record = records[-1]
        now = time.time()
        finished = bool(PieceState.loads(record.result).finish_reason)  # whole and stored: not lost
        stopped = (record.owner == self.owner or owner_gone(record.owner)
                   or record.updated_at < now - self._lease(record))
        if record.status == "working" and not finished and stopped:
            with storage():
                record = await self.store.update_answer(principal, record.id, now=now, status="interrupted",
                                                        status_message=INTERRUPTED) or record
        return record

    # ---- upkeep

    async def _beat(self) -> None:
        """Heartbeats for running tasks (a record nobody beats is interrupted), a cancel written by
        another process, lost records of stopped processes, and expiry; on its own schedule."""
        try:
            await self._upkeep(first=True)
            while True:
                await anyio.sleep(self.limits.heartbeat_s)
                await self._upkeep(first=False)
        finally:
            _LIVE_OWNERS.discard(self.owner)

    async def _upkeep(self, *, first: bool) -> None:
        now = time.time()
        try:
            if first:
                await self.store.interrupt_stale(now=now, stale_before=now - self.limits.lease_s,
                                                 except_owner=self.owner, message=INTERRUPTED)
            for run in list(self._runs.values()):
                if run.done.is_set():
                    if (run.finished_at or now) + self.limits.ttl_s < now:
                        self._runs.pop(run.id, None)
                    continue
                if run.recorded:
                    text, reasoning = self._so_far(run)
                    alive = await self.store.update_answer(run.principal, run.id, now=now, text=text,
                                                           reasoning=reasoning, status_message=self._message(run),
                                                           expires_at=now + self.limits.ttl_s)
                    if alive is None and not run.done.is_set():  # cancelled (or expired) through the store
                        run.cancelled = True
                        run.scope.cancel()
            for answer_id, piece in list(self._pieces.items()):
                if piece.finished:
                    if await self.store.get_answer(piece.principal, answer_id, now=now) is None:
                        self._pieces.pop(answer_id, None)  # expired
                    continue
                await self.store.update_answer(piece.principal, answer_id, now=now, expires_at=now + piece.keep_s,
                                               text=redact(piece.source()[:MAX_RECORD_CHARS], self._secrets))
            await self.store.purge_answers(now=now)
        except (StorageError, ValueError, OSError) as exc:
            log.warning("task upkeep failed (%s); retrying in %g s", type(exc).__name__, self.limits.heartbeat_s)


def lease_of(owner: str) -> float | None:
    """The lease an owner id names (host/pid/token/lease); None for an id without one."""
    lease = owner.rsplit("/", 1)[-1] if owner.count("/") >= 3 else ""
    try:
        value = float(lease)
    except ValueError:
        return None
    return value if 0 < value < float("inf") else None


def owner_gone(owner: str) -> bool:
    """Whether the process an owner id names is known to be gone: it ran on this machine and its pid
    is no longer alive (or is now this process under another id). Other machines: unknown (False),
    so only their missing heartbeat tells."""
    host, _, rest = owner.partition("/")
    pid_text, _, _ = rest.partition("/")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in _LIVE_OWNERS  # a previous life of this pid, or a runtime closed since
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _record_view(record: AnswerRecord, limits: TaskLimits) -> TaskView:
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    if record.result is not None:
        try:
            loaded = json.loads(record.result)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict) and record.status == "failed" and isinstance(loaded.get("failure"), dict):
            error = loaded["failure"]
        elif isinstance(loaded, dict):
            result = loaded
    if record.status == "failed" and error is None:
        error = {"code": -32603, "message": record.status_message or "internal error"}
    return TaskView(id=record.id, status=record.status, status_message=record.status_message,
                    created_at=record.created_at, updated_at=record.updated_at, ttl_s=limits.ttl_s,
                    poll_ms=limits.poll_ms, result=result, error=error, partial_text=record.text)

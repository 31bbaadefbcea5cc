"""`chat.Tasks` without MCP: tool calls as tasks over a real MemoryStore or SQLiteStore.

Jobs are plain async functions that anyio Events release, and they stream by feeding real chunks
to a `StreamAccumulator` and calling `recorder.update`. Two `Tasks` on one SQLite file stand in
for two processes sharing a store. Covered: quick answers stay direct and leave no record; a task
id is handed out only once its record resolves; progress is written throttled; completion, failure
(a `TaskFailure`, or any other exception without its message), cancellation (here, from another
"process", and racing a completion) and the lost records of stopped owners; bounds, TTL,
principals, a caller that leaves during the first wait, and masking of secrets in stored text.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from kimi_mcp.chat import tasks as tasks_module
from kimi_mcp.chat.tasks import (
    INTERRUPTED,
    PieceState,
    TaskFailure,
    TaskLimits,
    TaskRecorder,
    Tasks,
    TaskStarted,
    TaskView,
    lease_of,
    owner_gone,
)
from kimi_mcp.store import AnswerRecord, AnswerStatus, ConversationStore, MemoryStore, SQLiteStore
from kimi_mcp.upstream import StreamAccumulator

pytestmark = pytest.mark.anyio

ALICE = "alice"
BOB = "bob"
RESULT: dict[str, Any] = {"content": [{"type": "text", "text": "The whole answer."}], "isError": False,
                          "structuredContent": {"text": "The whole answer."}}
SECRET = "sk-live-0123456789abcdefghij"
FAST = 0.05
"""The initial wait of most tests: a job that is not released by then becomes a task."""
OTHER_HOST_OWNER = "elsewhere.invalid/4242/another-process"

Job = Callable[[TaskRecorder], Awaitable[dict[str, Any]]]


# ---------------------------------------------------------------- helpers


@asynccontextmanager
async def running(store: ConversationStore, *, secrets: tuple[str, ...] = (), **limits: Any) -> AsyncIterator[Tasks]:
    """A `Tasks` on its own task group (as one process's runtime), closed when the block ends."""
    async with anyio.create_task_group() as tg:
        tasks = Tasks(store, tg, TaskLimits(**{"wait_s": FAST, **limits}), secrets)
        try:
            yield tasks
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
async def memory() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tasks.sqlite3"


@asynccontextmanager
async def sqlite(path: Path) -> AsyncIterator[SQLiteStore]:
    """One process's connection to the shared file."""
    store = SQLiteStore(path)
    try:
        yield store
    finally:
        await store.close()


class Gate:
    """A job that runs until released, then returns its outcome (a result, or raises an exception);
    it notes whether it saw a cancellation."""

    def __init__(self, outcome: dict[str, Any] | BaseException = RESULT, *, shielded: bool = False) -> None:
        self.outcome = outcome
        self.shielded = shielded
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.finished = anyio.Event()
        self.saw_cancel = False

    async def __call__(self, recorder: TaskRecorder) -> dict[str, Any]:
        self.started.set()
        try:
            with anyio.CancelScope(shield=self.shielded):
                await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.saw_cancel = True
            raise
        finally:
            self.finished.set()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class Streamer:
    """A job that streams: each `send` feeds one real chunk to a StreamAccumulator and reports it to
    the recorder (returning once the recorder has it); `finish` ends the job with its result."""

    def __init__(self, result: dict[str, Any] = RESULT) -> None:
        self.result = result
        self._send, self._chunks = anyio.create_memory_object_stream[dict[str, Any] | None](1)
        self._acked, self._acks = anyio.create_memory_object_stream[None](1)

    async def __call__(self, recorder: TaskRecorder) -> dict[str, Any]:
        acc = StreamAccumulator()
        async with self._chunks, self._acked:
            async for chunk in self._chunks:
                if chunk is None:
                    break
                acc.feed_chunk(chunk)
                await recorder.update(acc)
                await self._acked.send(None)
        return self.result

    async def send(self, *, reasoning: str = "", content: str = "") -> None:
        delta: dict[str, str] = {}
        if reasoning:
            delta["reasoning_content"] = reasoning
        if content:
            delta["content"] = content
        with anyio.fail_after(5):
            await self._send.send({"id": "chatcmpl-t", "model": "kimi-k2", "choices": [{"index": 0, "delta": delta}]})
            await self._acks.receive()

    async def finish(self) -> None:
        with anyio.fail_after(5):
            await self._send.send(None)


async def start(tasks: Tasks, job: Job, principal: str = ALICE) -> TaskStarted:
    with anyio.fail_after(5):
        started = await tasks.run(principal, job)
    assert isinstance(started, TaskStarted), started
    return started


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll until `check` holds (for state another task or thread writes), within 5 s."""
    with anyio.fail_after(5):
        while True:
            if await check():
                return
            await anyio.sleep(0.01)


async def settled(tasks: Tasks, task_id: str, principal: str = ALICE) -> TaskView:
    """The task's view once it is no longer working."""
    seen: list[TaskView] = []

    async def done() -> bool:
        view = await tasks.view(principal, task_id)
        assert view is not None, f"task {task_id} vanished"
        seen.append(view)
        return view.status != "working"

    await until(done)
    return seen[-1]


async def record_of(store: ConversationStore, task_id: str, principal: str = ALICE) -> AnswerRecord:
    record = await store.get_answer(principal, task_id)
    assert record is not None, f"no record for {task_id}"
    return record


async def stored_status(store: ConversationStore, task_id: str) -> AnswerStatus | None:
    record = await store.get_answer(ALICE, task_id)
    return None if record is None else record.status


async def no_records(store: ConversationStore) -> bool:
    """Whether the store holds no answer record at all (of any status, expired or not)."""
    return await store.purge_answers(now=float("inf")) == 0


def foreign_record(owner: str, *, updated_at: float, text: str = "", status: AnswerStatus = "working") -> AnswerRecord:
    now = time.time()
    return AnswerRecord(id="task_" + "f" * 20 + owner[-4:], principal=ALICE, kind="task", conversation_id=None,
                        owner=owner, status=status, status_message="answering… 12 characters", text=text,
                        reasoning="some reasoning", created_at=updated_at, updated_at=updated_at,
                        expires_at=now + 600)


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped (so no process has it, barring reuse)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


# ---------------------------------------------------------------- direct answers and new tasks


async def test_a_quick_job_returns_its_result_directly_and_leaves_no_record(memory: MemoryStore) -> None:
    async def quick(recorder: TaskRecorder) -> dict[str, Any]:
        return RESULT

    async with running(memory, wait_s=2.0) as tasks:
        with anyio.fail_after(5):
            outcome = await tasks.run(ALICE, quick)
        assert outcome == RESULT
        assert tasks.has_room(ALICE)
    assert await no_records(memory)


class SlowCreate(MemoryStore):
    """Creating a record takes a while (a slow disk): the id must still wait for it."""

    async def create_answer(self, record: AnswerRecord) -> None:
        await anyio.sleep(0.3)
        await super().create_answer(record)


async def test_a_slow_job_gets_a_task_id_only_once_its_record_resolves() -> None:
    store = SlowCreate()
    gate = Gate()
    async with running(store, ttl_s=120.0, poll_ms=750) as tasks:
        before = time.time()
        started = await start(tasks, gate)
        record = await store.get_answer(ALICE, started.id)  # at once: no speculative polling needed
        assert record is not None
        assert (record.kind, record.status, record.owner, record.principal) == ("task", "working", tasks.owner, ALICE)
        assert record.expires_at >= before + 120.0
        assert started.id.startswith("task_") and len(started.id) >= 20
        assert (started.ttl_s, started.poll_ms, started.status_message) == (120.0, 750, "working")
        assert before <= started.created_at <= time.time()
        view = await tasks.view(ALICE, started.id)
        assert view is not None and view.status == "working"
        gate.release.set()
        done = await settled(tasks, started.id)
        assert done.status == "completed" and done.result == RESULT


async def test_a_new_task_resolves_at_once_in_another_process_sharing_the_file(db: Path) -> None:
    gate = Gate()
    async with sqlite(db) as one, sqlite(db) as two, running(one) as owner, running(two) as other:
        started = await start(owner, gate)
        view = await other.view(ALICE, started.id)
        assert view is not None and view.status == "working"  # a live owner of this process: not lost
        gate.release.set()
        await gate.finished.wait()


# ---------------------------------------------------------------- progress and completion


async def test_progress_is_written_throttled_with_text_reasoning_and_status(
    memory: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks_module, "WRITE_EVERY_S", 0.3)
    job = Streamer()
    async with running(memory) as tasks:
        started = await start(tasks, job)
        record = await record_of(memory, started.id)
        assert (record.text, record.reasoning, record.status_message) == ("", "", "working")

        await job.send(reasoning="Let me think. ")
        record = await record_of(memory, started.id)
        assert record.reasoning == "Let me think. " and record.text == ""
        assert record.status_message == "thinking… 14 characters of reasoning"
        first_write = record.updated_at

        await job.send(reasoning="Still thinking. ")  # within WRITE_EVERY_S: not written
        record = await record_of(memory, started.id)
        assert record.reasoning == "Let me think. " and record.updated_at == first_write
        live = await tasks.view(ALICE, started.id)  # this process knows the latest state
        assert live is not None and live.status_message == "thinking… 30 characters of reasoning"

        await anyio.sleep(0.35)
        await job.send(content="Hello")
        record = await record_of(memory, started.id)
        assert record.reasoning == "Let me think. Still thinking. " and record.text == "Hello"
        assert record.status_message == "answering… 5 characters"
        assert record.status == "working"

        await job.send(content=", world")  # throttled again
        assert (await record_of(memory, started.id)).text == "Hello"

        await job.finish()
        done = await settled(tasks, started.id)
        assert done.status == "completed" and done.result == RESULT
        final = await record_of(memory, started.id)
        assert final.status == "completed" and final.status_message == "completed"
        assert final.text == "Hello, world"  # the final state has the whole text, whatever the throttle
        assert final.result is not None and json.loads(final.result) == RESULT


async def test_completion_is_stored_and_another_process_reads_it(db: Path) -> None:
    gate = Gate()
    async with sqlite(db) as one, sqlite(db) as two, running(one) as owner, running(two, ttl_s=600.0) as other:
        started = await start(owner, gate)
        gate.release.set()
        assert (await settled(owner, started.id)).status == "completed"
        view = await settled(other, started.id)
        assert view.status == "completed" and view.result == RESULT and view.error is None
        assert view.id == started.id and view.created_at == pytest.approx(started.created_at)
        assert view.updated_at >= view.created_at
        record = await record_of(two, started.id)
        assert record.expires_at > time.time() + 500  # kept for the TTL after finishing


async def test_a_task_failure_becomes_failed_with_its_code_and_message(db: Path) -> None:
    gate = Gate(TaskFailure(-32001, "the upstream refused the request"))
    async with sqlite(db) as one, sqlite(db) as two, running(one) as owner, running(two) as other:
        started = await start(owner, gate)
        gate.release.set()
        for tasks in (owner, other):
            view = await settled(tasks, started.id)
            assert view.status == "failed" and view.result is None
            assert view.error == {"code": -32001, "message": "the upstream refused the request"}
            assert view.status_message == "the upstream refused the request"
        assert (await record_of(two, started.id)).status == "failed"


async def test_any_other_exception_becomes_an_internal_error_without_its_message(db: Path) -> None:
    leak = "KeyError in /srv/private/path with detail 8c1f"
    gate = Gate(RuntimeError(leak))
    async with sqlite(db) as one, sqlite(db) as two, running(one) as owner, running(two) as other:
        started = await start(owner, gate)
        gate.release.set()
        for tasks in (owner, other):
            view = await settled(tasks, started.id)
            assert view.status == "failed"
            assert view.error == {"code": -32603, "message": "internal error"}
            assert leak not in repr(view)
        record = await record_of(two, started.id)
        assert leak not in repr(record)


# ---------------------------------------------------------------- cancellation


async def test_cancelling_a_running_task_cancels_the_job(memory: MemoryStore) -> None:
    gate = Gate()
    async with running(memory) as tasks:
        started = await start(tasks, gate)
        assert await tasks.cancel(ALICE, started.id) is True
        with anyio.fail_after(5):
            await gate.finished.wait()
        assert gate.saw_cancel
        view = await settled(tasks, started.id)
        assert view.status == "cancelled" and view.status_message == "cancelled" and view.result is None
        await until(lambda: _is(stored_status(memory, started.id), "cancelled"))
        assert tasks.has_room(ALICE)


async def _is(status: Awaitable[AnswerStatus | None], expected: AnswerStatus) -> bool:
    return await status == expected


async def test_a_completion_that_lands_first_stays_completed(memory: MemoryStore) -> None:
    gate = Gate()
    async with running(memory) as tasks:
        started = await start(tasks, gate)
        gate.release.set()
        assert (await settled(tasks, started.id)).status == "completed"
        assert await tasks.cancel(ALICE, started.id) is True  # acknowledged, but too late
        view = await tasks.view(ALICE, started.id)
        assert view is not None and view.status == "completed" and view.result == RESULT
        assert await stored_status(memory, started.id) == "completed"


async def test_a_cancel_that_lands_first_wins_over_a_job_that_still_finishes(memory: MemoryStore) -> None:
    gate = Gate(shielded=True)  # a job that cannot stop at once (cancellation is cooperative)
    async with running(memory) as tasks:
        started = await start(tasks, gate)
        assert await tasks.cancel(ALICE, started.id) is True
        gate.release.set()
        view = await settled(tasks, started.id)
        assert view.status == "cancelled" and view.result is None
        await until(lambda: _is(stored_status(memory, started.id), "cancelled"))


async def test_a_cancel_by_another_process_stops_the_job_at_the_next_heartbeat(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate()
    async with sqlite(db) as one, sqlite(db) as two, running(one, lease_s=0.15) as owner, running(two) as other:
        started = await start(owner, gate)
        assert await other.cancel(ALICE, started.id) is True
        with anyio.fail_after(5):
            await gate.finished.wait()
        assert gate.saw_cancel
        for tasks in (owner, other):
            assert (await settled(tasks, started.id)).status == "cancelled"


async def test_an_upkeep_after_a_foreign_cancel_stops_the_job(db: Path) -> None:
    gate = Gate()
    async with sqlite(db) as one, sqlite(db) as two, running(one) as owner, running(two) as other:
        started = await start(owner, gate)
        assert await other.cancel(ALICE, started.id) is True
        assert await stored_status(two, started.id) == "cancelled"
        await anyio.sleep(0.05)
        assert not gate.finished.is_set()  # not yet: the owner learns it from the store, when it beats
        await owner._upkeep(first=False)
        with anyio.fail_after(5):
            await gate.finished.wait()
        assert gate.saw_cancel
        assert (await settled(owner, started.id)).status == "cancelled"


async def test_a_foreign_cancel_that_lands_before_the_completion_wins_everywhere(db: Path) -> None:
    """The owner's completion arrives after another process stored the cancel, before the owner's
    next heartbeat: the store keeps the cancel (first landed), and the owner must say so too."""
    gate = Gate()
    async with sqlite(db) as one, sqlite(db) as two, running(one) as owner, running(two) as other:
        started = await start(owner, gate)
        assert await other.cancel(ALICE, started.id) is True
        gate.release.set()
        with anyio.fail_after(5):
            await gate.finished.wait()
        assert not gate.saw_cancel
        for tasks in (other, owner):
            assert (await settled(tasks, started.id)).status == "cancelled"
        assert await stored_status(two, started.id) == "cancelled"


async def test_a_completion_that_lands_before_a_foreign_cancel_wins_everywhere(db: Path) -> None:
    gate = Gate()
    async with sqlite(db) as one, sqlite(db) as two, running(one) as owner, running(two) as other:
        started = await start(owner, gate)
        gate.release.set()
        assert (await settled(other, started.id)).status == "completed"
        assert await other.cancel(ALICE, started.id) is True  # acknowledged; cancellation is cooperative
        for tasks in (other, owner):
            view = await tasks.view(ALICE, started.id)
            assert view is not None and view.status == "completed" and view.result == RESULT


class HeldHeartbeats(MemoryStore):
    """A store whose heartbeat writes can be held back, so they land after a later write (a store
    with its own latency, e.g. over a network, gives no order between concurrent calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = anyio.Event()
        self.holding = anyio.Event()

    async def update_answer(self, principal: str, answer_id: str, **fields: Any) -> AnswerRecord | None:
        if fields.get("status") is None and fields.get("expires_at") is not None:  # a heartbeat
            self.holding.set()
            await self.hold.wait()
        return await super().update_answer(principal, answer_id, **fields)


async def test_a_heartbeat_that_lands_after_the_completion_does_not_turn_it_cancelled() -> None:
    store = HeldHeartbeats()
    gate = Gate()
    async with running(store) as tasks, anyio.create_task_group() as tg:
        started = await start(tasks, gate)
        tg.start_soon(lambda: tasks._upkeep(first=False))
        with anyio.fail_after(5):
            await store.holding.wait()
        gate.release.set()
        await until(lambda: _is(stored_status(store, started.id), "completed"))
        store.hold.set()
        await anyio.sleep(0.05)
        view = await tasks.view(ALICE, started.id)
        assert view is not None and view.status == "completed" and view.result == RESULT


# ---------------------------------------------------------------- lost records


async def test_a_stale_record_of_another_owner_reads_as_interrupted_with_its_partial_text(
    memory: MemoryStore,
) -> None:
    async with running(memory) as tasks:
        await anyio.sleep(0.05)  # past the startup sweep: this is the read-time check
        fresh = foreign_record(OTHER_HOST_OWNER + "-new", updated_at=time.time(), text="Hello fr")
        stale = foreign_record(OTHER_HOST_OWNER + "-old", updated_at=time.time() - TaskLimits().lease_s - 5,
                               text="Hello fr")
        await memory.create_answer(fresh)
        await memory.create_answer(stale)
        alive = await tasks.view(ALICE, fresh.id)
        assert alive is not None and alive.status == "working"  # another machine, still beating
        lost = await tasks.view(ALICE, stale.id)
        assert lost is not None and lost.status == "interrupted"
        assert lost.partial_text == "Hello fr" and lost.status_message == INTERRUPTED
        assert (await record_of(memory, stale.id)).status == "interrupted"  # stored: every reader agrees
        assert (await record_of(memory, fresh.id)).status == "working"


async def test_stale_records_are_interrupted_when_a_process_starts(db: Path) -> None:
    async with sqlite(db) as store:
        stale = foreign_record(OTHER_HOST_OWNER, updated_at=time.time() - TaskLimits().lease_s - 5, text="part")
        await store.create_answer(stale)
        async with running(store):
            await until(lambda: _is(stored_status(store, stale.id), "interrupted"))
        record = await record_of(store, stale.id)
        assert record.status_message == INTERRUPTED and record.text == "part"


async def test_a_record_of_a_dead_process_of_this_machine_reads_as_interrupted_at_once(memory: MemoryStore) -> None:
    pid = dead_pid()
    owner = f"{socket.gethostname()}/{pid}/gone"
    assert owner_gone(owner)
    async with running(memory) as tasks:
        record = foreign_record(owner, updated_at=time.time(), text="Half an ans")  # fresh, yet lost
        await memory.create_answer(record)
        view = await tasks.view(ALICE, record.id)
        assert view is not None and view.status == "interrupted" and view.partial_text == "Half an ans"


async def test_a_record_of_a_live_tasks_in_this_process_is_not_interrupted_until_it_closes(db: Path) -> None:
    gate = Gate()
    async with sqlite(db) as one, sqlite(db) as two, running(two) as other:
        async with running(one) as owner:
            started = await start(owner, gate)
            assert not owner_gone(owner.owner)
            view = await other.view(ALICE, started.id)
            assert view is not None and view.status == "working"
        # That runtime closed (its task group, job included, is gone): its record is lost, at once.
        assert owner_gone(owner.owner)
        assert await stored_status(two, started.id) == "working"  # nobody wrote an end: it reads as lost
        view = await other.view(ALICE, started.id)
        assert view is not None and view.status == "interrupted"


async def test_a_record_of_this_tasks_without_a_run_is_interrupted(memory: MemoryStore) -> None:
    async with running(memory) as tasks:
        record = foreign_record(tasks.owner, updated_at=time.time())
        await memory.create_answer(record)
        view = await tasks.view(ALICE, record.id)
        assert view is not None and view.status == "interrupted"


async def test_a_beating_record_never_reads_as_stale(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate()
    async with (sqlite(db) as one, sqlite(db) as two, running(one, lease_s=0.3) as owner,
                running(two, lease_s=0.3) as other):
        started = await start(owner, gate)
        first = (await record_of(two, started.id)).updated_at
        await anyio.sleep(0.6)
        view = await other.view(ALICE, started.id)
        assert view is not None and view.status == "working"
        assert (await record_of(two, started.id)).updated_at > first
        gate.release.set()
        assert (await settled(other, started.id)).status == "completed"


def test_owner_gone_knows_only_this_machine() -> None:
    assert not owner_gone(OTHER_HOST_OWNER)
    assert not owner_gone(f"{socket.gethostname()}/not-a-pid/x")
    assert owner_gone(f"{socket.gethostname()}/{dead_pid()}/x")


# ---------------------------------------------------------------- bounds, TTL, principals


async def test_has_room_is_false_past_the_per_principal_and_total_bounds(memory: MemoryStore) -> None:
    gates = [Gate() for _ in range(3)]
    async with running(memory, per_principal=2, total=3) as tasks:
        await start(tasks, gates[0], ALICE)
        assert tasks.has_room(ALICE)
        await start(tasks, gates[1], ALICE)
        assert not tasks.has_room(ALICE) and tasks.has_room(BOB)
        await start(tasks, gates[2], BOB)
        assert not tasks.has_room(BOB) and not tasks.has_room("carol")  # the total
        gates[0].release.set()
        await gates[0].finished.wait()
        await anyio.sleep(0.01)
        assert tasks.has_room(ALICE) and tasks.has_room("carol")  # finished tasks do not count
        for gate in gates:
            gate.release.set()


async def test_a_finished_task_disappears_after_its_ttl(memory: MemoryStore) -> None:
    gate = Gate()
    async with running(memory, ttl_s=0.3) as tasks:
        started = await start(tasks, gate)
        gate.release.set()
        assert (await settled(tasks, started.id)).status == "completed"
        assert await memory.get_answer(ALICE, started.id) is not None
        await anyio.sleep(0.4)
        await tasks._upkeep(first=False)  # sweeps the finished run and purges the record
        assert await tasks.view(ALICE, started.id) is None
        assert await tasks.cancel(ALICE, started.id) is False
        assert await memory.get_answer(ALICE, started.id, now=started.created_at) is None  # deleted, not hidden
        assert await no_records(memory)


async def test_another_principal_can_neither_see_nor_cancel_a_task(db: Path) -> None:
    gate = Gate()
    async with sqlite(db) as one, sqlite(db) as two, running(one) as owner, running(two) as other:
        started = await start(owner, gate, ALICE)
        for tasks in (owner, other):
            assert await tasks.view(BOB, started.id) is None
            assert await tasks.cancel(BOB, started.id) is False
            assert await tasks.view(BOB, "task_" + "x" * 20) is None
        assert not gate.finished.is_set()
        assert await stored_status(two, started.id) == "working"
        gate.release.set()
        assert (await settled(owner, started.id)).status == "completed"
        assert await owner.view(BOB, started.id) is None


async def test_a_caller_that_leaves_during_the_first_wait_cancels_the_job_and_leaves_no_record(
    memory: MemoryStore,
) -> None:
    gate = Gate()
    async with running(memory, wait_s=5.0) as tasks:
        with anyio.move_on_after(0.1) as scope:
            await tasks.run(ALICE, gate)
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            await gate.finished.wait()
        assert gate.saw_cancel
        await anyio.sleep(0.01)
        assert tasks.has_room(ALICE)
        assert await memory.count_answers(ALICE) == 0
    assert await no_records(memory)


# ---------------------------------------------------------------- secrets


async def test_secrets_are_masked_in_stored_text(memory: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks_module, "WRITE_EVERY_S", 0.0)
    job = Streamer()
    async with running(memory, secrets=(SECRET,)) as tasks:
        started = await start(tasks, job)
        await job.send(reasoning=f"The key {SECRET} must not be repeated. ")
        await job.send(content=f"Your token is {SECRET[:14]}")  # a fragment counts too
        progress = await record_of(memory, started.id)
        assert SECRET[:10] not in progress.text + progress.reasoning
        assert "****" in progress.text and "****" in progress.reasoning
        await job.finish()
        await settled(tasks, started.id)
        final = await record_of(memory, started.id)
        assert final.status == "completed" and SECRET[:10] not in final.text + final.reasoning

        failing = Gate(TaskFailure(-32001, f"upstream echoed {SECRET}"))
        failed = await start(tasks, failing)
        failing.release.set()
        view = await settled(tasks, failed.id)
        assert view.status == "failed" and view.error is not None
        assert SECRET not in str(view.error) and "****" in str(view.error["message"])
        assert SECRET not in repr(await record_of(memory, failed.id))


@pytest.mark.parametrize(
    "raw", [None, "", "not json", "[1, 2]", '{"delivered": "9", "usage": [1]}', '{"usage": {"a": "x"}}'])
def test_a_piece_state_written_by_anyone_else_reads_as_nothing_delivered(raw: str | None) -> None:
    state = PieceState.loads(raw)
    assert state.delivered == 0 and state.finish_reason == "" and all(isinstance(v, int) for v in state.usage.values())


def test_a_piece_state_survives_the_round_trip() -> None:
    state = PieceState(delivered=12, model="kimi-k3", finish_reason="stop",
                       usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cached_tokens": None})
    assert PieceState.loads(state.dumps()) == state


async def test_an_owner_with_a_longer_lease_is_not_called_dead_by_a_shorter_one(memory: MemoryStore) -> None:
    """Owner ids carry their lease: a process with a 3 s lease reading the record of a process with a
    60 s one, last touched 20 s ago, leaves it working; one whose owner said 10 s reads as lost. (The
    start-up sweep of stale records still judges by the starting process's lease: replicas should
    share KIMI_ANSWER_LEASE.)"""
    async with running(memory, lease_s=3.0) as tasks:
        assert lease_of(tasks.owner) == 3.0 and lease_of(OTHER_HOST_OWNER) is None
        await anyio.sleep(0.2)  # after the start-up sweep, which judges by this process's own lease
        patient = foreign_record(OTHER_HOST_OWNER + "-a/60", updated_at=time.time() - 20)
        hasty = foreign_record(OTHER_HOST_OWNER + "-b/10", updated_at=time.time() - 20)
        for record in (patient, hasty):
            await memory.create_answer(record)
        seen = {r.id: await tasks.view(ALICE, r.id) for r in (patient, hasty)}
        assert seen[patient.id] is not None and seen[patient.id].status == "working"
        assert seen[hasty.id] is not None and seen[hasty.id].status == "interrupted"

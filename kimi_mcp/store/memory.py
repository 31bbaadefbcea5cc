"""An in-process store for tests and for hosts that want nothing written to disk.

The event loop is the only guard: no method awaits between reading and writing, so each call
is atomic with respect to other tasks.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from anyio.lowlevel import checkpoint

from kimi_mcp.store.base import (
    AnswerRecord,
    AnswerStatus,
    Conversation,
    ConversationNotFound,
    ConversationSummary,
    Limits,
    SaveResult,
    Totals,
    Turn,
    check_answer,
    check_answer_fields,
    check_exchange,
    clock,
    plan_pruning,
    text_bytes,
    turn_bytes,
)

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Record:
    """Mutable private state of one conversation; callers only ever see frozen snapshots."""

    principal: str
    title: str
    model: str
    system: str | None
    created_at: float
    updated_at: float
    turns: list[tuple[Turn, int]] = field(default_factory=list)  # each turn with its turn_bytes
    totals: Totals = field(default_factory=Totals)
    size_bytes: int = 0  # text_bytes(system) + the turns' sizes, kept up to date by every save

    def summary(self, conversation_id: str) -> ConversationSummary:
        return ConversationSummary(
            id=conversation_id,
            principal=self.principal,
            title=self.title,
            model=self.model,
            turns=len(self.turns),
            size_bytes=self.size_bytes,
            created_at=self.created_at,
            updated_at=self.updated_at,
            totals=self.totals,
        )


class MemoryStore:
    """Conversations and answer records in dicts; lost when the process exits."""

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}
        self._answers: dict[str, AnswerRecord] = {}  # frozen records, replaced on change

    def _owned(self, principal: str, conversation_id: str) -> _Record | None:
        record = self._records.get(conversation_id)
        return record if record is not None and record.principal == principal else None

    async def summary(self, principal: str, conversation_id: str) -> ConversationSummary | None:
        await checkpoint()
        record = self._owned(principal, conversation_id)
        return None if record is None else record.summary(conversation_id)

    async def get(self, principal: str, conversation_id: str) -> Conversation | None:
        """A frozen copy, so later saves never change what a caller already holds."""
        await checkpoint()
        record = self._owned(principal, conversation_id)
        if record is None:
            return None
        turns = tuple(turn for turn, _ in record.turns)
        return Conversation(record.summary(conversation_id), record.system, turns)

    async def save_exchange(
        self,
        principal: str,
        conversation_id: str,
        *,
        model: str,
        system: str | None,
        title: str,
        turns: Sequence[Turn],
        limits: Limits,
        now: float,
        create: bool = True,
        totals: Totals | None = None,
    ) -> SaveResult:
        """Validate first, then mutate without awaiting, so the change is all-or-nothing."""
        check_exchange(principal, conversation_id, turns, totals)
        await checkpoint()
        record = self._records.get(conversation_id)
        if record is None and not create:
            raise ConversationNotFound(conversation_id)
        if record is None:
            record = _Record(principal, title, model, None, now, now)  # empty: no system, no turns, 0 bytes
        elif record.principal != principal:
            raise ConversationNotFound(conversation_id)
        added = [(turn, turn_bytes(turn)) for turn in turns]
        count = len(record.turns) + len(added)
        size = record.size_bytes - text_bytes(record.system) + text_bytes(system) + sum(s for _, s in added)
        if count <= limits.max_turns and size <= limits.max_bytes:  # plan_pruning would drop nothing
            pruned = 0
            record.turns.extend(added)
        else:
            combined = record.turns + added
            sizes = [(turn.role, s) for turn, s in combined]
            pruned = plan_pruning(text_bytes(system), sizes, len(added), limits)
            record.turns = combined[pruned:]
            size = text_bytes(system) + sum(s for _, s in record.turns)
        record.model, record.system, record.updated_at, record.size_bytes = model, system, now, size
        if totals is not None:
            record.totals += totals
        self._records[conversation_id] = record
        return SaveResult(record.summary(conversation_id), pruned)

    async def list(self, principal: str, *, limit: int = 50) -> builtins.list[ConversationSummary]:
        """Most recently used first; ties broken by id so the order is stable."""
        await checkpoint()
        owned = [(cid, r) for cid, r in self._records.items() if r.principal == principal]
        owned.sort(key=lambda item: (item[1].updated_at, item[0]), reverse=True)
        return [record.summary(cid) for cid, record in owned[: max(limit, 0)]]

    async def delete(self, principal: str, conversation_id: str) -> bool:
        await checkpoint()
        if self._owned(principal, conversation_id) is None:
            return False
        del self._records[conversation_id]
        return True

    async def purge_expired(self, *, older_than: float) -> int:
        await checkpoint()
        expired = [cid for cid, r in self._records.items() if r.updated_at < older_than]
        for cid in expired:
            del self._records[cid]
        return len(expired)

    def _live_answer(self, principal: str, answer_id: str, now: float) -> AnswerRecord | None:
        record = self._answers.get(answer_id)
        if record is None or record.principal != principal or record.expires_at <= now:
            return None
        return record

    async def create_answer(self, record: AnswerRecord) -> None:
        check_answer(record)
        await checkpoint()
        if record.id in self._answers:
            raise ValueError(f"answer {record.id} already exists")
        self._answers[record.id] = record

    async def get_answer(self, principal: str, answer_id: str, *, now: float | None = None) -> AnswerRecord | None:
        await checkpoint()
        return self._live_answer(principal, answer_id, clock(now))

    async def update_answer(
        self,
        principal: str,
        answer_id: str,
        *,
        now: float,
        status: AnswerStatus | None = None,
        status_message: str | None = None,
        text: str | None = None,
        reasoning: str | None = None,
        result: str | None = None,
        expires_at: float | None = None,
        owner: str | None = None,
    ) -> AnswerRecord | None:
        """Check, then replace the frozen record without awaiting: the first finisher wins."""
        check_answer_fields(
            status=status, status_message=status_message, text=text, reasoning=reasoning, result=result, owner=owner
        )
        await checkpoint()
        record = self._live_answer(principal, answer_id, now)
        if record is None or record.status != "working":
            return None
        record = dataclasses.replace(
            record,
            status=record.status if status is None else status,
            status_message=record.status_message if status_message is None else status_message,
            text=record.text if text is None else text,
            reasoning=record.reasoning if reasoning is None else reasoning,
            result=record.result if result is None else result,
            expires_at=record.expires_at if expires_at is None else expires_at,
            owner=record.owner if owner is None else owner,
            updated_at=now,
        )
        self._answers[answer_id] = record
        return record

    async def answers_in(
        self, principal: str, conversation_id: str, *, now: float | None = None
    ) -> builtins.list[AnswerRecord]:
        await checkpoint()
        at = clock(now)
        found = [
            r
            for r in self._answers.values()
            if r.principal == principal and r.conversation_id == conversation_id and r.expires_at > at
        ]
        return sorted(found, key=lambda r: (r.created_at, r.id))

    async def count_answers(self, principal: str, *, now: float | None = None) -> int:
        await checkpoint()
        at = clock(now)
        owned = (r for r in self._answers.values() if r.principal == principal and r.expires_at > at)
        return sum(1 for r in owned if r.status == "working")

    async def interrupt_stale(self, *, now: float, stale_before: float, except_owner: str, message: str) -> int:
        check_answer_fields(status_message=message)
        await checkpoint()
        stale = [
            r
            for r in self._answers.values()
            if r.status == "working" and r.updated_at < stale_before and r.owner != except_owner
        ]
        for r in stale:
            self._answers[r.id] = dataclasses.replace(r, status="interrupted", status_message=message, updated_at=now)
        return len(stale)

    async def purge_answers(self, *, now: float) -> int:
        await checkpoint()
        expired = [answer_id for answer_id, r in self._answers.items() if r.expires_at <= now]
        for answer_id in expired:
            del self._answers[answer_id]
        return len(expired)

    async def open(self) -> None:
        """Nothing to connect to."""
        await checkpoint()

    async def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""
        await checkpoint()

"""The conversation store contract: value types, errors, the Protocol and the shared pruning rules.

Backends implement `ConversationStore`; the rules every backend must agree on (validation, sizes,
which turns to prune, which answer fields are acceptable) live here as plain functions so no
backend re-derives them. Besides conversations, a store keeps `AnswerRecord`s: the durable state
of an answer being written, so a task can be looked up by id and a restart can report it lost.
"""

from __future__ import annotations

import builtins
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args, runtime_checkable

__all__ = [
    "ANSWER_STATUSES",
    "MAX_ANSWER_BYTES",
    "MAX_STATUS_MESSAGE_BYTES",
    "AnswerKind",
    "AnswerRecord",
    "AnswerStatus",
    "Conversation",
    "ConversationNotFound",
    "ConversationStore",
    "ConversationSummary",
    "Limits",
    "SaveResult",
    "StorageError",
    "Totals",
    "Turn",
    "check_answer",
    "check_answer_fields",
    "check_exchange",
    "check_totals",
    "clock",
    "new_answer_id",
    "new_conversation_id",
    "plan_pruning",
    "text_bytes",
    "turn_bytes",
]

Role = Literal["user", "assistant"]
_ROLES: frozenset[str] = frozenset({"user", "assistant"})


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation; `reasoning` is kept so thinking models get it back."""

    role: Role
    content: str
    reasoning: str | None = None
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Totals:
    """What a conversation's calls used and are estimated to have cost, summed over every exchange
    saved (pruned ones too: it is what was spent, not what is kept).

    `cost_usd` sums the calls that had a price; `unpriced_calls` counts those that had none (their
    model is not in the price table), so a total that leaves some out says so.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cost_usd + other.cost_usd,
            self.unpriced_calls + other.unpriced_calls,
        )


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """What `list` shows about a conversation, without loading its turns."""

    id: str
    principal: str
    title: str
    model: str
    turns: int
    size_bytes: int
    created_at: float
    updated_at: float
    totals: Totals = Totals()


@dataclass(frozen=True, slots=True)
class Conversation:
    """A whole conversation as the tools replay it to the model."""

    summary: ConversationSummary
    system: str | None
    turns: tuple[Turn, ...]


@dataclass(frozen=True, slots=True)
class SaveResult:
    """The conversation after a save, and how many old turns the limits pushed out."""

    conversation: ConversationSummary
    pruned_turns: int


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-conversation caps, so one long chat cannot grow the store (or the prompt) without bound."""

    max_turns: int = 200
    max_bytes: int = 2_000_000

    def __post_init__(self) -> None:
        if self.max_turns < 1 or self.max_bytes < 1:
            raise ValueError("Limits.max_turns and Limits.max_bytes must be at least 1")


AnswerStatus = Literal["working", "completed", "failed", "cancelled", "interrupted"]
AnswerKind = Literal["task", "answer"]
ANSWER_STATUSES: frozenset[str] = frozenset(get_args(AnswerStatus))
_ANSWER_KINDS: frozenset[str] = frozenset(get_args(AnswerKind))

# Per field (text, reasoning, result), in UTF-8 bytes. Upstream answers are capped far below this;
# the bound only stops a bug from filling the disk, and a value beyond it is refused, never cut.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
MAX_STATUS_MESSAGE_BYTES = 64 * 1024  # a status message is one readable line


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """An answer being written (or just written): a task's or a soft-deadline piece's durable state.

    Only "working" records change; the other statuses are final. Times are seconds since the epoch.
    """

    id: str  # unguessable handle (`new_answer_id`), also the task id
    principal: str  # owner: another principal can neither read, change nor detect it
    kind: AnswerKind
    conversation_id: str | None
    owner: str  # the process instance running it (for leases and lost answers)
    status: AnswerStatus
    status_message: str = ""
    text: str = ""  # the answer so far
    reasoning: str = ""  # the reasoning so far
    result: str | None = None  # JSON text of the final result, once finished
    created_at: float = 0.0
    updated_at: float = 0.0  # also the heartbeat while working
    expires_at: float = 0.0  # hidden from then on, and deleted by `purge_answers`


class StorageError(Exception):
    """The store could not read or write (disk full, read-only, corrupt file).

    The message names the file and the problem, never secrets, so tools can show it as is.
    """


class ConversationNotFound(KeyError):
    """No such conversation for this principal (another principal's id looks exactly like a missing one)."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; a readable message suits tool results better.
        return f"conversation {self.args[0]} not found" if self.args else "conversation not found"


@runtime_checkable
class ConversationStore(Protocol):
    """What the tools need from a store; every backend passes `tests/store/test_store_contract.py`."""

    async def summary(self, principal: str, conversation_id: str) -> ConversationSummary | None:
        """The conversation's summary without its turns (cheap: for existence and model checks)."""
        ...

    async def get(self, principal: str, conversation_id: str) -> Conversation | None:
        """The conversation, or None when absent or owned by another principal."""
        ...

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
        """In one transaction: create if new, set model and system, append turns, prune, touch, and
        add `totals` (this exchange's usage and estimated cost) to the conversation's running totals.

        With `create=False` a missing conversation is not re-created (it was deleted or expired
        while an answer was being written): ConversationNotFound is raised instead.

        Raises ConversationNotFound when the id belongs to another principal.
        """
        ...

    async def list(self, principal: str, *, limit: int = 50) -> builtins.list[ConversationSummary]:
        """The principal's conversations, most recently used first."""
        ...

    async def delete(self, principal: str, conversation_id: str) -> bool:
        """Remove a conversation; False when absent or another principal's."""
        ...

    async def purge_expired(self, *, older_than: float) -> int:
        """Delete every conversation whose updated_at < older_than; return how many."""
        ...

    async def create_answer(self, record: AnswerRecord) -> None:
        """Insert a new answer record, durably (committed) before returning: its id may be handed
        out as soon as this returns, and must then resolve, in this process or the next one.

        Raises ValueError when a record with that id exists (ids are unguessable: that is a bug),
        or when a field is invalid or too large (`check_answer`); nothing is written then.
        """
        ...

    async def get_answer(self, principal: str, answer_id: str, *, now: float | None = None) -> AnswerRecord | None:
        """The record, or None when absent, expired (`expires_at <= now`, default the current
        time) or another principal's; the three look the same."""
        ...

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
        """Set the given fields and `updated_at = now` in one transaction, only while the record is
        "working"; return the updated record.

        None (and no change) when the record is finished (any other status: it never changes
        again), absent, expired or another principal's. So when a cancel and a completion race,
        whichever lands first wins and the other gets None. With no field given this is a
        heartbeat. `result=None` leaves the result as it is. Raises ValueError as `create_answer`.
        """
        ...

    async def answers_in(
        self, principal: str, conversation_id: str, *, now: float | None = None
    ) -> builtins.list[AnswerRecord]:
        """The principal's unexpired records for a conversation, any status, oldest first."""
        ...

    async def count_answers(self, principal: str, *, now: float | None = None) -> int:
        """How many unexpired "working" records the principal has (for per-caller bounds)."""
        ...

    async def interrupt_stale(self, *, now: float, stale_before: float, except_owner: str, message: str) -> int:
        """Mark "interrupted" (with `message`, `updated_at = now`) every "working" record of any
        principal whose `updated_at < stale_before` and whose owner is not `except_owner`: the
        process running it died or restarted. One transaction; returns how many."""
        ...

    async def purge_answers(self, *, now: float) -> int:
        """Delete every record whose `expires_at <= now`, whatever its status; return how many."""
        ...

    async def open(self) -> None:
        """Connect now where the backend connects to a server (StorageError if it cannot), so
        `kimi-mcp serve` refuses to start on an unreachable database; elsewhere nothing to do."""
        ...

    async def close(self) -> None:
        """Release files and connections."""
        ...


def new_conversation_id() -> str:
    """An unguessable id, so knowing one conversation's id reveals nothing about others."""
    return "conv_" + secrets.token_urlsafe(15)


def new_answer_id() -> str:
    """An unguessable answer (task) handle, as strong as a conversation id."""
    return "ans_" + secrets.token_urlsafe(15)


def clock(now: float | None) -> float:
    """`now` if given, else the current time: what "expired" is measured against."""
    return time.time() if now is None else now


def text_bytes(text: str | None) -> int:
    """UTF-8 size of a stored text; None counts as nothing."""
    return len(text.encode("utf-8")) if text else 0


def turn_bytes(turn: Turn) -> int:
    """Stored size of a turn: its content plus its reasoning."""
    return text_bytes(turn.content) + text_bytes(turn.reasoning)


def check_exchange(
    principal: str, conversation_id: str, turns: Sequence[Turn], totals: Totals | None = None
) -> None:
    """Reject caller bugs before any write, identically in every backend."""
    if totals is not None:
        check_totals(totals)
    if not principal or not conversation_id:
        raise ValueError("principal and conversation_id must be non-empty")
    if not turns:
        raise ValueError("save_exchange needs at least one turn")
    for turn in turns:
        if turn.role not in _ROLES:
            raise ValueError(f"unknown turn role {turn.role!r}")
        turn_bytes(turn)  # raises UnicodeEncodeError now rather than halfway through a backend write


def check_totals(totals: Totals) -> None:
    """Counts are whole and non-negative, the cost finite and non-negative: a running total only grows."""
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "unpriced_calls"):
        value = getattr(totals, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"totals.{name} must be a non-negative integer, not {value!r}")
    cost = totals.cost_usd
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not math.isfinite(cost) or cost < 0:
        raise ValueError(f"totals.cost_usd must be a finite non-negative number, not {cost!r}")


def check_answer_fields(
    *,
    status: str | None = None,
    status_message: str | None = None,
    text: str | None = None,
    reasoning: str | None = None,
    result: str | None = None,
    owner: str | None = None,
) -> None:
    """Reject an unknown status, an empty owner or an oversized text before any write (ValueError).

    Sizes are measured in UTF-8, which also raises UnicodeEncodeError now for text no backend
    could store (lone surrogates), rather than halfway through a write.
    """
    if status is not None and status not in ANSWER_STATUSES:
        raise ValueError(f"unknown answer status {status!r}")
    if owner is not None and not owner:
        raise ValueError("an answer's owner must be non-empty")
    if text_bytes(status_message) > MAX_STATUS_MESSAGE_BYTES:
        raise ValueError(f"answer status_message exceeds {MAX_STATUS_MESSAGE_BYTES} bytes")
    for name, value in (("text", text), ("reasoning", reasoning), ("result", result)):
        if text_bytes(value) > MAX_ANSWER_BYTES:
            raise ValueError(f"answer {name} exceeds {MAX_ANSWER_BYTES} bytes")


def check_answer(record: AnswerRecord) -> None:
    """Everything `check_answer_fields` checks, plus the id, principal and kind of a new record."""
    if not record.id or not record.principal:
        raise ValueError("an answer's id and principal must be non-empty")
    if record.kind not in _ANSWER_KINDS:
        raise ValueError(f"unknown answer kind {record.kind!r}")
    check_answer_fields(
        status=record.status,
        status_message=record.status_message,
        text=record.text,
        reasoning=record.reasoning,
        result=record.result,
        owner=record.owner,
    )


PRUNE_TO = 0.75
"""A conversation over KIMI_MAX_TURNS or KIMI_MAX_CONVERSATION_BYTES is pruned to this share of it."""


def plan_pruning(system_bytes: int, turns: Sequence[tuple[str, int]], newest: int, limits: Limits) -> int:
    """How many of the oldest `(role, size)` turns to drop so the conversation fits `limits`
    (once over one, to `PRUNE_TO` of it).

    Turns go in exchanges (a turn plus the assistant turns after it), so history never starts
    mid-exchange; the last `newest` turns (the exchange being saved) are always kept.
    """
    droppable = len(turns) - newest
    total = system_bytes + sum(size for _, size in turns)
    if len(turns) <= limits.max_turns and total <= limits.max_bytes:
        return 0
    # Over a limit: down to PRUNE_TO of it at once, so the conversation's oldest turn, the start of
    # the prefix Kimi caches, stays put for many calls (pruning one exchange per call at the limit
    # would change the prefix, and miss the cache, on every call).
    max_turns = limits.max_turns - int(limits.max_turns * (1 - PRUNE_TO))
    max_bytes = limits.max_bytes - int(limits.max_bytes * (1 - PRUNE_TO))
    dropped = 0
    while dropped < droppable and (len(turns) - dropped > max_turns or total > max_bytes):
        end = _exchange_end(turns, dropped, droppable)
        total -= sum(size for _, size in turns[dropped:end])
        dropped = end
    return dropped


def _exchange_end(turns: Sequence[tuple[str, int]], start: int, stop: int) -> int:
    """Index just past the exchange that starts at `start`, never beyond `stop`."""
    end = start + 1
    while end < stop and turns[end][0] == "assistant":
        end += 1
    return end

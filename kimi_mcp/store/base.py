"""The conversation store contract: value types, errors, the Protocol and the shared pruning rules.

Backends implement `ConversationStore`; the rules every backend must agree on (validation, sizes,
which turns to prune) live here as plain functions so no backend re-derives them.
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "Conversation",
    "ConversationNotFound",
    "ConversationStore",
    "ConversationSummary",
    "Limits",
    "SaveResult",
    "StorageError",
    "Turn",
    "check_exchange",
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
    ) -> SaveResult:
        """In one transaction: create if new, set model and system, append turns, prune, touch.

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

    async def close(self) -> None:
        """Release files and connections."""
        ...


def new_conversation_id() -> str:
    """An unguessable id, so knowing one conversation's id reveals nothing about others."""
    return "conv_" + secrets.token_urlsafe(15)


def text_bytes(text: str | None) -> int:
    """UTF-8 size of a stored text; None counts as nothing."""
    return len(text.encode("utf-8")) if text else 0


def turn_bytes(turn: Turn) -> int:
    """Stored size of a turn: its content plus its reasoning."""
    return text_bytes(turn.content) + text_bytes(turn.reasoning)


def check_exchange(principal: str, conversation_id: str, turns: Sequence[Turn]) -> None:
    """Reject caller bugs before any write, identically in every backend."""
    if not principal or not conversation_id:
        raise ValueError("principal and conversation_id must be non-empty")
    if not turns:
        raise ValueError("save_exchange needs at least one turn")
    for turn in turns:
        if turn.role not in _ROLES:
            raise ValueError(f"unknown turn role {turn.role!r}")
        turn_bytes(turn)  # raises UnicodeEncodeError now rather than halfway through a backend write


def plan_pruning(system_bytes: int, turns: Sequence[tuple[str, int]], newest: int, limits: Limits) -> int:
    """How many of the oldest `(role, size)` turns to drop so the conversation fits `limits`.

    Turns go in exchanges (a turn plus the assistant turns after it), so history never starts
    mid-exchange; the last `newest` turns (the exchange being saved) are always kept.
    """
    droppable = len(turns) - newest
    total = system_bytes + sum(size for _, size in turns)
    dropped = 0
    while dropped < droppable and (len(turns) - dropped > limits.max_turns or total > limits.max_bytes):
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

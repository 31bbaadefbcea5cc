"""Conversations: stored history in, one new exchange stored out, one call at a time per conversation.

`Conversations` is the chat layer's only door to the store, and the one place a `StorageError`
becomes a `StorageFailure`. `run` takes the conversation's lock, reads it once, resolves the
model once (asked, else the conversation's, else the default), prepares the request once, trims
history to the context window, calls Kimi, and stores the user turn(s) plus the answer in one
write, only when the call succeeded.
"""

from __future__ import annotations

import builtins
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from .. import telemetry
from ..catalogue import ModelInfo
from ..errors import InvalidArguments, StorageFailure
from ..redaction import redact
from ..store import (
    Conversation,
    ConversationNotFound,
    ConversationStore,
    ConversationSummary,
    Limits,
    StorageError,
    Totals,
    Turn,
    text_bytes,
    turn_bytes,
)
from ..upstream import Message
from .progress import StreamListener
from .service import ChatArgs, ChatService, Completed

__all__ = ["ChatTurn", "Conversations", "estimate_tokens", "trim_history", "unknown_conversation"]

TITLE_CHARS = 80
PURGE_EVERY_S = 60.0
ANSWER_RESERVE_THINKING = 16_384
ANSWER_RESERVE = 4_096
TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A stored exchange: the completion plus what happened to the conversation."""

    completed: Completed
    conversation_id: str
    dropped_turns: int = 0
    pruned_turns: int = 0
    notices: tuple[str, ...] = ()
    totals: Totals | None = None
    """The conversation's running totals with this exchange added (None: it was not stored)."""


def unknown_conversation(conversation_id: str) -> InvalidArguments:
    return InvalidArguments(
        f"unknown conversation_id {conversation_id!r} (expired, deleted or never created); "
        "leave conversation_id out to start a new conversation"
    )


ACTIVE_KEEP = 32
ACTIVE_BYTES = 64 * 1024 * 1024
"""At most this many conversations, of at most this many stored bytes together, kept in memory
between calls (the most recently used; one is kept whatever its size)."""
TRIM_STEP = 0.4
"""A trimmed history's cut moves in steps of this share of the context budget (see `trim_history`)."""


def estimate_tokens(text: str) -> int:
    """A cautious estimate: ~4 ASCII characters per token, 1 token per other character (CJK)."""
    ascii_chars = len(text) if text.isascii() else len(text.encode("ascii", "ignore"))
    return ascii_chars // 4 + (len(text) - ascii_chars) + 1


def message_costs(history: Sequence[Message]) -> list[int]:
    """Each history message's estimated tokens, as `trim_history` counts them."""
    return [estimate_tokens(m.content) + estimate_tokens(m.reasoning or "") + TOKENS_PER_MESSAGE for m in history]


def trim_history(
    history: Sequence[Message], fixed: Sequence[Message], model: ModelInfo, max_tokens: int | None, thinks: bool,
    costs: Sequence[int] | None = None,
) -> tuple[list[Message], int]:
    """Drop the oldest history turns (whole exchanges) until everything fits the context window.

    `fixed` (the system turn and the new turns) is never dropped; `costs` are `message_costs(history)`
    when the caller has them already. The cut is made in large, stable
    steps, for Kimi's prompt cache: it can only fall on a checkpoint, the first exchange starting
    after each `TRIM_STEP` of the budget counted from the oldest turn. Older turns never change, so
    neither do the checkpoints: a cut stays where it is for many calls (the prefix Kimi has cached
    stays the prefix sent), and moves on by a whole step, leaving room for many more, only when the
    conversation outgrows the window again. Cutting one exchange per call instead would change the
    prefix, and miss the cache, on every call at the limit.
    """
    reserve = max_tokens or (ANSWER_RESERVE_THINKING if thinks else ANSWER_RESERVE)
    budget = model.context_window - reserve - sum(estimate_tokens(m.content) + TOKENS_PER_MESSAGE for m in fixed)
    if costs is None:
        costs = message_costs(history)
    total = sum(costs)
    if total <= budget:
        return list(history), 0
    step = max(1, int(max(budget, 0) * TRIM_STEP))
    before = 0  # the cost of the turns before index i
    next_checkpoint = step
    for i, message in enumerate(history):
        if i > 0 and message.role == "user" and before >= next_checkpoint:
            if total - before <= budget:
                return list(history[i:]), i
            next_checkpoint = (before // step + 1) * step
        before += costs[i]
    return [], len(history)


@contextmanager
def storage(doing: str = "", **details: Any) -> Iterator[None]:
    """The one conversion of a store failure into the tool error a caller sees."""
    try:
        yield
    except StorageError as exc:
        raise StorageFailure(f"{doing}{exc}", details=details) from None


@dataclass(slots=True)
class _Prepared:
    """A stored conversation's turns (`turns`, the very tuple) as messages, and their estimates."""

    turns: tuple[Turn, ...]
    keep_reasoning: bool
    messages: list[Message]
    costs: list[int]


@dataclass
class Conversations:
    """Runs chat calls that belong to stored conversations, and reads, lists and deletes them."""

    service: ChatService
    store: ConversationStore
    limits: Limits
    ttl_s: float
    secrets: tuple[str, ...] = ()
    """Masked in every stored text: an answer that echoes a token must not keep it on disk."""
    _locks: weakref.WeakValueDictionary[tuple[str, str], anyio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )
    _last_purge: float = 0.0
    _active: OrderedDict[tuple[str, str], Conversation] = field(default_factory=OrderedDict)
    """The conversations last used here, as saved: a continued call checks the cheap summary
    instead of reading every turn again (see `_load`)."""
    _prepared: dict[tuple[str, str], _Prepared] = field(default_factory=dict)
    """Their turns as messages for Kimi, with token estimates (see `_replay`)."""

    def lock(self, principal: str, conversation_id: str) -> anyio.Lock:
        """The lock that serialises calls on one conversation (kept while anyone holds it)."""
        key = (principal, conversation_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = anyio.Lock()
            self._locks[key] = lock
        return lock

    async def get(self, principal: str, conversation_id: str) -> Conversation | None:
        await self.purge_expired()
        with storage():
            return await self.store.get(principal, conversation_id)

    async def list(self, principal: str, limit: int) -> builtins.list[ConversationSummary]:
        await self.purge_expired()
        with storage():
            return await self.store.list(principal, limit=limit)

    async def delete(self, principal: str, conversation_id: str) -> bool:
        self._active.pop((principal, conversation_id), None)
        self._prepared.pop((principal, conversation_id), None)
        with storage():
            return await self.store.delete(principal, conversation_id)

    async def _load(self, principal: str, conversation_id: str) -> Conversation | None:
        """The conversation to continue: from memory when the store's summary says nobody changed it
        since this process saved it (another process's save, a prune, a delete or an expiry all show
        in the summary), else read whole. Called under the conversation's lock."""
        key = (principal, conversation_id)
        cached = self._active.get(key)
        if cached is not None:
            await self.purge_expired()
            with storage():
                summary = await self.store.summary(principal, conversation_id)
            if summary is not None and _same(summary, cached.summary):
                self._active.move_to_end(key)
                return cached
            self._active.pop(key, None)
            self._prepared.pop(key, None)
        return await self.get(principal, conversation_id)

    def _replay(self, principal: str, conversation_id: str, stored: Conversation | None,
                keep_reasoning: bool) -> tuple[builtins.list[Message], builtins.list[int]]:
        """The stored turns as messages for Kimi, with their token estimates: kept with the active
        conversation and extended save by save, so a long history is not rebuilt on every call."""
        if stored is None:
            return [], []
        key = (principal, conversation_id)
        prepared = self._prepared.get(key)
        if prepared is None or prepared.turns is not stored.turns or prepared.keep_reasoning != keep_reasoning:
            messages = _history(stored, keep_reasoning=keep_reasoning)
            prepared = _Prepared(stored.turns, keep_reasoning, messages, message_costs(messages))
            if key in self._active:
                self._prepared[key] = prepared
        return list(prepared.messages), prepared.costs

    def _remember(self, principal: str, conversation_id: str, conversation: Conversation,
                  before: tuple[Turn, ...], pruned: int, added: Sequence[Turn]) -> None:
        """Keep the conversation as just saved (`before` plus `added`, less the `pruned` oldest),
        within ACTIVE_KEEP conversations and ACTIVE_BYTES, and its prepared messages moved on too."""
        key = (principal, conversation_id)
        prepared = self._prepared.pop(key, None)
        if prepared is not None and prepared.turns is before:
            fresh = _history(Conversation(conversation.summary, None, tuple(added)),
                             keep_reasoning=prepared.keep_reasoning)
            messages = [*prepared.messages[pruned:], *fresh]
            self._prepared[key] = _Prepared(conversation.turns, prepared.keep_reasoning, messages,
                                            [*prepared.costs[pruned:], *message_costs(fresh)])
        self._active[key] = conversation
        self._active.move_to_end(key)
        while len(self._active) > ACTIVE_KEEP or (
                len(self._active) > 1 and sum(c.summary.size_bytes for c in self._active.values()) > ACTIVE_BYTES):
            gone, _ = self._active.popitem(last=False)
            self._prepared.pop(gone, None)

    async def purge_expired(self) -> None:
        """Drop conversations unused for longer than the TTL; at most once a minute."""
        now = time.time()
        if self.ttl_s <= 0 or now - self._last_purge < PURGE_EVERY_S:
            return
        self._last_purge = now
        with storage():
            await self.store.purge_expired(older_than=now - self.ttl_s)

    async def run(
        self,
        principal: str,
        conversation_id: str,
        args: ChatArgs,
        *,
        continuing: bool,
        listener: StreamListener | None,
        on_model: Callable[[str], None] | None = None,
    ) -> ChatTurn:
        """One exchange on this conversation, streamed into `listener` when there is one.

        `on_model` hears the model once it is resolved (before Kimi is called).
        """
        telemetry.note(conversation_id=conversation_id)  # the upstream span's gen_ai.conversation.id
        async with self.lock(principal, conversation_id):
            stored = await self._load(principal, conversation_id) if continuing else None
            if continuing and stored is None:
                raise unknown_conversation(conversation_id)
            notices: list[str] = []
            if stored is not None and args.system is None:
                args = replace(args, system=stored.system)
            elif stored is not None and stored.system and args.system != stored.system:
                notices.append("The new system prompt replaces the conversation's earlier one.")
            model = self.service.model(args.model or (stored.summary.model if stored else None))
            if on_model is not None:
                on_model(model.id)
            args = await self.service.attach(args, model)
            self._check_fits(args)
            request = self.service.prepare(args, model=model)
            thinks = model.thinks(request.thinking)
            history, costs = self._replay(principal, conversation_id, stored, replays_reasoning(model, thinks))
            if replays_reasoning(model, thinks) and model.reasoning_replay in ("keep", "required"):
                history, left_out, preserve = close_reasoning_gaps(history, model)
                request = replace(request, preserve_thinking=preserve)
                if left_out:
                    notices.append(f"{left_out} earlier turns were left out: {model.id} needs every earlier "
                                   "answer's reasoning, and they have none (another model wrote them, or it was "
                                   "not stored).")
            same = len(history) == len(costs)  # close_reasoning_gaps may have cut it: then count again
            kept, dropped = trim_history(history, request.messages, model, args.max_tokens, thinks,
                                         costs if same else None)
            if dropped:
                notices.append(f"{dropped} oldest turns were left out to fit the context window.")
            system = request.messages[:1] if request.messages[0].role == "system" else ()
            request = replace(request, messages=(*system, *kept, *request.messages[len(system):]))
            completed = await self.service.complete(request, listener=listener)
            totals: Totals | None = None
            try:
                pruned, notice, totals = await self._save(principal, conversation_id, args, completed,
                                                          stored=stored)
                if notice:
                    notices.append(notice)
            except ConversationNotFound:
                notices.append("The conversation was deleted or expired meanwhile: this answer was not stored.")
                pruned = 0
            return ChatTurn(completed, conversation_id, dropped, pruned, tuple(notices), totals)

    async def run_unstored(self, args: ChatArgs, *, listener: StreamListener | None,
                           on_model: Callable[[str], None] | None = None) -> ChatTurn:
        """One exchange kept nowhere (`store: false`, KIMI_STORE=none): no lock, no read, no write,
        so a caller that wants no history pays nothing for the store."""
        model = self.service.model(args.model)
        if on_model is not None:
            on_model(model.id)
        args = await self.service.attach(args, model)
        request = self.service.prepare(args, model=model)
        completed = await self.service.complete(request, listener=listener)
        return ChatTurn(completed, "", 0, 0, (), None)

    def _check_fits(self, args: ChatArgs) -> None:
        """The caps hold for the exchange being saved too: refuse before paying for an answer that
        could never be stored whole."""
        turns = _new_turns(args) + 1
        if turns > self.limits.max_turns:
            raise InvalidArguments(
                f"this call would store {turns} turns, more than one conversation keeps "
                f"({self.limits.max_turns}, KIMI_MAX_TURNS): send fewer messages"
            )
        size = text_bytes(args.system) + sum(text_bytes(m.content) for m in args.messages if m.role != "system")
        size += text_bytes(args.prompt) + text_bytes(args.attached.text if args.attached else None)
        if size > self.limits.max_bytes:
            raise InvalidArguments(
                f"this call would store {size:,} bytes, more than one conversation keeps "
                f"({self.limits.max_bytes:,}, KIMI_MAX_CONVERSATION_BYTES): send less text"
            )

    async def _save(
        self, principal: str, conversation_id: str, args: ChatArgs, completed: Completed, *,
        stored: Conversation | None
    ) -> tuple[int, str | None, Totals | None]:
        """Store the exchange and add its usage to the conversation's totals, in one write: (turns
        pruned, a notice, the totals after it; None when the exchange was too large to store)."""
        now = time.time()

        def masked(text: str) -> str:
            return redact(text, self.secrets)

        turns = [Turn(m.role, masked(m.content), None, now) for m in completed.request.messages[-_new_turns(args):]
                 if m.role in ("user", "assistant")]
        reasoning = completed.reply.reasoning
        answer = Turn("assistant", masked(completed.reply.text), masked(reasoning) if reasoning else None, now)
        notice = None
        sizes = text_bytes(args.system) + sum(turn_bytes(t) for t in turns)
        if sizes + turn_bytes(answer) > self.limits.max_bytes and answer.reasoning:
            answer = replace(answer, reasoning=None)  # the answer matters more than how it was reached
            notice = "The answer's reasoning was not stored: the exchange is larger than KIMI_MAX_CONVERSATION_BYTES."
        if sizes + turn_bytes(answer) > self.limits.max_bytes:
            return 0, ("This answer was not stored: the exchange is larger than KIMI_MAX_CONVERSATION_BYTES, "
                       "so the conversation continues from before it."), None
        turns.append(answer)
        first_prompt = next((t.content for t in turns if t.role == "user"), "")
        system = masked(args.system) if args.system else args.system
        is_new = stored is None
        self._active.pop((principal, conversation_id), None)  # until the save is known to have landed
        with storage("the answer could not be stored: ", text=completed.reply.text):
            saved = await self.store.save_exchange(
                principal, conversation_id, model=completed.request.model.id, system=system,
                title=_title(first_prompt) if is_new else "", turns=turns, limits=self.limits, now=now,
                create=is_new, totals=call_totals(completed),
            )
        before = stored.turns if stored is not None else ()
        after = (*before[saved.pruned_turns:], *turns)
        # What this save makes of the conversation it read, in turns and bytes (counted from the
        # read's summary, not turn by turn); anything else means another process wrote too.
        size = (stored.summary.size_bytes - text_bytes(stored.system) if stored is not None else 0) + text_bytes(system)
        size += sum(turn_bytes(t) for t in turns) - sum(turn_bytes(t) for t in before[:saved.pruned_turns])
        if (len(after), size) == (saved.conversation.turns, saved.conversation.size_bytes):
            self._remember(principal, conversation_id, Conversation(saved.conversation, system, after), before,
                           saved.pruned_turns, turns)
        return saved.pruned_turns, notice, saved.conversation.totals


def _same(stored: ConversationSummary, cached: ConversationSummary) -> bool:
    """Whether the stored conversation is still the one this process saved (exact: `updated_at` is
    the time the save was given, and every save changes it)."""
    return (stored.turns, stored.size_bytes, stored.updated_at, stored.model) == (
        cached.turns, cached.size_bytes, cached.updated_at, cached.model)


def call_totals(completed: Completed) -> Totals:
    """One call's contribution to its conversation's running totals."""
    usage = completed.reply.usage
    return Totals(
        prompt_tokens=max(usage.prompt_tokens, 0),
        completion_tokens=max(usage.completion_tokens, 0),
        cached_tokens=max(usage.cached_tokens or 0, 0),
        cost_usd=completed.cost_usd or 0.0,
        unpriced_calls=1 if completed.cost_usd is None else 0,
    )


def _new_turns(args: ChatArgs) -> int:
    """How many of the request's last messages are new in this call (caller history + prompt)."""
    return len([m for m in args.messages if m.role != "system"]) + (1 if args.prompt is not None else 0)


def replays_reasoning(model: ModelInfo, thinks: bool) -> bool:
    """Whether earlier turns' reasoning goes back upstream: only where the catalogue says the model
    needs it (it costs input tokens), and only when this call thinks."""
    return thinks and model.reasoning_replay != "none"


def close_reasoning_gaps(history: list[Message], model: ModelInfo) -> tuple[list[Message], int, bool]:
    """A history the model accepts when some earlier answer has no reasoning (written by another
    model, with thinking off, or stored without it): a `keep` model goes without preserved thinking
    (and without the reasoning); a `required` model gets the history after the last such answer.
    Returns (history, turns left out, preserved thinking still on)."""
    gaps = [i for i, m in enumerate(history) if m.role == "assistant" and not m.reasoning]
    if not gaps:
        return history, 0, True
    if model.reasoning_replay == "keep":
        return [replace(m, reasoning=None) for m in history], 0, False
    cut = gaps[-1] + 1
    return history[cut:], cut, True


def _history(stored: Conversation | None, *, keep_reasoning: bool) -> list[Message]:
    if stored is None:
        return []
    return [Message(t.role, t.content, t.reasoning if keep_reasoning else None) for t in stored.turns]


def _title(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"

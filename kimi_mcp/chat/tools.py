"""What each tool does, as plain async methods of `ChatTools`: no MCP, no results, no wire format.

The MCP layer calls one method per tool and turns what it returns into a tool result (or the
`KimiError` it raises into an error result). kimi_chat's answer runs as a background generation:
the call waits up to the soft deadline, then hands over the whole answer (`Finished`) or the
piece that has arrived (`Partial`); `resume` picks up the rest. A caller that goes away before
the hand-over stops the generation, and so the upstream request, at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import anyio

from ..errors import Interrupted, InvalidArguments, KimiError
from ..store import Conversation, ConversationSummary, new_conversation_id
from ..upstream import Usage
from .conversations import ChatTurn, Conversations
from .generations import KEEP_FINISHED_S, Generation, Generations
from .json_answers import JsonOutcome, run_json
from .progress import ProgressSink, ProgressThrottle, StreamListener
from .schemas import SchemaChecker
from .service import ChatArgs, ChatService
from .tasks import PieceState, TaskRecorder, Tasks

__all__ = ["LOCAL", "ChatHandover", "ChatTools", "Finished", "Partial", "Relayed"]

LOCAL = "local"
"""The principal of stdio hosts, open HTTP and the command line: one local user."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The whole answer; `offset` characters of its text were handed over by earlier `Partial`s."""

    turn: ChatTurn
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Partial:
    """The soft deadline came first: the piece that arrived since the last hand-over."""

    conversation_id: str
    piece: str
    offset: int
    model: str
    answer_id: str


@dataclass(frozen=True, slots=True)
class Relayed:
    """The rest of an answer that another process sharing the store (a replica) finished, read from
    its record: the text from `offset` on, and the figures it recorded."""

    conversation_id: str
    piece: str
    offset: int
    model: str
    answer_id: str
    finish_reason: str
    usage: dict[str, int | None]
    cost_usd: float | None = None
    """The recorded usage at this process's prices (an estimate; None: no prices for the model)."""


ChatHandover = Finished | Partial | Relayed
RELAY_POLL_S = 0.5
"""How often a resume reads the record of an answer another process is writing."""


class ChatTools:
    """The tools' logic over the process's shared parts (built once by `kimi_mcp.runtime`)."""

    def __init__(self, service: ChatService, conversations: Conversations, generations: Generations,
                 soft_deadline: float, schemas: SchemaChecker | None = None, tasks: Tasks | None = None,
                 history: bool = True) -> None:
        self.service = service
        self.schemas = schemas or SchemaChecker()
        self.conversations = conversations
        self.generations = generations
        self.soft_deadline = soft_deadline
        self.tasks = tasks
        """Tool calls run as MCP tasks (None where nothing serves the extension, e.g. the CLI)."""
        self.history = history
        """False (KIMI_STORE=none): no conversation is ever stored, as if every call said `store: false`."""

    async def chat(self, principal: str, args: ChatArgs, *, conversation_id: str | None,
                   sink: ProgressSink | None, task: TaskRecorder | None = None, store: bool = True) -> ChatHandover:
        """kimi_chat: one exchange on a new or stored conversation (`store=False`: on none, kept
        nowhere). As a `task`, the answer reports to the task's recorder and is waited for whole (no
        soft deadline: the client polls instead)."""
        keep = store and self.history
        if conversation_id and not keep:
            why = "this server keeps no conversations (KIMI_STORE=none)" if not self.history else "store is false"
            raise InvalidArguments(f"conversation_id cannot be continued: {why}; leave conversation_id out")
        # Unstored answers get an id too: the handle a soft-deadline `resume` names (never stored).
        cid = conversation_id or new_conversation_id()
        pending = self.generations.pending((principal, cid)) if conversation_id else None
        # What a `Partial` names until the conversation's lock is taken and the model resolved.
        guess = args.model or (pending.model if pending is not None else "") or self.service.default_model
        # Stream from Kimi when someone listens, or when a soft deadline may need the partial text;
        # otherwise one plain completion is cheaper.
        stream = sink is not None or task is not None or self.soft_deadline > 0

        async def job(generation: Generation[ChatTurn]) -> ChatTurn:
            def resolved(model: str) -> None:
                generation.model = model

            turn: ChatTurn | None = None
            try:
                if keep:
                    turn = await self.conversations.run(principal, cid, args, continuing=conversation_id is not None,
                                                        listener=generation if stream else None, on_model=resolved)
                else:
                    turn = await self.conversations.run_unstored(args, listener=generation if stream else None,
                                                                 on_model=resolved)
                return turn
            finally:
                if self.tasks is not None and self.tasks.has_piece(generation.answer_id):  # its record says it ended
                    with anyio.CancelScope(shield=True):
                        await self._piece_done(principal, generation.answer_id, turn)

        generation = self.generations.start((principal, cid), guess, job)
        if task is not None:
            generation.listen(task)
        else:
            generation.attach(sink)
        handed_over = False
        try:
            handover = await self._hand_over(generation, cid, whole=task is not None)
            handed_over = True
            return handover
        finally:
            if not handed_over:  # the caller went away (cancelled): stop the upstream request too
                generation.attach(None)
                generation.scope.cancel()
                self.generations.forget(generation)

    async def resume(self, principal: str, conversation_id: str | None, sink: ProgressSink | None,
                     answer_id: str | None = None) -> ChatHandover:
        """kimi_chat with resume=true: the rest of an answer handed over incomplete (the one `answer_id`
        names; without it, the conversation's only incomplete answer)."""
        if not conversation_id:
            raise InvalidArguments("resume needs the conversation_id of the incomplete answer")
        waiting = self.generations.waiting((principal, conversation_id))
        if answer_id:
            found = [g for g in waiting if g.answer_id == answer_id]
            if not found:
                relayed = await self._relay(principal, conversation_id, answer_id)
                if relayed is not None:
                    return relayed
                raise InvalidArguments(
                    f"no incomplete answer {answer_id!r} in conversation {conversation_id!r}: it was already "
                    "handed over whole, or it expired (read the conversation with kimi_read_conversation)"
                )
            generation = found[0]
        elif len(waiting) > 1:
            ids = ", ".join(g.answer_id for g in waiting)
            raise InvalidArguments(
                f"conversation {conversation_id!r} has {len(waiting)} incomplete answers: say which with "
                f"answer_id (one of {ids})"
            )
        elif waiting:
            generation = waiting[0]
        else:
            relayed = await self._relay(principal, conversation_id, None)
            if relayed is not None:
                return relayed
            raise InvalidArguments(
                f"nothing to resume in conversation {conversation_id!r}: no answer is in progress here. A "
                "finished answer is in kimi_read_conversation; one nobody resumed for 15 minutes is gone: "
                "ask again"
            )
        self.generations.reattach(generation, sink)
        if self.tasks is not None and self.tasks.has_piece(generation.answer_id):  # a replica may have handed more
            handed = await self.tasks.delivered(principal, generation.answer_id)
            generation.delivered = max(generation.delivered, handed)
        return await self._hand_over(cast(Generation[ChatTurn], generation), conversation_id)

    async def _piece_done(self, principal: str, answer_id: str, turn: ChatTurn | None) -> None:
        """Record how a piece's answer ended: its whole text and figures, for a resume elsewhere."""
        assert self.tasks is not None
        if turn is None:
            await self.tasks.piece_done(principal, answer_id, "cancelled")
            return
        reply = turn.completed.reply
        usage = {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens,
                 "total_tokens": reply.usage.total_tokens, "reasoning_tokens": reply.usage.reasoning_tokens,
                 "cached_tokens": reply.usage.cached_tokens}
        end = PieceState(model=reply.model, finish_reason=reply.finish_reason or "stop", usage=usage)
        await self.tasks.piece_finished(principal, answer_id, end, reply.text)

    async def _relay(self, principal: str, conversation_id: str, answer_id: str | None) -> ChatHandover | None:
        """Resume an answer another process sharing the store is writing (or finished): follow its
        record up to the soft deadline, then hand over what it holds beyond what was handed over.
        None when there is no such answer; `Interrupted` when its process stopped."""
        if self.tasks is None:
            return None
        found = await self.tasks.piece_record(principal, conversation_id, answer_id)
        deadline = anyio.current_time() + self.soft_deadline
        while (found is not None and found[0].status == "working" and not found[1].finish_reason
               and anyio.current_time() < deadline):
            await anyio.sleep(min(RELAY_POLL_S, max(0.0, deadline - anyio.current_time())))
            found = await self.tasks.piece_record(principal, conversation_id, found[0].id)
        if found is None:
            return None
        record, state = found
        if record.status == "interrupted":
            raise Interrupted(
                f"the answer {record.id} in conversation {conversation_id!r} was lost: the server stopped before "
                "it was finished, so it was not stored; ask again", details={"partial_text": record.text})
        if record.status != "working":
            return None  # handed over whole, or stopped
        piece = record.text[state.delivered:]
        if state.finish_reason:  # whole: the rest, and the record is final
            await self.tasks.piece_done(principal, record.id, "completed", len(record.text))
            recorded = Usage(state.usage.get("prompt_tokens") or 0, state.usage.get("completion_tokens") or 0,
                             cached_tokens=state.usage.get("cached_tokens"))
            return Relayed(conversation_id, piece, state.delivered, state.model, record.id, state.finish_reason,
                           dict(state.usage), self.service.prices.estimate(state.model, recorded))
        await self.tasks.piece_delivered(principal, record.id, record.text)
        return Partial(conversation_id, piece, state.delivered, state.model, record.id)

    async def _hand_over(self, generation: Generation[ChatTurn], conversation_id: str,
                         whole: bool = False) -> ChatHandover:
        """Wait up to the soft deadline (`whole`: as long as it takes); then the whole answer, or the
        piece that has arrived."""
        if await generation.wait(0 if whole else self.soft_deadline):
            self.generations.forget(generation)
            finished = Finished(generation.outcome(), generation.delivered)
            if self.tasks is not None and self.tasks.has_piece(generation.answer_id):
                await self.tasks.piece_done(generation.key[0], generation.answer_id, "completed",
                                            len(finished.turn.completed.reply.text))
            return finished
        first = not generation.detached
        self.generations.detach(generation)
        text = generation.text
        offset, generation.delivered = generation.delivered, len(text)
        if first and self.tasks is not None:
            principal = generation.key[0]
            await self.tasks.note_piece(principal, conversation_id, generation.answer_id, text, KEEP_FINISHED_S,
                                        model=generation.model, source=lambda: generation.text)
            if generation.done.is_set():  # it ended while being recorded
                await self._piece_done(principal, generation.answer_id, generation.result)
        elif self.tasks is not None and self.tasks.has_piece(generation.answer_id):
            await self.tasks.piece_delivered(generation.key[0], generation.answer_id, text)
        return Partial(conversation_id, text[offset:], offset, generation.model, generation.answer_id)

    async def json(self, args: ChatArgs, schema: Any, sink: ProgressSink | None,
                   task: TaskRecorder | None = None) -> JsonOutcome:
        """kimi_json: a JSON answer (not stored), repaired once if needed; as a `task`, reported to its recorder."""
        failed: KimiError | None = None
        async with anyio.create_task_group() as tg:  # for the throttle's held-back sends
            listener: StreamListener | None = task
            if listener is None and sink is not None:
                listener = ProgressThrottle(sink, task_group=tg)
            try:
                outcome = await run_json(self.service, args, schema, listener, self.schemas)
            except KimiError as error:  # raised past the task group, which would wrap it in a group
                failed = error
            finally:
                if isinstance(listener, ProgressThrottle):
                    listener.close()
        if failed is not None:
            raise failed
        return outcome

    async def list_conversations(self, principal: str, limit: int) -> list[ConversationSummary]:
        return await self.conversations.list(principal, limit)

    async def read_conversation(self, principal: str, conversation_id: str) -> Conversation:
        conversation = await self.conversations.get(principal, conversation_id)
        if conversation is None:
            raise InvalidArguments(f"no conversation {conversation_id!r} (expired, deleted or never created)")
        return conversation

    async def delete_conversation(self, principal: str, conversation_id: str) -> bool:
        return await self.conversations.delete(principal, conversation_id)

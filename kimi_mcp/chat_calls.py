"""kimi_chat's call flow: start an answer as a background generation, hand it over whole or in
pieces at the soft deadline, resume it later, and stop it when the caller goes away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from .arguments import HistoryItem
from .chat import ChatArgs, HistoryMessage
from .conversations import ChatTurn
from .errors import InvalidArguments
from .generations import Generation
from .principal import principal_of
from .progress import ProgressSink
from .results import chat_result, partial_result
from .state import AppState
from .store import new_conversation_id

__all__ = ["chat_args", "progress_sink", "resume_chat", "start_chat"]


def progress_sink(ctx: Context[AppState, Any]) -> ProgressSink | None:
    """A sink when the caller asked for progress (sent a progress token), else None."""
    request = ctx.request_context
    meta: Any = request.meta or {}
    raw_meta: Any = (request.params or {}).get("_meta") or {}
    tokens = (meta.get("progress_token"), meta.get("progressToken"), raw_meta.get("progressToken"))
    if all(token is None for token in tokens):
        return None

    async def sink(progress: float, message: str) -> None:
        await ctx.report_progress(progress, None, message)

    return sink


def chat_args(
    prompt: str | None, system: str | None, messages: Sequence[HistoryItem] | None, model: str | None,
    max_tokens: int | None, temperature: float | None, top_p: float | None,
    stop: str | list[str] | None, thinking: Literal["enabled", "disabled"] | None,
) -> ChatArgs:
    """The chat layer's arguments from the tool's (shared by kimi_chat and kimi_json)."""
    return ChatArgs(
        prompt=prompt, system=system, model=model, max_tokens=max_tokens, temperature=temperature,
        top_p=top_p, stop=stop, thinking=thinking,
        messages=tuple(HistoryMessage(m.role, m.content) for m in messages or ()),
    )


async def hand_over(
    state: AppState, generation: Generation[ChatTurn], conversation_id: str, include_reasoning: bool
) -> CallToolResult:
    """Wait up to the soft deadline; then the whole answer, or the piece that has arrived."""
    if await generation.wait(state.soft_deadline):
        state.generations.forget(generation)
        turn = generation.outcome()
        return chat_result(turn, include_reasoning=include_reasoning, offset=generation.delivered)
    generation.attach(None)
    text = generation.text
    offset, generation.delivered = generation.delivered, len(text)
    return partial_result(conversation_id, text[offset:], offset, generation.model)


async def model_for(state: AppState, principal: str, conversation_id: str | None, asked: str | None) -> str:
    """The model a call will use: the one asked for, else the conversation's, else the default.
    Refuses an unknown conversation before anything starts."""
    if conversation_id is None:
        return state.service.model(asked).id
    pending = state.generations.pending((principal, conversation_id))
    stored = None if pending is not None else await state.conversations.summary(principal, conversation_id)
    if pending is None and stored is None:
        raise InvalidArguments(
            f"unknown conversation_id {conversation_id!r} (expired, deleted or never created); "
            "leave conversation_id out to start a new conversation"
        )
    remembered = pending.model if pending is not None else stored.model if stored else None
    return state.service.model(asked or remembered).id


async def start_chat(state: AppState, ctx: Context[AppState, Any], args: ChatArgs, conversation_id: str | None,
                include_reasoning: bool) -> CallToolResult:
    principal = principal_of(ctx)
    state.service.prepare(args)  # refuse bad arguments before anything starts
    cid = conversation_id or new_conversation_id()
    model = await model_for(state, principal, conversation_id, args.model)

    sink = progress_sink(ctx)
    # Stream from Kimi when someone listens, or when a soft deadline may need the partial text;
    # otherwise one plain completion is cheaper.
    stream = sink is not None or state.soft_deadline > 0

    async def job(generation: Generation[ChatTurn]) -> ChatTurn:
        return await state.conversations.run(principal, cid, args, continuing=conversation_id is not None,
                                             listener=generation if stream else None)

    generation = state.generations.start((principal, cid), model, job)
    generation.attach(sink)
    handed_over = False
    try:
        result = await hand_over(state, generation, cid, include_reasoning)
        handed_over = True
        return result
    finally:
        if not handed_over:  # the caller went away (cancelled): stop the upstream request too
            generation.attach(None)
            generation.scope.cancel()
            state.generations.forget(generation)


async def resume_chat(state: AppState, ctx: Context[AppState, Any], conversation_id: str | None,
                  include_reasoning: bool) -> CallToolResult:
    if not conversation_id:
        raise InvalidArguments("resume needs the conversation_id of the incomplete answer")
    generation = state.generations.pending((principal_of(ctx), conversation_id))
    if generation is None:
        raise InvalidArguments(
            f"nothing to resume in conversation {conversation_id!r}: its answers are complete "
            "(read them with kimi_read_conversation)"
        )
    generation.attach(progress_sink(ctx))
    return await hand_over(state, generation, conversation_id, include_reasoning)  # type: ignore[arg-type]

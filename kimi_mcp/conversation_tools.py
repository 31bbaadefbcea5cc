"""Tools and resources to list, read and delete stored conversations.

Tools, because most hosts' models cannot read resources on their own; resources too, for hosts
that show them to their user. Every lookup is scoped to the caller's principal.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from .errors import InvalidArguments, KimiError, StorageFailure
from .principal import principal_of
from .results import error_result
from .state import AppState

if TYPE_CHECKING:
    from .server import KimiServer
from .store import Conversation, ConversationSummary, StorageError

__all__ = ["register_conversation_tools"]

ConversationIdArg = Annotated[str, Field(min_length=1, max_length=200, description="The conversation's id.")]
Limit = Annotated[int, Field(ge=1, le=500, description="How many conversations, most recently used first.")]


class SummaryOut(BaseModel):
    conversation_id: str
    title: str = Field(description="The conversation's first prompt, shortened.")
    model: str
    turns: int
    last_used: str = Field(description="When it was last used (UTC, ISO 8601).")


class ListResult(BaseModel):
    conversations: list[SummaryOut]


class TurnOut(BaseModel):
    role: str
    content: str


class TranscriptResult(BaseModel):
    conversation_id: str
    title: str
    model: str
    system: str | None
    turns: list[TurnOut]


class DeleteResult(BaseModel):
    conversation_id: str
    deleted: bool


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _summary(item: ConversationSummary) -> SummaryOut:
    return SummaryOut(conversation_id=item.id, title=item.title, model=item.model, turns=item.turns,
                      last_used=_iso(item.updated_at))


def _transcript(conversation: Conversation) -> TranscriptResult:
    summary = conversation.summary
    return TranscriptResult(
        conversation_id=summary.id, title=summary.title, model=summary.model, system=conversation.system,
        turns=[TurnOut(role=turn.role, content=turn.content) for turn in conversation.turns],
    )


def _ok(text: str, structured: BaseModel) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=structured.model_dump(mode="json"))


async def _list(state: AppState, principal: str, limit: int) -> ListResult:
    await state.conversations.purge_expired()
    try:
        found = await state.conversations.store.list(principal, limit=limit)
    except StorageError as exc:
        raise StorageFailure(str(exc)) from None
    return ListResult(conversations=[_summary(item) for item in found])


async def _read(state: AppState, principal: str, conversation_id: str) -> TranscriptResult:
    conversation = await state.conversations.get(principal, conversation_id)
    if conversation is None:
        raise InvalidArguments(f"no conversation {conversation_id!r} (expired, deleted or never created)")
    return _transcript(conversation)


def register_conversation_tools(server: KimiServer) -> None:
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True)

    @server.tool(description="List your stored Kimi conversations (id, title, model, turns, last used), "
                             "most recent first. Continue one by passing its id to kimi_chat.",
                 annotations=read_only.model_copy(update={"title": "List Kimi conversations"}),
                 structured_output=True)
    async def kimi_list_conversations(
        ctx: Context[AppState, Any], limit: Limit = 20
    ) -> Annotated[CallToolResult, ListResult]:
        state = ctx.request_context.lifespan_context
        try:
            listed = await _list(state, principal_of(ctx), limit)
        except KimiError as error:
            return error_result(error)
        lines = [f"{c.conversation_id}  {c.last_used}  {c.turns} turns  {c.model}  {c.title}"
                 for c in listed.conversations]
        return _ok("\n".join(lines) or "No stored conversations.", listed)

    @server.tool(description="Read one stored Kimi conversation: its system prompt and every turn.",
                 annotations=read_only.model_copy(update={"title": "Read a Kimi conversation"}),
                 structured_output=True)
    async def kimi_read_conversation(
        ctx: Context[AppState, Any], conversation_id: ConversationIdArg
    ) -> Annotated[CallToolResult, TranscriptResult]:
        state = ctx.request_context.lifespan_context
        try:
            transcript = await _read(state, principal_of(ctx), conversation_id)
        except KimiError as error:
            return error_result(error)
        text = "\n\n".join(f"{turn.role}: {turn.content}" for turn in transcript.turns)
        return _ok(text, transcript)

    @server.tool(description="Delete one stored Kimi conversation for good.",
                 annotations=ToolAnnotations(title="Delete a Kimi conversation", read_only_hint=False,
                                             destructive_hint=True, idempotent_hint=True, open_world_hint=False),
                 structured_output=True)
    async def kimi_delete_conversation(
        ctx: Context[AppState, Any], conversation_id: ConversationIdArg
    ) -> Annotated[CallToolResult, DeleteResult]:
        state = ctx.request_context.lifespan_context
        try:
            deleted = await state.conversations.store.delete(principal_of(ctx), conversation_id)
        except StorageError as exc:
            return error_result(StorageFailure(str(exc)))
        result = DeleteResult(conversation_id=conversation_id, deleted=deleted)
        return _ok(f"Deleted {conversation_id}." if deleted else f"No conversation {conversation_id}.", result)

    async def conversations_resource(ctx: Context[AppState, Any]) -> str:
        state = ctx.request_context.lifespan_context
        try:
            listed = await _list(state, principal_of(ctx), 500)
        except KimiError as error:
            raise ResourceError(error.message) from None
        return json.dumps(listed.model_dump(mode="json"), indent=2, ensure_ascii=False)

    server.add_context_resource(
        "kimi://conversations", conversations_resource, name="conversations", mime_type="application/json",
        description="Your stored Kimi conversations: id, title, model, turns, last used.",
    )

    @server.resource("kimi://conversations/{conversation_id}", name="conversation", mime_type="application/json",
                     description="One stored Kimi conversation's transcript.")
    async def conversation_resource(conversation_id: str, ctx: Context[AppState, Any]) -> str:
        state = ctx.request_context.lifespan_context
        try:
            transcript = await _read(state, principal_of(ctx), conversation_id)
        except KimiError as error:
            raise ResourceError(error.message) from None
        return json.dumps(transcript.model_dump(mode="json"), indent=2, ensure_ascii=False)

"""Tools and resources to list, read and delete stored conversations.

Tools, because most hosts' models cannot read resources on their own; resources too, for hosts
that show them to their user. Every lookup is scoped to the caller's principal; failures are
raised as `KimiError` and become error results (or resource errors) in `KimiServer`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from ..prices import format_usd
from ..store import Conversation, ConversationSummary, Totals
from .context import Ctx, principal_of, tools_of

__all__ = ["LIST_RESOURCE", "list_resource", "register_conversation_tools"]

LIST_RESOURCE = {"uri": "kimi://conversations", "name": "conversations", "mime_type": "application/json",
                 "description": "Your stored Kimi conversations: id, title, model, turns, last used, token "
                                "totals, estimated cost."}

ConversationIdArg = Annotated[str, Field(min_length=1, max_length=200, description="The conversation's id.")]
Limit = Annotated[int, Field(ge=1, le=500, description="How many conversations, most recently used first.")]


class TotalsOut(BaseModel):
    """What the conversation's calls used, summed (turns pruned from storage still count)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = Field(description="Of prompt_tokens, those read from Kimi's cache.")
    cost_estimate_usd: float | None = Field(
        description="ESTIMATED total cost in US dollars at the price table's figures (not a bill: Ace publishes no "
                    "prices); leaves out unpriced_calls; null when no call had a price.")
    unpriced_calls: int = Field(description="Calls whose model has no price, so no cost is counted for them.")


class SummaryOut(BaseModel):
    conversation_id: str
    title: str = Field(description="The conversation's first prompt, shortened.")
    model: str
    turns: int
    last_used: str = Field(description="When it was last used (UTC, ISO 8601).")
    totals: TotalsOut


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
    totals: TotalsOut


class DeleteResult(BaseModel):
    conversation_id: str
    deleted: bool


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _totals(totals: Totals) -> TotalsOut:
    unknown = totals.cost_usd == 0 and totals.unpriced_calls > 0  # nothing priced: no figure at all
    return TotalsOut(prompt_tokens=totals.prompt_tokens, completion_tokens=totals.completion_tokens,
                     cached_tokens=totals.cached_tokens, cost_estimate_usd=None if unknown else totals.cost_usd,
                     unpriced_calls=totals.unpriced_calls)


def _totals_line(totals: TotalsOut) -> str:
    """The totals in words: tokens, and the estimated cost (or why there is none)."""
    cost = "no price for its model" if totals.cost_estimate_usd is None else (
        f"estimated cost {format_usd(totals.cost_estimate_usd)}"
        + (f" (without {totals.unpriced_calls} unpriced calls)" if totals.unpriced_calls else ""))
    return (f"{totals.prompt_tokens:,} prompt tokens ({totals.cached_tokens:,} cached), "
            f"{totals.completion_tokens:,} completion tokens; {cost}")


def _summary(item: ConversationSummary) -> SummaryOut:
    return SummaryOut(conversation_id=item.id, title=item.title, model=item.model, turns=item.turns,
                      last_used=_iso(item.updated_at), totals=_totals(item.totals))


def _transcript(conversation: Conversation) -> TranscriptResult:
    summary = conversation.summary
    return TranscriptResult(
        conversation_id=summary.id, title=summary.title, model=summary.model, system=conversation.system,
        turns=[TurnOut(role=turn.role, content=turn.content) for turn in conversation.turns],
        totals=_totals(summary.totals),
    )


def _cost(totals: TotalsOut) -> str:
    """The list's short cost column: an estimate, marked so."""
    return "cost n/a" if totals.cost_estimate_usd is None else f"~{format_usd(totals.cost_estimate_usd)} est."


def _ok(text: str, structured: BaseModel) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=structured.model_dump(mode="json"))


async def _list(ctx: Ctx, limit: int) -> ListResult:
    found = await tools_of(ctx).list_conversations(principal_of(ctx), limit)
    return ListResult(conversations=[_summary(item) for item in found])


async def _read(ctx: Ctx, conversation_id: str) -> TranscriptResult:
    return _transcript(await tools_of(ctx).read_conversation(principal_of(ctx), conversation_id))


async def list_resource(ctx: Ctx) -> str:
    """`kimi://conversations`: a fixed URI whose content depends on the caller (see `add_context_resource`)."""
    listed = await _list(ctx, 500)
    return json.dumps(listed.model_dump(mode="json"), indent=2, ensure_ascii=False)


def register_conversation_tools(server: MCPServer[Any]) -> None:
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True)

    @server.tool(description="List your stored Kimi conversations (id, title, model, turns, last used, tokens "
                             "and estimated cost), most recent first. Continue one by passing its id to kimi_chat.",
                 annotations=read_only.model_copy(update={"title": "List Kimi conversations"}),
                 structured_output=True)
    async def kimi_list_conversations(ctx: Ctx, limit: Limit = 20) -> Annotated[CallToolResult, ListResult]:
        listed = await _list(ctx, limit)
        lines = [f"{c.conversation_id}  {c.last_used}  {c.turns} turns  {c.model}  {_cost(c.totals)}  {c.title}"
                 for c in listed.conversations]
        return _ok("\n".join(lines) or "No stored conversations.", listed)

    @server.tool(description="Read one stored Kimi conversation: its system prompt, every turn, and its "
                             "token totals and estimated cost.",
                 annotations=read_only.model_copy(update={"title": "Read a Kimi conversation"}),
                 structured_output=True)
    async def kimi_read_conversation(
        ctx: Ctx, conversation_id: ConversationIdArg
    ) -> Annotated[CallToolResult, TranscriptResult]:
        transcript = await _read(ctx, conversation_id)
        text = "\n\n".join(f"{turn.role}: {turn.content}" for turn in transcript.turns)
        return _ok(f"{text}\n\n[totals: {_totals_line(transcript.totals)}]", transcript)

    @server.tool(description="Delete one stored Kimi conversation for good.",
                 annotations=ToolAnnotations(title="Delete a Kimi conversation", read_only_hint=False,
                                             destructive_hint=True, idempotent_hint=True, open_world_hint=False),
                 structured_output=True)
    async def kimi_delete_conversation(
        ctx: Ctx, conversation_id: ConversationIdArg
    ) -> Annotated[CallToolResult, DeleteResult]:
        deleted = await tools_of(ctx).delete_conversation(principal_of(ctx), conversation_id)
        result = DeleteResult(conversation_id=conversation_id, deleted=deleted)
        return _ok(f"Deleted {conversation_id}." if deleted else f"No conversation {conversation_id}.", result)

    @server.resource("kimi://conversations/{conversation_id}", name="conversation", mime_type="application/json",
                     description="One stored Kimi conversation's transcript.")
    async def conversation_resource(conversation_id: str, ctx: Ctx) -> str:
        transcript = await _read(ctx, conversation_id)
        return json.dumps(transcript.model_dump(mode="json"), indent=2, ensure_ascii=False)

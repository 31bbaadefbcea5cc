"""What a host's model gets back: typed results, and `error_result`, the one map from an error to a
tool result (called only by `KimiServer.call_tool`)."""

from __future__ import annotations

from typing import Any

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from ..chat import ChatHandover, ChatTurn, Completed, Finished, JsonOutcome, Relayed, empty_answer_notice
from ..errors import KimiError
from ..redaction import redact, redact_value
from ..upstream import Usage

__all__ = [
    "ERROR_SCHEMA", "ChatResult", "JsonResult", "UsageOut", "chat_result", "error_result", "handover_result",
    "json_result", "partial_result", "redact_result",
]

MAX_REASONING_CHARS = 20_000

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ToolError",
    "description": "An error result (isError: true): what happened and what to do.",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["kind", "message", "retryable", "hint"],
        "properties": {
            "kind": {"type": "string"},
            "status": {"type": ["integer", "null"]},
            "code": {"type": ["string", "null"]},
            "message": {"type": "string"},
            "retryable": {"type": "boolean"},
            "retry_after_s": {"type": ["number", "null"]},
            "trace_id": {"type": ["string", "null"]},
            "hint": {"type": "string"},
        },
    }},
}


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int = Field(description="Answer tokens, reasoning included.")
    total_tokens: int
    reasoning_tokens: int | None = Field(
        default=None, description="The part of completion_tokens spent thinking; null when the upstream does not say.")
    cached_tokens: int | None = Field(
        default=None, description="Prompt tokens read from Kimi's cache (cheaper); null when the upstream doesn't say.")


COST_DESCRIPTION = (
    "ESTIMATED cost of this call in US dollars, from a price table (Moonshot list prices, dated; or the "
    "operator's KIMI_PRICES table): not a bill, since Ace publishes no prices. Null when the model has no price."
)


class AdjustedOut(BaseModel):
    param: str
    requested: float
    used: float | None = Field(description="The value sent; null when the model fixes it and none is sent.")
    reason: str


class ChatResult(BaseModel):
    """kimi_chat's structured result."""

    text: str = Field(description="Kimi's answer (the same text as the content block).")
    model: str
    finish_reason: str | None = Field(
        description="stop (finished), length (max_tokens reached), content_filter, or deadline (incomplete)."
    )
    usage: UsageOut
    cost_estimate_usd: float | None = Field(default=None, description=COST_DESCRIPTION)
    id: str = Field(description="The upstream completion id.")
    attempts: int = Field(description="Upstream attempts this call took (retries included).")
    adjusted: list[AdjustedOut] = Field(
        default_factory=list[AdjustedOut],
        description="Sampling values changed because the model accepts no other.",
    )
    notice: str | None = Field(default=None, description="Something the caller should know (e.g. empty answer).")
    reasoning: str | None = Field(default=None, description="The model's reasoning, when include_reasoning.")
    reasoning_truncated: bool | None = None
    conversation_id: str | None = Field(
        default=None, description="Pass back as conversation_id to continue this conversation."
    )
    answer_id: str | None = Field(
        default=None, description="With finish_reason 'deadline': pass back with resume=true for this answer's rest."
    )
    offset: int = Field(
        default=0, description="Characters of this answer returned by earlier (incomplete) results; text is the rest."
    )
    dropped_turns: int = Field(default=0, description="Oldest stored turns left out to fit the context window.")
    pruned_turns: int = Field(default=0, description="Oldest turns deleted from storage by the turn/size limits.")


class JsonResult(BaseModel):
    """kimi_json's structured result."""

    value: dict[str, Any] | list[Any] | str | int | float | bool | None = Field(
        description="The parsed JSON answer."
    )
    model: str
    usage: UsageOut
    cost_estimate_usd: float | None = Field(default=None, description=COST_DESCRIPTION + " Includes a repair.")
    attempts: int = Field(description="Answers it took to get valid JSON (1, or 2 after one repair).")
    upstream_attempts: int = Field(description="Upstream attempts of the final answer (retries included).")
    id: str
    adjusted: list[AdjustedOut] = Field(default_factory=list[AdjustedOut])


def usage_out(usage: Usage) -> UsageOut:
    return UsageOut(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cached_tokens=usage.cached_tokens,
    )


def _adjusted(completed: Completed) -> list[AdjustedOut]:
    return [AdjustedOut(param=a.param, requested=a.requested, used=a.used, reason=a.reason)
            for a in completed.adjustments]


def _result(text: str, structured: BaseModel) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured.model_dump(mode="json"),
    )


def chat_result(turn: ChatTurn, *, include_reasoning: bool, offset: int = 0) -> CallToolResult:
    """A finished answer (from `offset` on, when earlier pieces were already handed over)."""
    completed = turn.completed
    reply = completed.reply
    notes = [note for note in (
        empty_answer_notice(reply, completed.request.model.thinks(completed.request.thinking)),
        *turn.notices,
    ) if note]
    if completed.adjustments:
        changed = "; ".join(f"{a.param} {a.requested:g} -> {'not sent' if a.used is None else format(a.used, 'g')} "
                            f"({a.reason})" for a in completed.adjustments)
        notes.append(f"Adjusted: {changed}.")
    notice = " ".join(notes) or None
    reasoning = reply.reasoning if include_reasoning else None
    text = reply.text[offset:]
    structured = ChatResult(
        text=text,
        model=reply.model,
        finish_reason=reply.finish_reason,
        usage=usage_out(reply.usage),
        cost_estimate_usd=completed.cost_usd,
        id=reply.id,
        attempts=completed.attempts,
        adjusted=_adjusted(completed),
        notice=notice,
        reasoning=reasoning[:MAX_REASONING_CHARS] if reasoning is not None else None,
        reasoning_truncated=(len(reasoning) > MAX_REASONING_CHARS) if reasoning is not None else None,
        conversation_id=turn.conversation_id or None,
        offset=offset,
        dropped_turns=turn.dropped_turns,
        pruned_turns=turn.pruned_turns,
    )
    shown = text if text.strip() or notice is None else f"[{notice}]"
    # Many agent frameworks (openai-agents, LangChain, mcp-use, smolagents) show the model only the
    # first text block: what it must act on goes there. pydantic-ai shows the structured result.
    if not turn.conversation_id:  # store: false, or KIMI_STORE=none: nothing to continue
        return _result(f"{shown}\n\n[not stored]", structured)
    return _result(f"{shown}\n\n[conversation_id: {turn.conversation_id}]", structured)


def partial_result(conversation_id: str, piece: str, offset: int, model: str, answer_id: str) -> CallToolResult:
    """An answer still being written at the soft deadline: what has arrived, and how to get the rest."""
    instruction = (
        f"Incomplete: the answer is not finished yet. To get the rest, call kimi_chat with "
        f'conversation_id="{conversation_id}", answer_id="{answer_id}" and resume=true.'
    )
    structured = ChatResult(
        text=piece,
        model=model,
        finish_reason="deadline",
        usage=UsageOut(prompt_tokens=0, completion_tokens=0, total_tokens=0),
        id="",
        attempts=1,
        notice=instruction,
        conversation_id=conversation_id,
        answer_id=answer_id,
        offset=offset,
    )
    return _result(f"{piece}\n\n[{instruction}]" if piece else f"[{instruction}]", structured)


def relayed_result(relayed: Relayed) -> CallToolResult:
    """The rest of an answer another server process finished (read from the shared store: its
    figures as recorded, no reasoning)."""
    notice = "Finished by another server process sharing the conversation store; the answer is stored."
    usage = relayed.usage
    structured = ChatResult(
        text=relayed.piece,
        model=relayed.model,
        finish_reason=relayed.finish_reason or "stop",
        usage=UsageOut(prompt_tokens=usage.get("prompt_tokens") or 0,
                       completion_tokens=usage.get("completion_tokens") or 0,
                       total_tokens=usage.get("total_tokens") or 0,
                       reasoning_tokens=usage.get("reasoning_tokens"), cached_tokens=usage.get("cached_tokens")),
        cost_estimate_usd=relayed.cost_usd,
        id="",
        attempts=1,
        notice=notice,
        conversation_id=relayed.conversation_id,
        answer_id=relayed.answer_id,
        offset=relayed.offset,
    )
    return _result(f"{relayed.piece}\n\n[conversation_id: {relayed.conversation_id}]", structured)


def handover_result(handover: ChatHandover, *, include_reasoning: bool) -> CallToolResult:
    """kimi_chat's result: the whole answer, or the piece that arrived before the soft deadline."""
    if isinstance(handover, Finished):
        return chat_result(handover.turn, include_reasoning=include_reasoning, offset=handover.offset)
    if isinstance(handover, Relayed):
        return relayed_result(handover)
    return partial_result(handover.conversation_id, handover.piece, handover.offset, handover.model,
                          handover.answer_id)


def json_result(outcome: JsonOutcome) -> CallToolResult:
    completed = outcome.completed
    structured = JsonResult(
        value=outcome.value,
        model=completed.reply.model,
        usage=usage_out(outcome.usage),
        cost_estimate_usd=outcome.cost_usd,
        attempts=outcome.json_attempts,
        upstream_attempts=completed.attempts,
        id=completed.reply.id,
        adjusted=_adjusted(completed),
    )
    return _result(outcome.text, structured)


def error_result(error: KimiError) -> CallToolResult:
    """The one place an error becomes a tool result: a readable line plus `{"error": {...}}`
    (redacted with every other result by `redact_result`)."""
    return CallToolResult(
        content=[TextContent(type="text", text=error.line())],
        structured_content={"error": error.payload()},
        is_error=True,
    )


def redact_result(result: CallToolResult, secrets: tuple[str, ...]) -> CallToolResult:
    """Every result leaves through here: even an answer that repeats the token shows it masked."""
    if not secrets:
        return result
    content = [TextContent(type="text", text=redact(block.text, secrets)) if isinstance(block, TextContent) else block
               for block in result.content]
    structured = redact_value(result.structured_content, secrets)
    return result.model_copy(update={"content": content, "structured_content": structured})

"""Tool argument types, with the descriptions a host's model reads when it fills them in."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "AnswerId",
    "ConversationId",
    "Files",
    "HistoryItem",
    "Images",
    "IncludeReasoning",
    "MaxTokens",
    "Messages",
    "ModelArg",
    "Prompt",
    "Resume",
    "SchemaArg",
    "Stop",
    "System",
    "Temperature",
    "ThinkingArg",
    "TopP",
]


class HistoryItem(BaseModel):
    """One earlier turn of a caller-managed conversation."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=2_000_000)


Prompt = Annotated[str | None, Field(description="Your message to Kimi (the final user turn).")]
System = Annotated[str | None, Field(description="Optional system prompt: Kimi's role, rules and style.")]
Messages = Annotated[
    list[HistoryItem] | None,
    Field(
        description="Optional earlier turns you manage yourself, oldest first; `prompt` (if given) is "
        "appended as the last user turn. Not needed with conversation_id: the server keeps the history.",
        max_length=1000,
    ),
]
ModelArg = Annotated[str | None, Field(description="Model id (see kimi://models). Default: the server's default.")]
MaxTokens = Annotated[int | None, Field(ge=1, le=1_000_000, description=(
    "Upper bound on generated tokens; thinking models spend reasoning tokens from it too (use >= 16000)."))]
Temperature = Annotated[float | None, Field(ge=0, le=2, description=(
    "Sampling temperature 0-2 (lower = more focused). Some models accept only fixed values; "
    "the server then uses the allowed one and reports it under `adjusted`."))]
TopP = Annotated[float | None, Field(ge=0, le=1, description="Nucleus sampling 0-1.")]
Stop = Annotated[
    str | list[str] | None, Field(description="Up to 4 strings that end the answer when generated.")
]
ThinkingArg = Annotated[Literal["enabled", "disabled"] | None, Field(description=(
    "On models that can switch it (thinking_switch in kimi://models, e.g. kimi-k2.6): enabled (their "
    "default, deeper and slower) or disabled (fast). Refused on other models."))]
ReasoningEffort = Annotated[Literal["low", "high", "max"] | None, Field(description=(
    "K3 models only (reasoning_efforts in kimi://models): how hard to think; the upstream's default is max."))]
IncludeReasoning = Annotated[bool, Field(description=(
    "Add the model's reasoning to the structured result (the text stays the answer alone)."))]
SchemaArg = Annotated[dict[str, Any] | str | None, Field(description=(
    "Optional JSON Schema the answer must match, as a JSON string (an object is accepted too); "
    "a mismatching answer is repaired once."))]
Files = Annotated[list[Annotated[str, Field(max_length=4_096)]] | None, Field(max_length=100, description=(
    "Local text files for Kimi to read (paths; relative ones start at the first allowed directory): "
    "each file's text is added after your prompt under a header naming it. Only files inside the "
    "directories the server and your roots allow; at most 20 files, 512 KiB each, 1 MiB in all."))]
Images = Annotated[list[str] | None, Field(max_length=100, description=(
    "Images for Kimi to look at: local PNG, JPEG, WebP or GIF paths (as for files) or "
    "data:image/...;base64,... URLs; at most 8, 4 MiB each, 12 MiB in all. Only models with vision "
    "(see kimi://models) take them."))]
ConversationId = Annotated[str | None, Field(max_length=200, description=(
    "Continue a stored conversation: pass the conversation_id of an earlier kimi_chat result. "
    "Leave out to start a new conversation."))]
AnswerId = Annotated[str | None, Field(max_length=100, description=(
    "With resume=true: the answer_id of the incomplete result to continue (needed when several are)."))]
StoreArg = Annotated[bool, Field(description=(
    "false: keep no conversation (nothing stored or read, no conversation_id to continue)."))]
Resume = Annotated[bool, Field(description=(
    "With conversation_id: fetch the rest of an answer that was returned incomplete "
    "(finish_reason 'deadline'). No prompt is needed."))]

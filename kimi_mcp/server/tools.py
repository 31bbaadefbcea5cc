"""kimi_chat and kimi_json, and the model resources: arguments in, one `ChatTools` call, a result out.

A `KimiError` raised here is not caught: `KimiServer.call_tool` turns it into the error result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp_types import CallToolResult, ToolAnnotations

from ..catalogue import Catalogue
from ..chat import ChatArgs, ReadScope
from ..upstream import Message
from .arguments import (
    AnswerId,
    ConversationId,
    Files,
    HistoryItem,
    Images,
    IncludeReasoning,
    MaxTokens,
    Messages,
    ModelArg,
    Prompt,
    ReasoningEffort,
    Resume,
    SchemaArg,
    Stop,
    StoreArg,
    System,
    Temperature,
    ThinkingArg,
    TopP,
)
from .context import Ctx, principal_of, progress_sink, tools_of
from .results import ChatResult, JsonResult, handover_result, json_result
from .roots import ClientRoots, read_scope
from .tasks import current_task

__all__ = ["chat_args", "register_kimi_tools", "register_model_resources"]


def chat_args(
    prompt: str | None, system: str | None, messages: Sequence[HistoryItem] | None, model: str | None,
    max_tokens: int | None, temperature: float | None, top_p: float | None,
    stop: str | list[str] | None, thinking: Literal["enabled", "disabled"] | None,
    reasoning_effort: str | None = None, *, files: Sequence[str] | None = None,
    images: Sequence[str] | None = None, scope: ReadScope | None = None,
) -> ChatArgs:
    """The chat layer's arguments from the tool's (shared by kimi_chat and kimi_json)."""
    return ChatArgs(
        prompt=prompt, system=system, model=model, max_tokens=max_tokens, temperature=temperature,
        top_p=top_p, stop=stop, thinking=thinking, reasoning_effort=reasoning_effort,
        messages=tuple(Message(m.role, m.content) for m in messages or ()),
        files=tuple(files or ()), images=tuple(images or ()), read_scope=scope or ReadScope(),
    )


def register_kimi_tools(server: MCPServer[Any], catalogue: Catalogue, default_model: str,
                        secrets: tuple[str, ...], operator_dirs: tuple[Path, ...] = ()) -> None:
    """`operator_dirs`: where the operator lets `files` and `images` be read (see chat.attachments)."""
    annotations = ToolAnnotations(read_only_hint=True, open_world_hint=True, destructive_hint=False,
                                  idempotent_hint=False)

    @server.tool(
        description=(
            "Ask Moonshot's Kimi and get its answer as text. Use it for a second opinion, a review, long "
            "documents (up to 1M-token context), Chinese-language work, or another model's view. Give `prompt` "
            "(and optionally `system`). Every result ends with its conversation_id: pass it back to continue "
            "the conversation. A result marked incomplete (finish_reason 'deadline') is not finished: call "
            "again with the same conversation_id, its answer_id and resume=true for the rest. "
            f"Default model: {default_model}; read the kimi://models resource for the others."
        ),
        annotations=annotations.model_copy(update={"title": "Chat with Kimi"}),
        structured_output=True,
    )
    async def kimi_chat(
        ctx: Ctx,
        prompt: Prompt = None, system: System = None, messages: Messages = None, model: ModelArg = None,
        max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, stop: Stop = None,
        thinking: ThinkingArg = None, reasoning_effort: ReasoningEffort = None,
        include_reasoning: IncludeReasoning = False,
        conversation_id: ConversationId = None, resume: Resume = False, answer_id: AnswerId = None,
        files: Files = None, images: Images = None, store: StoreArg = True, roots: ClientRoots = None,
    ) -> Annotated[CallToolResult, ChatResult]:
        tools, principal, sink = tools_of(ctx), principal_of(ctx), progress_sink(ctx, secrets)
        if resume:
            handover = await tools.resume(principal, conversation_id, sink, answer_id)
        else:
            args = chat_args(prompt, system, messages, model, max_tokens, temperature, top_p, stop, thinking,
                             reasoning_effort, files=files, images=images, scope=read_scope(operator_dirs, roots))
            handover = await tools.chat(principal, args, conversation_id=conversation_id, sink=sink,
                                        task=current_task(), store=store)
        return handover_result(handover, include_reasoning=include_reasoning)

    @server.tool(
        description=(
            "Ask Kimi for an answer as JSON (JSON mode), optionally matching a JSON Schema you give. "
            "The reply is parsed and checked; a bad reply is repaired once, then reported as invalid_json. "
            "Use it when you need data you can use in code: extraction, classification, structured plans."
        ),
        annotations=annotations.model_copy(update={"title": "Kimi JSON answer"}),
        structured_output=True,
    )
    async def kimi_json(
        ctx: Ctx,
        prompt: Prompt = None, system: System = None, messages: Messages = None, model: ModelArg = None,
        max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, stop: Stop = None,
        thinking: ThinkingArg = None, reasoning_effort: ReasoningEffort = None, schema: SchemaArg = None,
        files: Files = None, images: Images = None, roots: ClientRoots = None,
    ) -> Annotated[CallToolResult, JsonResult]:
        args = chat_args(prompt, system, messages, model, max_tokens, temperature, top_p, stop, thinking,
                         reasoning_effort, files=files, images=images, scope=read_scope(operator_dirs, roots))
        return json_result(await tools_of(ctx).json(args, schema, progress_sink(ctx, secrets), task=current_task()))


def register_model_resources(server: MCPServer[Any], catalogue: Catalogue, default_model: str) -> None:
    @server.resource("kimi://models", name="models", mime_type="application/json",
                     description="The Kimi models this server accepts: context, thinking, sampling rules, vision, "
                                 "reasoning effort, status (current or reported retired), default.")
    def models_resource() -> str:
        return json.dumps({
            "default_model": default_model,
            "models": [m.to_dict(default_model) for m in catalogue],
        }, indent=2)

    @server.resource("kimi://models/{model_id}", name="model", mime_type="application/json",
                     description="One Kimi model: description, context window, thinking, sampling rules.")
    def model_resource(model_id: str) -> str:
        info = catalogue.get(model_id)
        if info is None:
            raise ResourceError(f"unknown model {model_id!r}; valid ids: {', '.join(catalogue.ids)}")
        return json.dumps(info.to_dict(default_model), indent=2)

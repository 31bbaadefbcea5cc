"""The MCP wiring: the server, its lifespan, and the two Kimi tools plus the model resources.

Thin on purpose: tools hand their arguments to the chat layer and turn the outcome (or the
`KimiError`) into a tool result. kimi_chat's flow lives in `chat_calls`, the conversation tools
in `conversation_tools`, the shared state in `state`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.server.mcpserver.resources import FunctionResource
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, GetPromptResult, InputRequiredResult, ToolAnnotations
from mcp_types import Tool as MCPTool
from pydantic import AnyUrl, ValidationError

from . import __version__
from .arguments import (
    ConversationId,
    IncludeReasoning,
    MaxTokens,
    Messages,
    ModelArg,
    Prompt,
    Resume,
    SchemaArg,
    Stop,
    System,
    Temperature,
    ThinkingArg,
    TopP,
)
from .catalogue import CATALOGUE, Catalogue
from .chat_calls import chat_args, progress_sink, resume_chat, start_chat
from .conversation_tools import register_conversation_tools
from .errors import InternalError, InvalidArguments, KimiError
from .json_mode import run_json
from .progress import ProgressThrottle
from .prompts import register_prompts
from .results import (
    ERROR_SCHEMA,
    ChatResult,
    JsonResult,
    error_result,
    json_result,
    redact_result,
)
from .settings import Settings
from .state import AppState, open_state

__all__ = ["KimiServer", "create_server"]

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "kimi-mcp gives you Moonshot's Kimi models. Use kimi_chat for a second opinion, a long-context "
    "read, Chinese-language work or a different model's view; results carry a conversation_id to "
    "continue the conversation. Use kimi_json when you need an answer as JSON you can use in code. "
    "Read kimi://models to choose a model."
)


ContextReader = Callable[[Context[AppState, Any]], Awaitable[str]]


class KimiServer(MCPServer[AppState]):
    """MCPServer whose tool failures come back as structured tool errors, and whose static
    resources may depend on the caller (the SDK gives static resources no context)."""

    secrets: tuple[str, ...] = ()
    context_readers: dict[str, ContextReader]
    catalogue: Catalogue
    shared_state: AppState | None = None

    def add_context_resource(self, uri: str, reader: ContextReader, **resource: Any) -> None:
        """A fixed-URI resource whose content depends on who reads it (e.g. their conversations)."""

        def unreachable() -> str:
            raise ResourceError(f"{uri} needs a request context")

        self.context_readers[uri] = reader
        self.add_resource(FunctionResource.from_function(unreachable, uri=uri, **resource))

    async def list_tools(self) -> list[MCPTool]:
        """Each output schema also admits the `{"error": {...}}` shape of an error result, so clients
        that check structured content even when `isError` is true (the Inspector does) accept it."""
        return [_admit_errors(tool) for tool in await super().list_tools()]

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Context[AppState, Any] | None = None
    ) -> GetPromptResult | InputRequiredResult:
        """A missing argument or unknown prompt is the caller's mistake (-32602), not an internal error."""
        try:
            return await super().get_prompt(name, arguments, context)
        except ValueError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[AppState, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        reader = self.context_readers.get(str(uri))
        if reader is None or context is None:
            return await super().read_resource(uri, context)
        return [ReadResourceContents(content=await reader(context), mime_type="application/json")]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[AppState, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            result = await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            log.exception("tool %s failed unexpectedly", name)
            result = error_result(InternalError(f"{name} failed unexpectedly"))
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                problems = "; ".join(_describe(err) for err in exc.__cause__.errors())
                result = error_result(InvalidArguments(f"invalid arguments for {name}: {problems}"))
            else:
                result = error_result(InvalidArguments(str(exc)))
        # The one exit of every tool result: the token (and client tokens) masked, whatever the path.
        return redact_result(result, self.secrets) if isinstance(result, CallToolResult) else result


def _admit_errors(tool: MCPTool) -> MCPTool:
    schema = tool.output_schema
    if not schema or "error" in schema.get("properties", {}):
        return tool
    success = {k: v for k, v in schema.items() if k != "$defs"}
    combined: dict[str, Any] = {"type": "object", "anyOf": [success, ERROR_SCHEMA]}
    if "$defs" in schema:
        combined["$defs"] = schema["$defs"]
    return tool.model_copy(update={"output_schema": combined})


def _describe(err: Any) -> str:
    where = ".".join(str(part) for part in err.get("loc", ())) or "arguments"
    return f"{where}: {err.get('msg', 'invalid')}"


def _describe_models(catalogue: Catalogue, default_model: str) -> str:
    return "\n".join(
        f"- {m.id}{' (default)' if m.id == default_model else ''}: {m.description}" for m in catalogue
    )


def _lifespan(settings: Settings, catalogue: Catalogue) -> Any:
    """The SDK enters this per connection on some transports (SSE): share the process's state when
    the HTTP runner opened one, else open it here (stdio and in-memory: once per process)."""

    @asynccontextmanager
    async def lifespan(server: MCPServer[AppState]) -> AsyncIterator[AppState]:
        shared = getattr(server, "shared_state", None)
        if shared is not None:
            yield shared
            return
        async with open_state(settings, catalogue) as state:
            yield state

    return lifespan


def create_server(settings: Settings) -> KimiServer:
    """Build the server from settings; nothing is opened until the lifespan starts."""
    catalogue = Catalogue(CATALOGUE, settings.extra_models)
    server = KimiServer(
        "kimi-mcp", version=__version__, instructions=INSTRUCTIONS, lifespan=_lifespan(settings, catalogue),
        log_level=settings.log_level,  # type: ignore[arg-type]
    )
    server.secrets = settings.secrets()
    server.context_readers = {}
    server.catalogue = catalogue
    annotations = ToolAnnotations(read_only_hint=True, open_world_hint=True, destructive_hint=False,
                                  idempotent_hint=False)

    @server.tool(
        description=(
            "Ask Moonshot's Kimi and get its answer as text. Use it for a second opinion, a review, long "
            "documents (256K-token context), Chinese-language work, or another model's view. Give `prompt` "
            "(and optionally `system`). Every result has a conversation_id: pass it back to continue the "
            "conversation. A result with finish_reason 'deadline' is incomplete: call again with the same "
            "conversation_id and resume=true for the rest.\n"
            f"Models:\n{_describe_models(catalogue, settings.default_model)}"
        ),
        annotations=annotations.model_copy(update={"title": "Chat with Kimi"}),
        structured_output=True,
    )
    async def kimi_chat(
        ctx: Context[AppState, Any],
        prompt: Prompt = None, system: System = None, messages: Messages = None, model: ModelArg = None,
        max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, stop: Stop = None,
        thinking: ThinkingArg = None, include_reasoning: IncludeReasoning = False,
        conversation_id: ConversationId = None, resume: Resume = False,
    ) -> Annotated[CallToolResult, ChatResult]:
        state = ctx.request_context.lifespan_context
        try:
            if resume:
                return await resume_chat(state, ctx, conversation_id, include_reasoning)
            args = chat_args(prompt, system, messages, model, max_tokens, temperature, top_p, stop, thinking)
            return await start_chat(state, ctx, args, conversation_id, include_reasoning)
        except KimiError as error:
            return error_result(error)

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
        ctx: Context[AppState, Any],
        prompt: Prompt = None, system: System = None, messages: Messages = None, model: ModelArg = None,
        max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, stop: Stop = None,
        thinking: ThinkingArg = None, schema: SchemaArg = None,
    ) -> Annotated[CallToolResult, JsonResult]:
        state = ctx.request_context.lifespan_context
        args = chat_args(prompt, system, messages, model, max_tokens, temperature, top_p, stop, thinking)
        sink = progress_sink(ctx)
        async with anyio.create_task_group() as tg:  # for the throttle's held-back sends
            listener = ProgressThrottle(sink, task_group=tg) if sink is not None else None
            try:
                outcome = await run_json(state.service, args, schema, listener)
            except KimiError as error:
                return error_result(error)
            finally:
                if listener is not None:
                    listener.close()
        return json_result(outcome.value, outcome.text, outcome.completed, outcome.usage, outcome.json_attempts)

    @server.resource("kimi://models", name="models", mime_type="application/json",
                     description="The Kimi models this server accepts: context, thinking, sampling rules, default.")
    def models_resource() -> str:
        return json.dumps({
            "default_model": settings.default_model,
            "models": [m.to_dict(settings.default_model) for m in catalogue],
        }, indent=2)

    @server.resource("kimi://models/{model_id}", name="model", mime_type="application/json",
                     description="One Kimi model: description, context window, thinking, sampling rules.")
    def model_resource(model_id: str) -> str:
        info = catalogue.get(model_id)
        if info is None:
            raise ResourceError(f"unknown model {model_id!r}; valid ids: {', '.join(catalogue.ids)}")
        return json.dumps(info.to_dict(settings.default_model), indent=2)

    register_conversation_tools(server)
    register_prompts(server)
    return server

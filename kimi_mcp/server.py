"""The MCP wiring: the server, its lifespan, and the two Kimi tools plus the model resources.

Thin on purpose: tools hand their arguments to the chat layer and turn the outcome (or the
`KimiError`) into a tool result. Conversation tools live in `conversation_tools`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

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
    HistoryItem,
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
from .chat import ChatArgs, ChatService, HistoryMessage
from .conversation_tools import register_conversation_tools
from .conversations import ChatTurn, ConversationChat
from .errors import InternalError, InvalidArguments, KimiError
from .generations import Generation, Generations
from .json_mode import run_json
from .principal import principal_of
from .progress import ProgressSink, ProgressThrottle
from .prompts import register_prompts
from .results import (
    ERROR_SCHEMA,
    ChatResult,
    JsonResult,
    chat_result,
    error_result,
    json_result,
    partial_result,
    redact_result,
)
from .retry import RetryPolicy
from .settings import Settings
from .state import AppState
from .store import Limits, default_store_path, new_conversation_id, open_store
from .upstream import KimiClient, Timeouts, make_http_client

__all__ = ["AppState", "KimiServer", "create_server", "open_state"]

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
            return error_result(InternalError(f"{name} failed unexpectedly"), secrets=self.secrets)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                problems = "; ".join(_describe(err) for err in exc.__cause__.errors())
                error = InvalidArguments(f"invalid arguments for {name}: {problems}")
            else:
                error = InvalidArguments(str(exc))
            return error_result(error, secrets=self.secrets)
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


def _progress_sink(ctx: Context[AppState, Any]) -> ProgressSink | None:
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


def _args(prompt: str | None, system: str | None, messages: Sequence[HistoryItem] | None, model: str | None,
          max_tokens: int | None, temperature: float | None, top_p: float | None,
          stop: str | list[str] | None, thinking: Literal["enabled", "disabled"] | None) -> ChatArgs:
    return ChatArgs(
        prompt=prompt, system=system, model=model, max_tokens=max_tokens, temperature=temperature,
        top_p=top_p, stop=stop, thinking=thinking,
        messages=tuple(HistoryMessage(m.role, m.content) for m in messages or ()),
    )


async def _hand_over(
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


async def _model_for(state: AppState, principal: str, conversation_id: str | None, asked: str | None) -> str:
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


async def _chat(state: AppState, ctx: Context[AppState, Any], args: ChatArgs, conversation_id: str | None,
                include_reasoning: bool) -> CallToolResult:
    principal = principal_of(ctx)
    state.service.prepare(args)  # refuse bad arguments before anything starts
    cid = conversation_id or new_conversation_id()
    model = await _model_for(state, principal, conversation_id, args.model)

    async def job(generation: Generation[ChatTurn]) -> ChatTurn:
        return await state.conversations.run(principal, cid, args, continuing=conversation_id is not None,
                                             listener=generation)

    generation = state.generations.start((principal, cid), model, job)
    generation.attach(_progress_sink(ctx))
    handed_over = False
    try:
        result = await _hand_over(state, generation, cid, include_reasoning)
        handed_over = True
        return result
    finally:
        if not handed_over:  # the caller went away (cancelled): stop the upstream request too
            generation.attach(None)
            generation.scope.cancel()
            state.generations.forget(generation)


async def _resume(state: AppState, ctx: Context[AppState, Any], conversation_id: str | None,
                  include_reasoning: bool) -> CallToolResult:
    if not conversation_id:
        raise InvalidArguments("resume needs the conversation_id of the incomplete answer")
    generation = state.generations.pending((principal_of(ctx), conversation_id))
    if generation is None:
        raise InvalidArguments(
            f"nothing to resume in conversation {conversation_id!r}: its answers are complete "
            "(read them with kimi_read_conversation)"
        )
    generation.attach(_progress_sink(ctx))
    return await _hand_over(state, generation, conversation_id, include_reasoning)  # type: ignore[arg-type]


def _describe_models(catalogue: Catalogue, default_model: str) -> str:
    return "\n".join(
        f"- {m.id}{' (default)' if m.id == default_model else ''}: {m.description}" for m in catalogue
    )


@asynccontextmanager
async def open_state(settings: Settings, catalogue: Catalogue) -> AsyncIterator[AppState]:
    """The process's shared state: the pooled HTTP client, the store and the background task group."""
    timeouts = Timeouts(connect=settings.connect_timeout, first_byte=settings.first_byte_timeout,
                        idle=settings.idle_timeout, overall=settings.request_timeout)
    store = open_store(settings.store or str(default_store_path()))
    limits = Limits(max_turns=settings.max_turns, max_bytes=settings.max_conversation_bytes)
    async with make_http_client(timeouts, settings.max_concurrency) as http, anyio.create_task_group() as tg:
        client = KimiClient(http, base_url=settings.base_url, token=settings.api_token, timeouts=timeouts,
                            retry=RetryPolicy(max_retries=settings.max_retries),
                            max_concurrency=settings.max_concurrency)
        service = ChatService(client, catalogue, settings.default_model)
        conversations = ConversationChat(service, store, limits, settings.conversation_ttl_days * 86_400)
        try:
            yield AppState(service, conversations, Generations(tg), settings.soft_deadline, settings.secrets())
        finally:
            tg.cancel_scope.cancel()
            await store.close()


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
                return await _resume(state, ctx, conversation_id, include_reasoning)
            args = _args(prompt, system, messages, model, max_tokens, temperature, top_p, stop, thinking)
            return await _chat(state, ctx, args, conversation_id, include_reasoning)
        except KimiError as error:
            return error_result(error, secrets=state.secrets)

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
        args = _args(prompt, system, messages, model, max_tokens, temperature, top_p, stop, thinking)
        sink = _progress_sink(ctx)
        async with anyio.create_task_group() as tg:  # for the throttle's held-back sends
            listener = ProgressThrottle(sink, task_group=tg) if sink is not None else None
            try:
                outcome = await run_json(state.service, args, schema, listener)
            except KimiError as error:
                return error_result(error, secrets=state.secrets)
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

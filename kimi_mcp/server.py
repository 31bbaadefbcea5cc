"""The MCP wiring: tools, resources and the lifespan that owns the pooled HTTP client.

Thin on purpose: each tool checks nothing itself, hands its arguments to `ChatService` /
`run_json`, and turns the outcome (or the `KimiError`) into a tool result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from . import __version__
from .catalogue import CATALOGUE, Catalogue
from .chat import ChatArgs, ChatService, HistoryMessage
from .errors import InternalError, InvalidArguments, KimiError
from .json_mode import run_json
from .progress import ProgressSink
from .results import ChatResult, JsonResult, chat_result, error_result, json_result
from .retry import RetryPolicy
from .settings import Settings
from .upstream import KimiClient, Timeouts, make_http_client

__all__ = ["AppState", "KimiServer", "create_server"]

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "kimi-mcp gives you Moonshot's Kimi models. Use kimi_chat for a second opinion, a long-context "
    "read, Chinese-language work or a different model's view; kimi_json when you need an answer as "
    "JSON you can use in code. Read kimi://models to choose a model."
)


class HistoryItem(BaseModel):
    """One earlier turn of a caller-managed conversation."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=2_000_000)


@dataclass(frozen=True, slots=True)
class AppState:
    """What the lifespan builds once per process and every tool call shares."""

    service: ChatService
    secrets: tuple[str, ...]


class KimiServer(MCPServer[AppState]):
    """MCPServer whose argument-validation failures come back as structured `invalid_arguments`."""

    secrets: tuple[str, ...] = ()

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[AppState, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
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


def _describe(err: Any) -> str:
    where = ".".join(str(part) for part in err.get("loc", ())) or "arguments"
    return f"{where}: {err.get('msg', 'invalid')}"


def _progress_sink(ctx: Context[AppState, Any]) -> ProgressSink | None:
    """A sink when the caller asked for progress (sent a progress token), else None (no streaming)."""
    request = ctx.request_context
    meta: Any = request.meta or {}
    raw_meta: Any = (request.params or {}).get("_meta") or {}
    tokens = (meta.get("progress_token"), meta.get("progressToken"), raw_meta.get("progressToken"))
    if all(token is None for token in tokens):
        return None

    async def sink(progress: float, message: str) -> None:
        await ctx.report_progress(progress, None, message)

    return sink


# --- argument types, shared by both tools; descriptions are written for the host's model ---
Prompt = Annotated[str | None, Field(description="Your message to Kimi (the final user turn).")]
System = Annotated[str | None, Field(description="Optional system prompt: Kimi's role, rules and style.")]
Messages = Annotated[
    list[HistoryItem] | None,
    Field(description="Optional earlier turns you manage yourself, oldest first; prompt (if given) is appended "
                      "as the last user turn.", max_length=1000),
]
ModelArg = Annotated[str | None, Field(description="Model id (see kimi://models). Default: the server's default.")]
MaxTokens = Annotated[int | None, Field(ge=1, le=1_000_000, description=(
    "Upper bound on generated tokens; thinking models spend reasoning tokens from it too (use >= 16000)."))]
Temperature = Annotated[float | None, Field(ge=0, le=2, description=(
    "Sampling temperature 0-2 (lower = more focused). Some models accept only fixed values; "
    "the server then uses the allowed one and reports it under `adjusted`."))]
TopP = Annotated[float | None, Field(ge=0, le=1, description="Nucleus sampling 0-1.")]
Stop = Annotated[str | list[str] | None, Field(description="Up to 4 strings that end the answer when generated.")]
ThinkingArg = Annotated[Literal["enabled", "disabled"] | None, Field(description=(
    "kimi-k2.5 only: enabled (default, deeper and slower) or disabled (fast). Refused on other models."))]
IncludeReasoning = Annotated[bool, Field(description=(
    "Add the model's reasoning to the structured result (the text stays the answer alone)."))]
SchemaArg = Annotated[dict[str, Any] | None, Field(description=(
    "Optional JSON Schema the answer must match; a mismatching answer is repaired once."))]


def _args(prompt: str | None, system: str | None, messages: Sequence[HistoryItem] | None, model: str | None,
          max_tokens: int | None, temperature: float | None, top_p: float | None,
          stop: str | list[str] | None, thinking: Literal["enabled", "disabled"] | None) -> ChatArgs:
    return ChatArgs(
        prompt=prompt, system=system, model=model, max_tokens=max_tokens, temperature=temperature,
        top_p=top_p, stop=stop, thinking=thinking,
        messages=tuple(HistoryMessage(m.role, m.content) for m in messages or ()),
    )


def _describe_models(catalogue: Catalogue, default_model: str) -> str:
    return "\n".join(
        f"- {m.id}{' (default)' if m.id == default_model else ''}: {m.description}" for m in catalogue
    )


def create_server(settings: Settings) -> KimiServer:
    """Build the server from settings; nothing is created until the lifespan starts."""
    catalogue = Catalogue(CATALOGUE, settings.extra_models)
    secrets = (settings.api_token.reveal(),) if settings.api_token else ()

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        timeouts = Timeouts(overall=settings.request_timeout, first_byte=settings.request_timeout)
        async with make_http_client(timeouts, max_connections=64) as http:
            client = KimiClient(
                http, base_url=settings.base_url, token=settings.api_token, timeouts=timeouts,
                retry=RetryPolicy(), max_concurrency=64,
            )
            yield AppState(ChatService(client, catalogue, settings.default_model), secrets)

    server = KimiServer(
        "kimi-mcp", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan,
        log_level=settings.log_level,  # type: ignore[arg-type]
    )
    server.secrets = secrets
    models_text = _describe_models(catalogue, settings.default_model)
    annotations = ToolAnnotations(read_only_hint=True, open_world_hint=True, destructive_hint=False,
                                  idempotent_hint=False)

    @server.tool(
        description=(
            "Ask Moonshot's Kimi a question and get its answer as text. Use it for a second opinion, "
            "a review, long documents (256K-token context), Chinese-language work, or to compare another "
            "model's view. Give `prompt`, optionally `system` and your own `messages` history.\n"
            f"Models:\n{models_text}"
        ),
        annotations=annotations.model_copy(update={"title": "Chat with Kimi"}),
        structured_output=True,
    )
    async def kimi_chat(
        ctx: Context[AppState, Any],
        prompt: Prompt = None, system: System = None, messages: Messages = None, model: ModelArg = None,
        max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, stop: Stop = None,
        thinking: ThinkingArg = None, include_reasoning: IncludeReasoning = False,
    ) -> Annotated[CallToolResult, ChatResult]:
        state = ctx.request_context.lifespan_context
        try:
            service = state.service
            request = service.prepare(
                _args(prompt, system, messages, model, max_tokens, temperature, top_p, stop, thinking))
            completed = await service.complete(request, _progress_sink(ctx))
            return chat_result(completed, include_reasoning=include_reasoning)
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
        try:
            args = _args(prompt, system, messages, model, max_tokens, temperature, top_p, stop, thinking)
            outcome = await run_json(state.service, args, schema, _progress_sink(ctx))
            return json_result(outcome.value, outcome.text, outcome.completed, outcome.usage, outcome.json_attempts)
        except KimiError as error:
            return error_result(error, secrets=state.secrets)

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

    return server

"""`KimiServer`: the MCP server, built whole by its constructor from the settings.

It registers the tools, resources and prompts, opens the process's runtime in its lifespan, and
is the one exit of every tool result: a `KimiError` raised by a tool becomes its error result
here, and every result is redacted here.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.server.mcpserver.resources import FunctionResource
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, GetPromptResult, InputRequiredResult
from mcp_types import Tool as MCPTool
from pydantic import AnyUrl, ValidationError

from .. import __version__, telemetry
from ..catalogue import CATALOGUE, Catalogue
from ..chat import LOCAL, ChatTools
from ..chat.attachments import operator_dirs
from ..errors import InternalError, InvalidArguments, KimiError
from ..redaction import redact
from ..runtime import open_runtime
from ..settings import Settings
from .context import Ctx, principal_of
from .conversations import LIST_RESOURCE, list_resource, register_conversation_tools
from .prompts import register_prompts
from .results import ERROR_SCHEMA, error_result, redact_result
from .stdio import BoundedStdin
from .tasks import TasksExtension
from .tools import register_kimi_tools, register_model_resources

__all__ = ["INSTRUCTIONS", "KimiServer", "create_server"]

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "kimi-mcp gives you Moonshot's Kimi models. Use kimi_chat for a second opinion, a long-context "
    "read, Chinese-language work or a different model's view; results carry a conversation_id to "
    "continue the conversation. Use kimi_json when you need an answer as JSON you can use in code. "
    "Read kimi://models to choose a model."
)

ContextReader = Callable[[Ctx], Awaitable[str]]


class KimiServer(MCPServer[ChatTools]):
    """MCPServer whose tool failures come back as structured tool errors, whose results are always
    redacted, and whose static resources may depend on the caller (the SDK gives them no context)."""

    def __init__(self, settings: Settings, *, secrets: tuple[str, ...] | None = None) -> None:
        super().__init__("kimi-mcp", version=__version__, instructions=INSTRUCTIONS, lifespan=_lifespan,
                         log_level=settings.log_level, extensions=[TasksExtension()])  # type: ignore[arg-type]
        self.kimi_settings = settings
        self.catalogue = Catalogue(CATALOGUE, settings.extra_models)
        self.secrets = settings.secrets() if secrets is None else secrets
        self._context_readers: dict[str, ContextReader] = {}
        self._shared: ChatTools | None = None
        self._tools_listed: list[MCPTool] | None = None
        register_kimi_tools(self, self.catalogue, settings.default_model, self.secrets, operator_dirs(settings))
        register_model_resources(self, self.catalogue, settings.default_model)
        register_conversation_tools(self)
        self.add_context_resource(reader=list_resource, **LIST_RESOURCE)
        register_prompts(self)

    @asynccontextmanager
    async def runtime(self) -> AsyncIterator[ChatTools]:
        """The runtime for the whole process (HTTP: the SDK may enter the lifespan per connection,
        and an answer must outlive its connection); sessions started inside it share it."""
        async with open_runtime(self.kimi_settings, self.catalogue, self.secrets) as tools:
            self._shared = tools
            try:
                yield tools
            finally:
                self._shared = None

    @asynccontextmanager
    async def session_runtime(self) -> AsyncIterator[ChatTools]:
        """The lifespan's value: the process runtime when one is open, else one for this session
        (stdio and in-memory: one per process)."""
        if self._shared is not None:
            yield self._shared
            return
        async with open_runtime(self.kimi_settings, self.catalogue, self.secrets) as tools:
            yield tools

    def add_context_resource(self, *, uri: str, reader: ContextReader, **resource: Any) -> None:
        """A fixed-URI resource whose content depends on who reads it (e.g. their conversations)."""

        def unreachable() -> str:
            raise ResourceError(f"{uri} needs a request context")

        self._context_readers[uri] = reader
        self.add_resource(FunctionResource.from_function(unreachable, uri=uri, **resource))

    def run_stdio(self) -> None:
        """Serve stdio until the host closes it or SIGTERM/SIGHUP arrives; either way calls in flight
        are cancelled (their upstream requests too) and the store is closed, in bounded time."""
        anyio.run(self._stdio_until_stopped)

    async def _stdio_until_stopped(self) -> None:
        async with anyio.create_task_group() as tg:
            if sys.platform != "win32":
                tg.start_soon(_cancel_on_signal, tg.cancel_scope)
            stdin = BoundedStdin(self.kimi_settings.max_request_bytes)
            async with stdio_server(stdin=stdin) as (read_stream, write_stream):  # type: ignore[arg-type]
                # The SDK's run_stdio_async, with our stdin: bounded and cancellable.
                lowlevel = self._lowlevel_server
                await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
            tg.cancel_scope.cancel()

    async def list_tools(self) -> list[MCPTool]:
        """Each output schema also admits the `{"error": {...}}` shape of an error result, so clients
        that check structured content even when `isError` is true (the Inspector does) accept it; input
        schemas carry no `$defs`/`$ref` (strict-mode converters, e.g. openai-agents', refuse them), and
        output schemas none either, nor a nullable `anyOf` (see `_compact_output`)."""
        if self._tools_listed is None:
            self._tools_listed = [_inline_inputs(_compact_output(_admit_errors(tool)))
                                  for tool in await super().list_tools()]
        return list(self._tools_listed)

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Ctx | None = None
    ) -> GetPromptResult | InputRequiredResult:
        """A missing argument or unknown prompt is the caller's mistake (-32602), not an internal error."""
        try:
            return await super().get_prompt(name, arguments, context)
        except ValueError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None

    async def read_resource(
        self, uri: AnyUrl | str, context: Ctx | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        """A `KimiError` while reading becomes a resource error with its message; contents leave masked."""
        try:
            reader = self._context_readers.get(str(uri))
            if reader is None or context is None:
                read = await super().read_resource(uri, context)
                if isinstance(read, InputRequiredResult):
                    return read
                return [self._masked(item) for item in read]
            content = redact(await reader(context), self.secrets)
            return [ReadResourceContents(content=content, mime_type="application/json")]
        except Exception as exc:
            error = _kimi_cause(exc)
            if error is None:
                raise
            raise ResourceError(error.message) from None

    def _masked(self, item: ReadResourceContents) -> ReadResourceContents:
        if not isinstance(item.content, str) or not self.secrets:
            return item
        return ReadResourceContents(content=redact(item.content, self.secrets), mime_type=item.mime_type,
                                    meta=item.meta)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Ctx | None = None
    ) -> CallToolResult | InputRequiredResult:
        # Measured here, where every call ends (tasks too: their job runs this): the label is a
        # registered tool's name, never whatever a client sent.
        tool = name if self._tool_manager.get_tool(name) is not None else "other"
        with telemetry.tool_call(tool, request_id=_request_id(context),
                                 principal=principal_of(context) if context is not None else LOCAL) as measured:
            try:
                result = await super().call_tool(name, arguments, context)
            except ToolError as exc:
                result = error_result(_tool_error(name, exc))
            # The one exit of every tool result: the token (and client tokens) masked, whatever the path.
            if isinstance(result, CallToolResult):
                result = redact_result(result, self.secrets)
            measured.end(*_outcome(result))
            return result


async def _cancel_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for received in signals:
            log.info("stopping on %s", signal.Signals(received).name)
            scope.cancel()
            return


@asynccontextmanager
async def _lifespan(server: MCPServer[ChatTools]) -> AsyncIterator[ChatTools]:
    assert isinstance(server, KimiServer)
    async with server.session_runtime() as tools:
        yield tools


def _request_id(context: Ctx | None) -> str:
    try:
        return context.request_id if context is not None else ""
    except ValueError:  # no request context (a direct call)
        return ""


def _outcome(result: CallToolResult | InputRequiredResult) -> tuple[str, str]:
    """How a call ended, for its metrics and log line: (outcome, error kind)."""
    if not isinstance(result, CallToolResult):
        return "ok", ""
    content = result.structured_content or {}
    if result.is_error:
        error = content.get("error")
        kind = str(error.get("kind") or "") if isinstance(error, dict) else ""
        return ("cancelled" if kind == "cancelled" else "error"), kind or "other"
    return ("partial" if content.get("finish_reason") == "deadline" else "ok"), ""


def _kimi_cause(exc: BaseException) -> KimiError | None:
    """The `KimiError` an SDK wrapper exception was raised from, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KimiError):
            return seen
        seen = seen.__cause__
    return None


def _tool_error(name: str, exc: ToolError) -> KimiError:
    """What a failed tool call reports: our own error, the caller's bad arguments, or a bug of ours."""
    error = _kimi_cause(exc)
    if error is not None:
        return error
    if isinstance(exc, UnexpectedToolError):
        log.error("tool %s failed unexpectedly", name, exc_info=exc)
        return InternalError(f"{name} failed unexpectedly")
    if isinstance(exc.__cause__, ValidationError):
        problems = "; ".join(_describe(err) for err in exc.__cause__.errors())
        return InvalidArguments(f"invalid arguments for {name}: {problems}")
    return InvalidArguments(str(exc))


def _admit_errors(tool: MCPTool) -> MCPTool:
    schema = tool.output_schema
    if not schema or "error" in schema.get("properties", {}):
        return tool
    success = {k: v for k, v in schema.items() if k != "$defs"}
    combined: dict[str, Any] = {"type": "object", "anyOf": [success, ERROR_SCHEMA]}
    if "$defs" in schema:
        combined["$defs"] = schema["$defs"]
    return tool.model_copy(update={"output_schema": combined})


def _compact_output(tool: MCPTool) -> MCPTool:
    """The same output schema with its `$ref`s inlined and each nullable `anyOf` written as a type
    list (`"type": ["integer", "null"]`): the SDK's client validates every structured result against
    it, and each reference and `anyOf` branch is a descent of its own (half the check's cost)."""
    schema = tool.output_schema
    if not schema:
        return tool
    inlined = _inline({k: v for k, v in schema.items() if k != "$defs"}, schema.get("$defs", {}), depth=0)
    return tool.model_copy(update={"output_schema": _type_lists(inlined)})


def _type_lists(value: Any) -> Any:
    """`{"anyOf": [{"type": "integer"}, {"type": "null"}], ...}` as `{"type": ["integer", "null"], ...}`."""
    if isinstance(value, list):
        return [_type_lists(item) for item in value]
    if not isinstance(value, dict):
        return value
    branches = value.get("anyOf")
    if (isinstance(branches, list) and branches and "type" not in value
            and all(isinstance(b, dict) and set(b) == {"type"} and isinstance(b["type"], str) for b in branches)):
        rest = {k: _type_lists(v) for k, v in value.items() if k != "anyOf"}
        return {**rest, "type": [b["type"] for b in branches]}
    return {k: _type_lists(v) for k, v in value.items()}


def _inline_inputs(tool: MCPTool) -> MCPTool:
    schema = tool.input_schema
    defs = schema.get("$defs", {})
    inlined = _inline({k: v for k, v in schema.items() if k != "$defs"}, defs, depth=0)
    properties = {name: _closed(prop) for name, prop in inlined.get("properties", {}).items()}
    return tool.model_copy(update={"input_schema": {**inlined, "properties": properties}})


def _closed(prop: dict[str, Any]) -> dict[str, Any]:
    """An argument that takes a free-form object OR its JSON string is published as the string:
    strict-mode converters (openai-agents) refuse open objects. The object is still accepted."""
    branches = prop.get("anyOf")
    if not isinstance(branches, list) or {"type": "string"} not in branches:
        return prop
    kept = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "object" and "properties" not in b)]
    return {**prop, "anyOf": kept} if len(kept) != len(branches) else prop


def _inline(value: Any, defs: dict[str, Any], depth: int) -> Any:
    """Local `#/$defs/X` references replaced by what they name (our own schemas: finite, no cycles)."""
    if depth > 20:
        raise ValueError("recursive $defs in a tool's schema")
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = _inline(defs[ref.removeprefix("#/$defs/")], defs, depth + 1)
            rest = {k: _inline(v, defs, depth) for k, v in value.items() if k != "$ref"}
            return {**target, **rest}
        return {k: _inline(v, defs, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline(item, defs, depth) for item in value]
    return value


def _describe(err: Any) -> str:
    where = ".".join(str(part) for part in err.get("loc", ())) or "arguments"
    return f"{where}: {err.get('msg', 'invalid')}"


def create_server(settings: Settings, *, secrets: tuple[str, ...] | None = None) -> KimiServer:
    """Build the server from settings; nothing is opened until its lifespan (or `runtime`) starts."""
    return KimiServer(settings, secrets=secrets)

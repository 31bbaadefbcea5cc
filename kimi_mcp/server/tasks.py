"""The MCP Tasks extension (`io.modelcontextprotocol/tasks`, protocol 2026-07-28) over the SDK's extension API.

A `tools/call` of kimi_chat or kimi_json from a request that declares the extension runs through
`chat.Tasks`: answered directly when quick, else as a task (`CreateTaskResult`) the client polls
with `tasks/get`. Requests that do not declare it never get a task (the soft deadline and
`resume` stay theirs). This module only translates: the task logic is `kimi_mcp.chat.tasks`.

The extension is reusable (the conformance fixtures server, .ci/third_party/tasks_fixtures_server.py,
serves the suite's fixture tools through it): which tools may become tasks, which require the
extension (-32021 without it), and where the `Tasks` comes from are constructor parameters whose
defaults are kimi-mcp's own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types import HEADER_MISMATCH, CallToolRequestParams, RequestParams
from mcp_types._types import CLIENT_CAPABILITIES_META_KEY
from pydantic import BaseModel

from ..chat import LOCAL, ChatTools, TaskFailure, TaskRecorder, Tasks, TaskStarted, TaskView
from ..errors import Interrupted
from .context import SCOPE_KEY
from .results import error_result

__all__ = ["EXTENSION_ID", "TasksExtension", "TasksOf", "current_task"]

EXTENSION_ID = "io.modelcontextprotocol/tasks"
TASK_TOOLS = frozenset({"kimi_chat", "kimi_json"})
MISSING_CAPABILITY = -32021
INVALID_PARAMS = -32602

TasksOf = Callable[[ServerRequestContext[Any, Any]], Tasks]
"""Where a request's `Tasks` is (kimi-mcp: the lifespan's `ChatTools.tasks`)."""

_current: contextvars.ContextVar[TaskRecorder | None] = contextvars.ContextVar("kimi_mcp_task", default=None)


def current_task() -> TaskRecorder | None:
    """The recorder of the task this tool call runs as (None: an ordinary call)."""
    return _current.get()


class TaskIdParams(RequestParams):
    taskId: str


class UpdateParams(TaskIdParams):
    inputResponses: dict[str, Any] | None = None


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request lists the extension in its per-request client capabilities."""
    meta: Any = ctx.meta or {}
    capabilities = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    return isinstance(extensions, dict) and EXTENSION_ID in extensions


def _principal(ctx: ServerRequestContext[Any, Any]) -> str:
    scope = getattr(ctx.request, "scope", None)
    name = scope.get(SCOPE_KEY) if isinstance(scope, dict) else None
    return name if isinstance(name, str) and name else LOCAL


def lifespan_tasks(ctx: ServerRequestContext[Any, Any]) -> Tasks:
    tools = ctx.lifespan_context
    if not isinstance(tools, ChatTools) or tools.tasks is None:  # pragma: no cover - open_runtime makes both
        raise MCPError(-32603, "the server is not ready")
    return tools.tasks


def _missing_capability() -> MCPError:
    return MCPError(MISSING_CAPABILITY, "Missing required client capability",
                    {"requiredCapabilities": {"extensions": {EXTENSION_ID: {}}}})


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _dump(result: HandlerResult) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dict(result or {})


def created(started: TaskStarted) -> dict[str, Any]:
    """A `CreateTaskResult`."""
    return {"resultType": "task", "taskId": started.id, "status": "working", "statusMessage": started.status_message,
            "createdAt": _iso(started.created_at), "lastUpdatedAt": _iso(started.created_at),
            "ttlMs": int(started.ttl_s * 1000), "pollIntervalMs": started.poll_ms}


def detailed(view: TaskView) -> dict[str, Any]:
    """A `GetTaskResult`: an interrupted answer (its process stopped) is a completed task whose
    result is an error saying so, with the partial text, as a tool error would be."""
    out: dict[str, Any] = {"resultType": "complete", "taskId": view.id, "status": view.status,
                           "statusMessage": view.status_message, "createdAt": _iso(view.created_at),
                           "lastUpdatedAt": _iso(view.updated_at), "ttlMs": int(view.ttl_s * 1000),
                           "pollIntervalMs": view.poll_ms}
    if view.status == "completed":
        out["result"] = view.result or {"content": [], "isError": False}
    elif view.status == "failed":
        out["error"] = view.error or {"code": -32603, "message": view.status_message}
    elif view.status == "interrupted":
        out["status"] = "completed"
        lost = Interrupted("this answer was lost: its server process stopped (a restart or a crash) before it "
                           "finished",
                           details={"partial_text": view.partial_text})
        out["result"] = _dump(error_result(lost))
    return out


class TasksExtension(Extension):
    """Long kimi_chat / kimi_json answers as tasks; `tasks/get`, `tasks/cancel`, `tasks/update`.

    `tools`: the tools whose calls may become tasks (a quick answer stays direct). `required`: tools
    a client must declare the extension for (else -32021, before the tool runs); each is also in
    `tools`. `tasks_of`: the `Tasks` serving a request."""

    identifier = EXTENSION_ID

    def __init__(self, tools: Iterable[str] = TASK_TOOLS, *, required: Iterable[str] = (),
                 tasks_of: TasksOf = lifespan_tasks) -> None:
        self.required_tools = frozenset(required)
        self.task_tools = frozenset(tools) | self.required_tools
        self._tasks_of = tasks_of

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel),
            MethodBinding("tasks/update", UpdateParams, self._update),
        ]

    async def intercept_tool_call(self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any],
                                  call_next: CallNext) -> HandlerResult:
        arguments = params.arguments or {}
        if not declares_tasks(ctx):
            if params.name in self.required_tools:
                raise _missing_capability()
            return await call_next(ctx)
        if params.name not in self.task_tools or arguments.get("resume") is True:
            return await call_next(ctx)
        tasks = self._tasks_of(ctx)
        principal = _principal(ctx)
        if not tasks.has_room(principal):  # past the bounds: an ordinary call (soft deadline and resume)
            return await call_next(ctx)

        async def job(recorder: TaskRecorder) -> dict[str, Any]:
            token = _current.set(recorder)
            try:
                return _dump(await call_next(ctx))
            except MCPError as exc:
                raise TaskFailure(exc.code, exc.message) from None
            finally:
                _current.reset(token)

        try:
            outcome = await tasks.run(principal, job)
        except TaskFailure as failure:
            raise MCPError(failure.code, failure.message) from None
        return created(outcome) if isinstance(outcome, TaskStarted) else outcome

    def _check(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> Tasks:
        """The `Tasks` for this tasks/* request, once it has the capability and (over HTTP) an
        `Mcp-Name` header, when sent, naming its task (SEP-2663 routing headers; the SDK checks
        `Mcp-Name` only for tools/call, prompts/get and resources/read)."""
        headers = getattr(ctx.request, "headers", None)
        sent = headers.get(MCP_NAME_HEADER) if headers is not None else None
        if sent is not None and decode_header_value(sent) != task_id:
            raise MCPError(HEADER_MISMATCH, f"{MCP_NAME_HEADER} header does not match the request body's 'taskId'")
        if not declares_tasks(ctx):
            raise _missing_capability()
        return self._tasks_of(ctx)

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        view = await self._check(ctx, params.taskId).view(_principal(ctx), params.taskId)
        if view is None:
            raise MCPError(INVALID_PARAMS, "Failed to retrieve task: Task not found")
        return detailed(view)

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        if not await self._check(ctx, params.taskId).cancel(_principal(ctx), params.taskId):
            raise MCPError(INVALID_PARAMS, "Failed to cancel task: Task not found")
        return {"resultType": "complete"}

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateParams) -> HandlerResult:
        """Our tasks never ask for input: a known task acknowledges (responses are ignored)."""
        if await self._check(ctx, params.taskId).view(_principal(ctx), params.taskId) is None:
            raise MCPError(INVALID_PARAMS, "Failed to update task: Task not found")
        return {"resultType": "complete"}

"""The conformance suite's tasks fixtures, served through kimi-mcp's own tasks implementation.

The suite's `tasks-*` scenarios (SEP-2663) call fixture tools (greet, slow_compute, failing_job,
...) that kimi-mcp does not and should not have. This server has them, and applies kimi-mcp's
`TasksExtension` (kimi_mcp/server/tasks.py) over kimi-mcp's `Tasks` (kimi_mcp/chat/tasks.py) with
a `MemoryStore`: task creation, the quick-answer shortcut, `tasks/get`, `tasks/cancel`,
`tasks/update`, the -32021 gating and the Mcp-Name check are all kimi-mcp's code. Only the tools
are the suite's. `conformance.sh` runs the `tasks-*` scenarios against it in a second pass, with
`conformance-tasks-baseline.txt`.

A call becomes a task when it is still running after `WAIT_S` (kimi-mcp: KIMI_TASK_WAIT, 3 s by
default); the scenarios want `slow_compute` with `seconds: 1` to be a task, so it is short here.

kimi-mcp's tasks have no `input_required` state (`tasks/update` acknowledges and ignores its
responses), so `confirm_delete` and `multi_input` cannot park for elicitation: they run as tasks
that complete after ~1 s with an `isError` result saying so, and nothing is deleted. The MRTR
round before a task (SEP-2322 `InputRequiredResult`, resolved synchronously, then a task) is the
SDK's and works: `test_tool_with_task`.

Command line (the shape of `python -m kimi_mcp`, for lib.sh's KIMI_MCP_STANDIN=tasks):

    python tasks_fixtures_server.py                                   # stdio
    python tasks_fixtures_server.py --transport streamable-http --port 8765 [--host 127.0.0.1]

Run it with the project's python (kimi_mcp importable). CI only: not part of the package.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    CallToolResult,
    ElicitRequest,
    ElicitRequestFormParams,
    InputRequiredResult,
    TextContent,
)

from kimi_mcp.chat import TaskLimits, Tasks
from kimi_mcp.server.tasks import TasksExtension
from kimi_mcp.store import MemoryStore

WAIT_S = 0.25
"""How long a task-supporting call may take and still be answered directly."""
LIMITS = TaskLimits(wait_s=WAIT_S, ttl_s=600.0, poll_ms=500)

TASK_TOOLS = frozenset({"slow_compute", "failing_job", "protocol_error_job", "confirm_delete", "multi_input",
                        "test_tool_with_task"})
REQUIRED = frozenset({"failing_job", "test_tool_with_task"})
"""Registered with task support "required": -32021 for a client without the extension."""

NO_INPUT = ("kimi-mcp's tasks have no input_required state (tasks/update acknowledges and ignores "
            "inputResponses), so this fixture cannot ask the client")

_tasks: Tasks | None = None


def tasks_of(ctx: ServerRequestContext[Any, Any]) -> Tasks:
    if _tasks is None:  # pragma: no cover - set before the server listens
        raise MCPError(INTERNAL_ERROR, "the server is not ready")
    return _tasks


server = MCPServer("kimi-mcp-tasks-fixtures", version="0.0.0-fixtures",
                   extensions=[TasksExtension(TASK_TOOLS, required=REQUIRED, tasks_of=tasks_of)])


def _text(text: str, *, error: bool = False) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=error)


@server.tool(description="Sync-only: returns 'Hello, {name}!'.")
def greet(name: str) -> CallToolResult:
    return _text(f"Hello, {name}!")


@server.tool(description="Task-supporting: sleeps `seconds` seconds, then answers (seconds: 0 answers at once).")
async def slow_compute(seconds: float = 1.0, label: str = "") -> CallToolResult:
    await anyio.sleep(max(0.0, seconds))
    return _text(f"computed {label or 'result'} after {seconds:g} s")


@server.tool(description="Task-supporting (task support required): a tool execution error after ~1 s.")
async def failing_job() -> CallToolResult:
    await anyio.sleep(1.0)
    return _text("failing_job failed, as it always does", error=True)


@server.tool(description="Task-supporting: fails with a JSON-RPC (protocol) error after ~0.5 s.")
async def protocol_error_job() -> CallToolResult:
    await anyio.sleep(0.5)
    raise MCPError(INTERNAL_ERROR, "protocol_error_job: a protocol-level failure, by design")


@server.tool(description="Task-supporting: would ask to confirm deleting `filename`; see the module docstring.")
async def confirm_delete(filename: str) -> CallToolResult:
    await anyio.sleep(1.0)
    return _text(f"confirm_delete: {NO_INPUT} to confirm; {filename} was not deleted", error=True)


@server.tool(description="Task-supporting: would ask two questions at once; see the module docstring.")
async def multi_input() -> CallToolResult:
    await anyio.sleep(1.0)
    return _text(f"multi_input: {NO_INPUT}", error=True)


NAME_REQUEST = ElicitRequest(params=ElicitRequestFormParams(
    message="What is your name?",
    requested_schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}))


@server.tool(description="Task support required: asks for user_name (an MRTR round), then runs as a task (~1 s).")
async def test_tool_with_task(ctx: Context) -> CallToolResult | InputRequiredResult:
    answer: Any = (ctx.input_responses or {}).get("user_name")
    content = answer.get("content") if isinstance(answer, dict) else getattr(answer, "content", None)
    name = content.get("name") if isinstance(content, dict) else None
    if not isinstance(name, str) or not name:
        return InputRequiredResult(input_requests={"user_name": NAME_REQUEST})
    await anyio.sleep(1.0)
    return _text(f"Hello, {name}! (gathered before the task was created)")


async def serve(args: argparse.Namespace) -> None:
    global _tasks
    async with anyio.create_task_group() as tg:
        # One Tasks for the process (HTTP enters the SDK lifespan per connection).
        _tasks = Tasks(MemoryStore(), tg, LIMITS)
        try:
            if args.transport == "stdio":
                await server.run_stdio_async()
            else:
                await server.run_streamable_http_async(host=args.host, port=args.port)
        finally:
            _tasks = None
            tg.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description="The conformance suite's tasks fixtures over kimi-mcp's tasks.")
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    anyio.run(serve, parser.parse_args())


if __name__ == "__main__":
    main()

"""`TasksExtension`'s parameters (used by the conformance fixtures server,
.ci/third_party/tasks_fixtures_server.py) and its Mcp-Name check, called directly with a stand-in
request context: which tools may become tasks, tools that require the extension (-32021 before they
run), a `Tasks` from `tasks_of`, and a tasks/* request whose Mcp-Name header names another task
(-32020). The wire itself is tests/mcp/test_tasks.py's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolRequestParams

from kimi_mcp.chat import TaskLimits, Tasks
from kimi_mcp.server.tasks import EXTENSION_ID, TASK_TOOLS, TaskIdParams, TasksExtension, UpdateParams
from kimi_mcp.store import MemoryStore

pytestmark = pytest.mark.anyio

WITH: dict[str, Any] = {"io.modelcontextprotocol/clientCapabilities": {"extensions": {EXTENSION_ID: {}}}}
WITHOUT: dict[str, Any] = {"io.modelcontextprotocol/clientCapabilities": {"extensions": {}}}
RESULT = {"content": [{"type": "text", "text": "done"}], "isError": False}


@dataclass
class Request:
    headers: dict[str, str] = field(default_factory=dict)
    scope: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ctx:
    """What the extension reads of a `ServerRequestContext`."""

    meta: dict[str, Any]
    request: Request | None = None


@pytest.fixture
async def tasks() -> AsyncIterator[Tasks]:
    store = MemoryStore()
    async with anyio.create_task_group() as tg:
        yield Tasks(store, tg, TaskLimits(wait_s=0.05))
        tg.cancel_scope.cancel()
    await store.close()


def extension(tasks: Tasks) -> TasksExtension:
    return TasksExtension({"slow", "quick"}, required={"needs_task"}, tasks_of=lambda ctx: tasks)


async def call(ext: TasksExtension, name: str, meta: dict[str, Any], delay: float = 0.0) -> Any:
    async def call_next(ctx: Any) -> dict[str, Any]:
        await anyio.sleep(delay)
        return {**RESULT, "called": name}

    return await ext.intercept_tool_call(CallToolRequestParams(name=name, arguments={}), Ctx(meta), call_next)  # type: ignore[arg-type]


async def test_the_defaults_are_kimi_mcps_tools() -> None:
    ext = TasksExtension()
    assert ext.task_tools == TASK_TOOLS == {"kimi_chat", "kimi_json"} and ext.required_tools == frozenset()


async def test_listed_tools_become_tasks_when_slow_and_others_never(tasks: Tasks) -> None:
    ext = extension(tasks)
    created = await call(ext, "slow", WITH, delay=0.5)
    assert created["resultType"] == "task" and created["taskId"].startswith("task_")
    assert (await call(ext, "quick", WITH))["called"] == "quick"  # quick: direct
    assert (await call(ext, "other", WITH, delay=0.3))["called"] == "other"  # not listed: direct, however slow
    assert (await call(ext, "slow", WITHOUT, delay=0.3))["called"] == "slow"  # no extension: direct


async def test_a_required_tool_needs_the_extension_before_it_runs(tasks: Tasks) -> None:
    ext = extension(tasks)
    with pytest.raises(MCPError) as refused:
        await call(ext, "needs_task", WITHOUT)
    assert refused.value.error.code == -32021
    assert refused.value.error.data == {"requiredCapabilities": {"extensions": {EXTENSION_ID: {}}}}
    assert (await call(ext, "needs_task", WITH, delay=0.5))["resultType"] == "task"


async def test_tasks_methods_refuse_an_mcp_name_naming_another_task(tasks: Tasks) -> None:
    ext = extension(tasks)
    task_id = (await call(ext, "slow", WITH, delay=0.5))["taskId"]
    handlers = [(ext._get, TaskIdParams(taskId=task_id)), (ext._cancel, TaskIdParams(taskId=task_id)),
                (ext._update, UpdateParams(taskId=task_id, inputResponses={}))]
    for handler, params in handlers:
        with pytest.raises(MCPError) as mismatch:
            await handler(Ctx(WITH, Request({"mcp-name": "task_someone_else"})), params)  # type: ignore[arg-type]
        assert mismatch.value.error.code == -32020, handler
    # Matching, or absent (stdio; clients that do not send it): served.
    got: Any = await ext._get(Ctx(WITH, Request({"mcp-name": task_id})), TaskIdParams(taskId=task_id))  # type: ignore[arg-type]
    assert got["taskId"] == task_id
    assert (await ext._get(Ctx(WITH), TaskIdParams(taskId=task_id)))["taskId"] == task_id  # type: ignore[arg-type, index]

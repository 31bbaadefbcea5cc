"""A 2026-07-28 client that speaks raw JSON-RPC over Streamable HTTP, tasks extension included (the
SDK's client has no tasks support): shared by the tasks tests and the replica tests."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx2

__all__ = ["ENVELOPE", "ISO", "TASKS", "WITHOUT_TASKS", "WITH_TASKS", "TaskCalls", "Wire"]

TASKS = "io.modelcontextprotocol/tasks"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw-tasks-probe", "version": "1"}}
WITH_TASKS = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS: {}}}}
WITHOUT_TASKS: dict[str, Any] = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {"extensions": {}}}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class TaskCalls:
    """The calls the tasks tests make, over whatever `call` sends JSON-RPC through."""

    def call(self, method: str, params: dict[str, Any], meta: dict[str, Any] | None = None,
             timeout: float = 30) -> dict[str, Any]:
        raise NotImplementedError

    def chat(self, arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.call("tools/call", {"name": "kimi_chat", "arguments": arguments}, meta)

    def get(self, task_id: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.call("tasks/get", {"taskId": task_id}, meta)

    def until_done(self, task_id: str, limit: float = 20) -> dict[str, Any]:
        started = time.monotonic()
        while True:
            state: dict[str, Any] = self.get(task_id)["result"]
            if state["status"] != "working":
                return state
            assert time.monotonic() - started < limit, f"task {task_id} still working after {limit} s"
            time.sleep(0.1)


class Wire(TaskCalls):
    """A 2026-07-28 client that speaks JSON-RPC over HTTP by hand, with the headers the spec asks for."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.token = token
        self.next_id = 0

    def call(self, method: str, params: dict[str, Any], meta: dict[str, Any] | None = None,
             timeout: float = 30) -> dict[str, Any]:
        self.next_id += 1
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                   "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
        if "name" in params:
            headers["Mcp-Name"] = params["name"]
        if "taskId" in params:
            headers["Mcp-Name"] = params["taskId"]
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": method,
                "params": {**params, "_meta": WITH_TASKS if meta is None else meta}}
        response = httpx2.post(self.url, json=body, headers=headers, timeout=timeout)
        data: dict[str, Any] = response.json()
        return data

"""Calling tools through an MCP client and reading what comes back, for the MCP tests.

A progress recorder, a tool call with a bounded wait, the text / structured content / clean error
of a result, and the bodies the fake received.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp import Client
from mcp_types import CallToolResult

from tests.support.fake_ace import DEFAULT_CONTENT, FakeAce, RecordedRequest

CALL_TIMEOUT = 30.0
ERROR_KEYS = {"kind", "status", "code", "message", "retryable", "retry_after_s", "trace_id", "hint"}


@dataclass
class Progress:
    """A progress callback that records every notification, in arrival order."""

    events: list[tuple[float, float | None, str | None]] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))
        self.arrived.set()

    async def reaches(self, value: float) -> None:
        """Wait until a notification with this progress value arrived."""
        while value not in self.progress:
            self.arrived = anyio.Event()
            await self.arrived.wait()

    @property
    def progress(self) -> list[float]:
        return [p for p, _, _ in self.events]

    @property
    def messages(self) -> list[str | None]:
        return [m for _, _, m in self.events]


async def call(
    client: Client, tool: str, args: dict[str, Any], progress: Progress | None = None
) -> CallToolResult:
    return await client.call_tool(tool, args, read_timeout_seconds=CALL_TIMEOUT, progress_callback=progress)


def text(result: CallToolResult) -> str:
    """The first text block without kimi_chat's footer; the footer, when the result has a
    conversation id, must name exactly that id (agent frameworks often show only this block)."""
    block = result.content[0]
    assert block.type == "text"
    return strip_footer(block.text, result.structured_content)


def strip_footer(shown: str, content: dict[str, Any] | None) -> str:
    content = content or {}
    cid = content.get("conversation_id")
    if not cid or "finish_reason" not in content or content["finish_reason"] == "deadline":
        return shown
    footer = f"\n\n[conversation_id: {cid}]"
    assert shown.endswith(footer), shown[-200:]
    return shown[: -len(footer)]


def structured(result: CallToolResult) -> dict[str, Any]:
    content = result.structured_content
    assert isinstance(content, dict)
    return content


def ok(result: Any) -> dict[str, Any]:
    """The structured content of a call that must have succeeded."""
    assert result.is_error is False, result.content[0].text
    content: dict[str, Any] = result.structured_content
    return content


def error_of(result: Any) -> dict[str, Any]:
    """The structured error of a failed call, after checking the clean error shape: only an `error`
    object with every key, and one line of text that carries its message."""
    assert result.is_error is True, result.content
    assert set(result.structured_content) == {"error"}
    error: dict[str, Any] = result.structured_content["error"]
    assert set(error) >= ERROR_KEYS
    assert len(result.content) == 1
    line = result.content[0].text
    assert "\n" not in line
    assert error["message"] in line
    return error


def assert_clean(result: Any, token: str) -> None:
    """The upstream token appears nowhere in a result (text or structured)."""
    assert token not in result.model_dump_json()
    assert token not in json.dumps(result.structured_content)


def body_of(record: RecordedRequest) -> dict[str, Any]:
    """The JSON body the fake received."""
    assert isinstance(record.json, dict)
    return record.json


def only_request(fake: FakeAce) -> dict[str, Any]:
    """The body of the one request the fake got."""
    requests = fake.requests
    assert len(requests) == 1, [r.json for r in requests]
    body: dict[str, Any] = requests[0].json
    return body


async def still_answers(client: Client, fake: FakeAce) -> None:
    """After a failure the same server answers the next call normally."""
    fake.reset()
    result = await client.call_tool("kimi_chat", {"prompt": "still there?"})
    assert ok(result)["text"] == DEFAULT_CONTENT
    assert only_request(fake)["messages"] == [{"role": "user", "content": "still there?"}]


async def wait_requests(fake: FakeAce, n: int) -> list[RecordedRequest]:
    return await anyio.to_thread.run_sync(lambda: fake.wait_for_requests(n, timeout=10))


async def wait_close(fake: FakeAce, index: int) -> RecordedRequest:
    return await anyio.to_thread.run_sync(lambda: fake.wait_for_close(index, timeout=5))

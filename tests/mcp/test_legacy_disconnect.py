"""On a legacy (2025-11-25) Streamable HTTP session, a client that closes its request mid-answer has
not cancelled (that protocol version says a disconnect is not a cancellation): the answer runs on to
its end upstream and is stored, as the README says. `notifications/cancelled` is what stops it (that
path is in test_streaming.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.support.fake_ace import FakeAce, reply
from tests.support.harness import ServerLog, http_server, server_env

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "mcp-protocol-version": "2025-11-25"}


@pytest.fixture(scope="module")
def url(fake: FakeAce) -> Iterator[str]:
    with http_server(server_env(fake), "streamable-http", ServerLog()) as port:
        yield f"http://127.0.0.1:{port}/mcp"


def rpc(method: str, params: dict[str, Any], id_: int | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if id_ is not None:
        message["id"] = id_
    return message


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]


def test_closing_the_request_mid_answer_lets_the_answer_finish_and_be_stored(url: str, fake: FakeAce) -> None:
    with httpx2.Client(timeout=30) as http:
        opened = http.post(url, headers={k: v for k, v in HEADERS.items() if k != "mcp-protocol-version"},
                           json=rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                   "clientInfo": {"name": "probe", "version": "1"}}))
        session = {**HEADERS, "mcp-session-id": opened.headers["mcp-session-id"]}
        http.post(url, headers=session, json=rpc("notifications/initialized", {}, None))
        fake.script(reply("The whole answer.", delay=1.5))
        with http.stream("POST", url, headers=session,
                         json=rpc("tools/call", {"name": "kimi_chat", "arguments": {"prompt": "Walk away"}}, 2)):
            fake.wait_for_requests(1)  # the upstream call is under way: now the client leaves
        started = time.monotonic()
        while fake.requests[0].finished_at is None and not fake.requests[0].client_closed:
            assert time.monotonic() - started < 20, "the upstream answer never ended"
            time.sleep(0.05)
        assert not fake.requests[0].client_closed, "the server aborted the upstream call on a legacy disconnect"
        listed = ""
        while "Walk away" not in listed and time.monotonic() - started < 20:
            answer = http.post(url, headers=session, json=rpc(
                "tools/call", {"name": "kimi_list_conversations", "arguments": {}}, 3))
            listed = json.dumps(events(answer.text) or answer.json())
            time.sleep(0.05)
        assert "Walk away" in listed, "the finished answer was not stored"
        assert len(fake.requests) == 1  # nothing was retried or asked again

"""End to end over the real transports: stdio, Streamable HTTP and HTTP+SSE subprocesses, each
in both protocol eras (modern and legacy), against the loopback Ace fake.

One server per (transport, era) serves the whole module. The servers log at DEBUG so that the
check that the token never reaches stderr covers as many log lines as possible.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.mcp.helpers import strip_footer
from tests.support.fake_ace import FakeAce, ace_error, reply
from tests.support.harness import ROOT, Era, Kind, ServerLog, client_mode, connect, free_port, server_env, wait_for_port
from tests.support.models import ALL_IDS, DEFAULT_ID

pytestmark = pytest.mark.anyio

SERVERS: list[tuple[Kind, Era]] = [(k, e) for k in ("stdio", "http", "sse") for e in ("modern", "legacy")]
ENV = {"KIMI_MAX_RETRIES": "0", "LOG_LEVEL": "DEBUG"}


@dataclass
class Served:
    """A running server of one kind and era, and everything its callers were shown."""

    client: Client
    log: ServerLog
    kind: Kind
    era: Era
    shown: list[str] = field(default_factory=list)

    async def call(self, tool: str, args: dict[str, Any], **kw: Any) -> Any:
        result = await self.client.call_tool(tool, args, read_timeout_seconds=30, **kw)
        self.shown.append(result.model_dump_json())
        return result


@pytest.fixture(scope="module", params=SERVERS, ids=[f"{k}-{e}" for k, e in SERVERS])
async def served(request: pytest.FixtureRequest, fake: FakeAce) -> AsyncIterator[Served]:
    kind, era = request.param
    log = ServerLog()
    async with connect(kind, fake, era=era, env=ENV, log=log) as client:
        yield Served(client, log, kind, era)


async def test_listing(served: Served) -> None:
    tools = {t.name for t in (await served.client.list_tools()).tools}
    assert tools == {"kimi_chat", "kimi_json", "kimi_list_conversations", "kimi_read_conversation",
                     "kimi_delete_conversation"}
    resources = {str(r.uri) for r in (await served.client.list_resources()).resources}
    assert {"kimi://models", "kimi://conversations"} <= resources
    templates = {t.uri_template for t in (await served.client.list_resource_templates()).resource_templates}
    assert "kimi://models/{model_id}" in templates
    models = json.loads((await served.client.read_resource("kimi://models")).contents[0].text)  # type: ignore[union-attr]
    assert [m["id"] for m in models["models"]] == ALL_IDS
    assert models["default_model"] == DEFAULT_ID


async def test_chat(served: Served, fake: FakeAce) -> None:
    answer = " Bonjour! Ça va? 你好。"
    fake.script(reply(answer, reasoning="The user greets me.", chunk_size=5))
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    result = await served.call("kimi_chat", {"prompt": "Say hi", "system": "Be warm."},
                               progress_callback=on_progress)
    assert result.is_error is False
    assert strip_footer(result.content[0].text, result.structured_content) == answer
    out = result.structured_content
    assert (out["text"], out["model"], out["finish_reason"]) == (answer, DEFAULT_ID, "stop")
    assert out["conversation_id"].startswith("conv_")
    body = fake.requests[0].json
    assert len(fake.requests) == 1
    assert body["messages"] == [{"role": "system", "content": "Be warm."}, {"role": "user", "content": "Say hi"}]
    assert body["stream"] is True
    assert seen, "no progress over this transport"
    progress = [p for p, _ in seen]
    assert progress == sorted(set(progress))
    assert seen[-1][1] == answer


async def test_json(served: Served, fake: FakeAce) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fake.script(reply('```json\n{"n": 42}\n```'))
    result = await served.call("kimi_json", {"prompt": "The answer?", "schema": schema})
    assert result.is_error is False
    assert result.structured_content["value"] == {"n": 42}
    assert json.loads(result.content[0].text) == {"n": 42}
    body = fake.requests[0].json
    assert body["response_format"] == {"type": "json_object"}
    assert json.dumps(schema) in body["messages"][0]["content"]


async def test_error_then_answers(served: Served, fake: FakeAce) -> None:
    fake.script(ace_error(403, "used_up", "Your balance is used up.", trace_id="tr-used-up"))
    result = await served.call("kimi_chat", {"prompt": "p"})
    assert result.is_error is True
    error = result.structured_content["error"]
    assert {k: error[k] for k in ("kind", "status", "code", "message", "retryable", "retry_after_s", "trace_id")} == {
        "kind": "insufficient_balance", "status": 403, "code": "used_up", "message": "Your balance is used up.",
        "retryable": False, "retry_after_s": None, "trace_id": "tr-used-up"}
    assert "recharge" in error["hint"]
    assert "\n" not in result.content[0].text
    assert len(fake.requests) == 1
    # bad arguments are a result too, not a protocol error
    bad = await served.call("kimi_chat", {"prompt": "p", "temperature": 9})
    assert bad.structured_content["error"]["kind"] == "invalid_arguments"
    fake.reset()
    again = await served.call("kimi_chat", {"prompt": "again"})
    assert again.is_error is False
    assert strip_footer(again.content[0].text, again.structured_content) == "Hello from fake Kimi."
    assert fake.requests[0].json["messages"] == [{"role": "user", "content": "again"}]


async def test_token_never_shown(served: Served, fake: FakeAce) -> None:
    """Not in any result the callers saw, nor in the server's stderr, which is not empty."""
    fake.script(ace_error(401, "invalid_token", f"token {fake.token} is invalid"))
    result = await served.call("kimi_chat", {"prompt": "p"})
    assert result.structured_content["error"]["kind"] == "auth"
    assert "****" in result.structured_content["error"]["message"]  # an upstream echo is masked
    # A caller's arguments are logged at DEBUG: the log filter must mask the token there too.
    fake.reset()
    pasted = await served.call("kimi_chat", {"prompt": f"is {fake.token} a valid key?"})
    assert pasted.is_error is False
    assert fake.token in fake.requests[0].json["messages"][0]["content"]  # sent upstream as asked
    assert served.shown  # this and any earlier tests' results on this server
    for shown in served.shown:
        assert fake.token not in shown
    log = served.log.text()
    assert "kimi-mcp starting" in log
    assert "'api_token': 'set (****)'" in log
    assert len(log.splitlines()) > 3
    assert fake.token not in log


def _start_http(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as errors:
        return subprocess.Popen([sys.executable, "-m", "kimi_mcp", "--transport", "streamable-http", "--port",
                                 str(port)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors)


async def test_sigterm_stops_the_http_server_in_bounded_time(fake: FakeAce, tmp_path: Path) -> None:
    """A call in flight does not hold a stopping HTTP server for KIMI_REQUEST_TIMEOUT: uvicorn waits at
    most its grace period, the upstream request is cancelled, and the store is closed."""
    store = tmp_path / "c.sqlite3"
    port = free_port()
    env = server_env(fake, KIMI_STORE=str(store), KIMI_SOFT_DEADLINE="0")
    proc = _start_http(port, env, tmp_path / "server.log")
    try:
        wait_for_port(port, proc)
        fake.script(reply("stored"), reply("never finishes", delay=60))
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(60)) as http,
            Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http),
                   mode=client_mode("modern")) as client,
        ):
            assert not (await client.call_tool("kimi_chat", {"prompt": "first"})).is_error
            async with anyio.create_task_group() as tg:
                async def slow() -> None:
                    with anyio.move_on_after(30), contextlib.suppress(Exception):  # the server goes away
                        await client.call_tool("kimi_chat", {"prompt": "slow"})

                tg.start_soon(slow)
                await anyio.to_thread.run_sync(lambda: fake.wait_for_requests(2, timeout=10))
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                await anyio.to_thread.run_sync(lambda: proc.wait(timeout=30))
                took = time.monotonic() - started
                tg.cancel_scope.cancel()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < 25, took  # the grace period is 10 s, not the 900 s request timeout
    assert fake.wait_for_close(-1, timeout=5).client_closed  # the upstream request was cancelled
    # It ended the ordinary way, after the runtime closed: the store's last connection checkpointed
    # and removed its write-ahead log (uvicorn's re-raised SIGTERM used to kill it before that).
    assert proc.returncode == 0, (tmp_path / "server.log").read_text(errors="replace")[-2000:]
    assert not await anyio.Path(f"{store}-wal").exists()
    assert "stopping on SIGTERM" in (tmp_path / "server.log").read_text(errors="replace")
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*) FROM turns").fetchone()[0] == 2

"""What an HTTP client cannot hold: legacy Streamable HTTP sessions past a per-client cap (through a
real server in both eras, and the counting rules on a stand-in ASGI app), and connections whose
request headers never end."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from kimi_mcp.server.sessions import SessionLimiter, limit_sessions
from tests.support.fake_ace import DEFAULT_CONTENT, FakeAce
from tests.support.harness import ServerLog, http_server, server_env

ALICE = "alice-tok-1234567890abcdef1234"
BOB = "bob-tok-0a1b2c3d4e5f60718293a4"
CAP = 2
CLIENT_TIMEOUT = 2.0
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def url(fake: FakeAce) -> Iterator[str]:
    env = server_env(fake, KIMI_MCP_AUTH_TOKENS=f"alice:{ALICE},bob:{BOB}", KIMI_MAX_SESSIONS_PER_CLIENT=str(CAP),
                     KIMI_CLIENT_TIMEOUT=str(CLIENT_TIMEOUT))
    with http_server(env, "streamable-http", ServerLog()) as port:
        yield f"http://127.0.0.1:{port}/mcp"


def open_session(url: str, token: str) -> httpx2.Response:
    return httpx2.post(url, json=INITIALIZE, headers={**HEADERS, "Authorization": f"Bearer {token}"}, timeout=30)


def end_session(url: str, token: str, sid: str) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}", "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
    return httpx2.delete(url, headers=headers, timeout=30)


def test_a_client_past_its_session_cap_is_refused_and_others_are_not(url: str) -> None:
    sids = []
    for _ in range(CAP):
        opened = open_session(url, ALICE)
        assert opened.status_code == 200
        sids.append(opened.headers["mcp-session-id"])
    refused = open_session(url, ALICE)
    assert refused.status_code == 429
    assert "mcp-session-id" not in refused.headers
    assert refused.headers["retry-after"].isdigit()
    assert "too many open sessions" in refused.json()["error"]["message"]
    # Bob has his own allowance, and alice's open sessions still work.
    for_bob = open_session(url, BOB)
    assert for_bob.status_code == 200
    end_session(url, BOB, for_bob.headers["mcp-session-id"])
    tools = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    headers = {**HEADERS, "Authorization": f"Bearer {ALICE}", "mcp-session-id": sids[0],
               "mcp-protocol-version": "2025-11-25"}
    assert "kimi_chat" in httpx2.post(url, json=tools, headers=headers, timeout=30).text
    # Ending one frees its place.
    assert end_session(url, ALICE, sids[0]).status_code < 300
    reopened = open_session(url, ALICE)
    assert reopened.status_code == 200
    for sid in (sids[1], reopened.headers["mcp-session-id"]):
        end_session(url, ALICE, sid)


@pytest.mark.anyio
async def test_the_stateless_era_is_not_limited_while_legacy_sessions_are_full(url: str, fake: FakeAce) -> None:
    headers = {"Authorization": f"Bearer {ALICE}"}
    sids = [open_session(url, ALICE).headers["mcp-session-id"] for _ in range(CAP)]
    try:
        assert open_session(url, ALICE).status_code == 429
        for _ in range(CAP + 2):
            async with (httpx2.AsyncClient(headers=headers, timeout=30) as http,
                        Client(streamable_http_client(url, http_client=http), mode="auto") as client):
                with anyio.fail_after(30):
                    result = await client.call_tool("kimi_chat", {"prompt": "hi"})
                assert not result.is_error
                assert result.structured_content is not None
                assert result.structured_content["text"] == DEFAULT_CONTENT
    finally:
        for sid in sids:
            end_session(url, ALICE, sid)


def test_request_headers_dripped_a_byte_at_a_time_are_cut_off(url: str) -> None:
    """Before auth, a client sends headers that never end: the server closes the connection after
    KIMI_CLIENT_TIMEOUT, and answers another client meanwhile."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        started = time.monotonic()
        slow.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
        served = open_session(url, BOB)  # another client is served meanwhile
        assert served.status_code == 200
        end_session(url, BOB, served.headers["mcp-session-id"])
        slow.settimeout(0.25)
        closed_after = None
        while closed_after is None and time.monotonic() - started < CLIENT_TIMEOUT + 10:
            try:
                slow.sendall(b"a")
                if slow.recv(1) == b"":
                    closed_after = time.monotonic() - started
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
    assert closed_after is not None, "the server kept a connection whose headers never ended"
    assert closed_after >= CLIENT_TIMEOUT - 0.5


def test_a_connection_kept_alive_between_requests_is_not_cut_mid_request(url: str) -> None:
    """The deadline is for the request head only: a slow answer on the same connection is untouched."""
    with httpx2.Client(headers={**HEADERS, "Authorization": f"Bearer {BOB}"}, timeout=30) as client:
        first = client.post(url, json=INITIALIZE)
        time.sleep(CLIENT_TIMEOUT / 2)
        second = client.post(url, json=INITIALIZE)
        assert first.status_code == second.status_code == 200
        for response in (first, second):
            client.delete(url, headers={"mcp-session-id": response.headers["mcp-session-id"],
                                        "mcp-protocol-version": "2025-11-25"})


# --------------------------------------------------------------------------- counting rules


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class StandIn:
    """An ASGI app answering like the SDK: a new id for an opening POST, 404 for ids it forgot."""

    def __init__(self) -> None:
        self.next = 0
        self.known: set[str] = set()
        self.hold = anyio.Event()
        self.holding = False

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        sid = dict(scope["headers"]).get(b"mcp-session-id")
        if self.holding:
            await self.hold.wait()
        headers: list[tuple[bytes, bytes]] = []
        status = 200
        if sid is None:
            self.next += 1
            headers.append((b"mcp-session-id", f"s{self.next}".encode()))
            self.known.add(f"s{self.next}")
        elif sid.decode() not in self.known:
            status = 404
        elif scope["method"] == "DELETE":
            self.known.discard(sid.decode())
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})


async def call(app: Any, method: str = "POST", sid: str | None = None, version: str | None = None,
               who: str = "alice") -> tuple[int, str | None]:
    headers = [(b"mcp-session-id", sid.encode())] if sid else []
    if version:
        headers.append((b"mcp-protocol-version", version.encode()))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "headers": headers, "who": who}, receive, send)
    got = dict(sent[0].get("headers", [])).get(b"mcp-session-id")
    return sent[0]["status"], got.decode() if got else None


def limited(cap: int = 2) -> tuple[Any, StandIn, Clock, SessionLimiter]:
    inner, clock = StandIn(), Clock()
    limiter = SessionLimiter(cap, 600.0, frozenset({"2025-11-25"}), clock=clock)
    return limit_sessions(inner, limiter, lambda scope: scope["who"]), inner, clock, limiter


@pytest.mark.anyio
async def test_idle_sessions_stop_counting_after_the_idle_timeout() -> None:
    app, _, clock, _ = limited()
    await call(app)
    await call(app)
    assert (await call(app))[0] == 429
    clock.now = 599.0
    assert (await call(app))[0] == 429
    clock.now = 600.0
    assert (await call(app))[0] == 200


@pytest.mark.anyio
async def test_a_session_in_use_is_not_idle() -> None:
    app, inner, clock, limiter = limited(cap=1)
    _, sid = await call(app)
    assert sid is not None
    inner.holding = True
    async with anyio.create_task_group() as group:
        group.start_soon(call, app, "GET", sid)  # a long-lived stream on the session
        await anyio.sleep(0.01)
        clock.now = 10_000.0
        assert limiter.count("alice") == 1
        inner.holding = False
        inner.hold.set()
    clock.now = 10_599.0
    assert limiter.count("alice") == 1
    clock.now = 10_600.0
    assert limiter.count("alice") == 0


@pytest.mark.anyio
async def test_delete_and_404_forget_a_session() -> None:
    app, inner, _, limiter = limited()
    _, first = await call(app)
    _, second = await call(app)
    assert first and second
    assert (await call(app, "DELETE", first))[0] == 200
    assert limiter.count("alice") == 1
    inner.known.discard(second)  # the SDK closed it (a crash, say): the next use answers 404
    assert (await call(app, "POST", second))[0] == 404
    assert limiter.count("alice") == 0


@pytest.mark.anyio
async def test_concurrent_openings_cannot_both_pass_the_last_place() -> None:
    app, inner, _, _ = limited(cap=1)
    inner.holding = True
    statuses: list[int] = []

    async def opening() -> None:
        statuses.append((await call(app))[0])

    async with anyio.create_task_group() as group:
        group.start_soon(opening)
        group.start_soon(opening)
        await anyio.sleep(0.01)
        inner.hold.set()
    assert sorted(statuses) == [200, 429]


@pytest.mark.anyio
async def test_modern_requests_and_other_methods_are_never_counted() -> None:
    app, _, _, limiter = limited(cap=1)
    for _ in range(5):
        await call(app, version="2026-07-28")
        await call(app, "GET")
    assert limiter.count("alice") == 0
    assert (await call(app, version="2025-11-25"))[0] == 200
    assert (await call(app))[0] == 429
    assert (await call(app, who="bob"))[0] == 200


def test_the_refusal_is_a_json_rpc_error() -> None:
    async def go() -> dict[str, Any]:
        app, _, _, _ = limited(cap=1)
        await call(app)
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        await app({"type": "http", "method": "POST", "headers": [], "who": "alice"}, receive, send)
        body: dict[str, Any] = json.loads(sent[1]["body"])
        return body

    body = anyio.run(go)
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32000

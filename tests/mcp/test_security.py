"""Who may call the HTTP transports, and what they can reach: real subprocess servers, real clients.

One Streamable HTTP server (tokens from KIMI_MCP_AUTH_TOKENS) and one SSE server (tokens from
KIMI_MCP_AUTH_TOKENS_FILE) serve the whole module. Every result the clients see is kept, and the
last test proves no token (upstream or client) ever showed up in a result or in a server's stderr.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from kimi_mcp.redaction import RedactingFilter
from kimi_mcp.server.http import check_exposure, load_client_tokens
from kimi_mcp.settings import Secret, Settings, SettingsError
from tests.support.fake_ace import CHAT_PATH, DEFAULT_CONTENT, FakeAce, ace_error, reply
from tests.support.harness import ROOT, ServerLog, client_mode, connect, free_port, http_server, server_env

ALICE = "alice-tok-9f8e7d6c5b4a39281706"
BOB = "bob-tok-0a1b2c3d4e5f60718293a4"
CAROL = "carol-tok-5566778899aabbccddee"
DAVE = "dave-tok-ffeeddccbbaa99887766"
CLIENT_TOKENS = (ALICE, BOB, CAROL, DAVE)
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MAX_REQUEST_BYTES = 65_536


@dataclass
class Served:
    """A running subprocess server and everything its clients were shown."""

    port: int
    log: ServerLog
    shown: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def keep(self, result: CallToolResult) -> CallToolResult:
        self.shown.extend(getattr(block, "text", "") for block in result.content)
        self.shown.append(json.dumps(result.structured_content))
        return result


@pytest.fixture(scope="module")
def http(fake: FakeAce) -> Iterator[Served]:
    """Streamable HTTP with alice and bob; a 1 s soft deadline so a call can be left to resume."""
    log = ServerLog()
    env = server_env(fake, KIMI_MCP_AUTH_TOKENS=f"alice:{ALICE},bob:{BOB}", LOG_LEVEL="DEBUG",
                     KIMI_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES), KIMI_SOFT_DEADLINE="1", KIMI_MAX_RETRIES="1")
    args = ("--allowed-origins", "https://console.example", "--allowed-hosts", "mcp.internal:*")
    with http_server(env, "streamable-http", log, *args) as port:
        yield Served(port, log)


@pytest.fixture(scope="module")
def sse(fake: FakeAce, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """HTTP+SSE with carol and dave, from a tokens file (comments and blank lines included)."""
    tokens_file = tmp_path_factory.mktemp("auth") / "tokens.txt"
    tokens_file.write_text(f"# who may call\ncarol:{CAROL}\n\n  dave:{DAVE}  \n")
    log = ServerLog()
    env = server_env(fake, KIMI_MCP_AUTH_TOKENS_FILE=str(tokens_file), LOG_LEVEL="DEBUG")
    with http_server(env, "sse", log) as port:
        yield Served(port, log)


@asynccontextmanager
async def http_client(served: Served, token: str | None, era: str = "modern") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as session:
        transport = streamable_http_client(f"{served.url}/mcp", http_client=session)
        async with Client(transport, mode=client_mode(era)) as client:  # type: ignore[arg-type]
            yield client


@asynccontextmanager
async def sse_mcp_client(served: Served, token: str) -> AsyncIterator[Client]:
    async with Client(sse_client(f"{served.url}/sse", headers={"Authorization": f"Bearer {token}"})) as client:
        yield client


def post_initialize(served: Served, headers: dict[str, str], content: bytes | None = None) -> httpx2.Response:
    body = content if content is not None else json.dumps(INITIALIZE).encode()
    return httpx2.post(f"{served.url}/mcp", content=body, headers={**MCP_HEADERS, **headers}, timeout=30)


def assert_refused_unauthorized(response: httpx2.Response) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "mcp-session-id" not in response.headers
    text = response.text
    assert "serverInfo" not in text and "result" not in text and "kimi_chat" not in text
    assert response.json()["error"] == "unauthorized"


# --------------------------------------------------------------------------- who may call


@pytest.mark.parametrize("authorization", [
    None,
    "Bearer wrong-token-0000000000000000",
    f"Bearer {ALICE}x",
    f"Bearer {ALICE[:-1]}",
    "Bearer",
    f"Basic {ALICE}",
    f"Token {ALICE}",
    ALICE,
], ids=["none", "wrong", "longer", "shorter", "empty-bearer", "basic-scheme", "token-scheme", "no-scheme"])
def test_http_without_a_valid_bearer_token_gets_401(http: Served, fake: FakeAce, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    assert_refused_unauthorized(post_initialize(http, headers))
    # Not even the tools list leaks, and nothing reached the upstream.
    tools = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    assert_refused_unauthorized(post_initialize(http, headers, json.dumps(tools).encode()))
    assert fake.requests == []


def test_http_with_a_valid_token_is_served(http: Served) -> None:
    """The baseline for the refusals above: the same request with alice's token initializes."""
    response = post_initialize(http, {"Authorization": f"Bearer {ALICE}"})
    assert response.status_code == 200
    assert "serverInfo" in response.text


def test_a_session_belongs_to_the_token_that_opened_it(http: Served) -> None:
    """Bob presenting alice's session id is answered as if the session did not exist."""
    opened = post_initialize(http, {"Authorization": f"Bearer {ALICE}"})
    session = opened.headers["mcp-session-id"]
    tools = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}).encode()
    headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    as_bob = post_initialize(http, {**headers, "Authorization": f"Bearer {BOB}"}, tools)
    assert as_bob.status_code == 404
    assert "kimi_chat" not in as_bob.text
    as_alice = post_initialize(http, {**headers, "Authorization": f"Bearer {ALICE}"}, tools)
    assert as_alice.status_code == 200 and "kimi_chat" in as_alice.text


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


@pytest.mark.anyio
@pytest.mark.parametrize("token", [None, BOB + "0"], ids=["none", "wrong"])
async def test_mcp_client_without_a_valid_token_cannot_connect(http: Served, fake: FakeAce, token: str | None) -> None:
    tools = None
    with anyio.fail_after(30), pytest.raises(Exception) as caught:
        async with http_client(http, token) as client:
            tools = await client.list_tools()
    assert tools is None
    assert any(isinstance(leaf, MCPError | httpx2.HTTPStatusError) for leaf in leaves(caught.value)), caught.value
    assert fake.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/sse", "/messages/?session_id=0123456789abcdef0123456789abcdef"])
async def test_sse_without_a_valid_token_gets_401(sse: Served, fake: FakeAce, path: str) -> None:
    async with httpx2.AsyncClient(timeout=30) as session:
        for headers in ({}, {"Authorization": "Bearer nope-nope-nope-nope-nope"}, {"Authorization": f"Bearer {ALICE}"}):
            if path == "/sse":
                async with session.stream("GET", sse.url + path, headers=headers) as response:
                    await response.aread()
            else:
                response = await session.post(sse.url + path, json=INITIALIZE, headers=headers)
            assert_refused_unauthorized(response)
    assert fake.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_alice_is_served_and_her_token_never_goes_upstream(http: Served, fake: FakeAce, era: str) -> None:
    """The client's Authorization is never forwarded: the upstream only ever sees the server's own token,
    and arguments naming a token or base URL change nothing."""
    async with http_client(http, ALICE, era) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"kimi_chat", "kimi_json", "kimi_read_conversation"} <= names
        result = http.keep(await client.call_tool("kimi_chat", {"prompt": "hello"}))
        assert not result.is_error and result.structured_content is not None
        assert result.structured_content["text"] == DEFAULT_CONTENT
        sneaky = {"prompt": "hello", "api_token": BOB, "authorization": f"Bearer {BOB}",
                  "base_url": "http://127.0.0.1:9"}
        http.keep(await client.call_tool("kimi_json", sneaky))
    assert len(fake.requests) == 2
    for request in fake.requests:
        assert request.headers["authorization"] == f"Bearer {fake.token}"
        dumped = json.dumps(request.headers) + request.body.decode()
        assert ALICE not in dumped and BOB not in dumped


@pytest.mark.anyio
async def test_sse_with_tokens_file_serves_and_isolates(sse: Served, fake: FakeAce) -> None:
    async with sse_mcp_client(sse, CAROL) as carol:
        made = sse.keep(await carol.call_tool("kimi_chat", {"prompt": "carol's secret plan"}))
        assert not made.is_error and made.structured_content is not None
        cid = made.structured_content["conversation_id"]
    async with sse_mcp_client(sse, DAVE) as dave:
        listed = sse.keep(await dave.call_tool("kimi_list_conversations", {}))
        assert listed.structured_content == {"conversations": []}
        read = sse.keep(await dave.call_tool("kimi_read_conversation", {"conversation_id": cid}))
        assert read.is_error and "carol's secret plan" not in json.dumps(read.structured_content)
    async with sse_mcp_client(sse, CAROL) as carol:
        mine = sse.keep(await carol.call_tool("kimi_read_conversation", {"conversation_id": cid}))
        assert not mine.is_error and mine.structured_content is not None
        assert mine.structured_content["turns"][0]["content"] == "carol's secret plan"
    assert all(r.headers["authorization"] == f"Bearer {fake.token}" for r in fake.requests)


# --------------------------------------------------------------------------- principals


@pytest.mark.anyio
async def test_bob_cannot_reach_alices_conversation(http: Served, fake: FakeAce) -> None:
    """List, read (tool and resource), continue, delete: none reaches alice's conversation."""
    secret = "alice's private question about payroll"
    async with http_client(http, ALICE) as alice:
        made = http.keep(await alice.call_tool("kimi_chat", {"prompt": secret}))
        assert made.structured_content is not None
        cid = made.structured_content["conversation_id"]
        before = http.keep(await alice.call_tool("kimi_read_conversation", {"conversation_id": cid}))

    async with http_client(http, BOB) as bob:
        listed = http.keep(await bob.call_tool("kimi_list_conversations", {"limit": 500}))
        assert cid not in json.dumps(listed.structured_content)
        read = http.keep(await bob.call_tool("kimi_read_conversation", {"conversation_id": cid}))
        assert read.is_error and read.structured_content is not None
        assert read.structured_content["error"]["kind"] == "invalid_arguments"
        assert secret not in json.dumps(read.structured_content)
        listing = await bob.read_resource("kimi://conversations")
        assert cid not in json.dumps([c.model_dump() for c in listing.contents])
        with pytest.raises(Exception) as caught:
            leaked = await bob.read_resource(f"kimi://conversations/{cid}")
            assert secret not in json.dumps([c.model_dump() for c in leaked.contents])
        assert secret not in str(caught.value)
        fake.reset()
        cont = http.keep(await bob.call_tool("kimi_chat", {"prompt": "and then?", "conversation_id": cid}))
        assert cont.is_error and cont.structured_content is not None
        assert cont.structured_content["error"]["kind"] == "invalid_arguments"
        assert fake.requests == []  # refused before any upstream call: alice's history never sent
        deleted = http.keep(await bob.call_tool("kimi_delete_conversation", {"conversation_id": cid}))
        assert deleted.structured_content == {"conversation_id": cid, "deleted": False}

    async with http_client(http, ALICE) as alice:
        after = http.keep(await alice.call_tool("kimi_read_conversation", {"conversation_id": cid}))
        assert after.structured_content == before.structured_content
        resource = await alice.read_resource(f"kimi://conversations/{cid}")
        assert secret in json.dumps([c.model_dump() for c in resource.contents])
        listed = http.keep(await alice.call_tool("kimi_list_conversations", {"limit": 500}))
        assert cid in json.dumps(listed.structured_content)


@pytest.mark.anyio
async def test_bob_cannot_resume_alices_pending_answer(http: Served, fake: FakeAce) -> None:
    """Alice's answer outlives the 1 s soft deadline; bob's resume with her id gets nothing of it."""
    answer = "alpha-bravo-charlie-delta-echo-foxtrot"
    fake.script(reply(answer, chunk_size=8, chunk_delay=0.25))
    async with http_client(http, ALICE) as alice:
        first = http.keep(await alice.call_tool("kimi_chat", {"prompt": "long one"}))
        assert first.structured_content is not None
        assert first.structured_content["finish_reason"] == "deadline"
        cid = first.structured_content["conversation_id"]
        async with http_client(http, BOB) as bob:
            stolen = http.keep(await bob.call_tool("kimi_chat", {"conversation_id": cid, "resume": True}))
            assert stolen.is_error and stolen.structured_content is not None
            assert stolen.structured_content["error"]["kind"] == "invalid_arguments"
            assert "bravo" not in json.dumps(stolen.structured_content) and "alpha" not in stolen.content[0].text  # type: ignore[union-attr]
        got = first.structured_content["text"]
        for _ in range(10):  # alice collects the rest (each resume waits up to the soft deadline)
            more = http.keep(await alice.call_tool("kimi_chat", {"conversation_id": cid, "resume": True}))
            assert not more.is_error and more.structured_content is not None
            got += more.structured_content["text"]
            if more.structured_content["finish_reason"] != "deadline":
                break
        assert got == answer


# --------------------------------------------------------------------------- Origin, Host, size, health


@pytest.mark.parametrize(("headers", "status"), [
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "http://127.0.0.1.evil.example"}, 403),
    ({"Origin": "null"}, 403),
    ({"Host": "evil.example"}, 421),
    ({"Host": "evil.example:80"}, 421),
    ({"Origin": "https://console.example"}, 200),
    ({"Host": "mcp.internal:8443"}, 200),
    ({"Origin": "http://localhost:1234"}, 200),
], ids=["foreign-origin", "lookalike-origin", "null-origin", "bad-host", "bad-host-port", "extra-origin",
        "extra-host", "loopback-origin"])
def test_origin_and_host_checks_apply_even_with_a_valid_token(
    http: Served, headers: dict[str, str], status: int
) -> None:
    response = post_initialize(http, {"Authorization": f"Bearer {ALICE}", **headers})
    assert response.status_code == status
    if status != 200:
        assert "serverInfo" not in response.text and "mcp-session-id" not in response.headers


def refused_sse_origin(sse: Served) -> None:
    with httpx2.stream("GET", f"{sse.url}/sse", timeout=30,
                       headers={"Authorization": f"Bearer {CAROL}", "Origin": "http://evil.example"}) as response:
        assert response.status_code == 403
        assert "endpoint" not in response.read().decode()


def test_origin_check_on_sse(sse: Served) -> None:
    refused_sse_origin(sse)


def test_refused_sse_origin_logs_no_traceback(sse: Served) -> None:
    """An attacker's page probing the SSE endpoint must not fill the log with tracebacks (the SDK
    raises after its 403 on SSE; the server now checks Origin/Host before the SDK sees the request)."""
    refused_sse_origin(sse)
    assert post_initialize(sse, {}).status_code == 401  # a later request: the log above is written by now
    assert "Traceback" not in sse.log.text()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_request_body_over_the_limit_is_refused(http: Served, fake: FakeAce, chunked: bool) -> None:
    prompt = "x" * (MAX_REQUEST_BYTES + 1000)
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "kimi_chat", "arguments": {"prompt": prompt}}}
    data = json.dumps(call).encode()

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]

    headers = {**MCP_HEADERS, "Authorization": f"Bearer {ALICE}"}
    response = httpx2.post(f"{http.url}/mcp", content=pieces() if chunked else data, headers=headers, timeout=30)
    assert response.status_code == 413
    assert prompt not in response.text
    assert fake.requests == []
    assert post_initialize(http, {"Authorization": f"Bearer {ALICE}"}).status_code == 200  # still serving


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-wrong-wrong-wrong"}])
def test_healthz_needs_no_auth_and_shows_no_secrets(http: Served, sse: Served, fake: FakeAce,
                                                    headers: dict[str, str]) -> None:
    for served in (http, sse):
        response = httpx2.get(f"{served.url}/healthz", headers=headers, timeout=30)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok" and set(body) <= {"status", "version"}
        for secret in (*CLIENT_TOKENS, fake.token):
            assert secret not in response.text
    assert fake.requests == []


# --------------------------------------------------------------------------- start-up refusals


def nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_exposed_bind_without_auth_refuses_to_start(fake: FakeAce) -> None:
    """`--host 0.0.0.0` with no client tokens: exit 2 with one line, never listening (a bounded wait)."""
    port = free_port()
    env = {**os.environ, **server_env(fake), "KIMI_MCP_AUTH_TOKENS": "", "KIMI_MCP_AUTH_TOKENS_FILE": ""}
    done = subprocess.run(
        [sys.executable, "-m", "kimi_mcp", "--transport", "streamable-http", "--host", "0.0.0.0", "--port", str(port)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines  # the refusal, and nothing logged before it
    assert lines[0].startswith("kimi-mcp: refusing to serve 0.0.0.0") and "--allow-unauthenticated" in lines[0]
    assert fake.token not in done.stderr + done.stdout
    assert nothing_listens(port)


@pytest.mark.parametrize(("env", "refused"), [
    ({"KIMI_HOST": "0.0.0.0", "KIMI_TRANSPORT": "sse"}, True),
    ({"KIMI_HOST": "::"}, True),
    ({"KIMI_HOST": "192.168.1.20"}, True),
    ({"KIMI_HOST": "0.0.0.0", "KIMI_MCP_AUTH_TOKENS": f"alice:{ALICE}"}, False),
    ({"KIMI_HOST": "0.0.0.0", "KIMI_ALLOW_UNAUTHENTICATED": "true"}, False),
    ({"KIMI_HOST": "127.0.0.1"}, False),
    ({"KIMI_HOST": "::1"}, False),
    ({"KIMI_HOST": "localhost"}, False),
], ids=["any-ipv4-sse", "any-ipv6", "lan-address", "with-tokens", "allow-unauthenticated", "loopback",
        "loopback-ipv6", "localhost"])
def test_exposure_check(env: dict[str, str], refused: bool) -> None:
    settings = Settings.load(env)
    tokens = load_client_tokens(settings)
    if refused:
        with pytest.raises(SettingsError, match="refusing to serve"):
            check_exposure(settings, tokens)
    else:
        check_exposure(settings, tokens)


@pytest.mark.parametrize("tokens", [
    f"alice:{ALICE[:10]}",
    f"{ALICE}",
    f"alice:{ALICE},:{BOB}",
    f"alice:{ALICE},bob:",
], ids=["short-token", "no-name", "empty-name", "empty-token"])
def test_malformed_client_tokens_are_refused_without_echoing_them(tokens: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_client_tokens(Settings.load({"KIMI_MCP_AUTH_TOKENS": tokens}))
    message = str(caught.value)
    assert message.startswith("invalid setting KIMI_MCP_AUTH_TOKENS")
    for secret in (ALICE, ALICE[:10], BOB):
        assert secret not in message


def test_tokens_file_and_variable_combine(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# comment\ncarol:{CAROL}\n")
    settings = Settings.load({"KIMI_MCP_AUTH_TOKENS": f"alice:{ALICE}", "KIMI_MCP_AUTH_TOKENS_FILE": str(tokens_file)})
    assert load_client_tokens(settings) == {ALICE: "alice", CAROL: "carol"}
    missing = Settings.load({"KIMI_MCP_AUTH_TOKENS_FILE": str(tmp_path / "absent")})
    with pytest.raises(SettingsError, match="KIMI_MCP_AUTH_TOKENS_FILE"):
        load_client_tokens(missing)


# --------------------------------------------------------------------------- secrets, in process


def test_settings_repr_masks_every_secret() -> None:
    settings = Settings.load({"ACEDATACLOUD_API_TOKEN": "upstream-secret-123456",
                              "KIMI_MCP_AUTH_TOKENS": f"alice:{ALICE},bob:{BOB}"})
    for shown in (repr(settings), str(settings), json.dumps(settings.masked(), default=str),
                  repr(settings.api_token), str(settings.auth_tokens), f"{settings.api_token}"):
        for secret in ("upstream-secret-123456", ALICE, BOB):
            assert secret not in shown
    assert settings.masked()["api_token"] == "set (****)"
    assert {"upstream-secret-123456", ALICE, BOB} <= set(settings.secrets())
    assert repr(Secret("abc")) == "Secret('****')"


def test_redacting_filter_masks_messages_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "token %s in %r", (ALICE, {"k": BOB}), None)
    try:
        raise RuntimeError(f"failed with {ALICE}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter((ALICE, BOB)).filter(record)
    text = logging.Formatter().format(record)
    assert ALICE not in text and BOB not in text and "****" in text


def test_an_invalid_secret_setting_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load({"ACEDATACLOUD_API_TOKEN": ALICE, "KIMI_PORT": "not-a-port"})
    assert ALICE not in str(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["top", "nested"])
async def test_schema_refs_never_make_the_server_fetch_urls(fake: FakeAce, where: str) -> None:
    """A caller's JSON Schema must not turn the server into an HTTP client for arbitrary URLs
    (think http://169.254.169.254/ or an internal admin API); here the URL is the loopback fake's.
    jsonschema's default registry fetched remote `$ref`s with a blocking urlopen (SSRF, and a stalled
    event loop for a slow host) until resolution was made local-only."""
    target = f"{fake.base_url}/internal/secret.json"
    schema = {"$ref": target} if where == "top" else {"properties": {"answer": {"$ref": target}}}
    async with connect("memory", fake) as client:
        result = await client.call_tool("kimi_json", {"prompt": "json please", "schema": schema})
    assert result.is_error and result.structured_content is not None
    assert result.structured_content["error"]["kind"] == "invalid_arguments"
    assert [r.path for r in fake.requests if r.path != CHAT_PATH] == []


# --------------------------------------------------------------------------- the sweep (keep it last)


@pytest.mark.anyio
async def test_upstream_echo_of_a_token_is_redacted_over_http(http: Served, fake: FakeAce) -> None:
    """The upstream token and the client tokens are all masked in error results (and the DEBUG log)."""
    for secret in (fake.token, BOB):
        fake.script(ace_error(400, "bad_request", f"token {secret} refused"))
        async with http_client(http, ALICE) as alice:
            result = http.keep(await alice.call_tool("kimi_chat", {"prompt": "hi"}))
        assert result.is_error and "token **** refused" in result.content[0].text  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_tokens_file_tokens_are_redacted_too(sse: Served, fake: FakeAce) -> None:
    """Tokens from KIMI_MCP_AUTH_TOKENS_FILE are secrets like the variable's (once only the latter were
    on the redaction list)."""
    fake.script(ace_error(400, "bad_request", f"token {DAVE} refused"))
    async with sse_mcp_client(sse, CAROL) as carol:
        result = sse.keep(await carol.call_tool("kimi_chat", {"prompt": "hi"}))
    assert result.is_error and "token **** refused" in result.content[0].text  # type: ignore[union-attr]


def test_no_token_in_any_result_or_stderr(http: Served, sse: Served, fake: FakeAce) -> None:
    """Every result shown to clients above, and both servers' stderr (at DEBUG): no secret anywhere,
    and no traceback."""
    assert http.shown and sse.shown
    for served in (http, sse):
        stderr = served.log.text()
        assert "Traceback" not in stderr
        everything = "\n".join([*served.shown, stderr])
        for secret in (*CLIENT_TOKENS, fake.token):
            assert secret not in everything, f"a secret leaked on port {served.port}"

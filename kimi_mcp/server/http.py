"""The HTTP transports: who may call, which Origins and Hosts, how big a body, /healthz and /metrics.

Imported only when serving HTTP, so stdio start-up pays nothing for Starlette or uvicorn.
Client tokens (`name:token` pairs) are compared in constant time; the name becomes the
caller's principal, which scopes their conversations. The upstream token is never taken from
a client: it is only ever the server's own setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Literal

import anyio
import h11
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import __version__, telemetry
from ..chat import LOCAL
from ..settings import Settings, SettingsError
from .app import KimiServer
from .context import SCOPE_KEY
from .sessions import SessionLimiter, limit_sessions

__all__ = ["build_app", "check_exposure", "load_client_tokens", "serve_http"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = ("localhost",)
SHUTDOWN_GRACE_S = 10
MetricsAccess = Literal["off", "guarded", "open"]
"""/metrics: not served; behind the same checks and client tokens as /mcp; open to anyone (like /healthz)."""
SESSION_IDLE_S = 600.0
"""A legacy (2025-11-25) Streamable HTTP session unused this long is closed (the SDK's default is 30 min)."""


def parse_token_pairs(text: str, source: str) -> dict[str, str]:
    """`name:token` pairs (commas or new lines between them; `#` starts a comment line)."""
    tokens: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, token = item.partition(":")
        if not sep or not name.strip() or not token.strip():
            raise SettingsError(f"invalid setting {source}: each entry must be name:token")
        if len(token.strip()) < 16:
            raise SettingsError(
                f"invalid setting {source}: the token for {name.strip()!r} is shorter than 16 characters"
            )
        tokens[token.strip()] = name.strip()
    return tokens


def load_client_tokens(settings: Settings) -> dict[str, str]:
    """token -> principal name, from KIMI_MCP_AUTH_TOKENS and KIMI_MCP_AUTH_TOKENS_FILE."""
    tokens: dict[str, str] = {}
    if settings.auth_tokens:
        tokens.update(parse_token_pairs(settings.auth_tokens.reveal(), "KIMI_MCP_AUTH_TOKENS"))
    if settings.auth_tokens_file:
        try:
            text = Path(settings.auth_tokens_file).expanduser().read_text()
        except OSError as exc:
            raise SettingsError(f"invalid setting KIMI_MCP_AUTH_TOKENS_FILE: cannot read it ({exc.strerror})") from None
        tokens.update(parse_token_pairs(text, "KIMI_MCP_AUTH_TOKENS_FILE"))
    return tokens


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, tokens: dict[str, str]) -> bool:
    """Refuse to serve a non-loopback address to anyone at all, unless the operator says so.

    Returns True when the server will be exposed without authentication (the operator's choice).
    """
    if is_loopback(settings.host) or tokens:
        return False
    if not settings.allow_unauthenticated:
        raise SettingsError(
            f"refusing to serve {settings.host}:{settings.port} without client authentication: set "
            "KIMI_MCP_AUTH_TOKENS (name:token pairs), or pass --allow-unauthenticated if you mean it"
        )
    return True


def security_settings(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection always on: loopback Hosts/Origins plus the operator's extras."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", *settings.allowed_hosts]
    if not is_loopback(settings.host):
        hosts.append(f"{settings.host}:*")
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *settings.allowed_origins]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


async def _json_response(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def _principal(tokens: dict[str, str], offered: str | None) -> str | None:
    """The name whose token matches, comparing against every token in constant time."""
    found = None
    for token, name in tokens.items():
        if hmac.compare_digest(token.encode(), (offered or "").encode()):
            found = name
    return found


async def _metrics_response(scope: Scope, send: Send) -> None:
    """The process's series in Prometheus's text format (GET or HEAD)."""
    if scope.get("method") not in ("GET", "HEAD"):
        await _json_response(send, 405, {"error": "method_not_allowed", "message": "/metrics takes GET"},
                             [(b"allow", b"GET, HEAD")])
        return
    data, content_type = telemetry.metrics_text()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else data})


def with_auth_and_health(app: ASGIApp, tokens: dict[str, str], security: TransportSecuritySettings,
                         client_timeout: float, metrics: MetricsAccess = "off") -> ASGIApp:
    """/healthz for load balancers (no auth, no secrets); everything else passes the Host/Origin
    check (here, before the SDK, which on SSE logs a traceback for each refusal) and, when tokens
    are configured, needs a client token. /metrics, when served, is checked like /mcp unless the
    operator opened it (then, like /healthz, it answers anyone: it holds counts, no secrets)."""
    checker = TransportSecurityMiddleware(security)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await app(scope, receive, _flush_spans_at_shutdown(send))
            return
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if scope.get("path") == "/healthz":
            await _json_response(send, 200, {"status": "ok", "version": __version__}, [])
            return
        scrape = metrics != "off" and scope.get("path") == "/metrics"
        if scrape and metrics == "open":
            await _metrics_response(scope, send)
            return
        refused = await checker.validate_request(Request(scope))
        if refused is not None:
            await refused(scope, receive, send)
            return
        if tokens:
            name = _principal(tokens, _bearer(scope))
            if name is None:
                await _json_response(
                    send, 401, {"error": "unauthorized", "message": "a valid Authorization: Bearer token is required"},
                    [(b"www-authenticate", b'Bearer realm="kimi-mcp"')],
                )
                return
            scope[SCOPE_KEY] = name
            # The SDK ties a Streamable HTTP session to the user that opened it: another client
            # presenting that session id is answered as if the session did not exist.
            scope["user"] = AuthenticatedUser(AccessToken(token=f"principal:{name}", client_id=name, scopes=[]))
        if scrape:
            await _metrics_response(scope, send)
            return
        await app(scope, _body_deadline(receive, client_timeout), send)

    return guarded


def _flush_spans_at_shutdown(send: Send) -> Send:
    """The lifespan's `send`, exporting the batched spans before the shutdown is reported done (the
    last moment this process runs code: uvicorn then re-raises SIGTERM)."""

    async def sending(message: Message) -> None:
        if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await anyio.to_thread.run_sync(telemetry.flush_tracing)
        await send(message)

    return sending


def _body_deadline(receive: Receive, idle_s: float) -> Receive:
    """A request body must keep coming: a client that sends nothing for `idle_s` (a byte every
    few seconds never finishing) is treated as gone, so slow-drip requests cannot hold workers.
    Once the body is complete, waiting (for the client's disconnect) is untimed."""
    complete = False

    async def timed() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        with anyio.move_on_after(idle_s):
            message = await receive()
            if message.get("type") != "http.request" or not message.get("more_body", False):
                complete = True
            return message
        log.info("a client stopped sending its request body for %g s; dropping it", idle_s)
        complete = True
        return {"type": "http.disconnect"}

    return timed


def build_app(server: KimiServer, settings: Settings, tokens: dict[str, str]) -> ASGIApp:
    """The ASGI app for the chosen HTTP transport, wrapped in auth and /healthz."""
    security = security_settings(settings)
    if settings.transport == "sse":
        inner: Any = server.sse_app(transport_security=security, host=settings.host,
                                    max_request_body_size=settings.max_request_bytes)
    else:
        inner = server.streamable_http_app(transport_security=security, host=settings.host,
                                           max_request_body_size=settings.max_request_bytes,
                                           session_idle_timeout=SESSION_IDLE_S)
        limiter = SessionLimiter(settings.max_sessions_per_client, SESSION_IDLE_S,
                                 frozenset(HANDSHAKE_PROTOCOL_VERSIONS))
        inner = limit_sessions(inner, limiter, lambda scope: str(scope.get(SCOPE_KEY) or LOCAL))
    return with_auth_and_health(inner, tokens, security, settings.client_timeout, metrics_access(settings))


def metrics_access(settings: Settings) -> MetricsAccess:
    if not settings.metrics:
        return "off"
    return "open" if settings.metrics_open else "guarded"


class HeaderDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for request headers (uvicorn has none): a
    connection that has not sent a whole request head within `header_timeout` of opening, or of
    its previous response, is closed, so headers dripped a byte at a time cannot hold it open."""

    header_timeout = 30.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("a client sent no complete request head within %g s; closing its connection",
                     self.header_timeout)
            self.transport.close()


def with_header_deadline(seconds: float) -> type[HeaderDeadline]:
    """The protocol class for uvicorn's `http=` option, with this deadline."""
    return type("HeaderDeadline", (HeaderDeadline,), {"header_timeout": seconds})


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is announced: a port already taken is one
    clear start-up error (exit status 2), not a log line and exit status 0."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, IndexError) as exc:
        raise SettingsError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise SettingsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve_http(server: KimiServer, settings: Settings, tokens: dict[str, str]) -> None:
    """Serve until stopped (the caller has already run `check_exposure`)."""
    import uvicorn

    if check_exposure(settings, tokens):
        log.warning("serving %s:%s WITHOUT client authentication: anyone who can reach it can spend your "
                    "Ace Data Cloud balance and read every conversation", settings.host, settings.port)
    sock = listen(settings.host, settings.port)
    app = build_app(server, settings, tokens)
    path = "/sse" if settings.transport == "sse" else "/mcp"
    log.info("serving %s on http://%s:%s%s (client auth: %s)", settings.transport, settings.host, settings.port,
             path, f"{len(tokens)} token(s)" if tokens else "off")
    access = metrics_access(settings)
    if access != "off":
        log.info("metrics: http://%s:%s/metrics (%s)", settings.host, settings.port,
                 "open to anyone who can reach it" if access == "open" else "checked like " + path)
    # Keep-alive longer than clients' (httpx: 5 s), so a client never reuses a connection the
    # server is closing at that very moment. A stop (SIGTERM, Ctrl-C) waits at most SHUTDOWN_GRACE_S
    # for calls in flight, then cancels them (and their upstream requests) and closes the store.
    config = uvicorn.Config(app, log_level=settings.log_level.lower(), access_log=False, log_config=None,
                            timeout_keep_alive=30, timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                            http=with_header_deadline(settings.client_timeout))

    async def run() -> None:
        # One state for the whole process, whatever the transport does per connection.
        async with server.runtime():
            await uvicorn.Server(config).serve(sockets=[sock])

    try:
        with _stop_signals_handled_here():
            anyio.run(run)
    finally:
        sock.close()


@contextlib.contextmanager
def _stop_signals_handled_here() -> Iterator[None]:
    """uvicorn re-raises the SIGTERM/SIGINT that stopped it as soon as it has stopped serving, and
    with the default handler in place that kills the process before the runtime closes (store,
    pool, task records). With a handler of ours underneath, that re-raise is harmless and the
    process ends the ordinary way once everything is closed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda sig, _frame: log.info("stopping on %s", signal.Signals(sig).name))
                for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

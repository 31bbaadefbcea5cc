"""A per-client cap on legacy (2025-11-25) Streamable HTTP sessions.

The SDK caps sessions for the whole process (then answers 503 to everyone); one client that
opens sessions and walks away could use them all. This middleware counts each principal's open
sessions as the SDK would (opened by a 2xx answer carrying `mcp-session-id`; gone on DELETE, on
404, or after the SDK's idle timeout with no request in flight) and answers 429 to an opening
request past that principal's cap. The stateless 2026-07-28 era opens no sessions and is not
counted. Imports only the standard library; the principal comes from the auth middleware.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SessionLimiter", "limit_sessions"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"


@dataclass
class _Session:
    in_flight: int = 0
    last_seen: float = 0.0


@dataclass
class SessionLimiter:
    """Each principal's open sessions, and the openings under way (so two at once cannot both pass)."""

    cap: int
    idle_s: float
    legacy_versions: frozenset[str]
    clock: Callable[[], float] = time.monotonic
    _open: dict[str, dict[str, _Session]] = field(default_factory=dict)
    _opening: dict[str, int] = field(default_factory=dict)

    def count(self, principal: str) -> int:
        """Open sessions plus openings under way, after forgetting the ones the SDK has closed as idle."""
        sessions = self._open.get(principal, {})
        now = self.clock()
        for sid in [s for s, v in sessions.items() if v.in_flight == 0 and now - v.last_seen >= self.idle_s]:
            del sessions[sid]
        return len(sessions) + self._opening.get(principal, 0)

    def opens_session(self, scope: Scope) -> bool:
        """A legacy request without a session id: the SDK opens a session for it if it initializes."""
        headers = dict(scope.get("headers", []))
        if SESSION_HEADER in headers or scope.get("method") != "POST":
            return False
        version = headers.get(VERSION_HEADER)
        return version is None or version.decode("latin-1") in self.legacy_versions

    async def __call__(self, app: ASGIApp, principal: str, scope: Scope, receive: Receive, send: Send) -> None:
        sid_header = dict(scope.get("headers", [])).get(SESSION_HEADER)
        if sid_header is not None:
            await self._on_session(app, principal, sid_header.decode("latin-1"), scope, receive, send)
        elif self.opens_session(scope):
            await self._opening_request(app, principal, scope, receive, send)
        else:
            await app(scope, receive, send)

    async def _opening_request(self, app: ASGIApp, principal: str, scope: Scope, receive: Receive,
                               send: Send) -> None:
        if self.count(principal) >= self.cap:
            log.warning("refusing a new session for %s: %d sessions already open", principal, self.cap)
            await _too_many(send, self.cap, self.idle_s)
            return
        self._opening[principal] = self._opening.get(principal, 0) + 1
        opened: list[str] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status", 500) < 400:
                sid = dict(message.get("headers", [])).get(SESSION_HEADER)
                if sid is not None and not opened:
                    # From an opening to an open session, in flight until this request ends.
                    opened.append(sid.decode("latin-1"))
                    self._opening[principal] -= 1
                    self._open.setdefault(principal, {})[opened[0]] = _Session(in_flight=1, last_seen=self.clock())
            await send(message)

        try:
            await app(scope, receive, watch)
        finally:
            if opened:
                self._release(principal, opened[0])
            else:
                self._opening[principal] -= 1

    async def _on_session(self, app: ASGIApp, principal: str, sid: str, scope: Scope, receive: Receive,
                          send: Send) -> None:
        session = self._open.get(principal, {}).get(sid)
        if session is None:  # not this principal's (the SDK answers 404) or not counted
            await app(scope, receive, send)
            return
        session.in_flight += 1
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message.get("status", 500)))
            await send(message)

        try:
            await app(scope, receive, watch)
        finally:
            self._release(principal, sid)
            gone = status and (status[0] == 404 or (scope.get("method") == "DELETE" and status[0] < 300))
            if gone:
                self._open.get(principal, {}).pop(sid, None)

    def _release(self, principal: str, sid: str) -> None:
        session = self._open.get(principal, {}).get(sid)
        if session is not None:
            session.in_flight -= 1
            session.last_seen = self.clock()


def limit_sessions(app: ASGIApp, limiter: SessionLimiter, principal_of: Callable[[Scope], str]) -> ASGIApp:
    """`app` with `limiter` applied to every HTTP request, per the principal `principal_of` names."""

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        await limiter(app, principal_of(scope), scope, receive, send)

    return limited


async def _too_many(send: Send, cap: int, idle_s: float) -> None:
    message = (f"too many open sessions for this client ({cap}): end unused ones (HTTP DELETE), or wait "
               f"{idle_s:g} s for idle ones to expire")
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": message}}).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(int(idle_s)).encode())]})
    await send({"type": "http.response.body", "body": body})

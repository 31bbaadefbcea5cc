"""What a tool reads from the SDK's request context: who is calling, whether they listen for progress,
and the process's `ChatTools`.

The HTTP auth layer (`server.http`) puts the client token's name into the ASGI scope under
`SCOPE_KEY`; conversations are keyed by it so one client can never see another's.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context

from ..chat import LOCAL, ChatTools, ProgressSink
from ..redaction import redact

__all__ = ["SCOPE_KEY", "Ctx", "principal_of", "progress_sink", "tools_of"]

SCOPE_KEY = "kimi_mcp.principal"

Ctx = Context[ChatTools, Any]


def principal_of(ctx: Any) -> str:
    """The caller's principal, from the HTTP request the call arrived on (if any)."""
    request = getattr(ctx.request_context, "request", None)
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict):
        name = scope.get(SCOPE_KEY)
        if isinstance(name, str) and name:
            return name
    return LOCAL


def tools_of(ctx: Ctx) -> ChatTools:
    """The process's tool logic (the lifespan's value)."""
    return ctx.request_context.lifespan_context


def progress_sink(ctx: Ctx, secrets: tuple[str, ...] = ()) -> ProgressSink | None:
    """A sink when the caller asked for progress (sent a progress token), else None; every
    message leaves masked (it carries the answer's text)."""
    request = ctx.request_context
    meta: Any = request.meta or {}
    raw_meta: Any = (request.params or {}).get("_meta") or {}
    tokens = (meta.get("progress_token"), meta.get("progressToken"), raw_meta.get("progressToken"))
    if all(token is None for token in tokens):
        return None

    async def sink(progress: float, message: str) -> None:
        await ctx.report_progress(progress, None, redact(message, secrets))

    return sink

"""Who is calling: the authenticated client's name on HTTP, "local" on stdio and open HTTP.

The HTTP auth layer (`http_app`) puts the name into the ASGI scope; conversations are keyed by it
so one client can never see another's.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LOCAL", "SCOPE_KEY", "principal_of"]

LOCAL = "local"
SCOPE_KEY = "kimi_mcp.principal"


def principal_of(ctx: Any) -> str:
    """The caller's principal, from the HTTP request the call arrived on (if any)."""
    request = getattr(ctx.request_context, "request", None)
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict):
        name = scope.get(SCOPE_KEY)
        if isinstance(name, str) and name:
            return name
    return LOCAL

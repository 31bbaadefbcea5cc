"""Start the server on its transport; HTTP-only imports stay out of the stdio path."""

from __future__ import annotations

import logging

from .redaction import setup_logging
from .settings import Settings

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    """Run until the host disconnects (stdio) or the process is stopped (HTTP)."""
    setup_logging(settings.log_level, settings.secrets())
    from .server import create_server

    server = create_server(settings)
    if settings.api_token is None:
        log.warning("ACEDATACLOUD_API_TOKEN is not set: every tool call will answer with an auth error")
    log.info("kimi-mcp starting: %s", settings.masked())
    if settings.transport == "stdio":
        server.run()
    else:
        from .http_app import serve_http

        serve_http(server, settings)
    return 0

"""`kimi-mcp serve`: start the server on its transport; HTTP-only imports stay out of the stdio path."""

from __future__ import annotations

import logging

from ..redaction import setup_logging
from ..settings import Settings

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    """Run until the host disconnects (stdio) or the process is stopped (HTTP).

    Everything that can refuse to start is checked before the first log line, so a refusal is
    the one line the command line prints.
    """
    client_tokens: dict[str, str] = {}
    if settings.transport != "stdio":
        from ..server.http import check_exposure, load_client_tokens

        client_tokens = load_client_tokens(settings)
        check_exposure(settings, client_tokens)
    secrets = (*settings.secrets(), *client_tokens)
    setup_logging(settings.log_level, secrets)
    from ..server import create_server

    server = create_server(settings, secrets=secrets)
    if settings.api_token is None:
        log.warning("ACEDATACLOUD_API_TOKEN is not set: every tool call will answer with an auth error")
    log.info("kimi-mcp starting: %s", settings.masked())
    if settings.transport == "stdio":
        server.run_stdio()
    else:
        from ..server.http import serve_http

        serve_http(server, settings, client_tokens)
    return 0

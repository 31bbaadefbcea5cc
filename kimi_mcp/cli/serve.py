"""`kimi-mcp serve`: start the server on its transport; HTTP-only imports stay out of the stdio path."""

from __future__ import annotations

import logging

import anyio

from .. import telemetry
from ..redaction import setup_logging
from ..settings import Settings, SettingsError
from ..store import StorageError, default_store_path, open_store

__all__ = ["check_store", "serve"]

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
    check_store(settings)
    if settings.metrics and settings.transport != "stdio":
        telemetry.enable_metrics()  # without prometheus-client: the one line naming the extra
    secrets = (*settings.secrets(), *client_tokens, *telemetry.env_secrets())
    setup_logging(settings.log_level, secrets, settings.log_format)
    if settings.metrics and settings.transport == "stdio":
        log.warning("KIMI_METRICS has no effect over stdio: /metrics is served by the HTTP transports only")
    telemetry.configure_tracing()
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


def check_store(settings: Settings) -> None:
    """Connect to a database store once (and close again), so an unreachable or refusing database
    is one line and a non-zero exit instead of a server whose every call fails."""
    try:
        store = open_store(settings.store or str(default_store_path()))
    except (ValueError, StorageError) as err:  # a malformed URL; a missing driver
        raise SettingsError(str(err)) from None

    async def connect() -> None:
        try:
            await store.open()
        finally:
            with anyio.CancelScope(shield=True):
                await store.close()

    try:
        anyio.run(connect)
    except StorageError as err:
        raise SettingsError(str(err)) from None

"""The composition root: `open_runtime` builds, once per process, everything the tools share.

The pooled HTTP client, the upstream client, the store, the background task group, and the
`ChatTools` over them. Every entry point (the MCP server's lifespan, `kimi-mcp chat`,
`kimi-mcp doctor`) opens its parts here and nowhere else. May import every layer below the MCP
surface: `chat`, `upstream`, `store` and the root modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from .catalogue import Catalogue
from .chat import ChatService, ChatTools, Conversations, Generations, SchemaChecker, TaskLimits, Tasks
from .prices import prices_for
from .settings import Settings
from .store import Limits, default_store_path, open_store
from .upstream import KimiClient, RetryPolicy, Timeouts, make_http_client

__all__ = ["open_runtime"]

CLOSE_S = 5.0
"""At most this long to close the store (SQLite checkpoints its WAL) and the schema workers."""


@asynccontextmanager
async def open_runtime(
    settings: Settings, catalogue: Catalogue, secrets: tuple[str, ...] | None = None
) -> AsyncIterator[ChatTools]:
    """The process's shared parts, closed (store included) when the block ends. `secrets` (default:
    the settings' own) are masked in everything stored."""
    timeouts = Timeouts.from_settings(settings)
    store = open_store(settings.store or str(default_store_path()))
    limits = Limits(max_turns=settings.max_turns, max_bytes=settings.max_conversation_bytes)
    async with make_http_client(timeouts, settings.max_concurrency) as http, anyio.create_task_group() as tg:
        prices = prices_for(settings)
        client = KimiClient(http, base_url=settings.base_url, token=settings.api_token, timeouts=timeouts,
                            retry=RetryPolicy(max_retries=settings.max_retries),
                            max_concurrency=settings.max_concurrency, prices=prices)
        service = ChatService(client, catalogue, settings.default_model, prices)
        masked = settings.secrets() if secrets is None else secrets
        conversations = Conversations(service, store, limits, settings.conversation_ttl_days * 86_400,
                                      secrets=masked)
        schemas = SchemaChecker()
        tasks = Tasks(store, tg, TaskLimits(wait_s=settings.task_wait, ttl_s=settings.task_ttl,
                                                lease_s=settings.answer_lease), masked)
        try:
            yield ChatTools(service, conversations, Generations(tg), settings.soft_deadline, schemas, tasks,
                            history=settings.store != "none")
        finally:
            tg.cancel_scope.cancel()
            # Shielded (this may run because the process is being cancelled) and bounded.
            with anyio.move_on_after(CLOSE_S, shield=True):
                await schemas.close()
                await store.close()

"""The per-process state every tool call shares, and `open_state`, which builds it once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from .catalogue import Catalogue
from .chat import ChatService
from .conversations import ConversationChat
from .generations import Generations
from .retry import RetryPolicy
from .settings import Settings
from .store import Limits, default_store_path, open_store
from .upstream import KimiClient, Timeouts, make_http_client

__all__ = ["AppState", "open_state"]


@dataclass(frozen=True, slots=True)
class AppState:
    """What the lifespan builds once per process: services, store-backed conversations, background work."""

    service: ChatService
    conversations: ConversationChat
    generations: Generations
    soft_deadline: float


@asynccontextmanager
async def open_state(settings: Settings, catalogue: Catalogue) -> AsyncIterator[AppState]:
    """The process's shared state: the pooled HTTP client, the store and the background task group."""
    timeouts = Timeouts(connect=settings.connect_timeout, first_byte=settings.first_byte_timeout,
                        idle=settings.idle_timeout, overall=settings.request_timeout)
    store = open_store(settings.store or str(default_store_path()))
    limits = Limits(max_turns=settings.max_turns, max_bytes=settings.max_conversation_bytes)
    async with make_http_client(timeouts, settings.max_concurrency) as http, anyio.create_task_group() as tg:
        client = KimiClient(http, base_url=settings.base_url, token=settings.api_token, timeouts=timeouts,
                            retry=RetryPolicy(max_retries=settings.max_retries),
                            max_concurrency=settings.max_concurrency)
        service = ChatService(client, catalogue, settings.default_model)
        conversations = ConversationChat(service, store, limits, settings.conversation_ttl_days * 86_400)
        try:
            yield AppState(service, conversations, Generations(tg), settings.soft_deadline)
        finally:
            tg.cancel_scope.cancel()
            await store.close()

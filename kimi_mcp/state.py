"""The per-process state the lifespan builds and every tool call shares."""

from __future__ import annotations

from dataclasses import dataclass

from .chat import ChatService
from .conversations import ConversationChat
from .generations import Generations

__all__ = ["AppState"]


@dataclass(frozen=True, slots=True)
class AppState:
    """What the lifespan builds once per process: services, store-backed conversations, background work."""

    service: ChatService
    conversations: ConversationChat
    generations: Generations
    soft_deadline: float
    secrets: tuple[str, ...]

"""Conversation storage: a small Protocol, an in-memory and a SQLite backend, and `open_store`.

Tools depend only on `ConversationStore`, so a new backend needs no change outside this package
(and must pass `tests/test_store_contract.py`).
"""

from __future__ import annotations

from pathlib import Path

from kimi_mcp.store.base import (
    Conversation,
    ConversationNotFound,
    ConversationStore,
    ConversationSummary,
    Limits,
    SaveResult,
    StorageError,
    Turn,
    new_conversation_id,
)
from kimi_mcp.store.memory import MemoryStore
from kimi_mcp.store.paths import default_store_path
from kimi_mcp.store.sqlite import SQLiteStore

__all__ = [
    "Conversation",
    "ConversationNotFound",
    "ConversationStore",
    "ConversationSummary",
    "Limits",
    "MemoryStore",
    "SQLiteStore",
    "SaveResult",
    "StorageError",
    "Turn",
    "default_store_path",
    "new_conversation_id",
    "open_store",
]


def open_store(spec: str) -> ConversationStore:
    """`"memory"` for a throwaway store, anything else is a SQLite file path (`~` expanded).

    Nothing is opened here; the SQLite file is created on first use.
    """
    if spec == "memory":
        return MemoryStore()
    if not spec.strip():
        raise ValueError("store spec must be 'memory' or a file path")
    return SQLiteStore(Path(spec).expanduser())

"""The store layer: a small Protocol, an in-memory, a SQLite and a PostgreSQL backend, and `open_store`.

It keeps conversations and `AnswerRecord`s (the durable state of answers being written).

The chat layer depends only on `ConversationStore`, so a new backend needs no change outside this
package (and must pass the contract class in `tests/store/test_store_contract.py`). May import
only the standard library and anyio (and psycopg, in `postgres` only, loaded only when a
PostgreSQL URL is given): nothing of ours above it, never the MCP SDK. Its `StorageError` is
turned into the tools' `storage` error in one place (`chat.conversations.storage`).
"""

from __future__ import annotations

from pathlib import Path

from kimi_mcp.store.base import (
    MAX_ANSWER_BYTES,
    AnswerKind,
    AnswerRecord,
    AnswerStatus,
    Conversation,
    ConversationNotFound,
    ConversationStore,
    ConversationSummary,
    Limits,
    SaveResult,
    StorageError,
    Totals,
    Turn,
    new_answer_id,
    new_conversation_id,
    text_bytes,
    turn_bytes,
)
from kimi_mcp.store.memory import MemoryStore
from kimi_mcp.store.paths import default_store_path
from kimi_mcp.store.sqlite import SQLiteStore

__all__ = [
    "MAX_ANSWER_BYTES",
    "AnswerKind",
    "AnswerRecord",
    "AnswerStatus",
    "Conversation",
    "ConversationNotFound",
    "ConversationStore",
    "ConversationSummary",
    "Limits",
    "MemoryStore",
    "SQLiteStore",
    "SaveResult",
    "StorageError",
    "Totals",
    "Turn",
    "default_store_path",
    "new_answer_id",
    "new_conversation_id",
    "open_store",
    "text_bytes",
    "turn_bytes",
]


def open_store(spec: str) -> ConversationStore:
    """`"memory"` for a throwaway store (`"none"` too: the caller then stores no conversation in it,
    only the records of answers in progress), a `postgresql://` (or `postgres://`) URL for
    PostgreSQL, anything else is a SQLite file path (`~` expanded).

    Nothing is opened here; the SQLite file is created, the database connected, on first use.
    A PostgreSQL URL without its driver installed is a StorageError naming the extra to install.
    """
    if spec in ("memory", "none"):
        return MemoryStore()
    if not spec.strip():
        raise ValueError("store spec must be 'memory', 'none', a postgresql:// URL or a file path")
    if spec.startswith(("postgresql://", "postgres://")):
        return _postgres_store(spec)
    return SQLiteStore(Path(spec).expanduser())


def _postgres_store(url: str) -> ConversationStore:
    try:
        from kimi_mcp.store.postgres import PostgresStore
    except ImportError as err:
        if (err.name or "").startswith("kimi_mcp"):
            raise
        raise StorageError(
            "KIMI_STORE names PostgreSQL, but its driver is not installed: pip install 'kimi-mcp[postgres]'"
            f" ({err})"
        ) from None
    return PostgresStore(url)

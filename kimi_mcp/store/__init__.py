"""The store layer: a small Protocol, an in-memory and a SQLite backend, and `open_store`.

It keeps conversations and `AnswerRecord`s (the durable state of answers being written).

The chat layer depends only on `ConversationStore`, so a new backend needs no change outside this
package (and must pass the contract class in `tests/store/test_store_contract.py`). May import
only the standard library and anyio: nothing of ours above it, never the MCP SDK. Its `StorageError` is
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
    "Turn",
    "default_store_path",
    "new_answer_id",
    "new_conversation_id",
    "open_store",
    "text_bytes",
    "turn_bytes",
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

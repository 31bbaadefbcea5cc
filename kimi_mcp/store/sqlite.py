"""The default store: one SQLite file, so conversations survive restarts with no server to run.

All database work runs in a worker thread (never on the event loop) on one connection guarded
by a lock; each save is a single `BEGIN IMMEDIATE` transaction, so a crash leaves no half turn.
Answer records live in the same file (schema version 2), written the same way; each conversation's
running totals (tokens, estimated cost: version 3) are added to in the save's own transaction.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import anyio
import anyio.to_thread

from kimi_mcp.store.base import (
    AnswerKind,
    AnswerRecord,
    AnswerStatus,
    Conversation,
    ConversationNotFound,
    ConversationSummary,
    Limits,
    SaveResult,
    StorageError,
    Totals,
    Turn,
    check_answer,
    check_answer_fields,
    check_exchange,
    clock,
    plan_pruning,
    text_bytes,
    turn_bytes,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")

SCHEMA_VERSION = 3

# synchronous=FULL rather than NORMAL: in WAL mode NORMAL never corrupts the file, but a power cut
# can lose the last commits. A save happens once per model round trip (seconds), so one extra
# fsync per save is invisible, and a conversation_id we handed out should still work after a reboot.
_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)

_TOTALS_COLUMNS = "prompt_tokens, completion_tokens, cached_tokens, cost_usd, unpriced_calls"
_SUMMARY_COLUMNS = f"id, principal, title, model, turns, size_bytes, created_at, updated_at, {_TOTALS_COLUMNS}"
_SUMMARY_WIDTH = 13
_ANSWER_COLUMNS = (
    "id, principal, kind, conversation_id, owner, status, status_message, text, reasoning, result,"
    " created_at, updated_at, expires_at"
)

# What the user reads after "conversation store at <path> ...", by SQLite primary result code.
_PROBLEMS: dict[int, str] = {
    sqlite3.SQLITE_PERM: "is not accessible (permission denied)",
    sqlite3.SQLITE_BUSY: "is locked by another process; try again",
    sqlite3.SQLITE_LOCKED: "is locked by another process; try again",
    sqlite3.SQLITE_READONLY: "is read-only (check the file, its -wal and -shm files, and its directory)",
    sqlite3.SQLITE_IOERR: "had a disk I/O error",
    sqlite3.SQLITE_CORRUPT: "is corrupt",
    sqlite3.SQLITE_FULL: "cannot be written: the disk is full",
    sqlite3.SQLITE_CANTOPEN: "cannot be opened (missing or unwritable directory, or a directory itself?)",
    sqlite3.SQLITE_NOTADB: "is not a SQLite database",
}


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    """The first schema: conversations and their turns, deleted together."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS conversations ("
        " id TEXT PRIMARY KEY, principal TEXT NOT NULL, title TEXT NOT NULL, model TEXT NOT NULL,"
        " system TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
        " turns INTEGER NOT NULL, size_bytes INTEGER NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS turns ("
        " conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,"
        " seq INTEGER NOT NULL, role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),"
        " content TEXT NOT NULL, reasoning TEXT, created_at REAL NOT NULL,"
        " PRIMARY KEY (conversation_id, seq))"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS conversations_by_principal ON conversations (principal, updated_at)")


def _migrate_to_2(conn: sqlite3.Connection) -> None:
    """Answer records (tasks, soft-deadline pieces); no foreign key, since an answer may outlive
    its conversation's deletion until it expires. Spelled out, never derived: a step is frozen."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS answers ("
        " id TEXT PRIMARY KEY, principal TEXT NOT NULL,"
        " kind TEXT NOT NULL CHECK (kind IN ('task', 'answer')), conversation_id TEXT, owner TEXT NOT NULL,"
        " status TEXT NOT NULL CHECK (status IN ('working', 'completed', 'failed', 'cancelled', 'interrupted')),"
        " status_message TEXT NOT NULL, text TEXT NOT NULL, reasoning TEXT NOT NULL, result TEXT,"
        " created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL NOT NULL)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS answers_by_conversation ON answers (principal, conversation_id)")
    conn.execute("CREATE INDEX IF NOT EXISTS answers_by_expiry ON answers (expires_at)")


def _migrate_to_3(conn: sqlite3.Connection) -> None:
    """Each conversation's running totals (tokens, estimated cost); conversations from before start
    at zero. Spelled out, never derived: a step is frozen."""
    conn.execute("ALTER TABLE conversations ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE conversations ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE conversations ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE conversations ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE conversations ADD COLUMN unpriced_calls INTEGER NOT NULL DEFAULT 0")


# Key: the version a step produces. A later release adds {4: _migrate_to_4} and bumps SCHEMA_VERSION.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_to_1, 2: _migrate_to_2,
                                                                 3: _migrate_to_3}


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """Commit on success, roll back on any error (SQLite may already have rolled back itself)."""
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version, refusing one from a newer kimi-mcp rather than misreading it."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"conversation store at {path} has schema version {version}, newer than this "
            f"kimi-mcp understands ({SCHEMA_VERSION}); upgrade kimi-mcp or use another store path"
        )
    return version


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION; the write lock stops two processes migrating at once.

    An up-to-date file is not written at all, so a read-only store can still be read.
    """
    if _schema_version(conn, path) == SCHEMA_VERSION:
        return
    with _transaction(conn):
        version = _schema_version(conn, path)  # again under the lock: another process may have migrated
        for target in range(version + 1, SCHEMA_VERSION + 1):
            _MIGRATIONS[target](conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")


def _storage_error(path: Path, err: sqlite3.Error) -> StorageError:
    """A readable message naming the file and the problem; SQLite's own text holds no secrets."""
    code = getattr(err, "sqlite_errorcode", -1) & 0xFF
    problem = _PROBLEMS.get(code, f"failed: {err}")
    return StorageError(f"conversation store at {path} {problem}")


def _totals(row: Sequence[Any]) -> Totals:
    """Totals from the five `_TOTALS_COLUMNS` values, in order."""
    return Totals(int(row[0]), int(row[1]), int(row[2]), float(row[3]), int(row[4]))


def _summary(row: Sequence[Any]) -> ConversationSummary:
    return ConversationSummary(
        id=row[0],
        principal=row[1],
        title=row[2],
        model=row[3],
        turns=row[4],
        size_bytes=row[5],
        created_at=row[6],
        updated_at=row[7],
        totals=_totals(row[8:_SUMMARY_WIDTH]),
    )


def _get_summary(conn: sqlite3.Connection, principal: str, conversation_id: str) -> ConversationSummary | None:
    row = conn.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM conversations WHERE id = ? AND principal = ?", (conversation_id, principal)
    ).fetchone()
    return None if row is None else _summary(row)


def _get(conn: sqlite3.Connection, principal: str, conversation_id: str) -> Conversation | None:
    """Summary and turns read in one snapshot, so a concurrent writer cannot split them."""
    with _transaction(conn, "BEGIN"):
        row = conn.execute(
            f"SELECT {_SUMMARY_COLUMNS}, system FROM conversations WHERE id = ? AND principal = ?",
            (conversation_id, principal),
        ).fetchone()
        if row is None:
            return None
        rows = conn.execute(
            "SELECT role, content, reasoning, created_at FROM turns WHERE conversation_id = ? ORDER BY seq",
            (conversation_id,),
        ).fetchall()
    turns = tuple(Turn(role, content, reasoning, created_at) for role, content, reasoning, created_at in rows)
    return Conversation(_summary(row), row[_SUMMARY_WIDTH], turns)


class _Head(NamedTuple):
    """What a save reads of the conversation's row: what it keeps, and the running counts it adds to."""

    title: str
    created_at: float
    totals: Totals
    turns: int  # how many turns are stored
    size_bytes: int  # text_bytes(system) + the stored turns' turn_bytes, as the last save computed them
    system_bytes: int  # text_bytes(system) of the stored system prompt, measured as `_stored_turns` measures


def _head(
    conn: sqlite3.Connection, principal: str, conversation_id: str, title: str, now: float, create: bool
) -> _Head:
    """The conversation's title, created_at, totals so far and running counts, inserting it first
    when new (and allowed)."""
    row = conn.execute(
        "SELECT principal, title, created_at, turns, size_bytes, coalesce(length(CAST(system AS BLOB)), 0),"
        f" {_TOTALS_COLUMNS} FROM conversations WHERE id = ?",
        (conversation_id,),
    ).fetchone()
    if row is None and not create:
        raise ConversationNotFound(conversation_id)
    if row is None:
        conn.execute(
            "INSERT INTO conversations (id, principal, title, model, system, created_at, updated_at,"
            " turns, size_bytes) VALUES (?, ?, ?, '', NULL, ?, ?, 0, 0)",
            (conversation_id, principal, title, now, now),
        )
        return _Head(title, now, Totals(), 0, 0, 0)
    if row[0] != principal:
        raise ConversationNotFound(conversation_id)
    return _Head(str(row[1]), float(row[2]), _totals(row[6:]), int(row[3]), int(row[4]), int(row[5]))


def _stored_turns(conn: sqlite3.Connection, conversation_id: str) -> builtins.list[Any]:
    """(seq, role, size) of every stored turn, oldest first, without loading the texts into Python."""
    return conn.execute(
        "SELECT seq, role, length(CAST(content AS BLOB)) + coalesce(length(CAST(reasoning AS BLOB)), 0)"
        " FROM turns WHERE conversation_id = ? ORDER BY seq",
        (conversation_id,),
    ).fetchall()


def _next_seq(conn: sqlite3.Connection, conversation_id: str) -> int:
    """One past the newest stored turn's seq (0 when none): one seek down the primary key's index."""
    row = conn.execute("SELECT max(seq) FROM turns WHERE conversation_id = ?", (conversation_id,)).fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def _append_pruning(
    conn: sqlite3.Connection, conversation_id: str, system: str | None, turns: Sequence[Turn], limits: Limits
) -> tuple[int, int, int]:
    """Append `turns` after pruning by every stored turn's size: (pruned turns, kept turns, size)."""
    stored = _stored_turns(conn, conversation_id)
    sizes = [(role, size) for _, role, size in stored] + [(t.role, turn_bytes(t)) for t in turns]
    pruned = plan_pruning(text_bytes(system), sizes, len(turns), limits)
    if pruned:
        last_dropped = stored[pruned - 1][0]
        conn.execute("DELETE FROM turns WHERE conversation_id = ? AND seq <= ?", (conversation_id, last_dropped))
    _insert_turns(conn, conversation_id, stored[-1][0] + 1 if stored else 0, turns)
    kept = sizes[pruned:]
    return pruned, len(kept), text_bytes(system) + sum(s for _, s in kept)


def _insert_turns(conn: sqlite3.Connection, conversation_id: str, first_seq: int, turns: Sequence[Turn]) -> None:
    conn.executemany(
        "INSERT INTO turns (conversation_id, seq, role, content, reasoning, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(conversation_id, first_seq + i, t.role, t.content, t.reasoning, t.created_at) for i, t in enumerate(turns)],
    )


def _write_summary(
    conn: sqlite3.Connection,
    conversation_id: str,
    model: str,
    system: str | None,
    now: float,
    turns: int,
    size: int,
    totals: Totals,
) -> None:
    """The last write of a save (the crash test stops the process right after it, before COMMIT);
    `totals` are the conversation's new running totals."""
    conn.execute(
        "UPDATE conversations SET model = ?, system = ?, updated_at = ?, turns = ?, size_bytes = ?,"
        " prompt_tokens = ?, completion_tokens = ?, cached_tokens = ?, cost_usd = ?, unpriced_calls = ?"
        " WHERE id = ?",
        (model, system, now, turns, size, totals.prompt_tokens, totals.completion_tokens, totals.cached_tokens,
         totals.cost_usd, totals.unpriced_calls, conversation_id),
    )


def _save(
    conn: sqlite3.Connection,
    principal: str,
    conversation_id: str,
    model: str,
    system: str | None,
    title: str,
    turns: Sequence[Turn],
    limits: Limits,
    now: float,
    create: bool,
    added: Totals | None,
) -> SaveResult:
    """Create-or-check, append, prune, touch and add to the totals in one write transaction.

    When the exchange fits the limits by the row's running counts (so `plan_pruning` would prune
    nothing), no stored turn is read: the cost does not grow with the conversation. Otherwise every
    stored turn's size is read and pruned by."""
    with _transaction(conn):
        head = _head(conn, principal, conversation_id, title, now, create)
        totals = head.totals if added is None else head.totals + added
        count = head.turns + len(turns)
        size = head.size_bytes - head.system_bytes + text_bytes(system) + sum(turn_bytes(t) for t in turns)
        if count <= limits.max_turns and size <= limits.max_bytes:
            pruned = 0
            _insert_turns(conn, conversation_id, _next_seq(conn, conversation_id), turns)
        else:
            pruned, count, size = _append_pruning(conn, conversation_id, system, turns, limits)
        _write_summary(conn, conversation_id, model, system, now, count, size, totals)
    summary = ConversationSummary(conversation_id, principal, head.title, model, count, size, head.created_at, now,
                                  totals)
    return SaveResult(summary, pruned)


def _list(conn: sqlite3.Connection, principal: str, limit: int) -> builtins.list[ConversationSummary]:
    rows = conn.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM conversations WHERE principal = ? ORDER BY updated_at DESC, id DESC LIMIT ?",
        (principal, max(limit, 0)),
    ).fetchall()
    return [_summary(row) for row in rows]


def _delete(conn: sqlite3.Connection, principal: str, conversation_id: str) -> bool:
    cursor = conn.execute("DELETE FROM conversations WHERE id = ? AND principal = ?", (conversation_id, principal))
    return cursor.rowcount > 0


def _purge(conn: sqlite3.Connection, older_than: float) -> int:
    return conn.execute("DELETE FROM conversations WHERE updated_at < ?", (older_than,)).rowcount


def _answer(row: Sequence[Any]) -> AnswerRecord:
    return AnswerRecord(
        id=row[0],
        principal=row[1],
        kind=cast(AnswerKind, row[2]),
        conversation_id=row[3],
        owner=row[4],
        status=cast(AnswerStatus, row[5]),
        status_message=row[6],
        text=row[7],
        reasoning=row[8],
        result=row[9],
        created_at=row[10],
        updated_at=row[11],
        expires_at=row[12],
    )


def _create_answer(conn: sqlite3.Connection, r: AnswerRecord) -> None:
    """Check and insert under the write lock; COMMIT (synchronous=FULL) makes it durable."""
    with _transaction(conn):
        if conn.execute("SELECT 1 FROM answers WHERE id = ?", (r.id,)).fetchone() is not None:
            raise ValueError(f"answer {r.id} already exists")
        conn.execute(
            f"INSERT INTO answers ({_ANSWER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            dataclasses.astuple(r),  # _ANSWER_COLUMNS lists the fields in their declared order
        )


def _get_answer(conn: sqlite3.Connection, principal: str, answer_id: str, now: float) -> AnswerRecord | None:
    row = conn.execute(
        f"SELECT {_ANSWER_COLUMNS} FROM answers WHERE id = ? AND principal = ? AND expires_at > ?",
        (answer_id, principal, now),
    ).fetchone()
    return None if row is None else _answer(row)


def _update_answer(
    conn: sqlite3.Connection, principal: str, answer_id: str, now: float, changes: dict[str, object]
) -> AnswerRecord | None:
    """One guarded UPDATE (only a live "working" row matches) and its re-read, in one transaction.

    `changes` maps column names fixed by `SQLiteStore.update_answer` (never caller text) to values.
    """
    assignments = "".join(f"{column} = ?, " for column in changes)
    with _transaction(conn):
        cursor = conn.execute(
            f"UPDATE answers SET {assignments}updated_at = ?"
            " WHERE id = ? AND principal = ? AND status = 'working' AND expires_at > ?",
            (*changes.values(), now, answer_id, principal, now),
        )
        if cursor.rowcount == 0:
            return None
        row = conn.execute(f"SELECT {_ANSWER_COLUMNS} FROM answers WHERE id = ?", (answer_id,)).fetchone()
    return _answer(row)


def _answers_in(
    conn: sqlite3.Connection, principal: str, conversation_id: str, now: float
) -> builtins.list[AnswerRecord]:
    rows = conn.execute(
        f"SELECT {_ANSWER_COLUMNS} FROM answers WHERE principal = ? AND conversation_id = ? AND expires_at > ?"
        " ORDER BY created_at, id",
        (principal, conversation_id, now),
    ).fetchall()
    return [_answer(row) for row in rows]


def _count_answers(conn: sqlite3.Connection, principal: str, now: float) -> int:
    row = conn.execute(
        "SELECT count(*) FROM answers WHERE principal = ? AND status = 'working' AND expires_at > ?", (principal, now)
    ).fetchone()
    return int(row[0])


def _interrupt_stale(conn: sqlite3.Connection, now: float, stale_before: float, except_owner: str, message: str) -> int:
    with _transaction(conn):
        return conn.execute(
            "UPDATE answers SET status = 'interrupted', status_message = ?, updated_at = ?"
            " WHERE status = 'working' AND updated_at < ? AND owner != ?",
            (message, now, stale_before, except_owner),
        ).rowcount


def _purge_answers(conn: sqlite3.Connection, now: float) -> int:
    with _transaction(conn):
        return conn.execute("DELETE FROM answers WHERE expires_at <= ?", (now,)).rowcount


class SQLiteStore:
    """Conversations in one SQLite file (WAL mode), shared safely by tasks and by processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # One worker thread at a time: waiting callers queue (cancellably) in the event loop
        # instead of each parking a thread on the lock.
        self._limiter = anyio.CapacityLimiter(1)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._call, work, limiter=self._limiter)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the connection; any SQLite error becomes a StorageError and a fresh connection.

        Reconnecting after an error lets a fixed condition (space freed, permissions back, file
        replaced) take effect: SQLite keeps a file it opened read-only read-only.
        """
        with self._lock:
            conn = self._connection()
            try:
                return work(conn)
            except sqlite3.Error as err:
                self._drop()
                raise _storage_error(self.path, err) from err

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        """Create the directory, connect, set pragmas and migrate; nothing half-open is kept.

        Conversations are private: a directory we create is 0700 and a file we create 0600 (SQLite
        gives its -wal and -shm files the database file's permissions)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise StorageError(f"cannot create directory {self.path.parent}: {err.strerror}") from err
        try:
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass  # another process created it first
        except OSError as err:
            raise StorageError(f"cannot create {self.path}: {err.strerror}") from err
        try:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise _storage_error(self.path, err) from err
        try:
            for pragma in _PRAGMAS:
                conn.execute(pragma)
            _migrate(conn, self.path)
        except sqlite3.Error as err:
            conn.close()
            raise _storage_error(self.path, err) from err
        except BaseException:
            conn.close()
            raise
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(sqlite3.Error):  # discarded anyway; its error was already reported
                conn.close()

    async def summary(self, principal: str, conversation_id: str) -> ConversationSummary | None:
        return await self._run(lambda conn: _get_summary(conn, principal, conversation_id))

    async def get(self, principal: str, conversation_id: str) -> Conversation | None:
        return await self._run(lambda conn: _get(conn, principal, conversation_id))

    async def save_exchange(
        self,
        principal: str,
        conversation_id: str,
        *,
        model: str,
        system: str | None,
        title: str,
        turns: Sequence[Turn],
        limits: Limits,
        now: float,
        create: bool = True,
        totals: Totals | None = None,
    ) -> SaveResult:
        check_exchange(principal, conversation_id, turns, totals)
        batch = tuple(turns)
        return await self._run(
            lambda conn: _save(conn, principal, conversation_id, model, system, title, batch, limits, now, create,
                               totals)
        )

    async def list(self, principal: str, *, limit: int = 50) -> builtins.list[ConversationSummary]:
        return await self._run(lambda conn: _list(conn, principal, limit))

    async def delete(self, principal: str, conversation_id: str) -> bool:
        return await self._run(lambda conn: _delete(conn, principal, conversation_id))

    async def purge_expired(self, *, older_than: float) -> int:
        return await self._run(lambda conn: _purge(conn, older_than))

    async def create_answer(self, record: AnswerRecord) -> None:
        check_answer(record)
        await self._run(lambda conn: _create_answer(conn, record))

    async def get_answer(self, principal: str, answer_id: str, *, now: float | None = None) -> AnswerRecord | None:
        at = clock(now)
        return await self._run(lambda conn: _get_answer(conn, principal, answer_id, at))

    async def update_answer(
        self,
        principal: str,
        answer_id: str,
        *,
        now: float,
        status: AnswerStatus | None = None,
        status_message: str | None = None,
        text: str | None = None,
        reasoning: str | None = None,
        result: str | None = None,
        expires_at: float | None = None,
        owner: str | None = None,
    ) -> AnswerRecord | None:
        check_answer_fields(
            status=status, status_message=status_message, text=text, reasoning=reasoning, result=result, owner=owner
        )
        given: dict[str, object | None] = {
            "status": status,
            "status_message": status_message,
            "text": text,
            "reasoning": reasoning,
            "result": result,
            "expires_at": expires_at,
            "owner": owner,
        }
        changes = {column: value for column, value in given.items() if value is not None}
        return await self._run(lambda conn: _update_answer(conn, principal, answer_id, now, changes))

    async def answers_in(
        self, principal: str, conversation_id: str, *, now: float | None = None
    ) -> builtins.list[AnswerRecord]:
        at = clock(now)
        return await self._run(lambda conn: _answers_in(conn, principal, conversation_id, at))

    async def count_answers(self, principal: str, *, now: float | None = None) -> int:
        at = clock(now)
        return await self._run(lambda conn: _count_answers(conn, principal, at))

    async def interrupt_stale(self, *, now: float, stale_before: float, except_owner: str, message: str) -> int:
        check_answer_fields(status_message=message)
        return await self._run(lambda conn: _interrupt_stale(conn, now, stale_before, except_owner, message))

    async def purge_answers(self, *, now: float) -> int:
        return await self._run(lambda conn: _purge_answers(conn, now))

    async def probe_write(self) -> None:
        """Prove the file can be written (for `kimi-mcp doctor`): one write that changes nothing."""

        def probe(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

        await self._run(probe)

    async def open(self) -> None:
        """Nothing to do before the first call: the file is created (and migrated) on first use, where
        a problem with it is that call's `storage` error."""

    async def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL); a later call would open it again."""
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    def _close(self) -> None:
        with self._lock:
            self._drop()

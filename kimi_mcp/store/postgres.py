"""A PostgreSQL store, for several replicas sharing their conversations and answer records.

Selected by `KIMI_STORE=postgresql://user@host:port/db` (or `postgres://`); needs the `postgres`
extra (psycopg 3 and psycopg_pool). Every call borrows a connection from an async pool (checked
before use, so connections a restarted server dropped are replaced on their own) and runs in
autocommit or in one explicit transaction. The schema is versioned (`kimi_mcp_schema`) and migrated
under a transaction-level advisory lock, so replicas starting together migrate once; a database of
a newer version is refused. A save locks its conversation's row (`SELECT ... FOR UPDATE`) for the
whole append-and-prune (and the addition to its running totals), which serialises saves on one
conversation across replicas.

Free texts (titles, system prompts, turns, answer texts) are stored as UTF-8 `bytea`: PostgreSQL's
`text` cannot hold NUL, which callers may send. Identifiers are `text` with the "C" collation, so
rows sort as in the other backends (by code point). An identifier containing NUL cannot be stored:
reads treat it as absent, writes refuse it with ValueError.

Every message names the database as `postgresql://user@host:port/db`, never the password.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar, cast
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import anyio
import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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

__all__ = ["SCHEMA_VERSION", "PostgresOptions", "PostgresStore", "parse_postgres_url"]

T = TypeVar("T")
Connection: TypeAlias = psycopg.AsyncConnection[TupleRow]
Pool: TypeAlias = AsyncConnectionPool[Connection]

SCHEMA_VERSION = 2
URL_SCHEMES = ("postgresql://", "postgres://")

# pg_advisory_xact_lock key for migrations: "kimi-mcp" as a big-endian int64. Advisory locks are
# per database, so stores of different databases never wait for each other.
_MIGRATION_LOCK = int.from_bytes(b"kimi-mcp", "big")
_MAX_BIGINT = 2**63 - 1
_SAVE_ATTEMPTS = 3  # a create racing a delete of the same id retries; thrice in a row means gone

# Query parameters of ours, stripped before connecting: name -> (default, minimum).
_POOL_PARAMETERS: dict[str, tuple[float, float]] = {
    "pool_min": (1, 0),
    "pool_max": (10, 1),
    "pool_timeout": (10.0, 0.1),  # seconds a call waits for a free (or re-established) connection
    "statement_timeout": (30.0, 0.0),  # seconds one statement may run or wait for a lock (0: no limit)
}
_INTEGER_PARAMETERS = frozenset({"pool_min", "pool_max"})
# libpq's own parameters, set when the URL has none: seconds to connect, and the name the server's
# pg_stat_activity shows.
_LIBPQ_DEFAULTS = {"connect_timeout": "10", "application_name": "kimi-mcp"}

_TOTALS_COLUMNS = "prompt_tokens, completion_tokens, cached_tokens, cost_usd, unpriced_calls"
_SUMMARY_COLUMNS = f"id, principal, title, model, turns, size_bytes, created_at, updated_at, {_TOTALS_COLUMNS}"
_SUMMARY_WIDTH = 13
_ANSWER_COLUMNS = (
    "id, principal, kind, conversation_id, owner, status, status_message, text, reasoning, result,"
    " created_at, updated_at, expires_at"
)

# Version 1: conversations, turns and answer records at once (SQLite's versions 1 and 2). Frozen:
# a later release adds {2: (...)} and bumps SCHEMA_VERSION, never edits a step.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE conversations ("
        ' id text COLLATE "C" PRIMARY KEY, principal text NOT NULL, title bytea NOT NULL, model text NOT NULL,'
        " system bytea, created_at double precision NOT NULL, updated_at double precision NOT NULL,"
        " turns integer NOT NULL, size_bytes bigint NOT NULL)",
        "CREATE INDEX conversations_by_principal ON conversations (principal, updated_at)",
        "CREATE INDEX conversations_by_use ON conversations (updated_at)",
        "CREATE TABLE turns ("
        " conversation_id text COLLATE \"C\" NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,"
        " seq bigint NOT NULL, role text NOT NULL CHECK (role IN ('user', 'assistant')),"
        " content bytea NOT NULL, reasoning bytea, created_at double precision NOT NULL,"
        " PRIMARY KEY (conversation_id, seq))",
        # No foreign key: an answer may outlive its conversation's deletion until it expires.
        "CREATE TABLE answers ("
        ' id text COLLATE "C" PRIMARY KEY, principal text NOT NULL,'
        " kind text NOT NULL CHECK (kind IN ('task', 'answer')), conversation_id text, owner text NOT NULL,"
        " status text NOT NULL CHECK (status IN ('working', 'completed', 'failed', 'cancelled', 'interrupted')),"
        " status_message bytea NOT NULL, text bytea NOT NULL, reasoning bytea NOT NULL, result bytea,"
        " created_at double precision NOT NULL, updated_at double precision NOT NULL,"
        " expires_at double precision NOT NULL)",
        "CREATE INDEX answers_by_conversation ON answers (principal, conversation_id)",
        "CREATE INDEX answers_by_expiry ON answers (expires_at)",
        "CREATE INDEX answers_working ON answers (updated_at) WHERE status = 'working'",
    ),
    # Version 2: each conversation's running totals (tokens, estimated cost); older rows start at zero.
    2: (
        "ALTER TABLE conversations ADD COLUMN prompt_tokens bigint NOT NULL DEFAULT 0,"
        " ADD COLUMN completion_tokens bigint NOT NULL DEFAULT 0, ADD COLUMN cached_tokens bigint NOT NULL DEFAULT 0,"
        " ADD COLUMN cost_usd double precision NOT NULL DEFAULT 0, ADD COLUMN unpriced_calls bigint NOT NULL DEFAULT 0",
    ),
}

# What the user reads after "conversation store at <url> ...", by SQLSTATE (full code, then class).
_PROBLEMS: dict[str, str] = {
    "28P01": "refused the login (wrong password?)",
    "28": "refused the login (check the user name and pg_hba.conf)",
    "3D000": "does not exist (create the database first)",
    "42501": "is not accessible (permission denied)",
    "25006": "is read-only (a standby server, or default_transaction_read_only?)",
    "57014": "took longer than the statement timeout; try again",
    "55P03": "is locked by another client; try again",
    "40P01": "had a deadlock; try again",
    "53100": "cannot be written: the disk is full",
    "53300": "has too many connections; try again",
    "53": "has run out of resources (memory, disk or connections); try again",
    "57P01": "lost its connection (the server is shutting down); try again",
    "57P02": "lost its connection (the server crashed); try again",
    "57P03": "is not accepting connections yet (the server is starting up); try again",
    "08": "lost its connection; try again",
    "XX001": "is corrupt",
    "XX002": "is corrupt",
}


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """What `parse_postgres_url` makes of a URL: libpq's part, ours, and how to name it safely."""

    conninfo: str = field(repr=False)  # for libpq, without our parameters (may hold the password)
    label: str  # postgresql://user@host:port/db, for messages
    secrets: tuple[str, ...] = field(repr=False)  # every spelling of the password, masked in messages
    pool_min: int
    pool_max: int
    pool_timeout: float
    statement_timeout: float


def parse_postgres_url(url: str) -> PostgresOptions:
    """Split our query parameters (`pool_min`, `pool_max`, `pool_timeout`, `statement_timeout`) off
    the URL, and default libpq's `connect_timeout` and `application_name`; ValueError (password
    masked) when malformed.

    The rest of the query goes to libpq exactly as written (libpq decodes it itself)."""
    parts = urlsplit(url)
    secrets = _password_spellings(url)
    ours: dict[str, float] = {}
    theirs: list[str] = []
    for item in filter(None, parts.query.split("&")):
        raw_name, _, raw_value = item.partition("=")
        name, value = unquote(raw_name), unquote(raw_value)
        if name == "password" and value:
            secrets = (*secrets, raw_value, value)
        if name in _POOL_PARAMETERS:
            ours[name] = _number(name, value, secrets)
        else:
            theirs.append(item)
    given = {unquote(item.partition("=")[0]) for item in theirs}
    theirs += [f"{name}={value}" for name, value in _LIBPQ_DEFAULTS.items() if name not in given]
    stripped = urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(theirs), parts.fragment))
    try:
        params = pg_conninfo.conninfo_to_dict(stripped)
        conninfo = pg_conninfo.make_conninfo(stripped)
    except psycopg.Error as err:
        raise ValueError(_mask(f"KIMI_STORE is not a valid PostgreSQL URL: {_first_lines(err)}", secrets)) from None
    pool_min = int(ours.get("pool_min", _POOL_PARAMETERS["pool_min"][0]))
    pool_max = int(ours.get("pool_max", _POOL_PARAMETERS["pool_max"][0]))
    if pool_min > pool_max:
        raise ValueError(f"KIMI_STORE: pool_min ({pool_min}) is larger than pool_max ({pool_max})")
    return PostgresOptions(
        conninfo=conninfo,
        label=_label(params),
        secrets=tuple(s for s in dict.fromkeys(secrets) if s),
        pool_min=pool_min,
        pool_max=pool_max,
        pool_timeout=ours.get("pool_timeout", _POOL_PARAMETERS["pool_timeout"][0]),
        statement_timeout=ours.get("statement_timeout", _POOL_PARAMETERS["statement_timeout"][0]),
    )


def _password_spellings(url: str) -> tuple[str, ...]:
    """The URL's password as written (percent-encoded) and decoded, and libpq's PGPASSWORD."""
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    raw = userinfo.partition(":")[2]
    found = [raw, unquote(raw), os.environ.get("PGPASSWORD", "")]
    return tuple(s for s in found if s)


def _number(name: str, value: str, secrets: tuple[str, ...]) -> float:
    minimum = _POOL_PARAMETERS[name][1]
    integer = name in _INTEGER_PARAMETERS
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        number = minimum - 1
    if not number >= minimum or number == float("inf"):  # also refuses NaN
        kind = "an integer" if integer else "a number of seconds"
        raise ValueError(_mask(f"KIMI_STORE: {name} must be {kind}, at least {minimum:g} (got {value!r})", secrets))
    return number


def _label(params: dict[str, Any]) -> str:
    """postgresql://user@host:port/db from libpq's parsed parameters (the environment's defaults
    where the URL has none), never the password."""
    user = params.get("user") or os.environ.get("PGUSER", "")
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user
    hosts = host.split(",")
    ports = (port.split(",") + [port.split(",")[-1]] * len(hosts))[: len(hosts)]
    where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in zip(hosts, ports, strict=True))
    return f"postgresql://{quote(str(user), safe='') + '@' if user else ''}{where}/{quote(str(dbname), safe='')}"


def _mask(message: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def _first_lines(err: BaseException) -> str:
    """psycopg's message on one line (libpq's hints are indented continuation lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines[:3]) or type(err).__name__


def _problem(err: psycopg.Error) -> str:
    code = err.sqlstate or ""
    for key in (code, code[:2]):
        if key and key in _PROBLEMS:
            return _PROBLEMS[key]
    if isinstance(err, psycopg.OperationalError):
        return f"lost its connection; try again ({_first_lines(err)})"
    primary = err.diag.message_primary if code else None
    return f"failed: {primary or _first_lines(err)}"


def _storable(*values: str | None) -> bool:
    """Whether PostgreSQL's `text` can hold these identifiers (no NUL)."""
    return not any(value and "\x00" in value for value in values)


def _refuse_nul(**values: str | None) -> None:
    for name, value in values.items():
        if not _storable(value):
            raise ValueError(f"{name} cannot contain NUL characters")


def _encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8")


def _decode(data: bytes | None) -> str | None:
    return None if data is None else bytes(data).decode("utf-8")


def _text(data: bytes) -> str:
    return bytes(data).decode("utf-8")


async def _configure(conn: Connection, statement_timeout: float) -> None:
    """Per session: the statement timeout (also bounds waiting for a conversation's row lock)."""
    await conn.execute(
        "SELECT set_config('statement_timeout', %s, false)", (f"{round(statement_timeout * 1000):d}ms",)
    )


async def _schema_version(conn: Connection, label: str) -> int:
    """The database's schema version (0: none yet), refusing one from a newer kimi-mcp."""
    cur = await conn.execute("SELECT to_regclass('kimi_mcp_schema') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM kimi_mcp_schema")
    row = await cur.fetchone()
    version = int(row[0]) if row is not None else 0
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"conversation store at {label} has schema version {version}, newer than this "
            f"kimi-mcp understands ({SCHEMA_VERSION}); upgrade kimi-mcp or use another database"
        )
    return version


async def _migrate(conn: Connection, label: str) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction, under an advisory lock held until it
    commits, so replicas starting at once migrate exactly once. An up-to-date database is only read."""
    if await _schema_version(conn, label) == SCHEMA_VERSION:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS kimi_mcp_schema ("
            " version integer PRIMARY KEY, applied_at double precision NOT NULL)"
        )
        version = await _schema_version(conn, label)  # again under the lock: another replica may have migrated
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO kimi_mcp_schema (version, applied_at) VALUES (%s, %s)", (target, time.time())
            )


def _totals(row: Sequence[Any]) -> Totals:
    """Totals from the five `_TOTALS_COLUMNS` values, in order."""
    return Totals(int(row[0]), int(row[1]), int(row[2]), float(row[3]), int(row[4]))


def _summary(row: Sequence[Any]) -> ConversationSummary:
    return ConversationSummary(
        id=row[0],
        principal=row[1],
        title=_text(row[2]),
        model=row[3],
        turns=row[4],
        size_bytes=row[5],
        created_at=row[6],
        updated_at=row[7],
        totals=_totals(row[8:_SUMMARY_WIDTH]),
    )


def _answer(row: Sequence[Any]) -> AnswerRecord:
    return AnswerRecord(
        id=row[0],
        principal=row[1],
        kind=cast(AnswerKind, row[2]),
        conversation_id=row[3],
        owner=row[4],
        status=cast(AnswerStatus, row[5]),
        status_message=_text(row[6]),
        text=_text(row[7]),
        reasoning=_text(row[8]),
        result=_decode(row[9]),
        created_at=row[10],
        updated_at=row[11],
        expires_at=row[12],
    )


async def _one(conn: Connection, query: str, params: Sequence[object] = ()) -> TupleRow | None:
    cur = await conn.execute(query, params)
    return await cur.fetchone()


async def _all(conn: Connection, query: str, params: Sequence[object] = ()) -> builtins.list[TupleRow]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def _get_summary(conn: Connection, principal: str, conversation_id: str) -> ConversationSummary | None:
    row = await _one(
        conn,
        f"SELECT {_SUMMARY_COLUMNS} FROM conversations WHERE id = %s AND principal = %s",
        (conversation_id, principal),
    )
    return None if row is None else _summary(row)


async def _get(conn: Connection, principal: str, conversation_id: str) -> Conversation | None:
    """Summary and turns read in one snapshot, so a concurrent save cannot split them."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = await _one(
            conn,
            f"SELECT {_SUMMARY_COLUMNS}, system FROM conversations WHERE id = %s AND principal = %s",
            (conversation_id, principal),
        )
        if row is None:
            return None
        rows = await _all(
            conn,
            "SELECT role, content, reasoning, created_at FROM turns WHERE conversation_id = %s ORDER BY seq",
            (conversation_id,),
        )
    turns = tuple(Turn(role, _text(content), _decode(reasoning), created_at) for role, content, reasoning, created_at
                  in rows)
    return Conversation(_summary(row), _decode(row[_SUMMARY_WIDTH]), turns)


@dataclass(frozen=True, slots=True)
class _Head:
    """What a save reads of the conversation's locked row: what it keeps, and the running counts it adds to."""

    title: str
    created_at: float
    totals: Totals
    turns: int  # how many turns are stored
    size_bytes: int  # text_bytes(system) + the stored turns' turn_bytes, as the last save computed them
    system_bytes: int  # text_bytes(system) of the stored system prompt (octet_length of its UTF-8)


# The row's columns `_lock_head` reads (after principal): see `_Head`.
_HEAD_COLUMNS = f"title, created_at, turns, size_bytes, coalesce(octet_length(system), 0), {_TOTALS_COLUMNS}"


async def _lock_head(
    conn: Connection, principal: str, conversation_id: str, title: str, now: float, create: bool
) -> _Head:
    """Lock the conversation's row for the rest of the transaction, inserting it first when new (and
    allowed); its title, created_at, totals so far and running counts. A concurrent save of the same
    conversation waits here (and then reads the row as that save committed it)."""
    for _ in range(_SAVE_ATTEMPTS):
        row = None
        if create:  # a row we insert is ours (locked) until COMMIT; a conflict inserts nothing
            row = await _one(
                conn,
                "INSERT INTO conversations (id, principal, title, model, system, created_at, updated_at,"
                " turns, size_bytes) VALUES (%s, %s, %s, '', NULL, %s, %s, 0, 0)"
                f" ON CONFLICT (id) DO NOTHING RETURNING principal, {_HEAD_COLUMNS}",
                (conversation_id, principal, _encode(title), now, now),
            )
        if row is None:
            row = await _one(
                conn,
                f"SELECT principal, {_HEAD_COLUMNS} FROM conversations WHERE id = %s FOR UPDATE",
                (conversation_id,),
            )
        if row is None and create:
            continue  # deleted between the conflict and the lock: insert again
        if row is None or row[0] != principal:
            break
        return _Head(_text(row[1]), float(row[2]), _totals(row[6:]), int(row[3]), int(row[4]), int(row[5]))
    raise ConversationNotFound(conversation_id)


async def _append_pruning(
    conn: Connection, conversation_id: str, system: str | None, turns: Sequence[Turn], limits: Limits
) -> tuple[int, int, int]:
    """Append `turns` after pruning by every stored turn's size: (pruned turns, kept turns, size)."""
    stored = await _all(
        conn,
        "SELECT seq, role, octet_length(content) + coalesce(octet_length(reasoning), 0)"
        " FROM turns WHERE conversation_id = %s ORDER BY seq",
        (conversation_id,),
    )
    sizes = [(role, int(size)) for _, role, size in stored] + [(t.role, turn_bytes(t)) for t in turns]
    pruned = plan_pruning(text_bytes(system), sizes, len(turns), limits)
    if pruned:
        await conn.execute(
            "DELETE FROM turns WHERE conversation_id = %s AND seq <= %s", (conversation_id, stored[pruned - 1][0])
        )
    await _insert_turns(conn, conversation_id, int(stored[-1][0]) + 1 if stored else 0, turns)
    kept = sizes[pruned:]
    return pruned, len(kept), text_bytes(system) + sum(s for _, s in kept)


async def _next_seq(conn: Connection, conversation_id: str) -> int:
    """One past the newest stored turn's seq (0 when none): one backward step down the primary key's index."""
    row = await _one(conn, "SELECT max(seq) FROM turns WHERE conversation_id = %s", (conversation_id,))
    return 0 if row is None or row[0] is None else int(row[0]) + 1


async def _insert_turns(conn: Connection, conversation_id: str, first: int, turns: Sequence[Turn]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO turns (conversation_id, seq, role, content, reasoning, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (conversation_id, first + i, t.role, _encode(t.content), _encode(t.reasoning), t.created_at)
                for i, t in enumerate(turns)
            ],
        )


async def _save(
    conn: Connection,
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
    """Create-or-lock, append, prune, touch and add to the totals in one transaction holding the
    conversation's row lock.

    When the exchange fits the limits by the locked row's running counts (so `plan_pruning` would
    prune nothing), no stored turn is read: the cost does not grow with the conversation. Otherwise
    every stored turn's size is read and pruned by."""
    async with conn.transaction():
        head = await _lock_head(conn, principal, conversation_id, title, now, create)
        totals = head.totals if added is None else head.totals + added
        count = head.turns + len(turns)
        size = head.size_bytes - head.system_bytes + text_bytes(system) + sum(turn_bytes(t) for t in turns)
        if count <= limits.max_turns and size <= limits.max_bytes:
            pruned = 0
            await _insert_turns(conn, conversation_id, await _next_seq(conn, conversation_id), turns)
        else:
            pruned, count, size = await _append_pruning(conn, conversation_id, system, turns, limits)
        await conn.execute(
            "UPDATE conversations SET model = %s, system = %s, updated_at = %s, turns = %s, size_bytes = %s,"
            " prompt_tokens = %s, completion_tokens = %s, cached_tokens = %s, cost_usd = %s, unpriced_calls = %s"
            " WHERE id = %s",
            (model, _encode(system), now, count, size, totals.prompt_tokens, totals.completion_tokens,
             totals.cached_tokens, totals.cost_usd, totals.unpriced_calls, conversation_id),
        )
    summary = ConversationSummary(conversation_id, principal, head.title, model, count, size, head.created_at, now,
                                  totals)
    return SaveResult(summary, pruned)


async def _list(conn: Connection, principal: str, limit: int) -> builtins.list[ConversationSummary]:
    rows = await _all(
        conn,
        f"SELECT {_SUMMARY_COLUMNS} FROM conversations WHERE principal = %s"
        " ORDER BY updated_at DESC, id DESC LIMIT %s",
        (principal, min(max(limit, 0), _MAX_BIGINT)),
    )
    return [_summary(row) for row in rows]


async def _count(conn: Connection, query: str, params: Sequence[object]) -> int:
    cur = await conn.execute(query, params)
    return cur.rowcount


async def _create_answer(conn: Connection, r: AnswerRecord) -> None:
    """One INSERT in autocommit: committed (durably, with the server's synchronous_commit) on return."""
    row = await _one(
        conn,
        f"INSERT INTO answers ({_ANSWER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        (
            r.id, r.principal, r.kind, r.conversation_id, r.owner, r.status, _encode(r.status_message),
            _encode(r.text), _encode(r.reasoning), _encode(r.result), r.created_at, r.updated_at, r.expires_at,
        ),
    )
    if row is None:
        raise ValueError(f"answer {r.id} already exists")


async def _update_answer(
    conn: Connection, principal: str, answer_id: str, now: float, changes: dict[str, object]
) -> AnswerRecord | None:
    """One guarded UPDATE ... RETURNING: only a live "working" row matches, so of two finishers the
    first to commit wins and the other matches nothing. `changes` maps column names fixed by
    `PostgresStore.update_answer` (never caller text) to values."""
    assignments = "".join(f"{column} = %s, " for column in changes)
    row = await _one(
        conn,
        f"UPDATE answers SET {assignments}updated_at = %s"
        " WHERE id = %s AND principal = %s AND status = 'working' AND expires_at > %s"
        f" RETURNING {_ANSWER_COLUMNS}",
        (*changes.values(), now, answer_id, principal, now),
    )
    return None if row is None else _answer(row)


class PostgresStore:
    """Conversations and answer records in a PostgreSQL database, shared by any number of replicas.

    Nothing connects until the first call (or `open`); then one connection migrates and a pool of
    `pool_min`..`pool_max` connections serves. `close` releases the pool; a later call opens it again.
    """

    def __init__(self, url: str) -> None:
        self._options = parse_postgres_url(url)
        self.label = self._options.label
        self._pool: Pool | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"PostgresStore({self.label!r})"

    def _error(self, err: psycopg.Error) -> StorageError:
        if isinstance(err, PoolTimeout):  # every connection busy, or none could be (re)established
            problem = (f"is unreachable or overloaded: no connection within {self._options.pool_timeout:g} s"
                       " (see pool_timeout and pool_max)")
        else:
            problem = _problem(err)
        return StorageError(_mask(f"conversation store at {self.label} {problem}", self._options.secrets))

    def _connect_problem(self, err: psycopg.Error) -> str:
        """Why connecting failed: libpq reports the server's refusal (wrong password, no such database)
        as a FATAL line in its message, with no SQLSTATE."""
        message = _first_lines(err)
        _, fatal, refusal = message.partition("FATAL:")
        if fatal:
            return f"conversation store at {self.label} refused the connection: {refusal.strip()}"
        return f"conversation store at {self.label} is unreachable: {message}"

    async def open(self) -> None:
        """Connect, migrate and start the pool now, so an unreachable database fails at start-up
        (StorageError naming host and port); later calls reuse the pool."""
        await self._ready()

    async def _ready(self) -> Pool:
        pool = self._pool
        if pool is not None:
            return pool
        async with self._lock:
            if self._pool is None:
                self._pool = await self._start()
            return self._pool

    async def _start(self) -> Pool:
        options = self._options
        try:
            conn = await psycopg.AsyncConnection.connect(options.conninfo, autocommit=True)
        except psycopg.Error as err:
            raise StorageError(_mask(self._connect_problem(err), options.secrets)) from None
        try:
            await _configure(conn, options.statement_timeout)
            await _migrate(conn, self.label)
        except psycopg.Error as err:
            raise self._error(err) from err
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()
        statement_timeout = options.statement_timeout

        async def configure(new: Connection) -> None:
            await _configure(new, statement_timeout)

        pool: Pool = AsyncConnectionPool(
            options.conninfo,
            min_size=options.pool_min,
            max_size=options.pool_max,
            kwargs={"autocommit": True},
            configure=configure,
            check=AsyncConnectionPool.check_connection,  # one round trip: drops dead connections first
            timeout=options.pool_timeout,
            name="kimi-mcp",
            open=False,
        )
        await pool.open(wait=False)
        return pool

    async def _run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection; any database failure becomes a StorageError (a broken
        connection is discarded by the pool and replaced in the background)."""
        pool = await self._ready()
        try:
            async with pool.connection() as conn:
                return await work(conn)
        except psycopg.Error as err:
            raise self._error(err) from err

    async def summary(self, principal: str, conversation_id: str) -> ConversationSummary | None:
        if not _storable(principal, conversation_id):
            return None
        return await self._run(lambda conn: _get_summary(conn, principal, conversation_id))

    async def get(self, principal: str, conversation_id: str) -> Conversation | None:
        if not _storable(principal, conversation_id):
            return None
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
        _refuse_nul(principal=principal, conversation_id=conversation_id, model=model)
        batch = tuple(turns)
        return await self._run(
            lambda conn: _save(conn, principal, conversation_id, model, system, title, batch, limits, now, create,
                               totals)
        )

    async def list(self, principal: str, *, limit: int = 50) -> builtins.list[ConversationSummary]:
        if not _storable(principal):
            return []
        return await self._run(lambda conn: _list(conn, principal, limit))

    async def delete(self, principal: str, conversation_id: str) -> bool:
        if not _storable(principal, conversation_id):
            return False
        query = "DELETE FROM conversations WHERE id = %s AND principal = %s"
        return await self._run(lambda conn: _count(conn, query, (conversation_id, principal))) > 0

    async def purge_expired(self, *, older_than: float) -> int:
        query = "DELETE FROM conversations WHERE updated_at < %s"
        return await self._run(lambda conn: _count(conn, query, (older_than,)))

    async def create_answer(self, record: AnswerRecord) -> None:
        check_answer(record)
        _refuse_nul(
            id=record.id, principal=record.principal, conversation_id=record.conversation_id, owner=record.owner
        )
        await self._run(lambda conn: _create_answer(conn, record))

    async def get_answer(self, principal: str, answer_id: str, *, now: float | None = None) -> AnswerRecord | None:
        if not _storable(principal, answer_id):
            return None
        query = f"SELECT {_ANSWER_COLUMNS} FROM answers WHERE id = %s AND principal = %s AND expires_at > %s"
        row = await self._run(lambda conn: _one(conn, query, (answer_id, principal, clock(now))))
        return None if row is None else _answer(row)

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
        _refuse_nul(owner=owner)
        if not _storable(principal, answer_id):
            return None
        given: dict[str, object | None] = {
            "status": status,
            "status_message": _encode(status_message),
            "text": _encode(text),
            "reasoning": _encode(reasoning),
            "result": _encode(result),
            "expires_at": expires_at,
            "owner": owner,
        }
        changes = {column: value for column, value in given.items() if value is not None}
        return await self._run(lambda conn: _update_answer(conn, principal, answer_id, now, changes))

    async def answers_in(
        self, principal: str, conversation_id: str, *, now: float | None = None
    ) -> builtins.list[AnswerRecord]:
        if not _storable(principal, conversation_id):
            return []
        query = (
            f"SELECT {_ANSWER_COLUMNS} FROM answers WHERE principal = %s AND conversation_id = %s AND expires_at > %s"
            " ORDER BY created_at, id"
        )
        rows = await self._run(lambda conn: _all(conn, query, (principal, conversation_id, clock(now))))
        return [_answer(row) for row in rows]

    async def count_answers(self, principal: str, *, now: float | None = None) -> int:
        if not _storable(principal):
            return 0
        query = "SELECT count(*) FROM answers WHERE principal = %s AND status = 'working' AND expires_at > %s"
        row = await self._run(lambda conn: _one(conn, query, (principal, clock(now))))
        return 0 if row is None else int(row[0])

    async def interrupt_stale(self, *, now: float, stale_before: float, except_owner: str, message: str) -> int:
        check_answer_fields(status_message=message)
        # An owner with NUL cannot be stored, so it matches no row: compare with NULL (distinct from all).
        spared = except_owner if _storable(except_owner) else None
        query = (
            "UPDATE answers SET status = 'interrupted', status_message = %s, updated_at = %s"
            " WHERE status = 'working' AND updated_at < %s AND owner IS DISTINCT FROM %s"
        )
        params = (_encode(message), now, stale_before, spared)
        return await self._run(lambda conn: _count(conn, query, params))

    async def purge_answers(self, *, now: float) -> int:
        query = "DELETE FROM answers WHERE expires_at <= %s"
        return await self._run(lambda conn: _count(conn, query, (now,)))

    async def probe_write(self) -> None:
        """Prove the database can be written (for `kimi-mcp doctor`): one write that changes nothing."""

        async def probe(conn: Connection) -> None:
            await conn.execute("UPDATE kimi_mcp_schema SET version = version WHERE version = %s", (SCHEMA_VERSION,))

        await self._run(probe)

    async def close(self) -> None:
        """Close the pool (waiting briefly for borrowed connections); a later call would open it again."""
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

"""PostgreSQL's own store tests (the shared contract runs in `test_store_contract.py`): the URL and
its parameters, the password masked in every message, a missing driver, an unreachable database at
start-up and a lost one while serving (the pool reconnects by itself, also across a server restart),
the statement timeout, versioned migrations (once when replicas start together; a newer version
refused), and saves and answer updates from two replicas (two pools) on the same rows."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from kimi_mcp.store import AnswerRecord, Limits, StorageError, Totals, Turn, open_store
from tests.cli.helpers import cli_env, run_cli
from tests.store.test_store_contract import answer, pair, save
from tests.support.postgres import (
    REQUIRE_ENV,
    PostgresServer,
    PrivateServer,
    find_bindir,
    start_private_server,
    with_password,
)

try:
    import psycopg

    from kimi_mcp.store.postgres import SCHEMA_VERSION, PostgresStore, parse_postgres_url
except ImportError as err:  # the `postgres` extra is missing
    if os.environ.get(REQUIRE_ENV) == "1":
        raise
    pytest.skip(f"the PostgreSQL driver is not installed ({err}): pip install -e '.[test]'", allow_module_level=True)

pytestmark = pytest.mark.anyio


def postgres(url: str) -> PostgresStore:
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    return store


@pytest.fixture
async def secret_url(postgres_url: str) -> AsyncIterator[tuple[str, str]]:
    """The test's URL with a password in it (trust authentication ignores it), and that password."""
    yield with_password(postgres_url)


async def sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on a connection of its own (the store's URL minus our parameters), autocommit."""
    async with await psycopg.AsyncConnection.connect(parse_postgres_url(url).conninfo, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# The URL


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_open_store_takes_both_schemes_and_connects_lazily(scheme: str) -> None:
    store = open_store(f"{scheme}://kimi:hunter2@db.invalid:6543/chats")
    assert isinstance(store, PostgresStore)
    assert store.label == "postgresql://kimi@db.invalid:6543/chats"
    assert "hunter2" not in repr(store) and "hunter2" not in repr(store._options)


def test_url_parameters_are_split_between_the_pool_and_libpq() -> None:
    options = parse_postgres_url(
        "postgresql://kimi:s%40cret@db.example:6543/chats?pool_min=2&pool_max=20&pool_timeout=3"
        "&statement_timeout=1.5&sslmode=require&application_name=replica%20one"
    )
    assert (options.pool_min, options.pool_max, options.pool_timeout, options.statement_timeout) == (2, 20, 3.0, 1.5)
    params = psycopg.conninfo.conninfo_to_dict(options.conninfo)
    assert params["sslmode"] == "require" and params["application_name"] == "replica one"
    assert params["connect_timeout"] == "10" and params["password"] == "s@cret"
    assert not {"pool_min", "pool_max", "pool_timeout", "statement_timeout"} & set(params)
    assert options.label == "postgresql://kimi@db.example:6543/chats"
    assert set(options.secrets) >= {"s%40cret", "s@cret"}
    defaults = parse_postgres_url("postgres://db.example/chats?connect_timeout=3")
    assert (defaults.pool_min, defaults.pool_max, defaults.pool_timeout, defaults.statement_timeout) == (1, 10, 10, 30)
    assert psycopg.conninfo.conninfo_to_dict(defaults.conninfo)["connect_timeout"] == "3"
    assert defaults.label.endswith("@db.example:5432/chats") or defaults.label == "postgresql://db.example:5432/chats"


@pytest.mark.parametrize(
    "query",
    ["pool_max=0", "pool_min=3&pool_max=2", "pool_min=-1", "pool_timeout=soon", "statement_timeout=-1",
     "statement_timeout=nan", "pool_max=1.5", "no_such_parameter=1"],
)
def test_bad_parameters_are_refused_without_the_password(query: str) -> None:
    with pytest.raises(ValueError, match="KIMI_STORE") as caught:
        open_store(f"postgresql://kimi:hunter2@db.invalid/chats?password=hunter3&{query}")
    assert "hunter2" not in str(caught.value) and "hunter3" not in str(caught.value)


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "kimi_mcp.store.postgres")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now raises ImportError
    with pytest.raises(StorageError, match=r"driver is not installed: pip install 'kimi-mcp\[postgres\]'"):
        open_store("postgresql://kimi@db.invalid/chats")


# Failures


async def test_unreachable_at_start_up_names_host_and_port_never_the_password() -> None:
    port = _closed_port()
    store = postgres(f"postgresql://kimi:hunter2@127.0.0.1:{port}/chats?connect_timeout=2&password=hunter3")
    with anyio.fail_after(10):
        with pytest.raises(StorageError, match=f"at postgresql://kimi@127.0.0.1:{port}/chats is unreachable") as first:
            await store.open()
        with pytest.raises(StorageError, match="unreachable") as later:  # every call tries again, as clearly
            await store.list("local")
    for message in (str(first.value), str(later.value)):
        assert "hunter2" not in message and "hunter3" not in message
    await store.close()


def test_serve_refuses_to_start_on_an_unreachable_database(tmp_path: Path) -> None:
    """One line naming host and port, exit 2, before anything is served; never the password."""
    port = _closed_port()
    env = cli_env(tmp_path, KIMI_STORE=f"postgresql://kimi:hunter2-secret@127.0.0.1:{port}/chats?connect_timeout=2")
    done = run_cli("serve", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"kimi-mcp: conversation store at postgresql://kimi@127.0.0.1:{port}/chats is unreachable: "
        + done.stderr.split("is unreachable: ", 1)[1].strip()
    ]
    assert "hunter2" not in done.stderr


def test_serve_starts_on_a_reachable_database_and_logs_no_password(postgres_url: str, tmp_path: Path) -> None:
    url, password = with_password(postgres_url)
    done = run_cli("serve", env=cli_env(tmp_path, KIMI_STORE=url))  # stdio, stdin closed: starts, then ends
    assert done.returncode == 0, done.stderr
    assert "kimi-mcp starting" in done.stderr
    assert password not in done.stderr and password[:10] not in done.stderr
    assert "postgresql://postgres:****@" in done.stderr


async def test_an_unknown_database_is_named(postgres_server: PostgresServer) -> None:
    url, password = with_password(postgres_server.url_for("kimi_no_such_database"))
    store = postgres(url)
    refusal = 'refused the connection: database "kimi_no_such_database" does not exist'
    with pytest.raises(StorageError, match=refusal) as caught:
        await store.open()
    assert password not in str(caught.value)


async def test_a_lost_connection_is_a_storage_error_then_the_pool_reconnects(secret_url: tuple[str, str]) -> None:
    url, password = secret_url
    name = f"kimi-test-{uuid.uuid4().hex[:8]}"
    store = postgres(f"{url}&application_name={name}")
    try:
        await save(store, "conv_a", pair(0))
        killed = await sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                           (name,))
        assert killed and all(ok for (ok,) in killed)
        try:
            await save(store, "conv_a", pair(1), now=2.0)
        except StorageError as exc:  # allowed once; the pool replaces the connection by itself
            assert password not in str(exc) and "lost its connection" in str(exc)
            await save(store, "conv_a", pair(1), now=2.0)
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.turns == tuple(pair(0) + pair(1))
    finally:
        await store.close()


@pytest.fixture
def restartable(postgres_server: PostgresServer) -> Iterator[PrivateServer]:
    """A server this test may restart: the session's private one, else (CI's server) one of its own."""
    if postgres_server.private is not None:
        yield postgres_server.private
        return
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("restarting needs the PostgreSQL server binaries (the server given is not ours to restart)")
    server = start_private_server(bindir)
    try:
        yield server
    finally:
        server.remove()


async def test_a_server_restart_between_two_calls(restartable: PrivateServer) -> None:
    url, password = with_password(restartable.url())
    store = postgres(url)
    conversation = f"conv_{uuid.uuid4().hex}"
    try:
        await save(store, conversation, pair(0))
        await anyio.to_thread.run_sync(restartable.restart)
        try:
            conv = await store.get("local", conversation)
        except StorageError as exc:  # allowed once, then it must work again
            assert password not in str(exc)
            conv = await store.get("local", conversation)
        assert conv is not None and conv.turns == tuple(pair(0))
        await save(store, conversation, pair(1), now=2.0)
        assert (await store.summary("local", conversation)) is not None
    finally:
        await store.delete("local", conversation)
        await store.close()


async def test_the_statement_timeout_bounds_a_stuck_row_lock(secret_url: tuple[str, str]) -> None:
    """A save waits for its conversation's row lock, but no longer than the statement timeout."""
    url, password = secret_url
    store = postgres(f"{url}&statement_timeout=0.3")
    try:
        await save(store, "conv_a", pair(0))
        async with await psycopg.AsyncConnection.connect(parse_postgres_url(url).conninfo) as other:
            await other.execute("SELECT 1 FROM conversations WHERE id = 'conv_a' FOR UPDATE")  # held: no commit
            with anyio.fail_after(10), pytest.raises(StorageError, match="statement timeout") as caught:
                await save(store, "conv_a", pair(1), now=2.0)
            assert password not in str(caught.value)
            assert await store.summary("local", "conv_a") is not None  # reads never wait for the lock
            await other.rollback()
        await save(store, "conv_a", pair(1), now=2.0)
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.turns == tuple(pair(0) + pair(1))
    finally:
        await store.close()


# Migrations

EVERY_VERSION = [(version,) for version in range(1, SCHEMA_VERSION + 1)]
"""What `kimi_mcp_schema` holds once a fresh database is migrated: one row per step."""


async def test_the_schema_is_versioned(postgres_url: str) -> None:
    store = postgres(postgres_url)
    try:
        await store.open()
        assert await sql(postgres_url, "SELECT version FROM kimi_mcp_schema ORDER BY version") == EVERY_VERSION
        assert EVERY_VERSION == [(1,), (2,)]  # every step recorded once
        await store.probe_write()
    finally:
        await store.close()
    tables = await sql(postgres_url, "SELECT table_name FROM information_schema.tables WHERE table_schema ="
                                     " current_schema() ORDER BY table_name")
    assert tables == [("answers",), ("conversations",), ("kimi_mcp_schema",), ("turns",)]


async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    stores = [postgres(postgres_url) for _ in range(8)]
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.open)
        assert await sql(postgres_url, "SELECT version FROM kimi_mcp_schema ORDER BY version") == EVERY_VERSION
        for n, store in enumerate(stores):
            await save(store, f"conv_{n}", pair(n))
        assert len(await stores[0].list("local")) == 8
    finally:
        for store in stores:
            await store.close()


_MIGRATE_IN_A_PROCESS = """
import sys, time, anyio
from kimi_mcp.store import open_store
async def main():
    while time.time() < float(sys.argv[2]):  # start together
        await anyio.sleep(0.005)
    store = open_store(sys.argv[1])
    await store.open()
    await store.close()
anyio.run(main)
print("migrated")
"""


def test_replica_processes_starting_together_migrate_once(postgres_url: str) -> None:
    """Four processes open a fresh database at the same moment: one migrates, none fails."""
    import subprocess
    import time

    at = str(time.time() + 2.0)
    procs = [subprocess.Popen([sys.executable, "-c", _MIGRATE_IN_A_PROCESS, postgres_url, at],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outcomes
    assert all(out.strip() == "migrated" for out, _ in outcomes)
    rows = anyio.run(sql, postgres_url, "SELECT version FROM kimi_mcp_schema ORDER BY version")
    assert rows == EVERY_VERSION


async def test_a_version_1_database_migrates_in_place(postgres_url: str) -> None:
    """A database kimi-mcp wrote at schema 1 gets running totals; its conversations start at zero."""
    from kimi_mcp.store.postgres import _MIGRATIONS  # step 1 is frozen: what version 1 wrote

    for statement in _MIGRATIONS[1]:
        await sql(postgres_url, statement)
    await sql(postgres_url, "CREATE TABLE kimi_mcp_schema (version integer PRIMARY KEY,"
                            " applied_at double precision NOT NULL)")
    await sql(postgres_url, "INSERT INTO kimi_mcp_schema VALUES (1, 0)")
    await sql(postgres_url, "INSERT INTO conversations VALUES ('conv_old', 'local', %s, 'kimi-k2', NULL, 1.0, 2.0,"
                            " 2, 20)", (b"Old",))
    await sql(postgres_url, "INSERT INTO turns VALUES ('conv_old', 0, 'user', %s, NULL, 1.0),"
                            " ('conv_old', 1, 'assistant', %s, NULL, 1.5)", (b"question 0", b"answer 0"))
    store = postgres(postgres_url)
    try:
        conv = await store.get("local", "conv_old")
        assert conv is not None and [t.content for t in conv.turns] == ["question 0", "answer 0"]
        assert (conv.summary.title, conv.summary.turns, conv.summary.totals) == ("Old", 2, Totals())
        assert await sql(postgres_url, "SELECT version FROM kimi_mcp_schema ORDER BY version") == EVERY_VERSION
        saved = await save(store, "conv_old", pair(1), now=3.0, totals=Totals(4, 2, 1, 0.125, 0))
        assert saved.conversation.totals == Totals(4, 2, 1, 0.125, 0)
    finally:
        await store.close()


async def test_a_newer_schema_version_is_refused(postgres_url: str) -> None:
    first = postgres(postgres_url)
    await first.open()
    await first.close()
    await sql(postgres_url, "INSERT INTO kimi_mcp_schema VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    store = postgres(postgres_url)
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this kimi-mcp"):
        await store.list("local")
    assert await sql(postgres_url, "SELECT max(version) FROM kimi_mcp_schema") == [(SCHEMA_VERSION + 1,)]
    await store.close()


# Several replicas on the same rows


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores (two pools, as two replicas would have) on the same database."""
    a, b = postgres(postgres_url), postgres(postgres_url)
    yield a, b
    await a.close()
    await b.close()


async def test_concurrent_saves_from_two_replicas_lose_and_duplicate_nothing(
    replicas: tuple[PostgresStore, PostgresStore], postgres_url: str
) -> None:
    saves = 60

    async def one(i: int) -> None:
        await save(replicas[i % 2], "conv_shared", pair(i), now=float(i))

    async with anyio.create_task_group() as tg:  # the conversation is created by whichever wins
        for i in range(saves):
            tg.start_soon(one, i)
    conv = await replicas[0].get("local", "conv_shared")
    assert conv is not None and len(conv.turns) == conv.summary.turns == 2 * saves
    assert conv.summary.size_bytes == sum(len(t.content.encode()) for t in conv.turns)  # each save saw the last
    numbers = []
    for user, assistant in zip(conv.turns[::2], conv.turns[1::2], strict=True):
        number = user.content.removeprefix("question ")
        assert assistant.content == f"answer {number}"
        numbers.append(int(number))
    assert sorted(numbers) == list(range(saves))
    rows = await sql(postgres_url, "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM turns")
    assert rows == [(2 * saves, 2 * saves, 0, 2 * saves - 1)]


async def test_concurrent_saves_and_pruning_from_two_replicas(replicas: tuple[PostgresStore, PostgresStore]) -> None:
    limits, saves = Limits(max_turns=10), 40
    pruned: list[int] = []

    async def one(i: int) -> None:
        result = await save(replicas[i % 2], "conv_shared", pair(i), now=float(i), limits=limits)
        pruned.append(result.pruned_turns)

    async with anyio.create_task_group() as tg:
        for i in range(saves):
            tg.start_soon(one, i)
    conv = await replicas[1].get("local", "conv_shared")
    assert conv is not None and len(conv.turns) == conv.summary.turns
    assert conv.summary.size_bytes == sum(len(t.content.encode()) for t in conv.turns)
    assert 8 <= len(conv.turns) <= 10  # pruned to three quarters of the cap whenever over it
    assert sum(pruned) == 2 * saves - len(conv.turns)
    assert [t.role for t in conv.turns] == ["user", "assistant"] * (len(conv.turns) // 2)


async def test_one_finisher_wins_across_replicas(replicas: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = replicas
    ids = [f"ans_{n}" for n in range(10)]
    for answer_id in ids:
        await a.create_answer(answer(answer_id))
    results: dict[tuple[str, str], AnswerRecord | None] = {}

    async def finish(store: PostgresStore, answer_id: str, status: str) -> None:
        if status == "completed":
            results[answer_id, status] = await store.update_answer("local", answer_id, now=5.0, status="completed",
                                                                   result="{}")
        else:
            results[answer_id, status] = await store.update_answer("local", answer_id, now=6.0, status="cancelled")

    async with anyio.create_task_group() as tg:
        for answer_id in ids:
            tg.start_soon(finish, a, answer_id, "completed")
            tg.start_soon(finish, b, answer_id, "cancelled")
    for answer_id in ids:
        winners = [r for r in (results[answer_id, "completed"], results[answer_id, "cancelled"]) if r is not None]
        assert len(winners) == 1
        assert await b.get_answer("local", answer_id, now=7.0) == winners[0]


async def test_the_pool_size_comes_from_the_url(postgres_url: str) -> None:
    name = f"kimi-test-{uuid.uuid4().hex[:8]}"
    store = postgres(f"{postgres_url}&pool_max=2&application_name={name}")
    try:
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(store.create_answer, answer(f"ans_{i}"))
        assert await store.count_answers("local", now=2.0) == 20
        assert store._pool is not None and store._pool.max_size == 2
        rows = await sql(postgres_url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,))
        assert 1 <= rows[0][0] <= 2
    finally:
        await store.close()


async def test_identifiers_with_nul_are_absent_or_refused(postgres_url: str) -> None:
    store = postgres(postgres_url)
    try:
        await save(store, "conv_a", pair(0))
        await store.create_answer(answer(owner="dead"))
        bad = "conv_a\x00"
        assert await store.get("local", bad) is None and await store.summary("local", bad) is None
        assert await store.list("local\x00") == [] and await store.delete("local", bad) is False
        assert await store.get_answer("local", "ans_a\x00", now=2.0) is None
        assert await store.update_answer("local\x00", "ans_a", now=2.0, text="x") is None
        assert await store.answers_in("local", bad, now=2.0) == [] and await store.count_answers("l\x00") == 0
        with pytest.raises(ValueError, match="conversation_id cannot contain NUL"):
            await save(store, bad, pair(1))
        with pytest.raises(ValueError, match="owner cannot contain NUL"):
            await store.create_answer(answer("ans_b", owner="a\x00b"))
        with pytest.raises(ValueError, match="owner cannot contain NUL"):
            await store.update_answer("local", "ans_a", now=2.0, owner="a\x00b")
        # No stored owner has a NUL, so none is spared.
        assert await store.interrupt_stale(now=3.0, stale_before=3.0, except_owner="de\x00ad", message="lost") == 1
        turns = [Turn("user", "nul \x00 inside"), Turn("assistant", "fine", "also \x00")]
        await save(store, "conv_b", turns, system="sys \x00", title="title \x00")
        conv = await store.get("local", "conv_b")
        assert conv is not None and conv.turns == tuple(turns) and conv.system == "sys \x00"
        assert conv.summary.title == "title \x00"
    finally:
        await store.close()

"""The store layer (`kimi_mcp.store`): one contract class every `ConversationStore` backend passes
unchanged (memory and SQLite today), the pruning plan, and SQLite's own durability tests (reopen,
file permissions, a writer killed mid-save)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import string
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import pytest

from kimi_mcp.store import (
    ConversationNotFound,
    ConversationStore,
    Limits,
    MemoryStore,
    SaveResult,
    SQLiteStore,
    StorageError,
    Turn,
    default_store_path,
    new_conversation_id,
    open_store,
)
from kimi_mcp.store.base import plan_pruning

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


def pair(i: int, *, at: float = 0.0, reasoning: str | None = None) -> list[Turn]:
    """One user question and its answer, numbered so order and pairing can be checked."""
    return [Turn("user", f"question {i}", created_at=at), Turn("assistant", f"answer {i}", reasoning, at)]


def big_pair(size: int) -> list[Turn]:
    return [Turn("user", "u" * size), Turn("assistant", "a" * size)]


async def save(
    store: ConversationStore,
    conversation_id: str,
    turns: Sequence[Turn],
    *,
    principal: str = "local",
    now: float = 1.0,
    title: str = "title",
    model: str = "kimi-k2",
    system: str | None = None,
    limits: Limits | None = None,
) -> SaveResult:
    return await store.save_exchange(
        principal,
        conversation_id,
        model=model,
        system=system,
        title=title,
        turns=turns,
        limits=limits or Limits(),
        now=now,
    )


class StoreContract:
    """Behaviour every ConversationStore must have.

    Any new backend (Redis, PostgreSQL, ...) must subclass this class, override the `store`
    fixture, and pass every test here unchanged.
    """

    @pytest.fixture
    def store(self) -> ConversationStore:
        raise NotImplementedError("a backend's test class must override the `store` fixture")

    async def test_is_a_conversation_store(self, store: ConversationStore) -> None:
        assert isinstance(store, ConversationStore)

    async def test_get_missing_returns_none(self, store: ConversationStore) -> None:
        assert await store.get("local", "conv_missing") is None

    async def test_round_trip_keeps_order_reasoning_and_sizes(self, store: ConversationStore) -> None:
        turns = [
            Turn("user", "héllo", created_at=10.0),
            Turn("assistant", "hi", reasoning="thinking…", created_at=11.0),
        ]
        result = await save(store, "conv_a", turns, system="be brief", title="Greeting", now=12.0)
        conv = await store.get("local", "conv_a")
        assert conv is not None
        assert conv.turns == tuple(turns)
        assert conv.system == "be brief"
        expected_size = len(b"be brief") + len("héllo".encode()) + len(b"hi") + len("thinking…".encode())
        s = conv.summary
        assert (s.id, s.principal, s.title, s.model) == ("conv_a", "local", "Greeting", "kimi-k2")
        assert (s.turns, s.size_bytes, s.created_at, s.updated_at) == (2, expected_size, 12.0, 12.0)
        assert result == SaveResult(conv.summary, 0)

    async def test_summary_matches_get_and_respects_principals(self, store: ConversationStore) -> None:
        assert await store.summary("local", "conv_a") is None
        await save(store, "conv_a", pair(0), now=5.0)
        conv = await store.get("local", "conv_a")
        assert conv is not None
        assert await store.summary("local", "conv_a") == conv.summary
        assert await store.summary("someone-else", "conv_a") is None

    async def test_save_without_create_never_recreates(self, store: ConversationStore) -> None:
        """An answer finishing after its conversation was deleted must not bring it back."""
        with pytest.raises(ConversationNotFound):
            await store.save_exchange("local", "conv_gone", model="m", system=None, title="t", turns=pair(0),
                                      limits=Limits(), now=1.0, create=False)
        assert await store.get("local", "conv_gone") is None
        await save(store, "conv_a", pair(0))
        await store.save_exchange("local", "conv_a", model="m", system=None, title="", turns=pair(1),
                                  limits=Limits(), now=2.0, create=False)
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.summary.turns == 4

    async def test_saves_append_in_order(self, store: ConversationStore) -> None:
        for i in range(3):
            await save(store, "conv_a", pair(i, at=float(i)), now=float(i + 1))
        conv = await store.get("local", "conv_a")
        assert conv is not None
        assert conv.turns == tuple(pair(0, at=0.0) + pair(1, at=1.0) + pair(2, at=2.0))
        assert (conv.summary.created_at, conv.summary.updated_at, conv.summary.turns) == (1.0, 3.0, 6)

    async def test_get_returns_a_snapshot(self, store: ConversationStore) -> None:
        await save(store, "conv_a", pair(0))
        before = await store.get("local", "conv_a")
        await save(store, "conv_a", pair(1), now=2.0)
        assert before is not None and len(before.turns) == 2 and before.summary.turns == 2

    async def test_title_is_only_set_on_creation(self, store: ConversationStore) -> None:
        await save(store, "conv_a", pair(0), title="First")
        result = await save(store, "conv_a", pair(1), title="Second", now=2.0)
        assert result.conversation.title == "First"
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.summary.title == "First"

    async def test_model_and_system_are_replaced(self, store: ConversationStore) -> None:
        await save(store, "conv_a", pair(0), model="kimi-k2", system="old system prompt")
        result = await save(store, "conv_a", pair(1), model="kimi-k2-thinking", system=None, now=2.0)
        conv = await store.get("local", "conv_a")
        assert conv is not None
        assert (conv.system, conv.summary.model) == (None, "kimi-k2-thinking")
        assert conv.summary.size_bytes == sum(len(t.content.encode()) for t in conv.turns)
        assert result.conversation == conv.summary

    async def test_list_is_most_recent_first_with_limit(self, store: ConversationStore) -> None:
        for n, cid in enumerate(["conv_1", "conv_2", "conv_3"], start=1):
            await save(store, cid, pair(n), now=float(n))
        await save(store, "conv_1", pair(9), now=4.0)
        assert [s.id for s in await store.list("local")] == ["conv_1", "conv_3", "conv_2"]
        assert [s.id for s in await store.list("local", limit=2)] == ["conv_1", "conv_3"]
        assert await store.list("local", limit=0) == []
        listed = (await store.list("local"))[0]
        conv = await store.get("local", "conv_1")
        assert conv is not None and listed == conv.summary

    async def test_principals_are_isolated(self, store: ConversationStore) -> None:
        await save(store, "conv_a", pair(0), principal="alice")
        assert await store.get("bob", "conv_a") is None
        assert await store.list("bob") == []
        assert await store.delete("bob", "conv_a") is False
        with pytest.raises(ConversationNotFound):
            await save(store, "conv_a", pair(1), principal="bob", model="other", now=2.0)
        conv = await store.get("alice", "conv_a")
        assert conv is not None
        assert (conv.turns, conv.summary.model, conv.summary.updated_at) == (tuple(pair(0)), "kimi-k2", 1.0)
        assert [s.id for s in await store.list("alice")] == ["conv_a"]

    async def test_delete(self, store: ConversationStore) -> None:
        await save(store, "conv_a", pair(0))
        assert await store.delete("local", "conv_a") is True
        assert await store.get("local", "conv_a") is None
        assert await store.delete("local", "conv_a") is False
        assert await store.list("local") == []

    async def test_purge_expired(self, store: ConversationStore) -> None:
        await save(store, "conv_old", pair(0), now=1.0)
        await save(store, "conv_edge", pair(0), now=5.0)
        await save(store, "conv_bobs", pair(0), principal="bob", now=2.0)
        assert await store.purge_expired(older_than=5.0) == 2
        assert [s.id for s in await store.list("local")] == ["conv_edge"]
        assert await store.get("bob", "conv_bobs") is None
        assert await store.purge_expired(older_than=5.0) == 0

    async def test_max_turns_prunes_oldest_pairs(self, store: ConversationStore) -> None:
        limits = Limits(max_turns=4)
        results = [await save(store, "conv_a", pair(i), now=float(i + 1), limits=limits) for i in range(3)]
        assert [r.pruned_turns for r in results] == [0, 0, 2]
        conv = await store.get("local", "conv_a")
        assert conv is not None
        assert conv.turns == tuple(pair(1) + pair(2))
        assert results[-1].conversation == conv.summary and conv.summary.turns == 4

    async def test_max_bytes_prunes_oldest_pairs(self, store: ConversationStore) -> None:
        limits = Limits(max_bytes=450)  # 100-byte system prompt + 200-byte pairs: room for one pair
        newest = [Turn("user", "é" * 50), Turn("assistant", "b" * 100)]  # also 200 bytes: é is 2
        first = await save(store, "conv_a", big_pair(100), system="s" * 100, limits=limits)
        second = await save(store, "conv_a", newest, system="s" * 100, limits=limits, now=2.0)
        assert (first.pruned_turns, second.pruned_turns) == (0, 2)
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.turns == tuple(newest)
        assert conv.summary.size_bytes == second.conversation.size_bytes == 300

    async def test_newest_exchange_is_always_kept(self, store: ConversationStore) -> None:
        limits = Limits(max_turns=1, max_bytes=1)
        first = await save(store, "conv_a", big_pair(1000), limits=limits)
        second = await save(store, "conv_a", big_pair(2000), limits=limits, now=2.0)
        assert (first.pruned_turns, second.pruned_turns) == (0, 2)
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.turns == tuple(big_pair(2000))
        assert conv.summary.size_bytes == 4000

    async def test_concurrent_saves_lose_and_interleave_nothing(self, store: ConversationStore) -> None:
        async def one(i: int) -> None:
            await save(store, "conv_a", pair(i), now=float(i))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
        conv = await store.get("local", "conv_a")
        assert conv is not None and len(conv.turns) == 40 == conv.summary.turns
        numbers = []
        for user, assistant in zip(conv.turns[::2], conv.turns[1::2], strict=True):
            assert (user.role, assistant.role) == ("user", "assistant")
            number = user.content.removeprefix("question ")
            assert assistant.content == f"answer {number}"
            numbers.append(int(number))
        assert sorted(numbers) == list(range(20))

    async def test_rejects_an_empty_exchange_without_writing(self, store: ConversationStore) -> None:
        with pytest.raises(ValueError):
            await save(store, "conv_a", [])
        assert await store.get("local", "conv_a") is None

    async def test_close_is_idempotent(self, store: ConversationStore) -> None:
        await save(store, "conv_a", pair(0))
        await store.close()
        await store.close()


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> ConversationStore:
        return MemoryStore()


def _pragma(path: Path, pragma: str) -> object:
    """Run a PRAGMA through a separate connection, as another tool inspecting the file would."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute(f"PRAGMA {pragma}").fetchone()
    return row[0] if row else None


def _permissions_enforced(directory: Path) -> bool:
    """Whether chmod can stop us writing (not as root with CAP_DAC_OVERRIDE, nor on Windows)."""
    probe = directory / "permission-probe"
    probe.write_text("")
    probe.chmod(0o444)
    try:
        probe.open("a").close()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o644)
    return False


async def _apply_pragma(store: SQLiteStore, pragma: str) -> None:
    """Change the store's own connection (a test-only reach into a private attribute)."""
    await store.list("nobody")  # opens the lazy connection
    assert store._conn is not None
    store._conn.execute(pragma)


_CRASH_CHILD = """
import os, sys
import anyio
from kimi_mcp.store import Limits, Turn
from kimi_mcp.store import sqlite as backend

real_write_summary = backend._write_summary

def write_then_die(*args):
    real_write_summary(*args)
    os._exit(17)  # every write of the save done, COMMIT not: no rollback, no close, like a kill

backend._write_summary = write_then_die

async def main():
    store = backend.SQLiteStore(sys.argv[1])
    big = "x" * 3_000_000  # beyond SQLite's page cache, so uncommitted pages reach the WAL file
    turns = [Turn("user", big), Turn("assistant", big)]
    await store.save_exchange("local", sys.argv[2], model="m", system=None, title="t",
                              turns=turns, limits=Limits(), now=2.0)

anyio.run(main)
"""


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "data" / "kimi-mcp" / "conversations.sqlite3"

    @pytest.fixture
    async def store(self, path: Path) -> AsyncIterator[SQLiteStore]:
        store = SQLiteStore(path)
        yield store
        await store.close()

    async def test_data_survives_close_and_reopen(self, store: SQLiteStore, path: Path) -> None:
        await save(store, "conv_a", pair(0, reasoning="why"), system="sys")
        before = await store.get("local", "conv_a")
        await store.close()
        reopened = SQLiteStore(path)
        try:
            assert await reopened.get("local", "conv_a") == before
            assert [s.id for s in await reopened.list("local")] == ["conv_a"]
        finally:
            await reopened.close()

    async def test_schema_version_and_journal_mode_are_recorded(self, store: SQLiteStore, path: Path) -> None:
        await store.list("local")
        assert _pragma(path, "user_version") == 1
        assert _pragma(path, "journal_mode") == "wal"

    async def test_newer_schema_version_is_refused(self, path: Path) -> None:
        await anyio.Path(path.parent).mkdir(parents=True)
        _pragma(path, "user_version = 99")
        store = SQLiteStore(path)
        with pytest.raises(StorageError, match=r"schema version 99, newer than this kimi-mcp"):
            await store.list("local")
        assert _pragma(path, "user_version") == 99

    async def test_read_only_database_is_reported_then_recovers(self, store: SQLiteStore, path: Path) -> None:
        # Root ignores file modes, so read-only is simulated with query_only: writes then fail
        # with SQLITE_READONLY exactly as on a read-only file, and reads keep working.
        await save(store, "conv_a", pair(0))
        await _apply_pragma(store, "PRAGMA query_only = ON")
        conv = await store.get("local", "conv_a")
        assert conv is not None and len(conv.turns) == 2
        with pytest.raises(StorageError, match="read-only") as caught:
            await save(store, "conv_a", pair(1), now=2.0)
        assert str(caught.value).startswith(f"conversation store at {path} is read-only")
        # The failed connection was dropped, so the next call sees the "permissions returned" file.
        await save(store, "conv_a", pair(1), now=2.0)
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.turns == tuple(pair(0) + pair(1))

    # SQLite cannot even read a WAL database in a read-only directory unless its -wal and -shm
    # files already exist (a clean close removes them), so there reads fail too, just as cleanly.
    @pytest.mark.parametrize(
        ("file_mode", "dir_mode", "readable"), [(0o444, 0o755, True), (0o644, 0o555, False), (0o444, 0o555, False)]
    )
    async def test_read_only_file_or_directory_then_recovers(
        self, store: SQLiteStore, path: Path, tmp_path: Path, file_mode: int, dir_mode: int, readable: bool
    ) -> None:
        if not _permissions_enforced(tmp_path):
            pytest.skip("this user ignores file permissions (root); the query_only test covers read-only")
        await save(store, "conv_a", pair(0))
        await store.close()
        directory = anyio.Path(path.parent)
        await anyio.Path(path).chmod(file_mode)
        await directory.chmod(dir_mode)
        try:
            if readable:
                conv = await store.get("local", "conv_a")
                assert conv is not None and conv.turns == tuple(pair(0))
            else:
                with pytest.raises(StorageError, match="is read-only"):
                    await store.get("local", "conv_a")
            with pytest.raises(StorageError, match="is read-only"):
                await save(store, "conv_a", pair(1), now=2.0)
        finally:
            await directory.chmod(0o755)
            async for file in directory.iterdir():  # SQLite gives -wal/-shm the database file's mode
                await file.chmod(0o644)
        await save(store, "conv_a", pair(1), now=2.0)
        conv = await store.get("local", "conv_a")
        assert conv is not None and len(conv.turns) == 4

    async def test_full_disk_is_reported_and_leaves_no_partial_turn(self, store: SQLiteStore) -> None:
        # max_page_count caps the file, giving SQLite's real SQLITE_FULL path without filling a disk.
        await save(store, "conv_a", pair(0))
        assert store._conn is not None
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        await _apply_pragma(store, f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StorageError, match="disk is full"):
            await save(store, "conv_a", big_pair(100_000), now=2.0)
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.turns == tuple(pair(0)) and conv.summary.updated_at == 1.0
        await save(store, "conv_a", big_pair(100_000), now=3.0)  # space is back on a fresh connection
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.summary.turns == 4

    async def test_directory_in_place_of_the_file(self, store: SQLiteStore, path: Path) -> None:
        await anyio.Path(path).mkdir(parents=True)
        with pytest.raises(StorageError, match="cannot be opened"):
            await store.list("local")
        await anyio.Path(path).rmdir()
        assert await store.list("local") == []

    async def test_file_that_is_not_a_database(self, store: SQLiteStore, path: Path) -> None:
        await anyio.Path(path.parent).mkdir(parents=True)
        await anyio.Path(path).write_text("not a database, just some notes\n" * 100)
        with pytest.raises(StorageError, match="is not a SQLite database"):
            await store.get("local", "conv_a")
        await anyio.Path(path).unlink()
        await save(store, "conv_a", pair(0))
        assert await store.get("local", "conv_a") is not None

    async def test_parent_that_cannot_be_created(self, tmp_path: Path) -> None:
        await anyio.Path(tmp_path / "a-file").write_text("")
        store = SQLiteStore(tmp_path / "a-file" / "sub" / "conversations.sqlite3")
        with pytest.raises(StorageError, match="cannot create directory"):
            await store.list("local")

    async def test_crash_mid_save_leaves_no_half_turn(self, store: SQLiteStore, path: Path) -> None:
        await save(store, "conv_a", pair(0))
        await store.close()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        with anyio.fail_after(30):
            child = await anyio.run_process(
                [sys.executable, "-c", _CRASH_CHILD, str(path), "conv_a"], cwd=ROOT, env=env, check=False
            )
        assert child.returncode == 17, child.stderr.decode()
        # The dead writer left uncommitted pages in the WAL; recovery must ignore them.
        assert (await anyio.Path(f"{path}-wal").stat()).st_size > 1_000_000
        conv = await store.get("local", "conv_a")
        assert conv is not None
        assert conv.turns == tuple(pair(0))
        assert (conv.summary.turns, conv.summary.updated_at, conv.summary.model) == (2, 1.0, "kimi-k2")
        result = await save(store, "conv_a", pair(1), now=3.0)
        assert result.conversation.turns == 4


def test_pruning_drops_whole_exchanges() -> None:
    # A leading exchange of one user turn and two assistant turns goes as a unit.
    turns = [("user", 1), ("assistant", 1), ("assistant", 1), ("user", 1), ("assistant", 1)]
    assert plan_pruning(0, turns, 2, Limits(max_turns=2)) == 3
    assert plan_pruning(0, turns, 2, Limits(max_turns=4)) == 3
    assert plan_pruning(0, turns, 2, Limits(max_turns=5)) == 0


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Limits(max_turns=0)
    with pytest.raises(ValueError):
        Limits(max_bytes=0)


def test_conversation_not_found_is_a_readable_key_error() -> None:
    err = ConversationNotFound("conv_x")
    assert isinstance(err, KeyError)
    assert str(err) == "conversation conv_x not found"


def test_new_conversation_ids_are_url_safe_and_unique() -> None:
    ids = {new_conversation_id() for _ in range(100)}
    assert len(ids) == 100
    alphabet = set(string.ascii_letters + string.digits + "-_")
    for cid in ids:
        assert cid.startswith("conv_") and len(cid) == 25 and set(cid[5:]) <= alphabet


def test_open_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert isinstance(open_store("memory"), MemoryStore)
    store = open_store("~/chats/conversations.sqlite3")
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "chats" / "conversations.sqlite3"
    assert not store.path.parent.exists()  # opened lazily
    with pytest.raises(ValueError):
        open_store("  ")


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"XDG_DATA_HOME": "/xdg"}, "/xdg/kimi-mcp/conversations.sqlite3"),
        ("linux", {}, "HOME/.local/share/kimi-mcp/conversations.sqlite3"),
        ("freebsd14", {"XDG_DATA_HOME": "relative"}, "HOME/.local/share/kimi-mcp/conversations.sqlite3"),
        ("darwin", {}, "HOME/Library/Application Support/kimi-mcp/conversations.sqlite3"),
        ("win32", {"LOCALAPPDATA": "/local"}, "/local/kimi-mcp/conversations.sqlite3"),
    ],
)
def test_default_store_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, platform: str, env: dict[str, str], expected: str
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("XDG_DATA_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_store_path() == Path(expected.replace("HOME", str(tmp_path)))

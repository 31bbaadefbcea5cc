"""The store layer (`kimi_mcp.store`): one contract class every `ConversationStore` backend passes
unchanged (memory, SQLite and PostgreSQL; conversations and answer records), the pruning plan, and
SQLite's own durability tests (reopen, file permissions, a writer killed mid-save, migrations)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import string
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import TypedDict, get_args

import anyio
import pytest

from kimi_mcp.store import (
    MAX_ANSWER_BYTES,
    AnswerRecord,
    AnswerStatus,
    ConversationNotFound,
    ConversationStore,
    Limits,
    MemoryStore,
    SaveResult,
    SQLiteStore,
    StorageError,
    Totals,
    Turn,
    default_store_path,
    new_answer_id,
    new_conversation_id,
    open_store,
)
from kimi_mcp.store.base import MAX_STATUS_MESSAGE_BYTES, plan_pruning
from kimi_mcp.store.sqlite import SCHEMA_VERSION

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
    totals: Totals | None = None,
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
        totals=totals,
    )


LATER = 1_000.0  # the expiry of test answers: far after every `now` the tests use
FINAL_STATUSES: tuple[AnswerStatus, ...] = ("completed", "failed", "cancelled", "interrupted")


class AnswerTexts(TypedDict, total=False):
    """The bounded fields of an answer, to pass one of them by name."""

    text: str
    reasoning: str
    result: str


def answer(
    answer_id: str = "ans_a",
    *,
    principal: str = "local",
    conversation_id: str | None = "conv_a",
    owner: str = "proc-1",
    status: AnswerStatus = "working",
    created_at: float = 1.0,
    updated_at: float | None = None,
    expires_at: float = LATER,
) -> AnswerRecord:
    """A fresh answer record; `dataclasses.replace` sets the texts."""
    return AnswerRecord(
        id=answer_id,
        principal=principal,
        kind="answer",
        conversation_id=conversation_id,
        owner=owner,
        status=status,
        created_at=created_at,
        updated_at=created_at if updated_at is None else updated_at,
        expires_at=expires_at,
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
        """Over the cap, the oldest exchanges go down to three quarters of it at once: the oldest turn
        (where Kimi's cached prefix starts) then stays for the next calls."""
        limits = Limits(max_turns=8)
        results = [await save(store, "conv_a", pair(i), now=float(i + 1), limits=limits) for i in range(7)]
        assert [r.pruned_turns for r in results] == [0, 0, 0, 0, 4, 0, 4]
        conv = await store.get("local", "conv_a")
        assert conv is not None
        assert conv.turns == tuple(pair(4) + pair(5) + pair(6))
        assert results[-1].conversation == conv.summary and conv.summary.turns == 6

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

    # Running counts: a save that prunes nothing adds to the conversation's turn count and size
    # instead of re-reading every stored turn; these fail if that arithmetic drifts from a recount.

    async def test_many_saves_then_pruning_by_turns_as_a_recount_would(self, store: ConversationStore) -> None:
        limits = Limits(max_turns=120)
        system = "sÿs"  # 4 bytes; each exchange is 13 + 11 + 3 = 27 bytes in 2 turns

        def exchange(i: int) -> list[Turn]:
            return [Turn("user", f"qüestion {i:03d}"), Turn("assistant", f"änswer {i:03d}", "…")]

        for i in range(60):  # 120 turns: at the cap, not over it
            result = await save(store, "conv_a", exchange(i), system=system, limits=limits, now=float(i + 1))
            assert (result.pruned_turns, result.conversation.turns) == (0, 2 * i + 2)
            assert result.conversation.size_bytes == 4 + 27 * (i + 1)
        result = await save(store, "conv_a", exchange(60), system=system, limits=limits, now=61.0)
        # 122 turns > 120: down to 90 (three quarters) at once, so exchanges 0..15 go.
        assert (result.pruned_turns, result.conversation.turns, result.conversation.size_bytes) == (32, 90, 4 + 45 * 27)
        for i in range(61, 76):  # back up to the cap without pruning
            result = await save(store, "conv_a", exchange(i), system=system, limits=limits, now=float(i + 1))
            assert (result.pruned_turns, result.conversation.turns) == (0, 90 + 2 * (i - 60))
        assert result.conversation.size_bytes == 4 + 60 * 27
        result = await save(store, "conv_a", exchange(76), system=system, limits=limits, now=77.0)
        assert (result.pruned_turns, result.conversation.turns, result.conversation.size_bytes) == (32, 90, 4 + 45 * 27)
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.summary == result.conversation
        assert conv.turns == tuple(turn for i in range(32, 77) for turn in exchange(i))

    async def test_many_saves_then_pruning_by_bytes_as_a_recount_would(self, store: ConversationStore) -> None:
        limits = Limits(max_bytes=4 + 40 * 27)  # room for exactly 40 of these 27-byte exchanges
        system = "sÿs"

        def exchange(i: int) -> list[Turn]:
            return [Turn("user", f"qüestion {i:03d}"), Turn("assistant", f"änswer {i:03d}", "…")]

        for i in range(40):
            result = await save(store, "conv_a", exchange(i), system=system, limits=limits, now=float(i + 1))
            assert (result.pruned_turns, result.conversation.size_bytes) == (0, 4 + 27 * (i + 1))
        assert result.conversation.size_bytes == limits.max_bytes
        result = await save(store, "conv_a", exchange(40), system=system, limits=limits, now=41.0)
        # 1,111 bytes > 1,084: down to 813 (three quarters), which 4 + 29 exchanges (787 bytes) fit.
        assert (result.pruned_turns, result.conversation.turns, result.conversation.size_bytes) == (24, 58, 787)
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.summary == result.conversation
        assert conv.turns == tuple(turn for i in range(12, 41) for turn in exchange(i))

    async def test_sizes_count_utf8_bytes_of_content_and_reasoning(self, store: ConversationStore) -> None:
        limits = Limits(max_bytes=100)
        exchange = [Turn("user", "é" * 20), Turn("assistant", "a" * 7, "…")]  # 40 + 7 + 3 = 50 bytes, 28 characters
        sizes = []
        for i in range(3):
            result = await save(store, "conv_a", exchange, limits=limits, now=float(i + 1))
            sizes.append((result.pruned_turns, result.conversation.turns, result.conversation.size_bytes))
        # 100 bytes is at the limit; 150 is over it, and down to 75 leaves only the newest exchange.
        assert sizes == [(0, 2, 50), (0, 4, 100), (4, 2, 50)]
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.summary == result.conversation and conv.turns == tuple(exchange)

    async def test_a_new_system_prompt_changes_the_size_by_the_difference(self, store: ConversationStore) -> None:
        limits = Limits(max_bytes=100)
        steps: list[tuple[str | None, list[Turn], tuple[int, int, int]]] = [
            ("s" * 10, [Turn("user", "u" * 20), Turn("assistant", "a" * 20)], (0, 2, 50)),
            ("ß" * 3, [Turn("user", "ü" * 5), Turn("assistant", "a" * 4)], (0, 4, 6 + 40 + 14)),  # 10 -> 6 bytes
            (None, [Turn("user", "x" * 10), Turn("assistant", "y" * 10)], (0, 6, 40 + 14 + 20)),
            # 30 + 74 + 2 = 106 > 100 only because the system prompt grew: the first exchange goes.
            ("s" * 30, [Turn("user", "x"), Turn("assistant", "y")], (2, 6, 30 + 14 + 20 + 2)),
            ("", [Turn("user", "é" * 2), Turn("assistant", "€")], (0, 8, 14 + 20 + 2 + 7)),
        ]
        for n, (system, turns, expected) in enumerate(steps):
            result = await save(store, "conv_a", turns, system=system, limits=limits, now=float(n + 1))
            assert (result.pruned_turns, result.conversation.turns, result.conversation.size_bytes) == expected, n
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.summary == result.conversation and conv.system == ""
        assert conv.turns == tuple(turn for _, turns, _ in steps[1:] for turn in turns)

    async def test_running_counts_match_a_recount_save_after_save(self, store: ConversationStore) -> None:
        """A model of the conversation, recounted in full at every save: same pruning, same counts,
        with multi-byte texts, reasoning or none, three-turn exchanges and a changing system prompt."""
        limits = Limits(max_turns=14, max_bytes=400)
        systems = [None, "système", "", "s" * 40, "🤖" * 5, "中文" * 9]
        kept: list[Turn] = []
        reasons: list[str] = []
        for i in range(80):
            system = systems[i % len(systems)]
            new = [Turn("user", f"q{i} " + "é" * (i % 7)),
                   Turn("assistant", f"a{i} " + "中" * (i % 5), None if i % 3 else "raisonné…" * (i % 4))]
            if i % 4 == 1:
                new.append(Turn("assistant", "ü" * (60 * (i % 3)), "🤔"))
            result = await save(store, "conv_a", new, system=system, limits=limits, now=float(i + 1))
            combined = kept + new
            sizes = [(t.role, len(t.content.encode()) + len((t.reasoning or "").encode())) for t in combined]
            system_bytes = len((system or "").encode())
            pruned = plan_pruning(system_bytes, sizes, len(new), limits)
            if pruned:
                reasons.append("turns" if len(combined) > limits.max_turns else "bytes")
            kept = combined[pruned:]
            expected = (pruned, len(kept), system_bytes + sum(size for _, size in sizes[pruned:]))
            assert (result.pruned_turns, result.conversation.turns, result.conversation.size_bytes) == expected, i
        # Both limits were reached, each time after saves that pruned nothing (49 of the 80).
        assert set(reasons) == {"turns", "bytes"} and len(reasons) == 31
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.summary == result.conversation and conv.turns == tuple(kept)

    async def test_concurrent_saves_lose_and_interleave_nothing(self, store: ConversationStore) -> None:
        async def one(i: int) -> None:
            await save(store, "conv_a", pair(i), now=float(i))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
        conv = await store.get("local", "conv_a")
        assert conv is not None and len(conv.turns) == 40 == conv.summary.turns
        assert conv.summary.size_bytes == sum(len(t.content.encode()) for t in conv.turns)
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

    # Running totals (tokens and estimated cost)

    async def test_totals_start_at_zero_and_add_up_with_each_save(self, store: ConversationStore) -> None:
        first = await save(store, "conv_a", pair(0))
        assert first.conversation.totals == Totals()
        second = await save(store, "conv_a", pair(1), now=2.0, totals=Totals(100, 20, 30, 0.1, 0))
        third = await save(store, "conv_a", pair(2), now=3.0, totals=Totals(7, 3, 0, 0.2, 1))
        expected = Totals(107, 23, 30, 0.1 + 0.2, 1)
        assert second.conversation.totals == Totals(100, 20, 30, 0.1, 0)
        assert third.conversation.totals == expected
        conv = await store.get("local", "conv_a")
        assert conv is not None and conv.summary.totals == expected
        assert await store.summary("local", "conv_a") == conv.summary == third.conversation
        assert [s.totals for s in await store.list("local")] == [expected]

    async def test_totals_are_per_conversation_and_outlive_pruning(self, store: ConversationStore) -> None:
        limits = Limits(max_turns=2)
        for i in range(3):
            await save(store, "conv_a", pair(i), now=float(i + 1), limits=limits, totals=Totals(10, 1, 2, 0.5, 0))
        await save(store, "conv_b", pair(0), totals=Totals(1, 1, 1, 0.25, 0))
        a, b = await store.summary("local", "conv_a"), await store.summary("local", "conv_b")
        assert a is not None and a.turns == 2 and a.totals == Totals(30, 3, 6, 1.5, 0)  # spent, not kept
        assert b is not None and b.totals == Totals(1, 1, 1, 0.25, 0)

    async def test_totals_of_a_refused_save_are_not_added(self, store: ConversationStore) -> None:
        await save(store, "conv_a", pair(0), totals=Totals(5, 5, 0, 0.5, 0))
        with pytest.raises(ConversationNotFound):
            await save(store, "conv_a", pair(1), principal="someone-else", totals=Totals(9, 9, 9, 9.0, 9))
        with pytest.raises(ConversationNotFound):
            await store.save_exchange("local", "conv_gone", model="m", system=None, title="t", turns=pair(0),
                                      limits=Limits(), now=1.0, create=False, totals=Totals(1, 1, 1, 1.0, 0))
        summary = await store.summary("local", "conv_a")
        assert summary is not None and summary.totals == Totals(5, 5, 0, 0.5, 0)
        assert await store.summary("local", "conv_gone") is None

    @pytest.mark.parametrize("bad", [
        Totals(prompt_tokens=-1), Totals(cached_tokens=-5), Totals(unpriced_calls=-1),
        Totals(cost_usd=-0.01), Totals(cost_usd=float("nan")), Totals(cost_usd=float("inf")),
    ])
    async def test_invalid_totals_are_refused_without_writing(self, store: ConversationStore, bad: Totals) -> None:
        with pytest.raises(ValueError, match="totals"):
            await save(store, "conv_a", pair(0), totals=bad)
        assert await store.get("local", "conv_a") is None

    # Answer records

    async def test_answer_round_trip(self, store: ConversationStore) -> None:
        record = dataclasses.replace(
            answer(new_answer_id()),
            kind="task",
            status_message="thinking…",
            text="héllo\x00 wörld",
            reasoning="why 🤔",
            result='{"text": "héllo"}',
        )
        await store.create_answer(record)
        assert await store.get_answer("local", record.id, now=2.0) == record
        assert await store.answers_in("local", "conv_a", now=2.0) == [record]
        assert await store.count_answers("local", now=2.0) == 1
        assert await store.get_answer("local", "ans_missing", now=2.0) is None

    async def test_get_answer_defaults_to_the_current_time(self, store: ConversationStore) -> None:
        now = time.time()
        await store.create_answer(answer("ans_live", created_at=now, expires_at=now + 3600))
        await store.create_answer(answer("ans_gone", created_at=now - 7200, expires_at=now - 3600))
        assert await store.get_answer("local", "ans_live") is not None
        assert await store.get_answer("local", "ans_gone") is None
        assert [r.id for r in await store.answers_in("local", "conv_a")] == ["ans_live"]
        assert await store.count_answers("local") == 1

    async def test_an_answer_id_is_created_once(self, store: ConversationStore) -> None:
        await store.create_answer(answer(owner="first"))
        with pytest.raises(ValueError, match="already exists"):
            await store.create_answer(answer(owner="second", status="completed"))
        stored = await store.get_answer("local", "ans_a", now=2.0)
        assert stored is not None and (stored.owner, stored.status) == ("first", "working")

    async def test_answers_are_invisible_to_other_principals(self, store: ConversationStore) -> None:
        await store.create_answer(answer(principal="alice"))
        assert await store.get_answer("bob", "ans_a", now=2.0) is None
        assert await store.update_answer("bob", "ans_a", now=2.0, status="cancelled", text="bob's") is None
        assert await store.answers_in("bob", "conv_a", now=2.0) == []
        assert await store.count_answers("bob", now=2.0) == 0
        assert await store.get_answer("alice", "ans_a", now=3.0) == answer(principal="alice")

    async def test_update_sets_only_the_given_fields(self, store: ConversationStore) -> None:
        await store.create_answer(dataclasses.replace(answer(), text="so", reasoning="hm", status_message="start"))
        updated = await store.update_answer("local", "ans_a", now=2.0, text="so far")
        expected = dataclasses.replace(answer(), text="so far", reasoning="hm", status_message="start", updated_at=2.0)
        assert updated == expected == await store.get_answer("local", "ans_a", now=2.0)
        heartbeat = await store.update_answer("local", "ans_a", now=3.0)
        assert heartbeat == dataclasses.replace(expected, updated_at=3.0)
        moved = await store.update_answer(
            "local", "ans_a", now=4.0, owner="proc-2", expires_at=2_000.0, reasoning="", status_message="resumed"
        )
        assert moved == dataclasses.replace(
            expected, owner="proc-2", expires_at=2_000.0, reasoning="", status_message="resumed", updated_at=4.0
        )
        assert await store.update_answer("local", "ans_missing", now=5.0, text="x") is None

    @pytest.mark.parametrize("final", FINAL_STATUSES)
    async def test_a_finished_answer_never_changes(self, store: ConversationStore, final: AnswerStatus) -> None:
        await store.create_answer(answer())
        done = await store.update_answer(
            "local", "ans_a", now=2.0, status=final, status_message="done", text="all", result='{"ok": true}'
        )
        assert done is not None and (done.status, done.result, done.updated_at) == (final, '{"ok": true}', 2.0)
        for status in get_args(AnswerStatus):
            assert await store.update_answer("local", "ans_a", now=3.0, status=status, text="more") is None
        assert await store.update_answer("local", "ans_a", now=3.0) is None  # not even a heartbeat
        assert await store.get_answer("local", "ans_a", now=4.0) == done

    async def test_a_completion_after_a_cancel_is_refused(self, store: ConversationStore) -> None:
        await store.create_answer(answer())
        cancelled = await store.update_answer("local", "ans_a", now=2.0, status="cancelled", status_message="stop")
        assert cancelled is not None and cancelled.status == "cancelled"
        late = await store.update_answer("local", "ans_a", now=3.0, status="completed", text="all", result="{}")
        assert late is None
        assert await store.get_answer("local", "ans_a", now=4.0) == cancelled
        assert cancelled.result is None and cancelled.text == ""

    async def test_expiry_hides_and_purge_deletes(self, store: ConversationStore) -> None:
        await store.create_answer(answer("ans_soon", expires_at=10.0))
        await store.create_answer(answer("ans_later", created_at=2.0, expires_at=20.0, status="completed"))
        assert await store.get_answer("local", "ans_soon", now=9.5) is not None
        assert await store.get_answer("local", "ans_soon", now=10.0) is None  # expires_at <= now: gone
        assert await store.update_answer("local", "ans_soon", now=10.0, text="late") is None
        assert [r.id for r in await store.answers_in("local", "conv_a", now=9.5)] == ["ans_soon", "ans_later"]
        assert [r.id for r in await store.answers_in("local", "conv_a", now=10.0)] == ["ans_later"]
        assert await store.count_answers("local", now=10.0) == 0
        assert await store.purge_answers(now=10.0) == 1
        assert await store.get_answer("local", "ans_soon", now=5.0) is None  # deleted, not only hidden
        assert await store.purge_answers(now=10.0) == 0
        assert await store.purge_answers(now=20.0) == 1
        assert await store.answers_in("local", "conv_a", now=0.0) == []

    async def test_answers_in_is_one_conversation_oldest_first(self, store: ConversationStore) -> None:
        for answer_id, created_at in [("ans_3", 3.0), ("ans_1", 1.0), ("ans_2b", 2.0), ("ans_2a", 2.0)]:
            await store.create_answer(answer(answer_id, created_at=created_at))
        await store.create_answer(answer("ans_other", conversation_id="conv_b"))
        await store.create_answer(answer("ans_none", conversation_id=None))
        found = await store.answers_in("local", "conv_a", now=5.0)
        assert [r.id for r in found] == ["ans_1", "ans_2a", "ans_2b", "ans_3"]
        assert [r.id for r in await store.answers_in("local", "conv_b", now=5.0)] == ["ans_other"]
        assert await store.answers_in("local", "conv_c", now=5.0) == []
        none = await store.get_answer("local", "ans_none", now=5.0)
        assert none is not None and none.conversation_id is None

    async def test_count_answers_counts_working_ones(self, store: ConversationStore) -> None:
        await store.create_answer(answer("ans_1"))
        await store.create_answer(answer("ans_2", conversation_id="conv_b"))
        await store.create_answer(answer("ans_3", status="completed"))
        await store.create_answer(answer("ans_4", principal="bob"))
        assert await store.count_answers("local", now=2.0) == 2
        await store.update_answer("local", "ans_1", now=2.0, status="failed")
        assert await store.count_answers("local", now=2.0) == 1
        assert await store.count_answers("bob", now=2.0) == 1

    async def test_interrupt_stale_marks_only_stale_answers_of_other_owners(self, store: ConversationStore) -> None:
        await store.create_answer(answer("ans_lost", owner="dead", updated_at=4.0))
        await store.create_answer(answer("ans_lost_bob", principal="bob", owner="dead", updated_at=1.0))
        await store.create_answer(answer("ans_mine", owner="me", updated_at=1.0))
        await store.create_answer(answer("ans_fresh", owner="alive", updated_at=5.0))
        await store.create_answer(answer("ans_done", owner="dead", status="completed", updated_at=1.0))
        before = {r.id: r for r in await store.answers_in("local", "conv_a", now=6.0)}
        count = await store.interrupt_stale(now=6.0, stale_before=5.0, except_owner="me", message="server restarted")
        assert count == 2
        after = {r.id: r for r in await store.answers_in("local", "conv_a", now=6.0)}
        assert after["ans_lost"] == dataclasses.replace(
            before["ans_lost"], status="interrupted", status_message="server restarted", updated_at=6.0
        )
        for unchanged in ("ans_mine", "ans_fresh", "ans_done"):
            assert after[unchanged] == before[unchanged]
        bobs = await store.get_answer("bob", "ans_lost_bob", now=6.0)
        assert bobs is not None and bobs.status == "interrupted"
        assert await store.update_answer("local", "ans_lost", now=7.0, status="completed") is None
        assert await store.interrupt_stale(now=7.0, stale_before=5.0, except_owner="me", message="again") == 0

    async def test_answer_sizes_are_bounded_never_cut(self, store: ConversationStore) -> None:
        too_big = "é" * (MAX_ANSWER_BYTES // 2) + "x"  # bytes, not characters, are counted
        oversized: list[tuple[str, AnswerTexts]] = [
            ("text", {"text": too_big}),
            ("reasoning", {"reasoning": too_big}),
            ("result", {"result": too_big}),
        ]
        for field, texts in oversized:
            with pytest.raises(ValueError, match=f"answer {field} exceeds"):
                await store.create_answer(dataclasses.replace(answer(f"ans_{field}"), **texts))
            assert await store.get_answer("local", f"ans_{field}", now=2.0) is None
        long_message = "m" * (MAX_STATUS_MESSAGE_BYTES + 1)
        with pytest.raises(ValueError, match="status_message exceeds"):
            await store.create_answer(dataclasses.replace(answer(), status_message=long_message))
        await store.create_answer(dataclasses.replace(answer(), text="x" * MAX_ANSWER_BYTES))  # the limit itself fits
        for field, texts in oversized:
            with pytest.raises(ValueError, match=f"answer {field} exceeds"):
                await store.update_answer("local", "ans_a", now=2.0, status="completed", **texts)
        with pytest.raises(ValueError, match="status_message exceeds"):
            await store.interrupt_stale(now=2.0, stale_before=3.0, except_owner="me", message=long_message)
        stored = await store.get_answer("local", "ans_a", now=2.0)
        assert stored is not None and stored.status == "working" and len(stored.text) == MAX_ANSWER_BYTES
        assert stored.updated_at == 1.0

    async def test_invalid_answers_are_refused_without_writing(self, store: ConversationStore) -> None:
        bad = [
            dataclasses.replace(answer(), id=""),
            dataclasses.replace(answer(), principal=""),
            dataclasses.replace(answer(), owner=""),
            dataclasses.replace(answer(), kind="job"),  # type: ignore[arg-type]
            dataclasses.replace(answer(), status="done"),  # type: ignore[arg-type]
            dataclasses.replace(answer(), text="\ud800"),  # a lone surrogate cannot be stored
        ]
        for record in bad:
            with pytest.raises(ValueError):
                await store.create_answer(record)
        assert await store.answers_in("local", "conv_a", now=2.0) == []
        await store.create_answer(answer())
        with pytest.raises(ValueError, match="unknown answer status"):
            await store.update_answer("local", "ans_a", now=2.0, status="done")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="owner"):
            await store.update_answer("local", "ans_a", now=2.0, owner="")
        assert await store.get_answer("local", "ans_a", now=2.0) == answer()

    async def test_concurrent_updates_keep_exactly_one_final_state(self, store: ConversationStore) -> None:
        """Heartbeats, a completion and a cancel all at once: one finisher wins, nothing after it lands."""
        await store.create_answer(answer())
        results: dict[str, AnswerRecord | None] = {}

        async def record(name: str, update: Awaitable[AnswerRecord | None]) -> None:
            results[name] = await update

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(record, f"beat {i}", store.update_answer("local", "ans_a", now=2.0 + i, text=f"text {i}"))
                if i == 10:
                    complete = store.update_answer("local", "ans_a", now=100.0, status="completed", result='{"t": 1}')
                    tg.start_soon(record, "complete", complete)
                if i == 20:
                    cancel = store.update_answer("local", "ans_a", now=200.0, status="cancelled", status_message="stop")
                    tg.start_soon(record, "cancel", cancel)
        assert len(results) == 42
        finishers = {name for name in ("complete", "cancel") if results[name] is not None}
        assert len(finishers) == 1, results  # the other finisher got None
        winner = results[finishers.pop()]
        assert winner is not None and winner.status in ("completed", "cancelled")
        # The stored record is exactly what the winner wrote: no heartbeat landed after it.
        assert await store.get_answer("local", "ans_a", now=300.0) == winner
        landed = sorted(r.updated_at for r in results.values() if r is not None)
        assert landed[-1] == winner.updated_at == (100.0 if winner.status == "completed" else 200.0)

    async def test_concurrent_creates_are_all_kept(self, store: ConversationStore) -> None:
        ids = [new_answer_id() for _ in range(25)]
        async with anyio.create_task_group() as tg:
            for n, answer_id in enumerate(ids):
                tg.start_soon(store.create_answer, answer(answer_id, created_at=float(n)))
        assert [r.id for r in await store.answers_in("local", "conv_a", now=100.0)] == ids
        assert await store.count_answers("local", now=100.0) == 25


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> ConversationStore:
        return MemoryStore()


class TestPostgresStore(StoreContract):
    """The same contract against a real PostgreSQL, one fresh database per test (the server comes
    from `tests/support/postgres.py`; its own tests are in `test_postgres.py`)."""

    @pytest.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[ConversationStore]:
        store = open_store(postgres_url)
        yield store
        await store.close()


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


# The version-1 schema exactly as kimi-mcp 0.1 wrote it (kept literal: `_migrate_to_1` must not be
# what creates the file whose migration is being tested).
_SCHEMA_V1 = (
    "CREATE TABLE conversations ("
    " id TEXT PRIMARY KEY, principal TEXT NOT NULL, title TEXT NOT NULL, model TEXT NOT NULL,"
    " system TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
    " turns INTEGER NOT NULL, size_bytes INTEGER NOT NULL)",
    "CREATE TABLE turns ("
    " conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,"
    " seq INTEGER NOT NULL, role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),"
    " content TEXT NOT NULL, reasoning TEXT, created_at REAL NOT NULL,"
    " PRIMARY KEY (conversation_id, seq))",
    "CREATE INDEX conversations_by_principal ON conversations (principal, updated_at)",
)


async def _old_file(path: Path, version: int, rows: tuple[str, ...]) -> None:
    """A private store file as kimi-mcp wrote it at schema `version` (1 or 2), holding `rows`."""
    from kimi_mcp.store.sqlite import _migrate_to_2  # a frozen step: what version 2 wrote

    await anyio.Path(path.parent).mkdir(parents=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA_V1:
            conn.execute(statement)
        if version >= 2:
            _migrate_to_2(conn)
        for row in rows:
            conn.execute(row)
        conn.execute(f"PRAGMA user_version = {version}")


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
        assert _pragma(path, "user_version") == SCHEMA_VERSION == 3
        assert _pragma(path, "journal_mode") == "wal"

    async def test_a_created_answer_is_committed_and_survives_reopening(self, store: SQLiteStore, path: Path) -> None:
        record = dataclasses.replace(answer(new_answer_id(), owner="old-process"), kind="task", text="so far")
        await store.create_answer(record)
        # Another process (a tasks/get served elsewhere) sees it as soon as create_answer returns.
        with contextlib.closing(sqlite3.connect(path)) as other:
            row = other.execute("SELECT principal, status, text FROM answers WHERE id = ?", (record.id,)).fetchone()
        assert row == ("local", "working", "so far")
        await store.close()
        reopened = SQLiteStore(path)
        try:
            assert await reopened.get_answer("local", record.id, now=2.0) == record
            lost = await reopened.interrupt_stale(now=3.0, stale_before=3.0, except_owner="new-process", message="lost")
            assert lost == 1
        finally:
            await reopened.close()
        again = SQLiteStore(path)
        try:
            stored = await again.get_answer("local", record.id, now=4.0)
            assert stored is not None and (stored.status, stored.status_message, stored.text) == (
                "interrupted", "lost", "so far"
            )
        finally:
            await again.close()

    async def test_version_1_file_migrates_in_place(self, path: Path) -> None:
        await _old_file(path, 1, (
            "INSERT INTO conversations VALUES ('conv_old', 'local', 'Old', 'kimi-k2', 'sys', 1.0, 2.0, 2, 24)",
            "INSERT INTO turns VALUES ('conv_old', 0, 'user', 'question 0', NULL, 1.0)",
            "INSERT INTO turns VALUES ('conv_old', 1, 'assistant', 'answer 0', 'why', 1.5)",
        ))
        store = SQLiteStore(path)
        try:
            conv = await store.get("local", "conv_old")
            assert conv is not None and conv.system == "sys"
            assert conv.turns == (Turn("user", "question 0", None, 1.0), Turn("assistant", "answer 0", "why", 1.5))
            s = conv.summary
            assert (s.title, s.model, s.turns, s.size_bytes) == ("Old", "kimi-k2", 2, 24)
            assert (s.created_at, s.updated_at) == (1.0, 2.0)
            assert _pragma(path, "user_version") == SCHEMA_VERSION
            await store.create_answer(answer(conversation_id="conv_old"))
            assert [r.id for r in await store.answers_in("local", "conv_old", now=2.0)] == ["ans_a"]
            await save(store, "conv_old", pair(1), now=3.0)  # and conversations are still written normally
            conv = await store.get("local", "conv_old")
            assert conv is not None and conv.summary.turns == 4
        finally:
            await store.close()
        if sys.platform != "win32":
            assert (await anyio.Path(path).stat()).st_mode & 0o777 == 0o600

    async def test_version_2_file_migrates_in_place(self, path: Path) -> None:
        """A file kimi-mcp wrote at schema 2 gets running totals; its conversations start at zero."""
        await _old_file(path, 2, (
            "INSERT INTO conversations VALUES ('conv_old', 'local', 'Old', 'kimi-k2', NULL, 1.0, 2.0, 2, 20)",
            "INSERT INTO turns VALUES ('conv_old', 0, 'user', 'question 0', NULL, 1.0)",
            "INSERT INTO turns VALUES ('conv_old', 1, 'assistant', 'answer 0', NULL, 1.5)",
        ))
        store = SQLiteStore(path)
        try:
            conv = await store.get("local", "conv_old")
            assert conv is not None and conv.turns[1].content == "answer 0"
            assert (conv.summary.turns, conv.summary.size_bytes, conv.summary.totals) == (2, 20, Totals())
            assert _pragma(path, "user_version") == SCHEMA_VERSION == 3
            saved = await save(store, "conv_old", pair(1), now=3.0, totals=Totals(4, 2, 1, 0.125, 0))
            assert saved.conversation.totals == Totals(4, 2, 1, 0.125, 0)
        finally:
            await store.close()

    async def test_totals_survive_close_and_reopen(self, store: SQLiteStore, path: Path) -> None:
        await save(store, "conv_a", pair(0), totals=Totals(10, 4, 2, 0.3, 0))
        await save(store, "conv_a", pair(1), now=2.0, totals=Totals(20, 5, 10, 0.4, 1))
        await store.close()
        reopened = SQLiteStore(path)
        try:
            summary = await reopened.summary("local", "conv_a")
            assert summary is not None and summary.totals == Totals(30, 9, 12, 0.3 + 0.4, 1)
            await save(reopened, "conv_a", pair(2), now=3.0, totals=Totals(1, 1, 1, 0.1, 0))
            again = await reopened.summary("local", "conv_a")
            assert again is not None and again.totals == Totals(31, 10, 13, 0.3 + 0.4 + 0.1, 1)
        finally:
            await reopened.close()

    async def test_a_save_within_the_limits_reads_no_stored_turn(self, store: SQLiteStore) -> None:
        """Its cost must not grow with the conversation: the row's running counts decide, and the next
        seq is one seek down the primary key. Only a save over a limit reads every turn's size."""
        limits = Limits(max_turns=40)
        for i in range(19):
            await save(store, "conv_a", pair(i), limits=limits, now=float(i + 1))
        assert store._conn is not None
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)  # a test-only reach into a private attribute
        try:
            at_cap = await save(store, "conv_a", pair(19), limits=limits, now=20.0)  # 40 turns: at the cap
            within = [s for s in statements if "FROM turns" in s]
            statements.clear()
            over = await save(store, "conv_a", pair(20), limits=limits, now=21.0)
            beyond = [s for s in statements if "FROM turns" in s]
        finally:
            store._conn.set_trace_callback(None)
        assert (at_cap.pruned_turns, at_cap.conversation.turns) == (0, 40)
        assert len(within) == 1 and within[0].startswith("SELECT max(seq) FROM turns")
        assert (over.pruned_turns, over.conversation.turns) == (12, 30)
        assert any("ORDER BY seq" in s for s in beyond)

    async def test_the_next_schema_version_is_refused(self, path: Path) -> None:
        await anyio.Path(path.parent).mkdir(parents=True)
        _pragma(path, f"user_version = {SCHEMA_VERSION + 1}")
        store = SQLiteStore(path)
        with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this kimi-mcp"):
            await store.get_answer("local", "ans_a")
        assert _pragma(path, "user_version") == SCHEMA_VERSION + 1

    async def test_a_new_store_file_is_private(self, store: SQLiteStore, path: Path) -> None:
        if sys.platform == "win32":
            pytest.skip("POSIX file modes")
        await store.create_answer(answer())
        for name in (path, f"{path}-wal"):
            assert (await anyio.Path(name).stat()).st_mode & 0o777 == 0o600
        assert (await anyio.Path(path.parent).stat()).st_mode & 0o777 == 0o700

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


def test_pruning_goes_to_three_quarters_of_the_limit_at_once() -> None:
    pairs = [("user", 10), ("assistant", 10)] * 101  # 202 turns, 2,020 bytes
    assert plan_pruning(0, pairs, 2, Limits(max_turns=202)) == 0
    assert plan_pruning(0, pairs, 2, Limits(max_turns=200)) == 202 - 150
    assert plan_pruning(0, pairs, 2, Limits(max_bytes=2_000)) == 202 - 150
    assert plan_pruning(0, pairs[:-2], 2, Limits(max_turns=200)) == 0  # at the cap: nothing yet


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

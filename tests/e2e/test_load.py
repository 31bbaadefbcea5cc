"""A bounded load run over Streamable HTTP with injected upstream faults (small size; the full size
is `python -m benchmarks.load`, which shares this runner).

Proves: every call answered (a result or a clean error), no crash (server up, no traceback on
stderr), no lost or duplicated conversation turns, and memory that did not run away.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.load import ANSWER, LoadReport, _turn_problems, run_load

CALLS = 200
CONCURRENCY = 32
FAULT_RATE = 0.05
MAX_RSS_GROWTH_KIB = 200 * 1024  # a loose sanity bound against unbounded growth, not a measurement


@pytest.fixture(scope="module")
async def report() -> LoadReport:
    return await run_load(calls=CALLS, concurrency=CONCURRENCY, fault_rate=FAULT_RATE, conversations=8, clients=4)


@pytest.mark.anyio
async def test_every_call_is_answered_cleanly(report: LoadReport) -> None:
    assert report.unclean == []
    assert report.answered == CALLS
    assert report.ok > 0
    # Faults really were served, and only the ones no retry can fix ended calls.
    assert sum(report.injected.values()) > 0
    assert report.upstream_requests >= CALLS
    assert set(report.errors) <= {"bad_request", "network", "upstream", "rate_limited"}
    assert sum(report.errors.values()) <= sum(report.injected.values())


@pytest.mark.anyio
async def test_no_crash(report: LoadReport) -> None:
    assert report.server_alive
    assert report.tracebacks == 0


@pytest.mark.anyio
async def test_no_lost_or_duplicated_turns(report: LoadReport) -> None:
    assert report.turn_problems == []
    assert report.stored_turns > 2 * 8  # the opening exchanges and then some


@pytest.mark.anyio
async def test_memory_does_not_run_away(report: LoadReport) -> None:
    assert report.rss_before_kib > 0 and report.rss_after_kib > 0
    assert report.rss_after_kib - report.rss_before_kib < MAX_RSS_GROWTH_KIB


def turns(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for user, assistant in pairs:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return out


def test_turn_check_catches_lost_and_duplicated_turns() -> None:
    """The load run's turn accounting can fail: each kind of damage is reported."""
    opening = ("conversation 0", ANSWER)
    good = turns(opening, ("call 1", ANSWER), ("call 5", ANSWER))
    assert _turn_problems("c", 0, good, ["call 5", "call 1"]) == []
    assert _turn_problems("c", 0, turns(opening, ("call 1", ANSWER)), ["call 1", "call 5"])  # lost
    assert _turn_problems("c", 0, turns(opening, ("call 1", ANSWER), ("call 1", ANSWER)), ["call 1"])  # twice
    assert _turn_problems("c", 0, turns(opening, ("call 9", ANSWER)), ["call 1"])  # a failed call stored
    assert _turn_problems("c", 0, good[:-1], ["call 1", "call 5"])  # half an exchange
    assert _turn_problems("c", 0, turns(opening, ("call 1", "other")), ["call 1"])  # wrong answer stored

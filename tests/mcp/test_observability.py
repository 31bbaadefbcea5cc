"""Metrics and JSON logs of a real Streamable HTTP server subprocess, scraped and read over the wire.

`/metrics` (KIMI_METRICS) is checked like /mcp: a scrape without a client token is refused, unless
the operator opened it (KIMI_METRICS_OPEN). Successful calls, upstream faults (retried and not),
a cancellation, a call queued under the concurrency cap and an answer that runs on past the soft
deadline each move exactly the series they should, by the amounts the fake's usage and the price
table say. With KIMI_LOG_FORMAT=json every stderr line is one JSON object, the closing line of each
tool call carries its request id, principal, tool, model, duration and error kind, and no secret
appears anywhere. Waits poll the scrape (bounded); nothing asserts a duration.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

from kimi_mcp.prices import estimate_cost
from kimi_mcp.upstream import Usage
from tests.mcp.helpers import error_of, ok, wait_requests
from tests.support.fake_ace import FakeAce, ace_error, cut, reply, stall
from tests.support.harness import ServerLog, http_server, server_env
from tests.support.models import DEFAULT_ID

pytestmark = pytest.mark.anyio

ALICE = "alice-tok-1234567890abcdef1234"
USAGE = {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33,
         "prompt_tokens_details": {"cached_tokens": 5}, "completion_tokens_details": {"reasoning_tokens": 7}}
POLL_S = 15.0
"""At most this long for a series to reach its value (polled; the value is what is asserted)."""


@dataclass
class Server:
    port: int
    log: ServerLog

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Samples:
    """One scrape: sample name and labels -> value (a series never seen reads 0)."""

    def __init__(self, text: str) -> None:
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)


def scrape(server: Server, token: str | None = ALICE) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx2.get(f"{server.base}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return Samples(response.text)


async def until(server: Server, check: Any, token: str | None = ALICE) -> Samples:
    """Scrape until `check(samples)` holds (bounded), and return that scrape; the event loop goes on
    meanwhile (the calls being watched run on it)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + POLL_S
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        while True:
            response = await http.get(f"{server.base}/metrics")
            assert response.status_code == 200, response.text
            samples = Samples(response.text)
            if check(samples) or time.monotonic() > deadline:
                return samples
            await anyio.sleep(0.05)


@asynccontextmanager
async def client(server: Server, token: str = ALICE) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(60)) as http,
        Client(streamable_http_client(f"{server.base}/mcp", http_client=http)) as connected,
    ):
        yield connected


async def chat(c: Client, **args: Any) -> Any:
    with anyio.fail_after(60):
        return await c.call_tool("kimi_chat", args)


@pytest.fixture(scope="module")
def server(fake: FakeAce) -> Iterator[Server]:
    """Client tokens, metrics behind them, JSON logs, one retry, one upstream request at a time."""
    env = server_env(fake, KIMI_MCP_AUTH_TOKENS=f"alice:{ALICE}", KIMI_METRICS="true", KIMI_LOG_FORMAT="json",
                     KIMI_MAX_RETRIES="1", KIMI_MAX_CONCURRENCY="1")
    log = ServerLog()
    with http_server(env, "streamable-http", log) as port:
        yield Server(port, log)


@pytest.fixture(scope="module")
def open_server(fake: FakeAce) -> Iterator[Server]:
    """Metrics opened to anyone (client tokens still guard /mcp), a 1 s soft deadline."""
    env = server_env(fake, KIMI_MCP_AUTH_TOKENS=f"alice:{ALICE}", KIMI_METRICS="true", KIMI_METRICS_OPEN="true",
                     KIMI_SOFT_DEADLINE="1")
    log = ServerLog()
    with http_server(env, "streamable-http", log) as port:
        yield Server(port, log)


# --------------------------------------------------------------------------- who may scrape


def test_a_scrape_needs_a_client_token_like_mcp(server: Server) -> None:
    url = f"{server.base}/metrics"
    refused = httpx2.get(url, timeout=30)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert "kimi_mcp" not in refused.text
    assert httpx2.get(url, headers={"Authorization": "Bearer not-a-token-at-all"}, timeout=30).status_code == 401
    assert httpx2.get(url, headers={"Authorization": f"Bearer {ALICE}", "Host": "evil.example"},
                      timeout=30).status_code == 421  # the Host check of /mcp applies too
    served = httpx2.get(url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=30)
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/plain")
    assert 'kimi_mcp_build_info{version="' in served.text
    assert httpx2.post(url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=30).status_code == 405


def test_an_opened_endpoint_answers_anyone_while_mcp_stays_guarded(open_server: Server) -> None:
    assert httpx2.get(f"{open_server.base}/metrics", headers={"Host": "10.0.0.7:9000"}, timeout=30).status_code == 200
    assert httpx2.post(f"{open_server.base}/mcp", json={}, timeout=30).status_code == 401


# --------------------------------------------------------------------------- what moves


async def test_successful_calls_count_calls_attempts_tokens_and_cost(server: Server, fake: FakeAce) -> None:
    before = scrape(server)
    fake.script(reply("one", usage=USAGE, shape="ace"), reply("two", usage=USAGE, shape="ace"))
    async with client(server) as c:
        ok(await chat(c, prompt="first"))
        ok(await chat(c, prompt="second"))
    after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert moved("kimi_mcp_tool_calls_total", tool="kimi_chat", outcome="ok", error_kind="none") == 2
    assert moved("kimi_mcp_tool_call_duration_seconds_count", tool="kimi_chat", outcome="ok") == 2
    assert moved("kimi_mcp_upstream_attempts_total", model=DEFAULT_ID, outcome="ok", error_kind="none") == 2
    assert moved("kimi_mcp_upstream_duration_seconds_count", model=DEFAULT_ID, outcome="ok") == 2
    assert moved("kimi_mcp_upstream_time_to_first_token_seconds_count", model=DEFAULT_ID) == 2  # streamed
    assert moved("kimi_mcp_upstream_queue_wait_seconds_count") == 2
    assert moved("kimi_mcp_tokens_total", model=DEFAULT_ID, type="input") == 22
    assert moved("kimi_mcp_tokens_total", model=DEFAULT_ID, type="output") == 44
    assert moved("kimi_mcp_cached_input_tokens_total", model=DEFAULT_ID) == 10
    assert moved("kimi_mcp_reasoning_tokens_total", model=DEFAULT_ID) == 14
    cost = estimate_cost(DEFAULT_ID, Usage(11, 22, 33, reasoning_tokens=7, cached_tokens=5))
    assert cost is not None and cost > 0
    assert moved("kimi_mcp_estimated_cost_usd_total", model=DEFAULT_ID) == pytest.approx(2 * cost)
    assert sum(v for (name, _), v in after.values.items() if name == "kimi_mcp_upstream_retries_total") == sum(
        v for (name, _), v in before.values.items() if name == "kimi_mcp_upstream_retries_total")
    assert after("kimi_mcp_tool_calls_in_flight", tool="kimi_chat") == 0
    assert after("kimi_mcp_upstream_in_flight") == 0 and after("kimi_mcp_upstream_queued") == 0


async def test_upstream_faults_count_attempts_retries_and_error_kinds(server: Server, fake: FakeAce) -> None:
    before = scrape(server)
    async with client(server) as c:
        fake.script(ace_error(503, "service_unavailable", "busy", headers={"Retry-After": "0"}), reply())
        assert ok(await chat(c, prompt="retried once"))["attempts"] == 2
        fake.script(ace_error(401, "invalid_token", "The specified token is invalid or wrong."))
        assert error_of(await chat(c, prompt="refused"))["kind"] == "auth"
        fake.script(cut("request"), cut("request"))
        network = error_of(await chat(c, prompt="no connection"))
        assert (network["kind"], network["attempts"]) == ("network", 2)
    after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    calls = "kimi_mcp_tool_calls_total"
    assert moved(calls, tool="kimi_chat", outcome="ok", error_kind="none") == 1
    assert moved(calls, tool="kimi_chat", outcome="error", error_kind="auth") == 1
    assert moved(calls, tool="kimi_chat", outcome="error", error_kind="network") == 1
    attempts = "kimi_mcp_upstream_attempts_total"
    assert moved(attempts, model=DEFAULT_ID, outcome="error", error_kind="upstream") == 1
    assert moved(attempts, model=DEFAULT_ID, outcome="ok", error_kind="none") == 1
    assert moved(attempts, model=DEFAULT_ID, outcome="error", error_kind="auth") == 1
    assert moved(attempts, model=DEFAULT_ID, outcome="error", error_kind="network") == 2
    retries = "kimi_mcp_upstream_retries_total"
    assert moved(retries, model=DEFAULT_ID, error_kind="upstream") == 1
    assert moved(retries, model=DEFAULT_ID, error_kind="network") == 1
    assert moved(retries, model=DEFAULT_ID, error_kind="auth") == 0  # never retried
    assert moved("kimi_mcp_upstream_duration_seconds_count", model=DEFAULT_ID, outcome="error") == 2


async def test_a_cancelled_call_counts_as_cancelled_and_gives_back_its_slot(server: Server, fake: FakeAce) -> None:
    before = scrape(server)
    fake.script(stall(after_chunks=1, seconds=60))
    async with client(server) as c, anyio.create_task_group() as tg:
        tg.start_soon(partial(chat, c, prompt="never finished"))
        await wait_requests(fake, 1)
        busy = await until(server, lambda s: s("kimi_mcp_upstream_in_flight") == 1)
        assert busy("kimi_mcp_tool_calls_in_flight", tool="kimi_chat") == 1
        assert busy("kimi_mcp_upstream_in_flight") == 1
        tg.cancel_scope.cancel()
    cancelled = ("kimi_mcp_tool_calls_total", {"tool": "kimi_chat", "outcome": "cancelled", "error_kind": "cancelled"})
    attempt = ("kimi_mcp_upstream_attempts_total",
               {"model": DEFAULT_ID, "outcome": "cancelled", "error_kind": "cancelled"})
    after = await until(server, lambda s: s("kimi_mcp_upstream_in_flight") == 0 and all(
        s(name, **labels) > before(name, **labels) for name, labels in (cancelled, attempt)))
    for name, labels in (cancelled, attempt):
        assert after(name, **labels) - before(name, **labels) == 1
    assert after("kimi_mcp_upstream_duration_seconds_count", model=DEFAULT_ID, outcome="cancelled") - before(
        "kimi_mcp_upstream_duration_seconds_count", model=DEFAULT_ID, outcome="cancelled") == 1
    assert after("kimi_mcp_tool_calls_in_flight", tool="kimi_chat") == 0
    assert after("kimi_mcp_upstream_in_flight") == 0
    assert after("kimi_mcp_upstream_retries_total", model=DEFAULT_ID, error_kind="cancelled") == 0
    assert len(fake.requests) == 1


async def test_a_call_waiting_under_the_concurrency_cap_is_seen_queued(server: Server, fake: FakeAce) -> None:
    """KIMI_MAX_CONCURRENCY=1: while one answer holds the slot, the next call waits for it."""
    before = scrape(server)
    fake.script(stall(after_chunks=1, seconds=60), reply("second"))
    second: list[Any] = []

    async def run_second(c: Client) -> None:
        second.append(await chat(c, prompt="waits"))

    async with client(server) as c, anyio.create_task_group() as waiter, anyio.create_task_group() as holder:
        holder.start_soon(partial(chat, c, prompt="holds the slot"))
        await wait_requests(fake, 1)
        waiter.start_soon(run_second, c)
        queued = await until(server, lambda s: s("kimi_mcp_upstream_queued") == 1)
        assert queued("kimi_mcp_upstream_queued") == 1 and queued("kimi_mcp_upstream_in_flight") == 1
        assert queued("kimi_mcp_tool_calls_in_flight", tool="kimi_chat") == 2
        holder.cancel_scope.cancel()  # frees the slot: the waiting call goes ahead
    assert ok(second[0])["text"] == "second"
    after = scrape(server)
    waited = "kimi_mcp_upstream_queue_wait_seconds"
    assert after(f"{waited}_count") - before(f"{waited}_count") == 2
    assert after(f"{waited}_sum") > before(f"{waited}_sum")  # the second one really waited
    assert after("kimi_mcp_upstream_queued") == 0


async def test_an_answer_past_the_soft_deadline_is_a_background_answer(open_server: Server, fake: FakeAce) -> None:
    """A stalled answer under a 1 s soft deadline: the call hands over a partial answer (outcome
    partial) and the answer runs on with nobody waiting; resuming it until it ends brings it back."""
    before = scrape(open_server, token=None)
    fake.script(stall(after_chunks=1, seconds=4))
    async with client(open_server) as c:
        first = ok(await chat(c, prompt="a slow one"))
        assert first["finish_reason"] == "deadline"
        running = scrape(open_server, token=None)
        assert running("kimi_mcp_background_answers") == before("kimi_mcp_background_answers") + 1
        assert running("kimi_mcp_tool_calls_total", tool="kimi_chat", outcome="partial", error_kind="none") - before(
            "kimi_mcp_tool_calls_total", tool="kimi_chat", outcome="partial", error_kind="none") == 1
        piece = first
        for _ in range(20):
            if piece["finish_reason"] != "deadline":
                break
            piece = ok(await chat(c, conversation_id=first["conversation_id"], resume=True,
                                  answer_id=first["answer_id"]))
        assert piece["finish_reason"] == "stop"
    assert scrape(open_server, token=None)("kimi_mcp_background_answers") == before("kimi_mcp_background_answers")


# --------------------------------------------------------------------------- JSON logs


async def test_json_logs_parse_line_by_line_and_carry_no_secret(server: Server, fake: FakeAce) -> None:
    async with client(server) as c:
        fake.script(reply("logged answer"))
        ok(await chat(c, prompt="a logged prompt"))
        fake.script(ace_error(401, "invalid_token", f"The token {fake.token} is invalid"))
        assert error_of(await chat(c, prompt="a refused prompt"))["kind"] == "auth"
    text = server.log.text()
    lines = [line for line in text.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records and all(isinstance(r, dict) for r in records)
    for record in records:
        assert {"timestamp", "level", "logger", "message"} <= set(record), record
        assert record["timestamp"].endswith("Z")
    calls = [r for r in records if r["logger"] == "kimi_mcp.calls" and r["tool"] == "kimi_chat"]
    good = next(r for r in calls if r["outcome"] == "ok")
    assert good["principal"] == "alice" and good["model"] == DEFAULT_ID and good["request_id"]
    assert isinstance(good["duration_s"], float) and "error_kind" not in good
    bad = next(r for r in calls if r.get("error_kind") == "auth")
    assert bad["outcome"] == "error" and bad["principal"] == "alice"
    for secret in (ALICE, fake.token):
        assert secret not in text
    assert "a logged prompt" not in text and "logged answer" not in text

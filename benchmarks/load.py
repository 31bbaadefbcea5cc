"""A load run over Streamable HTTP with injected upstream faults, and what it proves.

    python -m benchmarks.load                      # full size: 2,000 calls, 64 at once, 5 % faults
    python -m benchmarks.load --calls 200 --concurrency 32

A real `python -m kimi_mcp --transport streamable-http` subprocess talks to the loopback fake of
the Ace API, whose answer queue mixes replies with 500s, 429s and 503s (Retry-After: 0), resets
before the headers, cut streams and 400s. Clients drive `kimi_chat` calls on a few stored
conversations (and some `kimi_json` calls). Afterwards it checks that every call was answered
(a result or a clean error), that the server is still up with no traceback on stderr, that every
conversation holds exactly the turns of its successful calls (none lost, none twice), and how the
server's resident memory moved. `tests/e2e/test_load.py` runs the same at a small size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from tests.support.fake_ace import FakeAce, FakeResponse, ace_error, cut, raw, reply
from tests.support.harness import free_port, server_env, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["LoadReport", "fault_script", "main", "rss_kib", "run_load"]

ANSWER = json.dumps({"answer": 42})
KNOWN_KINDS = {
    "invalid_arguments", "auth", "insufficient_balance", "forbidden", "rate_limited", "upstream", "timeout",
    "bad_request", "not_found", "network", "invalid_response", "invalid_json", "storage", "cancelled", "internal",
}
RA0 = {"Retry-After": "0"}


def faults() -> list[FakeResponse]:
    """The injected failures, in rough proportion: mostly retryable, a few that end the call."""
    return [
        ace_error(500, "api_error", "Internal server error.", headers=RA0),
        ace_error(500, "api_error", "Internal server error.", headers=RA0),
        ace_error(429, "too_many_requests", "You have exceeded the rate limit.", headers=RA0),
        ace_error(429, "too_many_requests", "You have exceeded the rate limit.", headers=RA0),
        raw(503, b"", headers=RA0),
        cut("reset"),
        cut("mid_stream"),
        ace_error(400, "bad_request", "The request is invalid."),
    ]


def label(response: FakeResponse) -> str | None:
    """A fault's short name (None for a normal reply)."""
    if response.kind == "reply":
        return None
    return f"HTTP {response.status}" if response.kind == "raw" else f"cut {response.after}"


def fault_script(n: int, fault_rate: float, rng: random.Random) -> list[FakeResponse]:
    """`n` upstream answers, each a fault with probability `fault_rate`."""
    kinds = faults()
    return [rng.choice(kinds) if rng.random() < fault_rate else reply(ANSWER) for _ in range(n)]


@dataclass
class LoadReport:
    """What a load run did and what it proved."""

    calls: int
    concurrency: int
    fault_rate: float
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    unclean: list[str] = field(default_factory=list)  # results that were not clean (should stay empty)
    injected: Counter[str] = field(default_factory=Counter)
    upstream_requests: int = 0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    turn_problems: list[str] = field(default_factory=list)  # lost or duplicated turns (should stay empty)
    stored_turns: int = 0
    server_alive: bool = False
    tracebacks: int = 0
    log: str = ""  # the server's stderr, kept only when it has a traceback

    @property
    def answered(self) -> int:
        return self.ok + sum(self.errors.values())

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def table(self) -> str:
        rows = [
            ("calls", f"{self.calls} ({self.concurrency} at once, {self.fault_rate:.0%} of upstream answers faulty)"),
            ("answered", f"{self.answered} ({self.ok} ok, {sum(self.errors.values())} clean errors)"),
            ("errors by kind", ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"),
            ("unclean results", str(len(self.unclean))),
            ("faults served", ", ".join(f"{k}: {v}" for k, v in sorted(self.injected.items())) or "none"),
            ("upstream requests", str(self.upstream_requests)),
            ("wall time", f"{self.wall_s:.2f} s ({self.calls / self.wall_s:.0f} calls/s)" if self.wall_s else "-"),
            ("latency p50 / p95", f"{self.percentile(0.5) * 1000:.1f} ms / {self.percentile(0.95) * 1000:.1f} ms"),
            ("latency mean", f"{statistics.fmean(self.latencies) * 1000:.1f} ms" if self.latencies else "-"),
            ("server RSS before / after", f"{self.rss_before_kib / 1024:.1f} MiB / {self.rss_after_kib / 1024:.1f} MiB "
                                          f"({(self.rss_after_kib - self.rss_before_kib) / 1024:+.1f} MiB)"),
            ("stored turns checked", f"{self.stored_turns} ({len(self.turn_problems)} lost or duplicated)"),
            ("server alive afterwards", "yes" if self.server_alive else "NO"),
            ("tracebacks on stderr", f"{self.tracebacks} (see {self.log})" if self.tracebacks else "0"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"| {'':{width}} | result |", f"|{'-' * (width + 2)}|--------|"]
        lines += [f"| {name:{width}} | {value} |" for name, value in rows]
        return "\n".join(lines)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Server:
    pid: int
    url: str
    log: Path


@contextmanager
def http_server(fake: FakeAce, **env: str) -> Iterator[Server]:
    """A Streamable HTTP kimi-mcp subprocess whose pid we know (for its memory)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="kimi-mcp-load-", suffix=".log")[1])
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kimi_mcp", "--transport", "streamable-http", "--port", str(port)],
            env={**os.environ, **server_env(fake, **env)}, stdout=err, stderr=err, cwd=ROOT,
        )
        try:
            wait_for_port(port, proc)
            yield Server(proc.pid, f"http://127.0.0.1:{port}/mcp", log)
        finally:
            stop_process(proc)


@asynccontextmanager
async def mcp_client(url: str) -> AsyncIterator[Client]:
    limits = httpx2.Limits(max_connections=256, max_keepalive_connections=256)
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(120), limits=limits) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def clean_error(result: CallToolResult) -> str | None:
    """The error kind of a clean error result, or None if the result is not clean."""
    structured = result.structured_content or {}
    error = structured.get("error") if isinstance(structured, dict) else None
    text = getattr(result.content[0], "text", "") if result.content else ""
    if not isinstance(error, dict) or error.get("kind") not in KNOWN_KINDS or "\n" in text:
        return None
    return str(error["kind"])


async def run_load(
    calls: int = 2000,
    concurrency: int = 64,
    fault_rate: float = 0.05,
    conversations: int | None = None,
    clients: int = 4,
    json_share: float = 0.1,
    seed: int = 20261126,
) -> LoadReport:
    """Drive the load and check everything; the report says what held."""
    rng = random.Random(seed)
    report = LoadReport(calls, concurrency, fault_rate)
    conversations = conversations or max(4, calls // 32)
    with FakeAce() as fake, http_server(fake, KIMI_SOFT_DEADLINE="0", KIMI_MAX_TURNS="100000",
                                        KIMI_MAX_CONCURRENCY=str(max(concurrency, 50))) as server:
        sessions: list[Client] = []
        async with _sessions(server.url, clients, sessions):
            # Warm up (first calls pay for imports and pools), and create the conversations.
            ids: list[str] = []
            for i in range(conversations):
                made = await sessions[i % clients].call_tool("kimi_chat", {"prompt": f"conversation {i}"})
                assert made.structured_content is not None and not made.is_error, made
                ids.append(made.structured_content["conversation_id"])
            report.rss_before_kib = rss_kib(server.pid)
            fake.reset()
            script = fault_script(calls * 2, fault_rate, rng)  # more than enough; the rest get replies
            fake.script(*script)

            succeeded: dict[str, list[str]] = {cid: [] for cid in ids}
            plan = [(i, ids[i % conversations], rng.random() < json_share) for i in range(calls)]
            limiter = anyio.Semaphore(concurrency)

            async def one(i: int, cid: str, as_json: bool) -> None:
                async with limiter:
                    session = sessions[i % clients]
                    prompt = f"call {i}"
                    started = time.perf_counter()
                    if as_json:
                        result = await session.call_tool("kimi_json", {"prompt": prompt})
                    else:
                        result = await session.call_tool("kimi_chat", {"prompt": prompt, "conversation_id": cid})
                    report.latencies.append(time.perf_counter() - started)
                if not result.is_error:
                    report.ok += 1
                    if not as_json:
                        succeeded[cid].append(prompt)
                    return
                kind = clean_error(result)
                if kind is None:
                    report.unclean.append(repr(result)[:300])
                else:
                    report.errors[kind] += 1

            began = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i, cid, as_json in plan:
                    tg.start_soon(one, i, cid, as_json)
            report.wall_s = time.perf_counter() - began
            report.upstream_requests = len(fake.requests)
            report.injected = Counter(name for r in script[:report.upstream_requests] if (name := label(r)))
            report.rss_after_kib = rss_kib(server.pid)

            fake.reset()
            for index, cid in enumerate(ids):
                read = await sessions[0].call_tool("kimi_read_conversation", {"conversation_id": cid})
                turns = (read.structured_content or {}).get("turns", [])
                report.stored_turns += len(turns)
                report.turn_problems += _turn_problems(cid, index, turns, succeeded[cid])
            alive = await sessions[-1].call_tool("kimi_chat", {"prompt": "still there?"})
            report.server_alive = not alive.is_error
    report.tracebacks = server.log.read_text(errors="replace").count("Traceback")
    if report.tracebacks:
        report.log = str(server.log)  # kept for reading
    else:
        server.log.unlink(missing_ok=True)
    return report


@asynccontextmanager
async def _sessions(url: str, n: int, into: list[Client]) -> AsyncIterator[None]:
    """`n` client sessions (each its own connection pool), all open at once."""
    if not n:
        yield
        return
    async with mcp_client(url) as client:
        into.append(client)
        async with _sessions(url, n - 1, into):
            yield


def _turn_problems(cid: str, index: int, turns: list[dict[str, Any]], prompts: list[str]) -> list[str]:
    """The stored turns must be the opening exchange plus exactly one exchange per successful call."""
    problems: list[str] = []
    expected = 2 + 2 * len(prompts)
    if len(turns) != expected:
        problems.append(f"{cid}: {len(turns)} turns stored, expected {expected}")
    roles = [t["role"] for t in turns]
    if roles != ["user", "assistant"] * (len(turns) // 2) or len(turns) % 2:
        problems.append(f"{cid}: turns do not alternate user/assistant")
    users = [t["content"] for t in turns if t["role"] == "user"]
    if users[:1] != [f"conversation {index}"]:
        problems.append(f"{cid}: the opening prompt is missing")
    stored, wanted = Counter(users[1:]), Counter(prompts)
    if stored != wanted:
        lost = sorted((wanted - stored).elements())
        extra = sorted((stored - wanted).elements())
        problems.append(f"{cid}: lost {lost[:5]} duplicated or unexpected {extra[:5]}")
    answers = [t["content"] for t in turns if t["role"] == "assistant"][1:]
    if any(answer != ANSWER for answer in answers):
        problems.append(f"{cid}: an assistant turn is not the upstream's answer")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load",
                                     description="kimi-mcp load run over Streamable HTTP with injected faults.")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--conversations", type=int, default=None)
    parser.add_argument("--clients", type=int, default=4, help="MCP client sessions sharing the calls")
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args(argv)
    report = anyio.run(lambda: run_load(args.calls, args.concurrency, args.fault_rate, args.conversations,
                                        args.clients, seed=args.seed))
    print(report.table())
    failed = (report.answered != report.calls or report.unclean or report.turn_problems
              or not report.server_alive or report.tracebacks)
    for problem in [*report.unclean, *report.turn_problems][:20]:
        print("problem:", problem)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

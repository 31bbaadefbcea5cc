"""kimi-mcp's benchmark suite: one command, every figure side by side with its baseline.

    python -m benchmarks.run            # the full run (a few minutes), from the repository root
    python -m benchmarks.run --quick    # a tiny run (seconds) that only proves the suite works
    python -m benchmarks.run --only per_call,startup --json results.json
    python -m benchmarks.run --only per_call --ours patched_kimi.py   # try a fix side by side

It starts the loopback fake of the Ace API (`tests/support/fake_ace.py`, in its own process unless a
figure needs per-chunk timestamps), real kimi-mcp servers (`python -m kimi_mcp`) and the SDK's
floor (`benchmarks/floor_server.py`: a bare MCPServer whose one tool makes the same POST), drives
them with the SDK's own client, and prints a Markdown table (figure, ours, baseline, difference,
target, met?), the detail behind each figure, and the machine it ran on. Progress goes to stderr.

Figures: per-call overhead (stdio, Streamable HTTP), concurrency (64 and 256 calls at once with
200 ms upstream latency), upstream chunk -> progress notification delay, start-up to the first
tools/list (and what stdio imports), resident memory after 1,000 calls (also with 10,000 stored
turns), and per-call cost as a stored conversation grows (10, 100, 1,000 turns).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import IO, Any, TextIO, cast

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from kimi_mcp.store import Limits, SQLiteStore, Turn, new_conversation_id
from tests.support import fake_ace
from tests.support.fake_ace import CHAT_PATH, DEFAULT_TOKEN, FakeAce, reply

ROOT = Path(__file__).resolve().parent.parent

FLOOR = ROOT / "benchmarks" / "floor_server.py"
FAKE = ROOT / "tests" / "support" / "fake_ace.py"
PROMPT = "Say hello."
MAX_CONCURRENCY = 512  # KIMI_MAX_CONCURRENCY for the per-call/concurrency servers (default 50)
UPSTREAM_LATENCY = 0.2
HTTP_ONLY = ("starlette", "uvicorn", "sse_starlette", "h11", "multipart", "python_multipart",
             "kimi_mcp.server.http", "mcp.server.streamable_http", "mcp.server.sse",
             "mcp.server._streamable_http_modern")


# --------------------------------------------------------------------------- plan and results


@dataclass(frozen=True)
class Plan:
    """How much of everything to do: the full run, or the tiny `--quick` one."""

    quick: bool
    calls: int = 1000              # sequential calls per transport (per-call overhead)
    warmup: int = 30
    bursts: tuple[int, ...] = (64, 256)
    rounds: int = 3                # measured bursts per size (after one warm-up burst)
    stream_calls: int = 2
    stream_chunks: int = 20
    chunk_delay: float = 0.15      # > 100 ms, so the progress throttle passes every chunk
    startup_reps: int = 10
    memory_calls: int = 1000
    stored_turns: int = 10_000
    scaling_levels: tuple[int, ...] = (10, 100, 1000)
    scaling_calls: int = 100
    cache_calls: int = 160         # exchanges in one conversation: past the window (~75) and the 200-turn cap
    store_calls: int = 300         # sequential calls per store (SQLite vs PostgreSQL)
    cache_answer_chars: int = 14_000  # ~3,500 tokens per answer

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(quick=True, calls=5, warmup=1, bursts=(16,), rounds=1, stream_calls=1, stream_chunks=3,
                   chunk_delay=0.11, startup_reps=0, memory_calls=5, stored_turns=400, scaling_levels=(10, 100),
                   scaling_calls=3, cache_calls=4, cache_answer_chars=100, store_calls=3)


@dataclass
class Row:
    """One line of the headline table."""

    figure: str
    ours: str
    baseline: str
    difference: str
    target: str
    met: bool | None  # None: not applicable / not measurable here


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def detail(self, section: str, line: str) -> None:
        self.details.setdefault(section, []).append(line)


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def p95(xs: Sequence[float]) -> float:
    if not xs:
        return math.nan
    ordered = sorted(xs)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


# --------------------------------------------------------------------------- processes


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB, from /proc/PID/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def find_child(tag: str, timeout: float = 10.0) -> int:
    """PID of our child process whose environment carries BENCH_TAG=tag (stdio servers are spawned
    by the SDK's client, which does not expose the process)."""
    needle = f"BENCH_TAG={tag}".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    return int(entry.name)
            except OSError:
                continue
        time.sleep(0.05)
    raise RuntimeError(f"no child process tagged {tag}")


@dataclass
class Running:
    """A connected client and the server process behind it."""

    client: Client
    pid: int
    log: IO[str]


def ours_env(base_url: str, **extra: str) -> dict[str, str]:
    env = {
        "ACEDATACLOUD_API_TOKEN": DEFAULT_TOKEN,
        "ACEDATACLOUD_API_BASE_URL": base_url,
        "KIMI_STORE": "memory",
        "KIMI_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
    }
    env.update(extra)
    return env


def floor_env(base_url: str, **extra: str) -> dict[str, str]:
    return {"FLOOR_URL": base_url + CHAT_PATH, "FLOOR_TOKEN": DEFAULT_TOKEN, **extra}


OURS_ARGV: tuple[str, ...] = ("-m", "kimi_mcp")
FLOOR_ARGV = (str(FLOOR),)


@contextmanager
def show_log_on_error(log: IO[str]) -> Iterator[None]:
    """When a server misbehaves, the end of its stderr is the first thing to read."""
    try:
        yield
    except BaseException:
        log.seek(0)
        tail = log.read()[-3000:]
        say("server log (last 3000 characters):\n" + tail)
        raise


@asynccontextmanager
async def stdio_server(argv: Sequence[str], env: dict[str, str]) -> AsyncIterator[Running]:
    """A stdio server spawned by the SDK's client, connected (modern era, as hosts start it)."""
    tag = uuid.uuid4().hex
    params = StdioServerParameters(command=sys.executable, args=list(argv), env={**env, "BENCH_TAG": tag},
                                   cwd=str(ROOT))
    with tempfile.TemporaryFile("w+") as log, show_log_on_error(log):
        async with Client(stdio_client(params, errlog=cast(TextIO, log))) as client:
            yield Running(client, find_child(tag), log)


def spawn(argv: Sequence[str], env: dict[str, str], log: IO[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *argv], env={**os.environ, **env}, stdout=log, stderr=log, cwd=ROOT)


@asynccontextmanager
async def http_server(argv: Sequence[str], env: dict[str, str], extra: Sequence[str]) -> AsyncIterator[Running]:
    """A Streamable HTTP server subprocess on a free loopback port, and a client with a pool big
    enough for the largest burst. The client's keep-alive expiry (2 s) stays under uvicorn's 5 s,
    so it never reuses a connection the server is closing."""
    from tests.support.harness import free_port, stop_process, wait_for_port

    port = free_port()
    with tempfile.TemporaryFile("w+") as log, show_log_on_error(log):
        proc = await anyio.to_thread.run_sync(spawn, [*argv, *extra, "--port", str(port)], env, log)
        try:
            await anyio.to_thread.run_sync(wait_for_port, port, proc)
            limits = httpx2.Limits(max_connections=1024, max_keepalive_connections=1024, keepalive_expiry=2.0)
            async with (
                httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(120)) as http,
                Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client,
            ):
                yield Running(client, proc.pid, log)
        finally:
            stop_process(proc)


def server(kind: str, transport: str, base_url: str, **env: str) -> Any:
    """`ours` or `floor` on `stdio` or `http`."""
    if kind == "ours":
        if transport == "stdio":
            return stdio_server(OURS_ARGV, ours_env(base_url, **env))
        return http_server(OURS_ARGV, ours_env(base_url, **env), ("--transport", "streamable-http"))
    if transport == "stdio":
        return stdio_server(FLOOR_ARGV, floor_env(base_url, **env))
    return http_server(FLOOR_ARGV, floor_env(base_url, **env), ("--http",))


@contextmanager
def fake_process(latency: float = 0.0) -> Iterator[str]:
    """`python tests/support/fake_ace.py` in its own process (so it does not share our event loop or GIL)."""
    with fake_upstream(latency) as (url, _pid):
        yield url


@contextmanager
def fake_upstream(latency: float = 0.0) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of the fake in its own process (the pid for measuring its CPU)."""
    proc = subprocess.Popen([sys.executable, str(FAKE), "--port", "0", "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"fake did not start: {url!r}")
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Direct:
    """The direct client: the same POST with httpx2, no MCP in between."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.url = base_url + CHAT_PATH
        limits = httpx2.Limits(max_connections=1024, max_keepalive_connections=1024)
        self.http = httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(120), trust_env=False)
        self.headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}", "Content-Type": "application/json",
                        "Accept": "text/event-stream"}

    async def post(self, body: bytes) -> int:
        async with self.http.stream("POST", self.url, content=body, headers=self.headers) as response:
            data = await response.aread()
        if response.status_code != 200:
            raise RuntimeError(f"direct POST answered {response.status_code}")
        return len(data)

    async def control(self, method: str, path: str, payload: Any = None) -> Any:
        """The fake's `/_fake/*` endpoints (a POST without a payload sends no body)."""
        response = await self.http.request(method, self.base_url + path, json=payload)
        response.raise_for_status()
        return response.json()

    async def reset(self) -> None:
        """Forget recorded requests (the fake keeps every body otherwise) -- and the default answer."""
        await self.control("POST", "/_fake/reset")

    async def last_request_body(self) -> dict[str, Any]:
        requests = await self.control("GET", "/_fake/requests")
        body: dict[str, Any] = requests[-1]["json"]
        return body

    async def aclose(self) -> None:
        await self.http.aclose()


def body_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()  # exactly how kimi-mcp serialises it


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    await call()
    return time.perf_counter() - t0


def first_text(result: Any) -> str:
    return str(getattr(result.content[0], "text", result.content[0])) if result.content else str(result)


async def chat(client: Client, prompt: str = PROMPT, **args: Any) -> None:
    result = await client.call_tool("kimi_chat", {"prompt": prompt, **args})
    if result.is_error:
        raise RuntimeError(f"kimi_chat failed: {first_text(result)}")


async def floor_chat(client: Client, prompt: str = PROMPT) -> None:
    result = await client.call_tool("chat", {"prompt": prompt})
    if result.is_error:
        raise RuntimeError(f"floor chat failed: {first_text(result)}")


# --------------------------------------------------------------------------- 1 + 2: per call, concurrency


async def burst(n: int, one: Callable[[], Coroutine[Any, Any, Any]]) -> float:
    """Wall time of `n` calls started at once."""
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return time.perf_counter() - t0


def raw_request(url: str, body: bytes) -> tuple[str, int, bytes]:
    """(host, port, bytes) of a one-shot HTTP/1.1 POST with `Connection: close`."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    head = (f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {DEFAULT_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return host, int(port), head.encode() + body


async def raw_post(host: str, port: int, request: bytes) -> None:
    """The least a client can do: one connection, one write, read to EOF (no HTTP library)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.read(65536)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"raw POST answered {head[:40]!r}")
        while await reader.read(65536):
            pass
    finally:
        writer.close()


async def transport_phase(transport: str, plan: Plan, res: Results) -> None:
    """Per-call overhead (sequential, interleaved ours/floor/direct), then bursts at 200 ms latency."""
    label = "stdio" if transport == "stdio" else "Streamable HTTP"
    with fake_process() as url:
        direct = Direct(url)
        try:
            async with server("ours", transport, url) as ours, server("floor", transport, url) as floor:
                say(f"{label}: servers up; {plan.warmup} warm-up + {plan.calls} sequential calls each")
                await chat(ours.client)
                sent = await direct.last_request_body()
                await floor_chat(floor.client)
                floor_sent = await direct.last_request_body()
                if sent != floor_sent:
                    res.detail("per_call", f"WARNING ({label}): the floor sent {floor_sent}, kimi-mcp sent {sent}")
                body = body_bytes(sent)
                for _ in range(plan.warmup):
                    await chat(ours.client)
                    await floor_chat(floor.client)
                    await direct.post(body)
                times: dict[str, list[float]] = {"ours": [], "floor": [], "direct": []}
                steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                    ("ours", partial(chat, ours.client)),
                    ("floor", partial(floor_chat, floor.client)),
                    ("direct", partial(direct.post, body)),
                ]
                cpu0 = {"ours": cpu_seconds(ours.pid), "floor": cpu_seconds(floor.pid)}
                for i in range(plan.calls):
                    # Interleaved, rotating the order, so drift and noise hit all three alike.
                    for name, call in steps[i % 3:] + steps[: i % 3]:
                        times[name].append(await timed(call))
                    if i % 500 == 499:
                        await direct.reset()
                cpu = {"ours": (cpu_seconds(ours.pid) - cpu0["ours"]) / plan.calls,
                       "floor": (cpu_seconds(floor.pid) - cpu0["floor"]) / plan.calls}
                per_call_rows(label, times, cpu, len(body), res)

                say(f"{label}: bursts of {plan.bursts} calls at {UPSTREAM_LATENCY * 1000:.0f} ms upstream latency")
                await direct.reset()
                await direct.control("POST", "/_fake/default", {"kind": "reply", "delay": UPSTREAM_LATENCY})
                host, port, request = raw_request(url, body)
                kinds: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
                    "ours": partial(chat, ours.client),
                    "floor": partial(floor_chat, floor.client),
                    "direct": partial(direct.post, body),
                    "raw": partial(raw_post, host, port, request),
                }
                try:
                    for n in plan.bursts:
                        walls: dict[str, list[float]] = {name: [] for name in kinds}
                        for call in kinds.values():
                            await burst(n, call)  # warm-up: fills the pools with connections
                        for _ in range(plan.rounds):
                            for name, call in kinds.items():
                                walls[name].append(await burst(n, call))
                        concurrency_rows(label, n, walls, res)
                finally:
                    await direct.control("POST", "/_fake/default")  # back to the built-in reply
        finally:
            await direct.aclose()


def per_call_rows(label: str, times: dict[str, list[float]], cpu: dict[str, float], size: int,
                  res: Results) -> None:
    ours, floor, direct = (times[k] for k in ("ours", "floor", "direct"))
    over = median(ours) - median(floor)
    res.rows.append(Row(f"Per-call overhead over the SDK floor, {label} (median)", ms(median(ours)),
                        f"{ms(median(floor))} (floor)", f"{over * 1000:+.2f} ms", "<= 0.3 ms", over <= 0.0003))
    cpu_ratio = cpu["ours"] / cpu["floor"]
    res.rows.append(Row(f"Server CPU per call, {label}", ms(cpu["ours"]), f"{ms(cpu['floor'])} (floor)",
                        f"{cpu_ratio:.2f}x", "<= 1.1x the floor", cpu_ratio <= 1.1))
    res.detail("per_call", f"| {label} | {ms(median(ours))} | {ms(p95(ours))} | {ms(median(floor))} | "
                           f"{ms(p95(floor))} | {ms(median(direct))} | {ms(p95(direct))} | "
                           f"{over * 1000:+.2f} ms | {(median(floor) - median(direct)) * 1000:+.2f} ms | "
                           f"{ms(cpu['ours'])} | {ms(cpu['floor'])} | {len(ours)} |")
    res.raw[f"per_call_{label}"] = {**times, "server_cpu_per_call": cpu, "body_bytes": size}


def concurrency_rows(label: str, n: int, walls: dict[str, list[float]], res: Results) -> None:
    ours, floor, direct, raw = (median(walls[k]) for k in ("ours", "floor", "direct", "raw"))
    ratio = ours / direct
    res.rows.append(Row(f"{n} concurrent calls at 200 ms upstream, {label}: wall", ms(ours),
                        f"{ms(direct)} (direct httpx2 client)", f"{ratio:.2f}x", "<= 1.15x", ratio <= 1.15))
    res.detail("concurrency", f"| {label} | {n} | {ms(ours)} | {ms(floor)} | {ms(direct)} | {ms(raw)} | "
                              f"{ratio:.2f}x | {floor / direct:.2f}x | {len(walls['ours'])} |")
    res.raw[f"concurrency_{label}_{n}"] = walls


# --------------------------------------------------------------------------- 3: streaming


class ChunkClock:
    """Wraps the in-process fake's socket writes to stamp when each SSE block leaves it."""

    def __init__(self) -> None:
        self.sends: list[tuple[float, bytes]] = []
        self._original: Any = None

    def __enter__(self) -> ChunkClock:
        original = self._original = fake_ace._Conn.send
        sends = self.sends

        async def send(conn: Any, data: bytes, *, final: bool = False) -> None:
            sends.append((time.monotonic(), data))
            await original(conn, data, final=final)

        fake_ace._Conn.send = send  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        fake_ace._Conn.send = self._original  # type: ignore[method-assign]

    def content_times(self) -> dict[int, float]:
        """Characters of answer sent so far -> when the write carrying them left the fake."""
        out: dict[int, float] = {}
        total = 0
        for at, data in self.sends:
            for match in re.finditer(rb"data: (\{[^\n]*\})", data):
                chunk = json.loads(match.group(1))
                for choice in chunk.get("choices") or []:
                    total += len((choice.get("delta") or {}).get("content") or "")
                out.setdefault(total, at)
        return out


async def streaming_phase(plan: Plan, res: Results) -> None:
    """Upstream chunk leaving the fake -> the client's progress notification, against a direct
    client reading the same stream."""
    content = "abcdefgh" * plan.stream_chunks
    script = reply(content, chunk_size=8, chunk_delay=plan.chunk_delay)
    delays: dict[str, list[float]] = {"stdio": [], "http": [], "direct": []}
    with ChunkClock() as clock, FakeAce() as fake:
        for transport in ("stdio", "http"):
            async with server("ours", transport, fake.base_url) as ours:
                say(f"streaming over {transport}: {plan.stream_calls} x {plan.stream_chunks} chunks, "
                    f"{plan.chunk_delay * 1000:.0f} ms apart")
                for _ in range(plan.stream_calls):
                    notes: list[tuple[float, float]] = []

                    async def on_progress(progress: float, total: float | None, message: str | None,
                                          notes: list[tuple[float, float]] = notes) -> None:
                        notes.append((time.monotonic(), progress))

                    fake.script(script)
                    clock.sends.clear()
                    result = await ours.client.call_tool("kimi_chat", {"prompt": PROMPT},
                                                         progress_callback=on_progress)
                    if result.is_error:
                        raise RuntimeError(f"streamed kimi_chat failed: {result.content}")
                    sent = clock.content_times()
                    delays[transport] += [at - sent[int(p)] for at, p in notes if int(p) in sent and p > 0]
        direct = Direct(fake.base_url)
        try:
            body = body_bytes({"model": "kimi-k2.5", "messages": [{"role": "user", "content": PROMPT}],
                               "stream": True, "stream_options": {"include_usage": True}})
            for _ in range(plan.stream_calls):
                fake.script(script)
                clock.sends.clear()
                seen: list[tuple[float, int]] = []
                total = 0
                async with direct.http.stream("POST", direct.url, content=body, headers=direct.headers) as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("data: {"):
                            chunk = json.loads(line[6:])
                            for choice in chunk.get("choices") or []:
                                total += len((choice.get("delta") or {}).get("content") or "")
                            seen.append((time.monotonic(), total))
                sent = clock.content_times()
                delays["direct"] += [at - sent[t] for at, t in seen if t > 0 and t in sent]
        finally:
            await direct.aclose()
    base = delays["direct"]
    for transport, label in (("stdio", "stdio"), ("http", "Streamable HTTP")):
        got = delays[transport]
        res.rows.append(Row(f"Upstream chunk -> progress notification, {label} (median)", ms(median(got)),
                            f"{ms(median(base))} (direct client reads the chunk)",
                            f"{(median(got) - median(base)) * 1000:+.2f} ms", "<= 2 ms", median(got) <= 0.002))
        res.detail("streaming", f"| {label} | {ms(median(got))} | {ms(p95(got))} | {ms(median(base))} | "
                                f"{ms(p95(base))} | {len(got)} of {plan.stream_calls * plan.stream_chunks} |")
    res.raw["streaming"] = delays


# --------------------------------------------------------------------------- 4: start-up


async def first_tools_list(argv: Sequence[str], env: dict[str, str], log: IO[str] | None = None) -> float:
    """Seconds from spawning the stdio server to the answer of the first tools/list."""
    params = StdioServerParameters(command=sys.executable, args=list(argv), env=env, cwd=str(ROOT))
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as sink:
        async with Client(stdio_client(params, errlog=cast(TextIO, log or sink))) as client:
            tools = await client.list_tools()
            elapsed = time.perf_counter() - t0
    if not tools.tools:
        raise RuntimeError("tools/list answered with no tools")
    return elapsed


def imported(log: IO[str]) -> dict[str, tuple[int, int]]:
    """Module -> (self, cumulative) import microseconds, from `-X importtime` output."""
    log.seek(0)
    out: dict[str, tuple[int, int]] = {}
    for line in log:
        if line.startswith("import time:") and line.count("|") == 2:
            own, cumulative, name = line[len("import time:"):].split("|")
            if own.strip().isdigit():
                out[name.strip()] = (int(own), int(cumulative))
    return out


def http_only(modules: dict[str, tuple[int, int]]) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in HTTP_ONLY)}


async def startup_phase(plan: Plan, res: Results) -> None:
    """Process start to the first tools/list answer over stdio, ours against the floor."""
    url = "http://127.0.0.1:9"  # nothing is called
    ours_e, floor_e = ours_env(url), floor_env(url)
    times: dict[str, list[float]] = {"ours": [], "floor": []}
    say(f"start-up: {plan.startup_reps} x 2 stdio starts")
    for i in range(plan.startup_reps):
        pair = [("ours", OURS_ARGV, ours_e), ("floor", FLOOR_ARGV, floor_e)]
        for name, argv, env in pair if i % 2 == 0 else pair[::-1]:
            times[name].append(await first_tools_list(argv, env))
    modules: dict[str, dict[str, tuple[int, int]]] = {}
    for name, argv, env in (("ours", OURS_ARGV, ours_e), ("floor", FLOOR_ARGV, floor_e)):
        with tempfile.TemporaryFile("w+") as log:
            took = await first_tools_list(("-X", "importtime", *argv), env, log)
            modules[name] = imported(log)
        if not plan.startup_reps:  # --quick: the -X importtime run is the only (slower) timing
            times[name].append(took)
    ours, floor = median(times["ours"]), median(times["floor"])
    res.rows.append(Row("Start-up to first tools/list, stdio (median)", ms(ours), f"{ms(floor)} (floor)",
                        f"{(ours - floor) * 1000:+.1f} ms", "<= 50 ms over the floor", ours - floor <= 0.050))
    ours_http, floor_http = http_only(modules["ours"]), http_only(modules["floor"])
    extra = sorted(ours_http - floor_http)
    res.rows.append(Row("HTTP-only modules imported on stdio", f"{len(ours_http)}", f"{len(floor_http)} (floor)",
                        ", ".join(extra) if extra else "none beyond the floor", "none beyond the floor",
                        not extra))
    res.detail("startup", f"| ours | {ms(ours)} | {ms(p95(times['ours']))} | {len(times['ours'])} | "
                          f"{len(modules['ours'])} |")
    res.detail("startup", f"| floor | {ms(floor)} | {ms(p95(times['floor']))} | {len(times['floor'])} | "
                          f"{len(modules['floor'])} |")
    added = {m: t for m, t in modules["ours"].items() if m not in modules["floor"]}
    added_ms = sum(own for own, _ in added.values()) / 1000
    by_package: dict[str, int] = {}
    for module, (own, _) in added.items():
        by_package[module.split(".")[0]] = by_package.get(module.split(".")[0], 0) + own
    top = sorted(((t, p) for p, t in by_package.items()), reverse=True)[:8]
    res.raw["startup"] = {"times": times, "http_only": {"ours": sorted(ours_http), "floor": sorted(floor_http)},
                          "added_modules": len(added), "added_import_ms": added_ms, "added_by_package": by_package}
    res.detail("startup_imports", f"{len(added)} modules beyond the floor's, {added_ms:.0f} ms of import time "
                                  "in total (self times, one run); by package: "
                                  + ", ".join(f"{p} {t / 1000:.0f} ms" for t, p in top))
    if ours_http:
        http_ms = {name: sum(modules[name][m][0] for m in http_only(modules[name])) / 1000 for name in modules}
        packages = ", ".join(sorted({m.split(".")[0] for m in ours_http}))
        res.detail("startup_imports_http", f"ours: {len(ours_http)} modules, {http_ms['ours']:.0f} ms of import time; "
                                           f"floor: {len(floor_http)} modules, {http_ms['floor']:.0f} ms. "
                                           f"kimi_mcp.server.http imported: {'kimi_mcp.server.http' in ours_http}. "
                                           f"Top-level packages: {packages}")


# --------------------------------------------------------------------------- 5 + 6: memory, scaling


def history(n: int) -> list[Turn]:
    """`n` stored turns alternating user (200 characters) and assistant (600 characters)."""
    now = time.time()
    return [Turn("user", f"question {i:06d} ".ljust(200, "q"), None, now) if i % 2 == 0
            else Turn("assistant", f"answer {i:06d} ".ljust(600, "a"), None, now) for i in range(n)]


async def prepopulate(path: Path, conversations: int, turns_each: int) -> list[str]:
    """Conversations of `turns_each` turns written straight into a SQLite store file."""
    store = SQLiteStore(path)
    ids = []
    try:
        for _ in range(conversations):
            cid = new_conversation_id()
            await store.save_exchange("local", cid, model="kimi-k2.5", system=None, title="benchmark",
                                      turns=history(turns_each), limits=Limits(max_turns=100_000, max_bytes=10**9),
                                      now=time.time())
            ids.append(cid)
    finally:
        await store.close()
    return ids


async def memory_phase(plan: Plan, res: Results) -> None:
    """RSS after N calls: the floor, ours on a SQLite store, ours continuing 10,000 stored turns."""
    n = plan.memory_calls
    rss: dict[str, tuple[int, int, int]] = {}
    with fake_process() as url, tempfile.TemporaryDirectory() as tmp:
        say(f"memory: floor, ours, ours with {plan.stored_turns:,} stored turns; {n} calls each")
        async with server("floor", "stdio", url) as floor:
            start = rss_kib(floor.pid)[0]
            for i in range(n):
                await floor_chat(floor.client, f"{PROMPT} {i}")
            rss["floor"] = (start, *rss_kib(floor.pid))
        store = Path(tmp) / "fresh.sqlite3"
        async with server("ours", "stdio", url, KIMI_STORE=str(store)) as ours:
            start = rss_kib(ours.pid)[0]
            for i in range(n):
                await chat(ours.client, f"{PROMPT} {i}")
            rss["ours"] = (start, *rss_kib(ours.pid))
        store = Path(tmp) / "full.sqlite3"
        per = 200  # KIMI_MAX_TURNS' default: every conversation sits at the cap
        ids = await prepopulate(store, max(1, plan.stored_turns // per), min(per, plan.stored_turns))
        async with server("ours", "stdio", url, KIMI_STORE=str(store)) as ours:
            start = rss_kib(ours.pid)[0]
            for i in range(n):
                await chat(ours.client, f"{PROMPT} {i}", conversation_id=ids[i % len(ids)])
            rss["ours_stored"] = (start, *rss_kib(ours.pid))
    floor_rss = rss["floor"][1]
    for key, what in (("ours", f"after {n:,} calls"), ("ours_stored", f"after {n:,} calls, "
                                                                      f"{plan.stored_turns:,} stored turns")):
        over = rss[key][1] - floor_rss
        res.rows.append(Row(f"Resident memory {what} (SQLite store)", mib(rss[key][1]),
                            f"{mib(floor_rss)} (floor after {n:,} calls)", f"{over / 1024:+.1f} MiB",
                            "<= 15 MiB over the floor", over <= 15 * 1024))
    for key, label in (("floor", "floor"), ("ours", "ours"), ("ours_stored", f"ours, {plan.stored_turns:,} turns")):
        start, now, peak = rss[key]
        res.detail("memory", f"| {label} | {mib(start)} | {mib(now)} | {mib(peak)} | {(now - start) / 1024:+.1f} MiB |")
    res.raw["memory_kib"] = rss


async def scaling_phase(plan: Plan, res: Results) -> None:
    """Per-call cost with 10, 100, 1,000 stored turns, less the direct POST of the same body."""
    overhead: dict[int, float] = {}
    with fake_process() as url, tempfile.TemporaryDirectory() as tmp:
        direct = Direct(url)
        try:
            for level in plan.scaling_levels:
                store = Path(tmp) / f"scaling-{level}.sqlite3"
                (cid,) = await prepopulate(store, 1, level)
                env = {"KIMI_STORE": str(store), "KIMI_MAX_TURNS": str(level),
                       "KIMI_MAX_CONVERSATION_BYTES": "1000000000"}
                async with server("ours", "stdio", url, **env) as ours:
                    say(f"scaling: {level} stored turns, {plan.scaling_calls} calls")
                    await direct.reset()
                    await chat(ours.client, conversation_id=cid)
                    sent = await direct.last_request_body()
                    body = body_bytes(sent)
                    for _ in range(min(plan.warmup, 5)):
                        await chat(ours.client, conversation_id=cid)
                        await direct.post(body)
                    await direct.reset()
                    t_ours: list[float] = []
                    t_direct: list[float] = []
                    steps: list[tuple[list[float], Callable[[], Awaitable[Any]]]] = [
                        (t_ours, partial(chat, ours.client, conversation_id=cid)),
                        (t_direct, partial(direct.post, body)),
                    ]
                    for i in range(plan.scaling_calls):
                        for sink, call in steps if i % 2 == 0 else steps[::-1]:
                            sink.append(await timed(call))
                        if i % 50 == 49:
                            await direct.reset()
                    overhead[level] = median(t_ours) - median(t_direct)
                    res.detail("scaling", f"| {level:,} | {len(sent['messages'])} | {len(body) / 1024:.0f} KiB | "
                                          f"{ms(median(t_ours))} | {ms(p95(t_ours))} | {ms(median(t_direct))} | "
                                          f"{ms(overhead[level])} |")
                    res.raw[f"scaling_{level}"] = {"ours": t_ours, "direct": t_direct, "body_bytes": len(body)}
        finally:
            await direct.aclose()
    low, high = min(plan.scaling_levels), max(plan.scaling_levels)
    ratio = overhead[high] / overhead[low]
    res.rows.append(Row(f"Call cost at {high:,} stored turns vs {low:,}, less the direct POST of the same body",
                        ms(overhead[high]), f"{ms(overhead[low])} (at {low:,} turns)", f"{ratio:.2f}x", "<= 1.3x",
                        ratio <= 1.3))


async def cache_phase(plan: Plan, res: Results) -> None:
    """The share of input tokens Kimi's prefix cache would serve, in one conversation that grows past
    the context window and the 200-turn cap (the fake reports the prefix each request shares with an
    earlier one, as Kimi's automatic cache does)."""
    model = "kimi-k2.6"  # a 262,144-token window, reached after ~75 exchanges of this size
    with fake_process() as url, tempfile.TemporaryDirectory() as tmp:
        direct = Direct(url)
        try:
            await direct.reset()
            await direct.control("POST", "/_fake/cache", {"prefixes": True})
            env = {"KIMI_STORE": str(Path(tmp) / "cache.sqlite3"), "KIMI_SOFT_DEADLINE": "0"}
            async with server("ours", "stdio", url, **env) as ours:
                say(f"cache: {plan.cache_calls} exchanges of ~{plan.cache_answer_chars:,} characters")
                cid: str | None = None
                for n in range(plan.cache_calls):
                    answer = f"answer {n:04d}: " + "w" * plan.cache_answer_chars
                    await direct.control("POST", "/_fake/script", {"responses": [{"kind": "reply", "content": answer}]})
                    args: dict[str, Any] = {"prompt": f"question {n:04d}", "model": model, "thinking": "disabled"}
                    if cid is not None:
                        args["conversation_id"] = cid
                    result = await ours.client.call_tool("kimi_chat", args)
                    if result.is_error or not isinstance(result.structured_content, dict):
                        raise RuntimeError(f"kimi_chat failed: {first_text(result)}")
                    cid = str(result.structured_content["conversation_id"])
                requests = [r for r in await direct.control("GET", "/_fake/requests") if r.get("json")]
        finally:
            await direct.aclose()
    prompt = [math.ceil(len(json.dumps(r["json"]["messages"])) / 4) for r in requests]
    cached = [int(r.get("cached_tokens") or 0) for r in requests]
    sent = [len(r["json"]["messages"]) for r in requests]
    full = next((i for i in range(1, len(sent)) if sent[i] <= sent[i - 1]), len(sent))  # the first cut
    at_limit = range(full, len(requests)) if full < len(requests) else range(len(requests))
    share = sum(cached[i] for i in at_limit) / max(1, sum(prompt[i] for i in at_limit))
    overall = sum(cached) / max(1, sum(prompt))
    cuts = sum(1 for i in range(1, len(sent)) if sent[i] <= sent[i - 1])
    res.detail("cache", f"| {len(requests)} | {full} | {len(at_limit)} | {cuts} | {max(sent)} | "
                        f"{sum(prompt):,} | {overall:.1%} | {share:.1%} |")
    res.raw["cache"] = {"prompt_tokens": prompt, "cached_tokens": cached, "messages": sent}
    res.rows.append(Row("Cache-hit share of input tokens, one conversation past the window and the 200-turn cap",
                        f"{share:.1%}", "not measured before", f"{overall:.1%} over all calls", ">= 80 %",
                        share >= 0.8))


async def store_phase(plan: Plan, res: Results) -> None:
    """Per call, continuing a conversation (10 stored turns) over stdio: one server on a SQLite file,
    one on a private PostgreSQL (one replica), calls interleaved."""
    from tests.support.postgres import find_bindir, start_private_server

    bindir = find_bindir()
    if bindir is None:
        res.rows.append(Row("Per call on PostgreSQL (one replica) vs SQLite", "not measured",
                            "no PostgreSQL server binaries here", "", "<= 1.2x", None))
        return
    pg = await anyio.to_thread.run_sync(start_private_server, bindir)
    times: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    try:
        with fake_process() as url, tempfile.TemporaryDirectory() as tmp:
            stores = {"sqlite": str(Path(tmp) / "store.sqlite3"), "postgresql": pg.url()}
            async with (server("ours", "stdio", url, KIMI_STORE=stores["sqlite"]) as lite,
                        server("ours", "stdio", url, KIMI_STORE=stores["postgresql"]) as post):
                say(f"store: {plan.store_calls} calls each on SQLite and PostgreSQL")
                clients = {"sqlite": lite.client, "postgresql": post.client}
                cids: dict[str, str] = {}
                for name, client in clients.items():
                    result = await client.call_tool("kimi_chat", {"prompt": PROMPT})
                    assert isinstance(result.structured_content, dict), first_text(result)
                    cids[name] = str(result.structured_content["conversation_id"])
                    for _ in range(4 + min(plan.warmup, 10)):
                        await chat(client, conversation_id=cids[name])
                order = list(clients)
                for i in range(plan.store_calls):
                    for name in order if i % 2 == 0 else order[::-1]:
                        times[name].append(await timed(partial(chat, clients[name], conversation_id=cids[name])))
    finally:
        await anyio.to_thread.run_sync(pg.remove)
    ratio = median(times["postgresql"]) / median(times["sqlite"])
    for name, ts in times.items():
        res.detail("store", f"| {name} | {ms(median(ts))} | {ms(p95(ts))} | {len(ts)} |")
    res.raw["store"] = times
    res.rows.append(Row("Per call on PostgreSQL (one replica, same machine) vs SQLite, stdio, continuing a "
                        "conversation", ms(median(times["postgresql"])), f"{ms(median(times['sqlite']))} (SQLite)",
                        f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2))


# --------------------------------------------------------------------------- report


def machine(load_start: tuple[float, ...]) -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=5).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "kimi_mcp"], cwd=ROOT, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        commit += " + uncommitted changes in kimi_mcp/" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return [
        f"- CPU: {cpu}; {os.cpu_count()} logical cores ({len(os.sched_getaffinity(0))} usable)",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); "
        f"mcp {metadata.version('mcp')}; httpx2 {metadata.version('httpx2')}; "
        f"kimi-mcp {metadata.version('kimi-mcp')} (commit {commit})",
        "- Load average (1/5/15 min) at start: {} ; at end: {} (other processes on the machine share the "
        "cores; figures are medians of interleaved runs to dampen that)".format(
            "/".join(f"{x:.2f}" for x in load_start), "/".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


DETAIL_HEADERS = {
    "per_call": ("Per-call latency, sequential `kimi_chat` vs the floor's tool vs a direct POST",
                 "| transport | ours median | ours p95 | floor median | floor p95 | direct median | direct p95 | "
                 "ours - floor | floor - direct | server CPU/call, ours | server CPU/call, floor | calls |\n"
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"),
    "concurrency": (f"Concurrent calls, {UPSTREAM_LATENCY * 1000:.0f} ms upstream latency, "
                    f"KIMI_MAX_CONCURRENCY={MAX_CONCURRENCY} (median wall of the measured bursts)",
                    "| transport | calls | ours | floor | direct (httpx2) | raw socket client | ours / direct | "
                    "floor / direct | bursts |\n|---|---|---|---|---|---|---|---|---|"),
    "streaming": ("Upstream chunk leaving the fake -> progress notification at the client",
                  "| transport | median | p95 | direct client median | direct p95 | notifications matched |\n"
                  "|---|---|---|---|---|---|"),
    "startup": ("Start-up: spawn to first tools/list answer (stdio)",
                "| server | median | p95 | runs | modules imported |\n|---|---|---|---|---|"),
    "startup_imports": ("What kimi-mcp imports beyond the floor (`-X importtime`)", ""),
    "startup_imports_http": ("HTTP-only modules present in the stdio process (the SDK's `mcp.server.mcpserver` "
                             "imports Starlette and uvicorn for everyone)", ""),
    "memory": ("Resident memory (VmRSS; VmHWM is the peak), stdio, SQLite store in a temp file",
               "| server | RSS at start | RSS after the calls | peak | growth |\n|---|---|---|---|---|"),
    "scaling": ("Per-call cost as the stored conversation grows (KIMI_MAX_TURNS = the level, so calls also "
                "prune, to three quarters of it whenever over it)",
                "| stored turns | messages sent | body | ours median | ours p95 | direct POST median | "
                "ours - direct |\n|---|---|---|---|---|---|---|"),
    "store": ("Per call by store: SQLite file vs a private PostgreSQL on the same machine (stdio, continuing "
              "a conversation, calls interleaved)", "| store | median | p95 | calls |\n|---|---|---|---|"),
    "cache": ("Prompt cache: one kimi-k2.6 conversation of ~3,500-token answers, the fake reporting the prefix "
              "each request shares with an earlier one (Kimi's automatic cache)",
              "| calls | first cut at call | calls from then on | cuts (history shorter than before) | "
              "most messages sent | input tokens | cache-hit share, all calls | cache-hit share from the first cut |"
              "\n|---|---|---|---|---|---|---|---|"),
}


def render(res: Results, plan: Plan, argv: Sequence[str], elapsed: float) -> str:
    out = ["# kimi-mcp benchmarks" + (" (--quick: tiny run, figures not meaningful)" if plan.quick else ""), ""]
    command = " ".join(["python -m benchmarks.run", *argv])
    out += [f"Command: `{command}` ({elapsed:.0f} s)", ""]
    out += ["| figure | ours | baseline | difference | target | met? |", "|---|---|---|---|---|---|"]
    for row in res.rows:
        met = "n/a" if row.met is None else ("yes" if row.met else "**no**")
        out.append(f"| {row.figure} | {row.ours} | {row.baseline} | {row.difference} | {row.target} | {met} |")
    out += ["", "## Machine", "", *machine(res.raw.get("load_start", ()))]
    for section, lines in res.details.items():
        title, header = DETAIL_HEADERS.get(section, (section, ""))
        out += ["", f"### {title}", ""]
        if header:
            out.append(header)
        out += lines
    return "\n".join(out) + "\n"


PHASES: dict[str, Callable[[Plan, Results], Awaitable[None]]] = {
    "per_call": lambda plan, res: _both_transports(plan, res),
    "streaming": streaming_phase,
    "startup": startup_phase,
    "memory": memory_phase,
    "scaling": scaling_phase,
    "cache": cache_phase,
    "store": store_phase,
}


async def _both_transports(plan: Plan, res: Results) -> None:
    await transport_phase("stdio", plan, res)
    await transport_phase("http", plan, res)


async def run(plan: Plan, only: Sequence[str]) -> Results:
    """The phases one after the other; with --quick all at once (the figures mean nothing then)."""
    res = Results()
    res.raw["load_start"] = os.getloadavg()

    async def phase(name: str, into: Results) -> None:
        started = time.perf_counter()
        await PHASES[name](plan, into)
        say(f"{name} done in {time.perf_counter() - started:.1f} s")

    if not plan.quick:
        for name in only:
            await phase(name, res)
        return res
    parts = {name: Results() for name in only}
    async with anyio.create_task_group() as tg:
        for name, part in parts.items():
            tg.start_soon(phase, name, part)
    for part in parts.values():  # in the usual order, whatever finished first
        res.rows += part.rows
        res.details.update(part.details)
        res.raw.update(part.raw)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                     description="kimi-mcp benchmarks: prints a Markdown table on stdout.")
    parser.add_argument("--quick", action="store_true", help="a tiny run (seconds) that only checks the suite works")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases (default all: {','.join(PHASES)}; per_call includes concurrency)")
    parser.add_argument("--json", metavar="PATH", help="also write every raw sample as JSON")
    parser.add_argument("--ours", metavar="SCRIPT",
                        help="start kimi-mcp with `python SCRIPT [flags]` instead of `python -m kimi_mcp`: "
                             "to measure a candidate fix side by side")
    args = parser.parse_args(argv)
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(only) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    plan = Plan.make(args.quick)
    if args.ours:
        global OURS_ARGV
        OURS_ARGV = (str(Path(args.ours).resolve()),)
    started = time.perf_counter()
    res = anyio.run(run, plan, only)
    print(render(res, plan, sys.argv[1:] if argv is None else argv, time.perf_counter() - started), end="")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [r.__dict__ for r in res.rows], "raw": res.raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

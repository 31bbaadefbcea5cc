"""Calls per second of one kimi-mcp replica and of two sharing one PostgreSQL store, behind HAProxy.

    python -m benchmarks.replicas                  # 3 rounds of 64 callers x 40 calls per configuration
    python -m benchmarks.replicas --quick          # a tiny run (seconds): proves it works, figures mean nothing
    python -m benchmarks.replicas --postgres postgresql://user@host:5432/postgres   # an existing server
    python -m benchmarks.replicas --latency 0.2 --json out.json

Run it by hand from the repository root (the test suite never runs it). It starts a private
PostgreSQL (`tests/support/postgres.py`: initdb in a temporary directory, 127.0.0.1 only, no
fsync) unless `--postgres` names a server (then it creates, and afterwards drops, one database
per configuration), the fake Ace API in its own process (`tests/support/fake_ace.py`), three
`python -m kimi_mcp serve --transport streamable-http` replicas -- one for the "one replica"
configuration, two for "two replicas", each configuration on a database of its own -- and HAProxy
with one frontend per configuration (round robin; the stick-table lines of docs/deployment.md are
in it too, and do nothing for stateless requests). Without HAProxy on the machine the client
alternates between the two replicas itself. Both configurations go through the same hop, so the
difference is the second replica alone.

The callers speak the stateless 2026-07-28 era of Streamable HTTP by hand (one JSON-RPC POST per
call with the headers and `_meta` envelope that era asks for, no session), over one pooled
`httpx2` client: the SDK's client spends about 2.4 times as much CPU per call (4.4 against 1.9 ms
in a side measurement, about two thirds of what a replica spends), which on a 2-core machine
would take much of the CPU the replicas need. Each round gives each of the 64
callers a new conversation (its opening call is not timed), then every caller makes its calls one
after the other, each a `kimi_chat` continuing the caller's own conversation; the configurations
alternate round by round (one, two; two, one; ...) so drift hits both alike.

Afterwards it reads each database: every exchange must be stored exactly once (each prompt once as
a user turn, followed by the upstream's answer; turns alternating with no gap in their sequence;
each conversation's turn counter equal to its rows), no answer record left `working`, and the
connections each configuration holds (at most replicas x pool_max). The upstream must have seen
exactly one request per call (no retries, nothing twice). Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2

from benchmarks.run import cpu_seconds, fake_upstream, machine, ms, p95, say
from tests.support.fake_ace import DEFAULT_CONTENT, DEFAULT_TOKEN
from tests.support.harness import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["Plan", "main"]

PROTOCOL = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL,
    "io.modelcontextprotocol/clientInfo": {"name": "kimi-mcp-replicas-benchmark", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": PROTOCOL,
    "Mcp-Method": "tools/call",
    "Mcp-Name": "kimi_chat",
}
CONFIGS = ("one", "two")
REPLICAS = {"one": 1, "two": 2}
POOL_MAX = 10  # the store URL's default pool_max, stated in the URL so the connection check has a bound
SERVER_ENV = {
    "KIMI_MAX_CONCURRENCY": "512",  # the default 50 would queue the single replica's 64 callers, not the pair's
    "KIMI_MAX_TURNS": "100000",  # nothing pruned, so the stored turns can be checked one for one
    "LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class Plan:
    callers: int = 64
    calls: int = 40  # per caller per round
    rounds: int = 3
    latency: float = 0.0  # the fake's answer delay, seconds
    quick: bool = False

    @property
    def per_round(self) -> int:
        return self.callers * self.calls


@dataclass
class Round:
    config: str
    wall_s: float
    latencies: list[float]
    server_cpu_s: float
    proxy_cpu_s: float
    client_cpu_s: float
    database_cpu_s: float | None  # None: the server is not ours to measure (--postgres)
    fake_cpu_s: float
    machine_busy_s: float  # the whole machine, other users' processes included
    upstream_requests: int
    errors: list[str]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall_s if self.wall_s else 0.0


@dataclass
class Config:
    """One configuration: its database, its replicas and the URL(s) the client uses."""

    name: str
    db_url: str
    dbname: str
    pids: list[int] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)  # one through HAProxy, or each replica's without it
    logs: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- PostgreSQL


def with_database(url: str, dbname: str, query: str = "") -> str:
    parts = urlsplit(url)
    joined = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, joined, parts.fragment))


@contextmanager
def postgres(given: str | None) -> Iterator[tuple[str, str, int | None]]:
    """(admin URL, label, postmaster pid) of the server: the given one (pid unknown), else a private
    one (removed afterwards)."""
    if given:
        yield given, "an existing server (--postgres)", None
        return
    from tests.support.postgres import find_bindir, start_private_server

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries (initdb, pg_ctl) found: install PostgreSQL, "
                         "or pass --postgres URL")
    say(f"starting a private PostgreSQL from {bindir}")
    server = start_private_server(bindir)
    try:
        version = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True,
                                 check=False).stdout.strip()
        postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
        yield server.url(), f"a private server ({version}, fsync off, max_connections 200)", postmaster
    finally:
        server.remove()


@contextmanager
def databases(admin_url: str) -> Iterator[dict[str, tuple[str, str]]]:
    """A new database per configuration: name -> (store URL, database name); dropped afterwards."""
    import psycopg

    names = {config: f"kimi_bench_{config}_{os.getpid()}" for config in CONFIGS}
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        for dbname in names.values():
            conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        yield {config: (with_database(admin_url, dbname, f"pool_max={POOL_MAX}"), dbname)
               for config, dbname in names.items()}
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            for dbname in names.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


# --------------------------------------------------------------------------- processes


@contextmanager
def replica(base_url: str, store_url: str, log_dir: Path, name: str) -> Iterator[tuple[int, int, Path]]:
    """(pid, port, log) of one `kimi-mcp serve --transport streamable-http` replica on loopback."""
    port = free_port()
    log_path = log_dir / f"{name}.log"
    env = {**os.environ, "ACEDATACLOUD_API_TOKEN": DEFAULT_TOKEN, "ACEDATACLOUD_API_BASE_URL": base_url,
           "KIMI_STORE": store_url, **SERVER_ENV}
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kimi_mcp", "serve", "--transport", "streamable-http",
                                 "--port", str(port)], env=env, stdout=log, stderr=log, cwd=ROOT)
        try:
            wait_for_port(port, proc, timeout=60)
            yield proc.pid, port, log_path
        finally:
            stop_process(proc)


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process, of its children that ended (reaped), and of its live children: the
    whole PostgreSQL server (the postmaster and its backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root:
            total += sum(int(f) for f in fields[11:15]) / tick
        elif ppid == root:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def find_haproxy() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).is_file()), None)


def haproxy_config(frontends: dict[str, tuple[int, list[int]]]) -> str:
    """One frontend and backend per configuration: name -> (listening port, replica ports)."""
    lines = [
        "global", "    maxconn 4096", "",
        "defaults", "    mode http", "    option redispatch", "    retries 2", "    timeout connect 5s",
        "    timeout client 1h", "    timeout server 1h", "    timeout tunnel 1h", "    timeout http-request 30s",
        "    timeout http-keep-alive 10s", "    timeout queue 30s",
    ]
    for name, (port, servers) in frontends.items():
        lines += ["", f"frontend {name}", f"    bind 127.0.0.1:{port}", f"    default_backend {name}_replicas",
                  "", f"backend {name}_replicas", "    balance roundrobin", "    option httpchk GET /healthz",
                  "    http-check expect status 200",
                  "    stick-table type string len 64 size 200k expire 30m",
                  "    stick store-response res.hdr(mcp-session-id)", "    stick on req.hdr(mcp-session-id)"]
        lines += [f"    server {name}{i + 1} 127.0.0.1:{p} check inter 2s fall 2 rise 2" for i, p in enumerate(servers)]
    return "\n".join(lines) + "\n"


@contextmanager
def haproxy(binary: str, frontends: dict[str, tuple[int, list[int]]], log_dir: Path) -> Iterator[int]:
    """HAProxy in the foreground (`-db`) with `haproxy_config`; yields its pid once it listens."""
    path = log_dir / "haproxy.cfg"
    path.write_text(haproxy_config(frontends))
    checked = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    if checked.returncode != 0:
        raise RuntimeError(f"haproxy -c refused the configuration:\n{checked.stdout}{checked.stderr}")
    with (log_dir / "haproxy.log").open("wb") as log:
        proc = subprocess.Popen([binary, "-db", "-f", str(path)], stdout=log, stderr=log)
        try:
            for port, _ in frontends.values():
                wait_for_port(port, proc)
            yield proc.pid
        finally:
            stop_process(proc)


def haproxy_version(binary: str) -> str:
    """"2.6.12-1+deb12u4" from "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stdout.split()
    return out[2] if len(out) > 2 and out[1] == "version" else "unknown"


# --------------------------------------------------------------------------- the calls


def call_body(request_id: int, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "kimi_chat", "arguments": arguments, "_meta": META}}


def tool_result(response: httpx2.Response) -> dict[str, Any]:
    """The CallToolResult of a JSON or SSE answer (the last message of a stream is the response)."""
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in response.text.splitlines()
                    if line.startswith("data:") and line[5:].strip()]
        message: dict[str, Any] = messages[-1] if messages else {}
    else:
        message = response.json()
    if "result" not in message:
        raise RuntimeError(f"JSON-RPC error: {str(message.get('error'))[:200]}")
    result: dict[str, Any] = message["result"]
    if result.get("isError"):
        text = (result.get("content") or [{}])[0].get("text", "")
        raise RuntimeError(f"tool error: {text[:200]}")
    return result


def prompt_of(round_no: int, caller: int, index: int) -> str:
    return f"round {round_no} caller {caller} call {index}"


def opening_of(round_no: int, caller: int) -> str:
    return f"round {round_no} caller {caller} opens"


@dataclass
class Driven:
    conversations: list[str]
    wall_s: float
    latencies: list[float]
    errors: list[str]
    before: dict[str, float | None]  # `snapshot` just before the timed calls
    after: dict[str, float | None]  # and just after


async def drive(urls: Sequence[str], plan: Plan, round_no: int,
                snapshot: Callable[[], dict[str, float | None]]) -> Driven:
    """Open one conversation per caller (untimed), then the timed calls, taking `snapshot` (CPU
    counters, in a worker thread) just before and after them. With several URLs each caller
    alternates between them call by call."""
    limits = httpx2.Limits(max_connections=plan.callers * 2, max_keepalive_connections=plan.callers * 2,
                           keepalive_expiry=2.0)
    errors: list[str] = []
    latencies: list[float] = []
    conversations: list[str] = [""] * plan.callers
    async with httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(120), trust_env=False) as http:

        async def post(url: str, request_id: int, arguments: dict[str, Any]) -> dict[str, Any]:
            response = await http.post(url, json=call_body(request_id, arguments), headers=HEADERS)
            return tool_result(response)

        async def open_one(caller: int) -> None:
            result = await post(urls[caller % len(urls)], caller, {"prompt": opening_of(round_no, caller)})
            conversations[caller] = str(result["structuredContent"]["conversation_id"])

        async with anyio.create_task_group() as tg:
            for caller in range(plan.callers):
                tg.start_soon(open_one, caller)

        async def calls(caller: int) -> None:
            cid = conversations[caller]
            for index in range(plan.calls):
                url = urls[(caller + index) % len(urls)]
                started = time.perf_counter()
                try:
                    await post(url, index, {"prompt": prompt_of(round_no, caller, index), "conversation_id": cid})
                except (RuntimeError, httpx2.HTTPError) as exc:
                    errors.append(f"caller {caller} call {index}: {type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)

        before = await anyio.to_thread.run_sync(snapshot)
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for caller in range(plan.callers):
                tg.start_soon(calls, caller)
        wall = time.perf_counter() - began
        after = await anyio.to_thread.run_sync(snapshot)
    return Driven(conversations, wall, latencies, errors, before, after)


def fake_control(base_url: str, method: str, path: str) -> Any:
    response = httpx2.request(method, base_url + path, timeout=60, trust_env=False)
    response.raise_for_status()
    return response.json()


@dataclass(frozen=True)
class Others:
    """The processes besides the replicas whose CPU a round reports."""

    fake_url: str
    fake_pid: int
    proxy_pid: int | None
    database_pid: int | None


def measure(config: Config, plan: Plan, round_no: int, others: Others,
            expected: dict[str, dict[str, list[str]]]) -> Round:
    """One round of one configuration; the prompts each conversation must hold go into `expected`."""
    fake_control(others.fake_url, "POST", "/_fake/reset")

    def snapshot() -> dict[str, float | None]:
        return {
            "server": sum(cpu_seconds(pid) for pid in config.pids),
            "proxy": cpu_seconds(others.proxy_pid) if others.proxy_pid else 0.0,
            "database": tree_cpu_seconds(others.database_pid) if others.database_pid else None,
            "fake": cpu_seconds(others.fake_pid),
            "client": time.process_time(),
            "machine": machine_busy_seconds(),
        }

    done = anyio.run(drive, config.urls, plan, round_no, snapshot)

    def used(kind: str) -> float | None:
        start, end = done.before[kind], done.after[kind]
        return None if start is None or end is None else end - start

    upstream = len(fake_control(others.fake_url, "GET", "/_fake/requests"))
    for caller, cid in enumerate(done.conversations):
        if cid:
            expected[config.name][cid] = [opening_of(round_no, caller)] + [
                prompt_of(round_no, caller, index) for index in range(plan.calls)]
    return Round(config.name, done.wall_s, done.latencies, used("server") or 0.0, used("proxy") or 0.0,
                 used("client") or 0.0, used("database"), used("fake") or 0.0, used("machine") or 0.0, upstream,
                 done.errors)


# --------------------------------------------------------------------------- the store check


@dataclass
class StoreCheck:
    config: str
    conversations: int = 0
    exchanges: int = 0
    problems: list[str] = field(default_factory=list)
    working_answers: int = 0
    connections: int = 0
    connection_bound: int = 0


def check_store(config: Config, expected: dict[str, list[str]], admin_url: str) -> StoreCheck:
    """Every expected exchange stored exactly once, in order; nothing else; counters consistent."""
    import psycopg

    report = StoreCheck(config.name, connection_bound=len(config.pids) * POOL_MAX)
    with psycopg.connect(with_database(admin_url, config.dbname), autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT c.id, c.turns, t.seq, t.role, t.content FROM conversations c"
            " LEFT JOIN turns t ON t.conversation_id = c.id ORDER BY c.id, t.seq").fetchall()
        working = conn.execute("SELECT count(*) FROM answers WHERE status = 'working'").fetchone()
        report.working_answers = int(working[0]) if working else 0
        held = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                            (config.dbname, "kimi-mcp")).fetchone()
        report.connections = int(held[0]) if held else 0
    stored: dict[str, list[tuple[int, str, str]]] = {}
    counters: dict[str, int] = {}
    for cid, turns, seq, role, content in rows:
        counters[cid] = int(turns)
        if seq is not None:
            stored.setdefault(cid, []).append((int(seq), str(role), bytes(content).decode("utf-8")))
    report.conversations = len(counters)
    for cid in sorted(set(counters) - set(expected)):
        report.problems.append(f"{config.name}: conversation {cid} was not created by this run")
    for cid, prompts in expected.items():
        turns = stored.get(cid, [])
        if cid not in counters:
            report.problems.append(f"{config.name}: conversation {cid} is missing")
            continue
        if counters[cid] != len(turns):
            report.problems.append(f"{config.name}: {cid} counts {counters[cid]} turns but holds {len(turns)}")
        seqs = [seq for seq, _, _ in turns]
        if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            report.problems.append(f"{config.name}: {cid} has gaps in its turn sequence")
        roles = [role for _, role, _ in turns]
        if roles != ["user", "assistant"] * (len(turns) // 2) or len(turns) % 2:
            report.problems.append(f"{config.name}: {cid} turns do not alternate user/assistant")
        users = Counter(content for _, role, content in turns if role == "user")
        wanted = Counter(prompts)
        if users != wanted:
            lost = sorted((wanted - users).elements())[:3]
            extra = sorted((users - wanted).elements())[:3]
            report.problems.append(f"{config.name}: {cid} lost {lost} duplicated or unexpected {extra}")
        if [c for _, role, c in turns if role == "user"] != prompts:
            report.problems.append(f"{config.name}: {cid} stores its prompts out of order")
        if any(c != DEFAULT_CONTENT for _, role, c in turns if role == "assistant"):
            report.problems.append(f"{config.name}: {cid} has an assistant turn that is not the upstream's answer")
        report.exchanges += sum(1 for _, role, _ in turns if role == "user")
    return report


# --------------------------------------------------------------------------- report


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def render(plan: Plan, rounds: list[Round], checks: list[StoreCheck], through: str, pg_label: str,
           argv: Sequence[str], elapsed: float, load_start: tuple[float, ...]) -> str:
    label = {"one": "1 replica", "two": "2 replicas"}
    rates = {c: [r.rate for r in rounds if r.config == c] for c in CONFIGS}
    base = median(rates["one"])
    out = ["# kimi-mcp replicas: one vs two on one PostgreSQL store" + (" (--quick: figures mean nothing)"
                                                                        if plan.quick else ""), ""]
    out += [f"Command: `{' '.join(['python -m benchmarks.replicas', *argv])}` ({elapsed:.0f} s)", ""]
    out += [f"{plan.callers} concurrent callers, {plan.calls} calls each per round, {plan.rounds} "
            f"round{'s' if plan.rounds != 1 else ''} per "
            f"configuration; each call a `kimi_chat` continuing the caller's own conversation (new each round), "
            f"stateless {PROTOCOL} Streamable HTTP through {through}; fake upstream latency "
            f"{plan.latency * 1000:.0f} ms; store: {pg_label}, pool_max={POOL_MAX} per replica; "
            f"KIMI_MAX_CONCURRENCY=512.", ""]
    out += ["| configuration | calls/s (median) | each round | vs 1 replica | latency p50 | latency p95 | errors |",
            "|---|---|---|---|---|---|---|"]
    cpu_rows = []
    for config in CONFIGS:
        mine = [r for r in rounds if r.config == config]
        latencies = [x for r in mine for x in r.latencies]
        calls = max(1, len(latencies))
        rate = median(rates[config])
        out.append(
            f"| {label[config]} | {rate:.0f} | {', '.join(f'{x:.0f}' for x in rates[config])} | "
            f"{rate / base:.2f}x | {ms(median(latencies))} | {ms(p95(latencies))} | "
            f"{sum(len(r.errors) for r in mine)} |")
        wall = sum(r.wall_s for r in mine) or 1.0

        def per_call(kind: str, mine: list[Round] = mine, calls: int = calls) -> str:
            values = [getattr(r, kind) for r in mine]
            return "-" if any(v is None for v in values) else ms(sum(values) / calls)

        ours = sum(r.server_cpu_s + r.proxy_cpu_s + r.client_cpu_s + (r.database_cpu_s or 0) + r.fake_cpu_s
                   for r in mine) / wall
        everything = sum(r.machine_busy_s for r in mine) / wall
        cpu_rows.append(
            f"| {label[config]} | {per_call('server_cpu_s')} | {per_call('database_cpu_s')} | "
            f"{per_call('fake_cpu_s')} | {per_call('proxy_cpu_s') if through != 'the client alternating' else '-'} | "
            f"{per_call('client_cpu_s')} | {ours:.2f} | {everything:.2f} of {os.cpu_count()} |")
    out += ["", "CPU per call, by process (from /proc, over the measured rounds):", "",
            "| configuration | replicas | PostgreSQL | fake upstream | HAProxy | client | cores busy with these | "
            "cores busy, whole machine |", "|---|---|---|---|---|---|---|---|", *cpu_rows]
    out += ["", "Store check (read from each configuration's database after the run):", "",
            "| configuration | conversations | exchanges stored | expected | problems | working answer records | "
            "upstream requests / calls | connections held (bound) |", "|---|---|---|---|---|---|---|---|"]
    for check in checks:
        mine = [r for r in rounds if r.config == check.config]
        upstream = sum(r.upstream_requests for r in mine)
        expected_calls = plan.rounds * (plan.per_round + plan.callers)
        out.append(f"| {label[check.config]} | {check.conversations} | {check.exchanges} | "
                   f"{plan.rounds * (plan.per_round + plan.callers)} | {len(check.problems)} | "
                   f"{check.working_answers} | {upstream} / {expected_calls} | "
                   f"{check.connections} (<= {check.connection_bound}) |")
    for check in checks:
        out += [f"- problem: {p}" for p in check.problems[:10]]
    for r in rounds:
        out += [f"- error ({label[r.config]}): {e}" for e in r.errors[:5]]
    out += ["", "## Machine", "", *machine(load_start)]
    return "\n".join(out) + "\n"


def passed(plan: Plan, rounds: list[Round], checks: list[StoreCheck]) -> bool:
    expected_calls = plan.rounds * (plan.per_round + plan.callers)
    upstream = {c: sum(r.upstream_requests for r in rounds if r.config == c) for c in CONFIGS}
    return (not any(r.errors for r in rounds)
            and all(not c.problems and c.exchanges == expected_calls and not c.working_answers
                    and c.connections <= c.connection_bound and upstream[c.config] == expected_calls
                    for c in checks))


# --------------------------------------------------------------------------- main


def run(plan: Plan, given_postgres: str | None, log: IO[str]) -> tuple[list[Round], list[StoreCheck], str, str]:
    rounds: list[Round] = []
    with ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kimi-mcp-replicas-")))
        admin_url, pg_label, database_pid = stack.enter_context(postgres(given_postgres))
        dbs = stack.enter_context(databases(admin_url))
        fake_url, fake_pid = stack.enter_context(fake_upstream(plan.latency))
        configs: dict[str, Config] = {}
        ports: dict[str, list[int]] = {}
        for name in CONFIGS:
            store_url, dbname = dbs[name]
            config = configs[name] = Config(name, store_url, dbname)
            ports[name] = []
            for i in range(REPLICAS[name]):
                pid, port, path = stack.enter_context(replica(fake_url, store_url, log_dir, f"{name}-{i + 1}"))
                config.pids.append(pid)
                config.logs.append(path)
                ports[name].append(port)
            say(f"{name}: {len(config.pids)} replica(s) on ports {ports[name]}, database {dbname}")
        binary = find_haproxy()
        proxy_pid: int | None = None
        if binary:
            frontends = {name: (free_port(), ports[name]) for name in CONFIGS}
            proxy_pid = stack.enter_context(haproxy(binary, frontends, log_dir))
            for name in CONFIGS:
                configs[name].urls = [f"http://127.0.0.1:{frontends[name][0]}/mcp"]
            through = f"HAProxy {haproxy_version(binary)} (round robin)"
        else:
            for name in CONFIGS:
                configs[name].urls = [f"http://127.0.0.1:{p}/mcp" for p in ports[name]]
            through = "the client alternating"
            say("HAProxy not found: the client alternates between the replicas itself")
        others = Others(fake_url, fake_pid, proxy_pid, database_pid)
        expected: dict[str, dict[str, list[str]]] = {name: {} for name in CONFIGS}
        say("warm-up: one round of each configuration, not counted")
        warm = Plan(callers=plan.callers, calls=2, rounds=1, latency=plan.latency)
        warm_expected: dict[str, dict[str, list[str]]] = {name: {} for name in CONFIGS}
        for name in CONFIGS:
            measure(configs[name], warm, 0, others, warm_expected)
        for round_no in range(1, plan.rounds + 1):
            order = CONFIGS if round_no % 2 else tuple(reversed(CONFIGS))
            for name in order:
                done = measure(configs[name], plan, round_no, others, expected)
                rounds.append(done)
                say(f"round {round_no}, {name}: {len(done.latencies)} calls in {done.wall_s:.2f} s "
                    f"({done.rate:.0f} calls/s), {len(done.errors)} errors")
        checks = []
        for name in CONFIGS:
            # The warm-up's conversations are in the database too: expected as well (2 calls each).
            check = check_store(configs[name], {**warm_expected[name], **expected[name]}, admin_url)
            warm_exchanges = sum(len(p) for p in warm_expected[name].values())
            check.exchanges -= warm_exchanges
            check.conversations -= len(warm_expected[name])
            checks.append(check)
        for config in configs.values():
            for path in config.logs:
                text = path.read_text(errors="replace")
                if "Traceback" in text:
                    log.write(f"[bench] {path.name} has a traceback:\n{text[-3000:]}\n")
                    checks[CONFIGS.index(config.name)].problems.append(f"traceback in {path.name}'s log")
    return rounds, checks, through, pg_label


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replicas",
                                     description="Calls per second of one and of two kimi-mcp replicas on one "
                                                 "PostgreSQL store; prints Markdown on stdout.")
    parser.add_argument("--quick", action="store_true", help="a tiny run that only checks the benchmark works")
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers (default 64)")
    parser.add_argument("--calls", type=int, default=40, help="calls per caller per round (default 40)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per configuration (default 3)")
    parser.add_argument("--latency", type=float, default=0.0, help="the fake upstream's answer delay in seconds")
    parser.add_argument("--postgres", metavar="URL", help="an existing server (a superuser's URL: databases "
                                                          "are created and dropped); default: a private one")
    parser.add_argument("--json", metavar="PATH", help="also write every round's raw figures as JSON")
    args = parser.parse_args(argv)
    plan = (Plan(callers=8, calls=3, rounds=1, latency=args.latency, quick=True) if args.quick
            else Plan(args.callers, args.calls, args.rounds, args.latency))
    load_start = os.getloadavg()
    started = time.perf_counter()
    rounds, checks, through, pg_label = run(plan, args.postgres, sys.stderr)
    shown = sys.argv[1:] if argv is None else list(argv)
    print(render(plan, rounds, checks, through, pg_label, shown, time.perf_counter() - started, load_start), end="")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "plan": plan.__dict__,
            "rounds": [{**r.__dict__, "rate": r.rate} for r in rounds],
            "checks": [c.__dict__ for c in checks],
        }, indent=1))
    ok = passed(plan, rounds, checks)
    if not ok:
        say("FAILED: see the errors and problems above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

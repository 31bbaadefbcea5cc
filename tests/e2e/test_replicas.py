"""Several replicas on one PostgreSQL store, behind a real load balancer (issue 14).

Two `kimi-mcp --transport streamable-http` processes share one PostgreSQL schema and the fake Ace.
HAProxy (from Debian's packages; `.ci/run` installs it) balances them round robin, sticks legacy
sessions to their replica by `Mcp-Session-Id`, and names the replica that answered in an
`X-Replica` header. Without HAProxy the same tests run through a client that alternates between
the replicas itself (and the sticky-session test is skipped), unless `KIMI_TEST_REQUIRE_LB=1`.

What must hold: a conversation continues across replicas; 24 concurrent calls on one conversation
store every exchange exactly once; a task created on one replica is polled to completion on
another; a soft-deadline answer is resumed on another; a replica killed mid-answer is reported
interrupted by the survivor within the lease; a database restart gives `storage` errors, then the
replicas recover by themselves.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.fake_ace import FakeAce, reply, stall
from tests.support.harness import free_port, server_env, spawn_http_server, stop_process, wait_for_port
from tests.support.postgres import PostgresServer, PrivateServer, find_bindir, start_private_server, unavailable
from tests.support.wire import WITHOUT_TASKS, Wire

pytestmark = pytest.mark.anyio

LEASE_S = 3.0  # KIMI_ANSWER_LEASE for these replicas: a dead one is noticed within about this
REQUIRE_LB_ENV = "KIMI_TEST_REQUIRE_LB"
REPLICA_ENV = {
    "KIMI_SOFT_DEADLINE": "3",
    "KIMI_TASK_WAIT": "0.5",
    "KIMI_ANSWER_LEASE": f"{LEASE_S:g}",
    "KIMI_MAX_RETRIES": "0",
    "LOG_LEVEL": "INFO",
}


@dataclass
class Replica:
    """One server process on its own port."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def wire(self) -> Wire:
        return Wire(self.url)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: alive to this machine, silent to everyone, as a replica on a machine that died
        (only its lapsed lease tells; `running` kills it at the end)."""
        self.proc.send_signal(signal.SIGSTOP)


def start_replica(name: str, env: dict[str, str]) -> Replica:
    return Replica(name, *spawn_http_server(env, prefix=f"kimi-mcp-{name}-"))


@contextmanager
def running(*replicas: Replica) -> Iterator[tuple[Replica, ...]]:
    try:
        yield replicas
    finally:
        for replica in replicas:
            if replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGCONT)  # a frozen one, too, can stop
                stop_process(replica.proc)


@pytest.fixture(scope="module")
def store_url(postgres_server: PostgresServer) -> Iterator[str]:
    """One schema the module's replicas share (the URL makes it their search_path)."""
    url = postgres_server.create_schema()
    yield url
    postgres_server.drop_schema(url)


@pytest.fixture(scope="module")
def env(fake: FakeAce, store_url: str) -> dict[str, str]:
    return server_env(fake, KIMI_STORE=store_url, **REPLICA_ENV)


@pytest.fixture(scope="module")
def pair(env: dict[str, str]) -> Iterator[tuple[Replica, Replica]]:
    with running(start_replica("r1", env), start_replica("r2", env)) as replicas:
        yield replicas[0], replicas[1]


# ---------------------------------------------------------------- the load balancer


HAPROXY_CONFIG = """\
global
    maxconn 2000
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    option abortonclose  # a client that closes its request (a cancel) reaches the replica at once
frontend mcp
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    # Legacy (2025-11-25) sessions live in one replica: learn each session's replica from the
    # response that creates it, and send the session's later requests there.
    stick-table type string len 128 size 100k expire 1h
    stick on req.hdr(mcp-session-id)
    stick store-response res.hdr(mcp-session-id)
    http-response set-header X-Replica %[srv_name]
{servers}
"""


@dataclass
class Balancer:
    """Where clients connect: HAProxy's frontend, or (without HAProxy) the replicas themselves,
    alternated by the client."""

    url: str
    replicas: tuple[Replica, ...]
    haproxy: bool

    def http(self, served: Counter[str] | None = None) -> httpx2.AsyncClient:
        """An HTTP client through the balancer; `served` counts the replicas that answered."""

        async def count(response: httpx2.Response) -> None:
            if served is not None:
                served[response.headers.get("x-replica", "?")] += 1

        transport = None if self.haproxy else _Alternating(self.replicas)
        return httpx2.AsyncClient(timeout=httpx2.Timeout(60), transport=transport,
                                  event_hooks={"response": [count]})

    def wires(self) -> list[Wire]:
        return [replica.wire() for replica in self.replicas]


class _Alternating(httpx2.AsyncBaseTransport):
    """Each request to the next replica in turn (the balancer, when HAProxy is not installed)."""

    def __init__(self, replicas: tuple[Replica, ...]) -> None:
        self._replicas = replicas
        self._next = 0
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        replica = self._replicas[self._next % len(self._replicas)]
        self._next += 1
        request.url = request.url.copy_with(port=replica.port)
        response = await self._inner.handle_async_request(request)
        response.headers["X-Replica"] = replica.name
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture(scope="module")
def balancer(pair: tuple[Replica, Replica], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balancer]:
    haproxy = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)
    if haproxy is None:
        if os.environ.get(REQUIRE_LB_ENV) == "1":
            pytest.fail(f"HAProxy is not installed ({REQUIRE_LB_ENV}=1)")
        yield Balancer("http://127.0.0.1:1/mcp", pair, haproxy=False)
        return
    port = free_port()
    servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.port}" for r in pair)
    config = tmp_path_factory.mktemp("haproxy") / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    checked = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = config.with_suffix(".log").open("wb")
    proc = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log, stderr=log)
    try:
        wait_for_port(port, proc)
        yield Balancer(f"http://127.0.0.1:{port}/mcp", pair, haproxy=True)
    finally:
        stop_process(proc)
        log.close()


@asynccontextmanager
async def client(balancer: Balancer, served: Counter[str] | None = None, *,
                 mode: str = "auto") -> AsyncIterator[Client]:
    async with (balancer.http(served) as http,
                Client(streamable_http_client(balancer.url, http_client=http), mode=mode) as c):  # type: ignore[arg-type]
        yield c


async def chat(c: Client, **arguments: Any) -> dict[str, Any]:
    result = await c.call_tool("kimi_chat", arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def transcript(c: Client, conversation_id: str) -> list[dict[str, Any]]:
    result = await c.call_tool("kimi_read_conversation", {"conversation_id": conversation_id})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    turns: list[dict[str, Any]] = result.structured_content["turns"]
    return turns


# ---------------------------------------------------------------- conversations


async def test_a_conversation_continues_across_replicas(balancer: Balancer, fake: FakeAce) -> None:
    served: Counter[str] = Counter()
    async with client(balancer, served) as c:
        first = await chat(c, prompt="turn 0")
        cid = first["conversation_id"]
        for n in range(1, 5):
            assert (await chat(c, conversation_id=cid, prompt=f"turn {n}"))["conversation_id"] == cid
        turns = await transcript(c, cid)
    assert [t["content"] for t in turns if t["role"] == "user"] == [f"turn {n}" for n in range(5)]
    assert {"r1", "r2"} <= set(served), served  # both replicas answered
    # Every call after the first sent the whole history, whichever replica stored the turns before it.
    chats = [r.json for r in fake.requests if r.json and "messages" in r.json]
    assert [len(body["messages"]) for body in chats] == [1, 3, 5, 7, 9]


async def test_concurrent_calls_on_one_conversation_store_every_exchange_once(balancer: Balancer) -> None:
    served: Counter[str] = Counter()
    async with client(balancer, served) as c:
        cid = (await chat(c, prompt="start"))["conversation_id"]
        async with anyio.create_task_group() as tg:
            for n in range(24):
                tg.start_soon(lambda n=n: chat(c, conversation_id=cid, prompt=f"call {n}"))  # type: ignore[misc]
        turns = await transcript(c, cid)
    prompts = Counter(t["content"] for t in turns if t["role"] == "user")
    assert prompts == Counter(["start", *(f"call {n}" for n in range(24))])
    assert len(turns) == 2 * 25
    assert [t["role"] for t in turns] == ["user", "assistant"] * 25  # no exchange torn apart
    assert {"r1", "r2"} <= set(served), served


async def test_legacy_sessions_stick_to_their_replica(balancer: Balancer) -> None:
    """A 2025-11-25 session lives in one replica's memory: HAProxy keeps it there."""
    if not balancer.haproxy:
        pytest.skip("needs HAProxy's sticky routing (the alternating client has none)")
    served: Counter[str] = Counter()
    async with client(balancer, served, mode="legacy") as c:
        cid = (await chat(c, prompt="legacy 0"))["conversation_id"]
        for n in range(1, 4):
            await chat(c, conversation_id=cid, prompt=f"legacy {n}")
        assert len(await transcript(c, cid)) == 8
    assert len([name for name in served if name != "?"]) == 1, served  # the whole session on one replica


# ---------------------------------------------------------------- answers across replicas


def test_a_task_created_on_one_replica_completes_on_another(pair: tuple[Replica, Replica], fake: FakeAce) -> None:
    one, other = pair[0].wire(), pair[1].wire()
    fake.script(reply("a slow answer, written on one replica", chunk_size=4, chunk_delay=0.1))
    created = one.chat({"prompt": "slow"})["result"]
    assert created["resultType"] == "task", created
    state = other.until_done(created["taskId"], limit=30)
    assert state["status"] == "completed"
    assert state["result"]["structuredContent"]["text"] == "a slow answer, written on one replica"
    assert state["result"]["isError"] is False


def test_a_cancel_on_another_replica_stops_the_answer(pair: tuple[Replica, Replica], fake: FakeAce) -> None:
    one, other = pair[0].wire(), pair[1].wire()
    fake.script(stall(after_chunks=2))
    task_id = one.chat({"prompt": "endless"})["result"]["taskId"]
    assert other.call("tasks/cancel", {"taskId": task_id})["result"]["resultType"] == "complete"
    # The owner's heartbeat (every third of the lease) reads the cancel and hangs up upstream.
    record = fake.wait_for_close(0, timeout=LEASE_S + 10)
    assert record.client_closed
    assert one.until_done(task_id)["status"] == "cancelled"


def test_a_soft_deadline_answer_is_resumed_on_another_replica(pair: tuple[Replica, Replica], fake: FakeAce) -> None:
    """Handed over incomplete by one replica (soft deadline 3 s), its rest comes from the other."""
    full = "".join(f"{n:03d}|" for n in range(100))  # ~10 s of stream
    fake.script(reply(full, chunk_size=4, chunk_delay=0.1))
    one, other = pair[0].wire(), pair[1].wire()
    first = one.chat({"prompt": "count"}, meta=WITHOUT_TASKS)["result"]["structuredContent"]
    assert first["finish_reason"] == "deadline", first
    pieces = [first]
    wires = [other, one]
    while pieces[-1]["finish_reason"] == "deadline":
        assert len(pieces) < 12, pieces
        wire = wires[len(pieces) % 2] if len(pieces) > 1 else other  # the first resume lands elsewhere
        resumed = wire.chat({"conversation_id": first["conversation_id"], "resume": True,
                             "answer_id": first["answer_id"]}, meta=WITHOUT_TASKS)["result"]
        assert resumed["isError"] is False, resumed
        pieces.append(resumed["structuredContent"])
    offset = 0
    for piece in pieces:
        assert piece["offset"] == offset, [(p["offset"], len(p["text"])) for p in pieces]
        offset += len(piece["text"])
    assert "".join(p["text"] for p in pieces) == full
    assert pieces[-1]["finish_reason"] == "stop"
    chats = [r for r in fake.requests if r.json and "messages" in r.json]
    assert len(chats) == 1  # resuming never asked Kimi again
    stored = other.call("tools/call", {"name": "kimi_read_conversation",
                                       "arguments": {"conversation_id": first["conversation_id"]}},
                        meta=WITHOUT_TASKS)["result"]["structuredContent"]["turns"]
    assert [t["content"] for t in stored] == ["count", full]  # stored once, whole


@pytest.mark.parametrize("death", ["kill", "freeze"])
def test_a_killed_replica_s_answer_is_interrupted_on_the_survivor(
    env: dict[str, str], pair: tuple[Replica, Replica], fake: FakeAce, death: str
) -> None:
    """kill -9 of the replica that owns a task (known at once on this machine: its pid is gone), or a
    frozen one (as on a machine that died: only its lease tells): another reports it interrupted
    (completed, with an error result carrying the partial text) within the lease."""
    with running(start_replica("doomed", env)) as (doomed,):
        fake.script(stall(after_chunks=6))
        task_id = doomed.wire().chat({"prompt": "long"})["result"]["taskId"]
        survivor = pair[0].wire()
        time.sleep(2.5)  # the record follows the answer every 2 s
        assert survivor.get(task_id)["result"]["status"] == "working"
        doomed.kill() if death == "kill" else doomed.freeze()
        killed_at = time.monotonic()
        state = survivor.until_done(task_id, limit=LEASE_S + 10)
        noticed = time.monotonic() - killed_at
    assert noticed <= LEASE_S + 5, noticed  # the bound, with slack for a loaded machine
    assert state["status"] == "completed"
    assert state["result"]["isError"] is True
    error = state["result"]["structuredContent"]["error"]
    assert error["kind"] == "interrupted"
    assert error["partial_text"] and error["partial_text"] in "Hello from fake Kimi."


# ---------------------------------------------------------------- the database goes away


@pytest.fixture
def restartable(postgres_server: PostgresServer) -> Iterator[PrivateServer]:
    """A server this test may stop: its own (the module's replicas keep theirs)."""
    bindir = find_bindir()
    if bindir is None:
        unavailable("stopping a database needs the PostgreSQL server binaries")
        return
    server = start_private_server(bindir)
    try:
        yield server
    finally:
        server.remove()


def test_a_database_restart_gives_storage_errors_then_recovery(restartable: PrivateServer, fake: FakeAce) -> None:
    url = f"{restartable.url()}?pool_timeout=2&connect_timeout=2"
    with running(start_replica("lonely", server_env(fake, KIMI_STORE=url, **REPLICA_ENV))) as (replica,):
        wire = replica.wire()

        def chat(**arguments: Any) -> dict[str, Any]:
            result: dict[str, Any] = wire.chat(arguments, meta=WITHOUT_TASKS)["result"]
            return result

        cid = chat(prompt="before")["structuredContent"]["conversation_id"]
        restartable.stop("fast")
        down = chat(conversation_id=cid, prompt="while down")
        assert down["isError"] is True
        assert down["structuredContent"]["error"]["kind"] == "storage", down
        restartable.start(same_port=True)
        deadline = time.monotonic() + 30
        while True:
            again = chat(conversation_id=cid, prompt="after")
            if not again["isError"] or time.monotonic() > deadline:
                break
            assert again["structuredContent"]["error"]["kind"] == "storage", again
            time.sleep(0.5)
        assert again["isError"] is False, again
        assert replica.proc.poll() is None  # it stayed up
        log = replica.log.read_text(errors="replace")
    assert "Traceback" not in log


def test_resuming_elsewhere_never_keeps_a_dead_replica_s_answer_alive(env: dict[str, str], fake: FakeAce) -> None:
    """A resume on a survivor hands over pieces of the record without touching its owner's lease:
    once the dead owner's lease lapses, resume says the answer was lost (a resume renewing the
    lease kept it "working" for as long as someone kept asking)."""
    quick = {**env, "KIMI_SOFT_DEADLINE": "1"}  # resumes come back faster than the lease lapses
    with running(start_replica("doomed", quick), start_replica("survivor", quick)) as (doomed, alive):
        fake.script(stall(after_chunks=2))
        cut = doomed.wire().chat({"prompt": "long"}, meta=WITHOUT_TASKS)["result"]["structuredContent"]
        assert cut["finish_reason"] == "deadline", cut
        doomed.freeze()  # its pid lives on: only the lease tells
        resumed = _resume_until_lost(alive.wire(), cut)
    error = resumed["structuredContent"]["error"]
    assert error["kind"] == "interrupted" and error["partial_text"] == cut["text"]


def _resume_until_lost(survivor: Wire, cut: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + LEASE_S + 20
    while True:
        resumed = survivor.chat({"conversation_id": cut["conversation_id"], "resume": True,
                                 "answer_id": cut["answer_id"]}, meta=WITHOUT_TASKS)["result"]
        if resumed["isError"]:
            break
        assert time.monotonic() < deadline, "the dead replica's answer stayed 'working'"
        assert resumed["structuredContent"]["finish_reason"] == "deadline"
    return resumed

"""The MCP Tasks extension through raw 2026-07-28 requests over Streamable HTTP (the SDK's client has no
tasks support): quick calls stay direct, slow ones become tasks that `tasks/get` follows to the whole
result, tool errors complete with isError, `tasks/cancel` aborts the upstream request, a task is
invisible to another principal, the capability is required, and a restart mid-task reads as
interrupted (with the partial text), never as working forever."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_ace import FakeAce, ace_error, reply, stall
from tests.support.harness import ROOT, ServerLog, free_port, http_server, server_env, stop_process, wait_for_port
from tests.support.wire import ISO, TASKS, WITHOUT_TASKS, Wire

ALICE = "alice-tok-1234567890abcdef1234"
BOB = "bob-tok-0a1b2c3d4e5f60718293a4"
class Restartable:
    """A server subprocess on a fixed port and store, killed with SIGKILL and started again."""

    def __init__(self, fake: FakeAce, tmp_path: Path, **settings: str) -> None:
        self.env = {**os.environ, **server_env(fake, KIMI_STORE=str(tmp_path / "s.sqlite3"), **settings)}
        self.port = free_port()
        self.log = (tmp_path / "server.log").open("wb")
        self.proc: subprocess.Popen[bytes] | None = None
        self.wire = Wire(f"http://127.0.0.1:{self.port}/mcp")

    def start(self) -> None:
        command = [sys.executable, "-m", "kimi_mcp", "--transport", "streamable-http", "--port", str(self.port)]
        self.proc = subprocess.Popen(command, env=self.env, stdout=self.log, stderr=self.log, cwd=ROOT)
        wait_for_port(self.port, self.proc)

    def kill_and_restart(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.start()

    def close(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.log.close()


Restarter = Callable[..., Restartable]


@pytest.fixture
def restartable(fake: FakeAce, tmp_path: Path) -> Iterator[Restarter]:
    servers: list[Restartable] = []

    def make(**settings: str) -> Restartable:
        servers.append(Restartable(fake, tmp_path, **settings))
        servers[-1].start()
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def url(fake: FakeAce, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("tasks") / "store.sqlite3"
    env = server_env(fake, KIMI_MCP_AUTH_TOKENS=f"alice:{ALICE},bob:{BOB}", KIMI_TASK_WAIT="0.5",
                     KIMI_STORE=str(store), KIMI_MAX_RETRIES="0")
    with http_server(env, "streamable-http", ServerLog()) as port:
        yield f"http://127.0.0.1:{port}/mcp"


def test_discover_advertises_the_extension(url: str) -> None:
    found = Wire(url, ALICE).call("server/discover", {})
    assert found["result"]["capabilities"]["extensions"][TASKS] == {}


def test_a_quick_answer_stays_a_direct_result(url: str, fake: FakeAce) -> None:
    result = Wire(url, ALICE).chat({"prompt": "quick"})["result"]
    assert result["resultType"] == "complete" and result["isError"] is False
    assert result["structuredContent"]["text"] == "Hello from fake Kimi."


def test_a_slow_answer_becomes_a_task_that_completes_with_the_whole_result(url: str, fake: FakeAce) -> None:
    alice = Wire(url, ALICE)
    fake.script(reply("A considered answer.", reasoning="Thinking it over.", chunk_size=4, chunk_delay=0.1,
                      delay=0.5))
    created = alice.chat({"prompt": "Think hard"})["result"]
    assert created["resultType"] == "task" and created["status"] == "working"
    assert created["taskId"].startswith("task_") and len(created["taskId"]) >= 20
    assert ISO.match(created["createdAt"]) and ISO.match(created["lastUpdatedAt"])
    assert created["ttlMs"] == 3_600_000 and created["pollIntervalMs"] == 2_000
    # Durable before it was handed out: the very next get resolves it.
    first = alice.get(created["taskId"])["result"]
    assert first["resultType"] == "complete" and first["status"] in ("working", "completed")
    done = alice.until_done(created["taskId"])
    assert done["status"] == "completed"
    result = done["result"]
    assert result["isError"] is False and result["structuredContent"]["text"] == "A considered answer."
    cid = result["structuredContent"]["conversation_id"]
    assert f"[conversation_id: {cid}]" in result["content"][0]["text"]
    listed = alice.call("tools/call", {"name": "kimi_list_conversations", "arguments": {}})["result"]
    assert cid in str(listed)
    assert len(fake.requests) == 1 and fake.requests[0].wants_stream


def test_a_tool_error_completes_the_task_with_is_error(url: str, fake: FakeAce) -> None:
    fake.script(dataclasses.replace(ace_error(403, "used_up", "Your balance is used up."), delay=1.0))
    alice = Wire(url, ALICE)
    created = alice.chat({"prompt": "p"})["result"]
    assert created["resultType"] == "task"
    done = alice.until_done(created["taskId"])
    assert done["status"] == "completed" and "error" not in done
    assert done["result"]["isError"] is True
    assert done["result"]["structuredContent"]["error"]["kind"] == "insufficient_balance"


def test_cancel_aborts_the_upstream_request(url: str, fake: FakeAce) -> None:
    fake.script(stall(after_chunks=2))
    alice = Wire(url, ALICE)
    created = alice.chat({"prompt": "Never finished"})["result"]
    assert created["resultType"] == "task"
    acked = alice.call("tasks/cancel", {"taskId": created["taskId"]})
    assert acked["result"]["resultType"] == "complete"
    record = fake.wait_for_close(0, timeout=10)
    assert record.client_closed, "the server did not hang up on the upstream after the cancel"
    assert alice.until_done(created["taskId"])["status"] == "cancelled"


def test_a_task_is_invisible_to_another_principal(url: str, fake: FakeAce) -> None:
    fake.script(reply("For alice only.", delay=1.0))
    alice, bob = Wire(url, ALICE), Wire(url, BOB)
    task_id = alice.chat({"prompt": "mine"})["result"]["taskId"]
    for method in ("tasks/get", "tasks/cancel", "tasks/update"):
        params: dict[str, Any] = {"taskId": task_id}
        if method == "tasks/update":
            params["inputResponses"] = {}
        answer = bob.call(method, params)
        assert answer["error"]["code"] == -32602, method
        assert answer == {**answer, "error": {**answer["error"]}}
        assert "For alice" not in str(answer)
    unknown = bob.get("task_" + "x" * 20)
    assert unknown["error"]["message"] == bob.get(task_id)["error"]["message"]  # indistinguishable
    assert alice.until_done(task_id)["result"]["structuredContent"]["text"] == "For alice only."


def test_tasks_methods_need_the_capability_and_unknown_ids_are_invalid_params(url: str) -> None:
    alice = Wire(url, ALICE)
    for method in ("tasks/get", "tasks/cancel", "tasks/update"):
        refused = alice.call(method, {"taskId": "task_whatever"}, meta=WITHOUT_TASKS)
        assert refused["error"]["code"] == -32021, method
        assert refused["error"]["data"]["requiredCapabilities"]["extensions"] == {TASKS: {}}
    assert alice.get("task_unknown")["error"]["code"] == -32602


def test_without_the_capability_a_slow_answer_is_never_a_task(url: str, fake: FakeAce) -> None:
    fake.script(reply("Direct, if slow.", delay=1.5))
    result = Wire(url, ALICE).chat({"prompt": "p"}, meta=WITHOUT_TASKS)["result"]
    assert result["resultType"] == "complete"
    assert result["structuredContent"]["text"] == "Direct, if slow."


def test_update_acknowledges_a_known_task(url: str, fake: FakeAce) -> None:
    fake.script(reply("x", delay=1.0))
    alice = Wire(url, ALICE)
    task_id = alice.chat({"prompt": "p"})["result"]["taskId"]
    assert alice.call("tasks/update", {"taskId": task_id, "inputResponses": {}})["result"]["resultType"] == "complete"
    alice.until_done(task_id)


def test_a_restart_mid_task_reads_as_interrupted_with_the_partial_text(fake: FakeAce, restartable: Restarter) -> None:
    """kill -9 while the answer streams; the next process reports the task interrupted (as a completed
    task whose result is an error saying so), with the text that had arrived, at once."""
    server = restartable(KIMI_TASK_WAIT="0.5")
    fake.script(stall(after_chunks=6))
    task_id = server.wire.chat({"prompt": "long"})["result"]["taskId"]
    time.sleep(2.5)  # the record follows the answer every 2 s
    assert server.wire.get(task_id)["result"]["status"] == "working"
    server.kill_and_restart()
    state = server.wire.get(task_id)["result"]
    assert state["status"] == "completed"
    assert state["result"]["isError"] is True
    error = state["result"]["structuredContent"]["error"]
    assert error["kind"] == "interrupted" and error["retryable"] is True
    assert error["partial_text"] and error["partial_text"] in "Hello from fake Kimi."
    assert state["result"]["content"][0]["text"].startswith("Interrupted: this answer was lost")


def test_resume_after_a_restart_says_the_incomplete_answer_was_lost(fake: FakeAce, restartable: Restarter) -> None:
    """The soft-deadline flow (a host without the extension) uses the same records: an answer handed
    over incomplete and lost with its process is reported as interrupted by resume, with its text."""
    server = restartable(KIMI_SOFT_DEADLINE="1")
    fake.script(stall(after_chunks=3))
    cut = server.wire.chat({"prompt": "long"}, meta=WITHOUT_TASKS)["result"]["structuredContent"]
    assert cut["finish_reason"] == "deadline" and cut["answer_id"]
    server.kill_and_restart()
    resumed = server.wire.chat({"conversation_id": cut["conversation_id"], "resume": True,
                                "answer_id": cut["answer_id"]}, meta=WITHOUT_TASKS)["result"]
    assert resumed["isError"] is True
    error = resumed["structuredContent"]["error"]
    assert error["kind"] == "interrupted" and error["retryable"] is True
    assert error["partial_text"] == cut["text"]
    assert "was lost" in resumed["content"][0]["text"]
    # Without answer_id too.
    again = server.wire.chat({"conversation_id": cut["conversation_id"], "resume": True}, meta=WITHOUT_TASKS)
    assert again["result"]["structuredContent"]["error"]["kind"] == "interrupted"

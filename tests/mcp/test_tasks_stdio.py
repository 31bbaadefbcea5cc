"""The MCP Tasks extension over stdio, in the 2026-07-28 era, through raw JSON-RPC lines written to a
`python -m kimi_mcp` subprocess (the SDK's client has no tasks support): every request carries the
per-request `_meta` envelope; a slow kimi_chat becomes a task that `tasks/get` follows to the whole
result, `tasks/cancel` stops one, and without the capability a slow call stays a direct result."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import pytest

from tests.support.fake_ace import FakeAce, reply, stall
from tests.support.harness import ROOT, server_env, stop_process
from tests.support.wire import TaskCalls

TASKS = "io.modelcontextprotocol/tasks"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw-stdio-tasks-probe", "version": "1"}}
WITH_TASKS = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS: {}}}}
WITHOUT_TASKS: dict[str, Any] = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": {}}
READ_S = 30.0
"""The longest any single response may take to arrive."""


class StdioWire(TaskCalls):
    """A 2026-07-28 client that writes JSON-RPC lines to the server's stdin and reads its stdout
    (on a thread, so every read is bounded by a timeout)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.stdin: IO[bytes] = proc.stdin
        self.next_id = 0
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.others: list[dict[str, Any]] = []
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stdout: IO[bytes]) -> None:
        for raw in stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                self.lines.put({"unparsable": raw.decode(errors="replace")})
        self.lines.put(None)  # end of stream

    def call(self, method: str, params: dict[str, Any], meta: dict[str, Any] | None = None,
             timeout: float = READ_S) -> dict[str, Any]:
        self.next_id += 1
        request_id = self.next_id
        body = {"jsonrpc": "2.0", "id": request_id, "method": method,
                "params": {**params, "_meta": WITH_TASKS if meta is None else meta}}
        self.stdin.write(json.dumps(body).encode() + b"\n")
        self.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no response to {method} (id {request_id}) within {timeout} s"
            try:
                message = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            assert message is not None, f"the server closed stdout (exit {self.proc.poll()}) before answering {method}"
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return message
            self.others.append(message)  # notifications (or anything else) are not the answer


@pytest.fixture(scope="module")
def wire(fake: FakeAce) -> Iterator[StdioWire]:
    """One stdio server for the module; it serves the modern era, since the first request carries
    the envelope."""
    env = {**os.environ, **server_env(fake, KIMI_TASK_WAIT="0.5", KIMI_MAX_RETRIES="0")}
    with tempfile.TemporaryFile() as errlog:
        proc = subprocess.Popen([sys.executable, "-m", "kimi_mcp"], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errlog)
        try:
            client = StdioWire(proc)
            discovered = client.call("server/discover", {})
            assert TASKS in discovered["result"]["capabilities"]["extensions"], discovered
            yield client
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            stop_process(proc)


def test_a_quick_answer_stays_a_direct_result(wire: StdioWire, fake: FakeAce) -> None:
    result = wire.chat({"prompt": "quick"})["result"]
    assert result["resultType"] == "complete" and result["isError"] is False
    assert result["structuredContent"]["text"] == "Hello from fake Kimi."


def test_a_slow_answer_becomes_a_task_that_completes_with_the_whole_result(wire: StdioWire, fake: FakeAce) -> None:
    fake.script(reply("A considered answer, in full.", reasoning="Thinking it over.", chunk_size=4,
                      chunk_delay=0.1, delay=0.5))
    created = wire.chat({"prompt": "Think hard"})["result"]
    assert created["resultType"] == "task" and created["status"] == "working", created
    assert created["taskId"].startswith("task_")
    assert created["ttlMs"] == 3_600_000 and created["pollIntervalMs"] == 2_000
    first = wire.get(created["taskId"])["result"]  # durable before it was handed out
    assert first["resultType"] == "complete" and first["status"] in ("working", "completed")
    assert first["taskId"] == created["taskId"]
    done = wire.until_done(created["taskId"])
    assert done["status"] == "completed" and done["resultType"] == "complete"
    result = done["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["text"] == "A considered answer, in full."
    assert "A considered answer, in full." in result["content"][0]["text"]
    sent = [request.json for request in fake.requests]
    assert len(sent) == 1 and sent[0] is not None and sent[0]["stream"] is True


def test_without_the_capability_a_slow_answer_stays_direct(wire: StdioWire, fake: FakeAce) -> None:
    fake.script(reply("Direct, if slow.", delay=1.5))
    result = wire.chat({"prompt": "p"}, meta=WITHOUT_TASKS)["result"]
    assert result["resultType"] == "complete"
    assert result["structuredContent"]["text"] == "Direct, if slow."
    refused = wire.get("task_whatever", meta=WITHOUT_TASKS)
    assert refused["error"]["code"] == -32021
    assert refused["error"]["data"]["requiredCapabilities"]["extensions"] == {TASKS: {}}


def test_cancel_stops_a_task_over_stdio(wire: StdioWire, fake: FakeAce) -> None:
    fake.script(stall(after_chunks=2))
    created = wire.chat({"prompt": "Never finished"})["result"]
    assert created["resultType"] == "task"
    assert wire.call("tasks/cancel", {"taskId": created["taskId"]})["result"]["resultType"] == "complete"
    record = fake.wait_for_close(0, timeout=10)
    assert record.client_closed, "the server did not hang up on the upstream after the cancel"
    assert wire.until_done(created["taskId"])["status"] == "cancelled"
    assert wire.get("task_" + "x" * 20)["error"]["code"] == -32602

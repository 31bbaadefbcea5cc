"""What a newcomer met on the command line, each now right: the placeholder token counts as not
set and a real token in a host's file is kept, doctor opens the store for real, chat speaks of
flags and shows a status while a model thinks, the HTTP server refuses a taken port in one line,
and SIGTERM stops a stdio server in bounded time with the store closed.
"""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kimi_mcp.cli.chat import TerminalStream, command_words
from kimi_mcp.cli.term import Painter
from kimi_mcp.upstream import StreamAccumulator
from tests.cli.helpers import ROOT, Cli, check_lines, cli_env, run_cli
from tests.support.fake_ace import FakeAce, reply

PLACEHOLDER = "<your-ace-token>"


def test_config_write_keeps_a_real_token_already_in_the_file(cli: Cli, tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "claude.json"
    path.write_text(json.dumps({"mcpServers": {"kimi": {"command": "old", "env": {
        "ACEDATACLOUD_API_TOKEN": "real-token-0123456789abcdef"}}}}))
    result = cli("config", "claude-desktop", "--write", "--config-path", str(path), env=env)
    assert result.returncode == 0, result.stderr
    entry = json.loads(path.read_text())["mcpServers"]["kimi"]
    assert entry["env"]["ACEDATACLOUD_API_TOKEN"] == "real-token-0123456789abcdef"
    assert entry["command"] != "old"  # the rest of the entry is updated
    assert "Kept the token" in result.stdout and "Replace <your-ace-token>" not in result.stdout
    # A placeholder already there is no token to keep.
    path.write_text(json.dumps({"mcpServers": {"kimi": {"env": {"ACEDATACLOUD_API_TOKEN": PLACEHOLDER}}}}))
    again = cli("config", "claude-desktop", "--write", "--config-path", str(path), env=env)
    assert "Replace <your-ace-token>" in again.stdout


def test_the_placeholder_counts_as_not_set(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    result = cli("doctor", env={**env, "ACEDATACLOUD_API_TOKEN": PLACEHOLDER})
    assert result.returncode == 1
    checks = {name: (verdict, detail) for verdict, name, detail in check_lines(result.stdout)}
    assert checks["token"][0] == "problem" and "placeholder" in checks["token"][1]
    assert [r for r in fake.requests if r.method == "POST"] == []  # no call without a token


@pytest.mark.parametrize("kind", ["corrupt", "future-version", "read-only"])
def test_doctor_opens_the_store(cli: Cli, env: dict[str, str], tmp_path: Path, kind: str) -> None:
    store = tmp_path / "store.sqlite3"
    if kind == "corrupt":
        store.write_bytes(b"this is not a database at all, just text " * 100)
        expected = "is not a SQLite database"
    elif kind == "future-version":
        with sqlite3.connect(store) as conn:
            conn.execute("PRAGMA user_version = 99")
        expected = "newer than this kimi-mcp understands"
    else:
        with sqlite3.connect(store) as conn:
            conn.execute("CREATE TABLE t (x)")
        store.chmod(0o400)
        if store.stat().st_mode and _writable_anyway(store):
            pytest.skip("this user ignores file permissions (root)")
        expected = "read-only"
    result = cli("doctor", "--no-call", env={**env, "KIMI_STORE": str(store)})
    checks = {name: (verdict, detail) for verdict, name, detail in check_lines(result.stdout)}
    assert checks["store"][0] == "problem", checks["store"]
    assert expected in checks["store"][1]
    assert result.returncode == 1


def _writable_anyway(path: Path) -> bool:
    try:
        with path.open("ab"):
            return True
    except OSError:
        return False


def test_doctor_creates_a_new_store_privately(cli: Cli, env: dict[str, str], tmp_path: Path) -> None:
    store = tmp_path / "fresh" / "c.sqlite3"
    result = cli("doctor", "--no-call", env={**env, "KIMI_STORE": str(store)})
    checks = {name: (verdict, detail) for verdict, name, detail in check_lines(result.stdout)}
    assert checks["store"][0] == "ok" and "(created)" in checks["store"][1]
    assert store.stat().st_mode & 0o777 == 0o600
    assert store.parent.stat().st_mode & 0o777 == 0o700


def test_chat_with_a_memory_store_does_not_offer_to_continue(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    fake.script(reply("Hi."))
    result = cli("chat", "hello", env={**env, "KIMI_STORE": "memory"})
    assert result.returncode == 0
    assert "continue with" not in result.stderr
    fake.script(reply("Hi."))
    stored = cli("chat", "hello", env=env)
    assert "continue with: kimi-mcp chat --conversation" in stored.stderr


def test_chat_exits_1_on_an_empty_answer_and_speaks_of_flags(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    fake.script(reply("", reasoning="thinking a lot", finish_reason="length"))
    result = cli("chat", "hello", env=env)
    assert result.returncode == 1
    assert result.stdout.strip() == ""
    assert "--max-tokens" in result.stderr and "max_tokens)" not in result.stderr
    assert command_words("leave conversation_id out") == "leave --conversation out"


def test_chat_shows_an_overwritten_thinking_status_on_a_terminal() -> None:
    out, err = io.StringIO(), io.StringIO()
    stream = TerminalStream(Painter(out, colour=False), Painter(err, colour=False), show_reasoning=False, status=True)
    acc = StreamAccumulator()

    async def feed(delta: str) -> None:
        acc.feed_line("data: " + json.dumps({"choices": [{"delta": json.loads(delta)}]}))
        acc.feed_line("")
        await stream.update(acc)

    import anyio

    async def run() -> None:
        await feed('{"reasoning_content": "hmm"}')
        await feed('{"reasoning_content": " more"}')
        await feed('{"content": "Answer."}')
        stream.finish()

    anyio.run(run)
    assert "\rthinking… 3 characters" in err.getvalue().replace("\x1b[2K", "")
    assert "thinking… 8 characters" in err.getvalue()
    assert err.getvalue().endswith("\r\x1b[2K")  # cleared before the answer
    assert out.getvalue() == "Answer.\n"
    quiet = TerminalStream(Painter(io.StringIO(), colour=False), Painter(io.StringIO(), colour=False),
                           show_reasoning=False)
    assert quiet.status_line is False  # not a terminal: no status line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_taken_port_is_one_line_and_a_failure(home: Path, fake: FakeAce) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cli_env(home, ACEDATACLOUD_API_TOKEN=fake.token, KIMI_STORE="memory")
        result = run_cli("--transport", "streamable-http", "--port", str(port), env=env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"kimi-mcp: cannot listen on 127.0.0.1:{port}")
    assert "serving" not in result.stderr


def test_sigterm_stops_stdio_in_bounded_time_and_closes_the_store(home: Path, fake: FakeAce, tmp_path: Path) -> None:
    store = tmp_path / "c.sqlite3"
    env = cli_env(home, ACEDATACLOUD_API_TOKEN=fake.token, ACEDATACLOUD_API_BASE_URL=fake.base_url,
                  KIMI_STORE=str(store))
    fake.script(reply("stored answer"), reply("never finishes", delay=60))
    proc = subprocess.Popen([sys.executable, "-m", "kimi_mcp"], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def send(message: dict[str, object]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()

    def answer(wanted: int) -> dict[str, object]:
        assert proc.stdout is not None
        while True:
            message = json.loads(proc.stdout.readline())
            if message.get("id") == wanted:
                return message

    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        answer(1)
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "kimi_chat", "arguments": {"prompt": "first"}}})
        assert answer(2)["result"]
        send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "kimi_chat", "arguments": {"prompt": "slow"}}})
        fake.wait_for_requests(2, timeout=10)
        started = time.monotonic()
        proc.terminate()
        proc.wait(timeout=20)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < 15, took  # bounded: not KIMI_REQUEST_TIMEOUT (900 s)
    assert "stopping on SIGTERM" in (proc.stderr.read() if proc.stderr else "")
    assert not Path(f"{store}-wal").exists() or Path(f"{store}-wal").stat().st_size == 0  # checkpointed on close
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*) FROM turns").fetchone()[0] == 2  # the finished exchange, kept
    assert fake.wait_for_close(-1, timeout=5).client_closed  # the upstream request was cancelled


def test_an_oversized_stdio_request_is_refused_and_the_server_keeps_serving(home: Path, fake: FakeAce) -> None:
    env = cli_env(home, ACEDATACLOUD_API_TOKEN=fake.token, ACEDATACLOUD_API_BASE_URL=fake.base_url,
                  KIMI_STORE="memory", KIMI_MAX_REQUEST_BYTES="65536")
    huge = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": "kimi_chat", "arguments": {"prompt": "x" * 1_000_000}}})
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    ping = json.dumps({"jsonrpc": "2.0", "id": 8, "method": "ping"})
    initialized = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    proc = subprocess.Popen([sys.executable, "-m", "kimi_mcp"], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    answers: dict[object, dict[str, object]] = {}
    try:
        proc.stdin.write("\n".join([init, initialized, huge, ping]) + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while 8 not in answers and time.monotonic() < deadline:  # keep stdin open until answered
            line = proc.stdout.readline()
            if not line:
                break
            message = json.loads(line)
            answers[message.get("id")] = message
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
    stderr = proc.stderr.read()
    assert answers[7]["error"]["data"] == "kimi-mcp/request-too-large"  # type: ignore[index]  # answered at once
    assert answers[8]["result"] == {}
    assert fake.requests == []
    assert "larger than 65536 bytes" in stderr

"""Helpers for the command-line tests: a clean environment, running the CLI as a subprocess, and
reading doctor's report."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.fake_ace import FakeAce

ROOT = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).parent / ("kimi-mcp.exe" if sys.platform == "win32" else "kimi-mcp"))
ESC = "\x1b["
CHECK_LINE = re.compile(r"^(ok|problem|skipped)\s+(\S+(?: URL)?)\s+(.*)$")
CID = re.compile(r"conversation: (\S+)")


def cli_env(home: Path, **settings: str) -> dict[str, str]:
    """A clean environment: only PATH, a temporary HOME and the given settings (no real tokens)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "PYTHONIOENCODING": "utf-8",
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
    }
    env.update(settings)
    return env


def run_cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_mcp", *args], env=env, input=stdin, capture_output=True, text=True,
        encoding="utf-8", timeout=60, cwd=ROOT, stdin=None if stdin is not None else subprocess.DEVNULL,
    )


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., Run]


def check_lines(output: str) -> list[tuple[str, str, str]]:
    """(verdict, check, detail) for every check line doctor printed."""
    found: list[tuple[str, str, str]] = []
    for line in output.splitlines():
        match = CHECK_LINE.match(line)
        if match:
            found.append((match.group(1), match.group(2), match.group(3)))
    return found


def chat_posts(fake: FakeAce) -> list[dict[str, object]]:
    return [r.json for r in fake.requests if r.method == "POST" and isinstance(r.json, dict)]


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]

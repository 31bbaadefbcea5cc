"""Connecting a real MCP client to kimi-mcp over every transport, against the loopback fake.

`connect(kind, fake, ...)` yields an `mcp.Client` talking to a fresh server: in memory, or a
real subprocess over stdio, Streamable HTTP or SSE. Subprocess stderr goes to a file the test
can read (to prove the token never shows up there).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx2
from mcp import Client
from mcp.client.session import ListRootsFnT
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from kimi_mcp.server import create_server
from kimi_mcp.settings import Settings
from tests.support.fake_ace import FakeAce

Kind = Literal["memory", "stdio", "http", "sse"]
Era = Literal["modern", "legacy"]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerLog:
    """Where a subprocess server's stderr went."""

    path: Path | None = None
    extra: list[str] = field(default_factory=list)

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path and self.path.exists() else ""


def server_env(fake: FakeAce, **overrides: str) -> dict[str, str]:
    """Environment for a server pointed at the fake, with a throwaway store."""
    env = {
        "ACEDATACLOUD_API_TOKEN": fake.token,
        "ACEDATACLOUD_API_BASE_URL": fake.base_url,
        "KIMI_STORE": "memory",
        "XDG_DATA_HOME": os.environ.get("XDG_DATA_HOME", ""),  # never the user's, even without KIMI_STORE
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v != ""}


def settings_for(fake: FakeAce, **overrides: str) -> Settings:
    """Settings for an in-process server, loaded through the same path as the CLI."""
    return Settings.load(server_env(fake, **overrides))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server did not listen on {port}")


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate, wait, and kill if it will not go."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def http_server(env: Mapping[str, str], transport: str, log: ServerLog, *args: str) -> Iterator[int]:
    """A `kimi-mcp --transport ...` subprocess on a free loopback port."""
    port = free_port()
    log.path = Path(tempfile.mkstemp(prefix="kimi-mcp-", suffix=".log")[1])
    with log.path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kimi_mcp", "--transport", transport, "--port", str(port), *args],
            env={**os.environ, **env}, stdout=err, stderr=err, cwd=ROOT,
        )
        try:
            wait_for_port(port, proc)
            yield port
        finally:
            stop_process(proc)


def spawn_http_server(env: Mapping[str, str], prefix: str = "kimi-mcp-") -> tuple[int, subprocess.Popen[bytes], Path]:
    """A Streamable HTTP `kimi-mcp` subprocess on a free port, listening, its output in a log file;
    the caller stops (or kills) it."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix=prefix, suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kimi_mcp", "--transport", "streamable-http", "--port", str(port)],
            env={**os.environ, **env}, stdout=out, stderr=out, cwd=ROOT,
        )
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop_process(proc)
        raise
    return port, proc, log


def client_mode(era: Era) -> Any:
    return "legacy" if era == "legacy" else "auto"


@asynccontextmanager
async def connect(
    kind: Kind,
    fake: FakeAce,
    *,
    era: Era = "modern",
    env: Mapping[str, str] | None = None,
    log: ServerLog | None = None,
    headers: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    list_roots: ListRootsFnT | None = None,
    cwd: Path | None = None,
) -> AsyncIterator[Client]:
    """A connected client on a fresh server of the given kind; `list_roots` makes the client declare
    the roots capability; `cwd` is a stdio server's working directory (default: the repository)."""
    env = server_env(fake, **(env or {}))
    log = log if log is not None else ServerLog()
    mode = client_mode(era)
    if kind == "memory":
        server = create_server(Settings.load(env))
        async with Client(server, mode=mode, list_roots_callback=list_roots) as client:
            yield client
    elif kind == "stdio":
        log.path = Path(tempfile.mkstemp(prefix="kimi-mcp-", suffix=".log")[1])
        params = StdioServerParameters(command=sys.executable, args=["-m", "kimi_mcp", *args],
                                       env=env, cwd=str(cwd or ROOT))
        with log.path.open("w") as errlog:
            from mcp.client.stdio import stdio_client

            async with Client(stdio_client(params, errlog=errlog), mode=mode, list_roots_callback=list_roots) as client:
                yield client
    elif kind == "http":
        with http_server(env, "streamable-http", log, *args) as port:
            url = f"http://127.0.0.1:{port}/mcp"
            async with (
                httpx2.AsyncClient(headers=dict(headers or {}), timeout=httpx2.Timeout(60)) as http,
                Client(streamable_http_client(url, http_client=http), mode=mode,
                       list_roots_callback=list_roots) as client,
            ):
                yield client
    else:
        with http_server(env, "sse", log, *args) as port:
            transport = sse_client(f"http://127.0.0.1:{port}/sse", headers=dict(headers or {}))
            async with Client(transport, mode=mode) as client:
                yield client

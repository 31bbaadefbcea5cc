"""The command line: --help, --version, the console script, start-up refusals, and a token-less start.

Refusals must be one line on stderr and exit code 2, with nothing on stdout (on stdio, stdout
belongs to the protocol) and no traceback.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from kimi_mcp import __version__
from kimi_mcp.catalogue import catalogue_for
from kimi_mcp.settings import OPTIONS, Settings, SettingsError
from tests.support.fake_ace import FakeAce
from tests.support.harness import ROOT, ServerLog, connect, free_port

TOKEN = "cli-test-token-7a6b5c4d3e2f1a0b"
SCRIPT = Path(sys.executable).parent / "kimi-mcp"


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any setting of ours, plus `extra`."""
    names = {o.env for o in OPTIONS}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update({"KIMI_STORE": "memory", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def run(*args: str, env: Mapping[str, str] | None = None, command: tuple[str, ...] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """`python -m kimi_mcp ARGS` with stdin closed (a stdio server would see EOF and exit)."""
    return subprocess.run(
        [*(command or (sys.executable, "-m", "kimi_mcp")), *args],
        env=dict(env if env is not None else clean_env()), cwd=ROOT, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=30,
    )


def test_help_lists_every_setting() -> None:
    done = run("--help")
    assert done.returncode == 0
    assert done.stderr == ""
    for option in OPTIONS:
        assert option.env in done.stdout, option.env
        assert option.flag in done.stdout, option.flag
    assert "--version" in done.stdout
    assert TOKEN not in done.stdout


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout == f"kimi-mcp {__version__}\n"
    assert done.stderr == ""


def test_console_script() -> None:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: is the package installed in the venv?"
    done = run("--version", command=(str(SCRIPT),))
    assert (done.returncode, done.stdout) == (0, f"kimi-mcp {__version__}\n")


@pytest.mark.parametrize(("env", "args", "names"), [
    ({"KIMI_REQUEST_TIMEOUT": "abc"}, (), "KIMI_REQUEST_TIMEOUT"),
    ({"ACEDATACLOUD_API_BASE_URL": "ftp://x"}, (), "ACEDATACLOUD_API_BASE_URL"),
    ({"KIMI_DEFAULT_MODEL": "nope"}, (), "KIMI_DEFAULT_MODEL"),
    ({"KIMI_PORT": "99999"}, (), "KIMI_PORT"),
    ({"LOG_LEVEL": "LOUD"}, (), "LOG_LEVEL"),
    ({"KIMI_TRANSPORT": "websocket"}, (), "KIMI_TRANSPORT"),
    ({"KIMI_REQUEST_TIMEOUT": "30"}, ("--request-timeout", "abc"), "--request-timeout"),
    ({}, ("--default-model", "gpt-4"), "KIMI_DEFAULT_MODEL"),
    ({}, ("--max-retries", "-1"), "--max-retries"),
], ids=lambda v: "-".join(v) if isinstance(v, tuple) else str(v))
def test_malformed_setting(env: dict[str, str], args: tuple[str, ...], names: str) -> None:
    done = run(*args, env=clean_env(ACEDATACLOUD_API_TOKEN=TOKEN, **env))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("kimi-mcp: invalid setting ")
    assert names in lines[0]
    assert "Traceback" not in done.stderr
    assert TOKEN not in done.stderr


def test_default_model_may_be_an_extra_model() -> None:
    """KIMI_DEFAULT_MODEL may name an id added through KIMI_EXTRA_MODELS (checked in process: cheap)."""
    catalogue_for(Settings.load({"KIMI_DEFAULT_MODEL": "kimi-k9", "KIMI_EXTRA_MODELS": "kimi-k9"}))
    with pytest.raises(SettingsError, match="KIMI_DEFAULT_MODEL"):
        catalogue_for(Settings.load({"KIMI_DEFAULT_MODEL": "kimi-k9"}))


@pytest.mark.anyio
async def test_starts_without_token(fake: FakeAce) -> None:
    """No token: the stdio server still starts, warns on stderr, and every call is an auth error."""
    log = ServerLog()
    async with connect("stdio", fake, env={"ACEDATACLOUD_API_TOKEN": ""}, log=log) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "kimi_chat" in tools
        result = await client.call_tool("kimi_chat", {"prompt": "hello"}, read_timeout_seconds=30)
    assert result.is_error is True
    error = result.structured_content["error"]
    assert (error["kind"], error["status"], error["retryable"]) == ("auth", None, False)
    assert "ACEDATACLOUD_API_TOKEN" in error["hint"]
    assert "ACEDATACLOUD_API_TOKEN" in result.content[0].text
    assert fake.requests == []
    assert "ACEDATACLOUD_API_TOKEN is not set" in log.text()
    assert "'api_token': 'not set'" in log.text()


EXPOSED: list[tuple[dict[str, str], tuple[str, ...]]] = [
    ({}, ("--transport", "streamable-http", "--host", "0.0.0.0")),
    ({"KIMI_TRANSPORT": "sse", "KIMI_HOST": "0.0.0.0"}, ()),
]


@functools.cache
def run_exposed(case: int) -> subprocess.CompletedProcess[str]:
    """A non-loopback bind without client tokens: must be refused before anything listens.
    Each case runs once (a server start-up costs seconds); two tests read the outcome."""
    env, args = EXPOSED[case]
    return run(*args, "--port", str(free_port()), env=clean_env(ACEDATACLOUD_API_TOKEN=TOKEN, **env))


@pytest.mark.parametrize("case", range(len(EXPOSED)))
def test_exposed_bind_refused(case: int) -> None:
    done = run_exposed(case)
    assert done.returncode == 2
    assert done.stdout == ""
    last = done.stderr.splitlines()[-1]
    assert last.startswith("kimi-mcp: refusing to serve 0.0.0.0:")
    assert "KIMI_MCP_AUTH_TOKENS" in last
    assert "Traceback" not in done.stderr
    assert TOKEN not in done.stderr


@pytest.mark.parametrize("case", range(len(EXPOSED)))
def test_exposed_bind_refused_in_one_line(case: int) -> None:
    done = run_exposed(case)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_bad_client_token_refused() -> None:
    """A client token under 16 characters stops an HTTP start-up (it would be guessable)."""
    done = run("--transport", "streamable-http", "--port", str(free_port()),
               env=clean_env(KIMI_MCP_AUTH_TOKENS="alice:tiny1", ACEDATACLOUD_API_TOKEN=TOKEN))
    assert done.returncode == 2
    assert done.stdout == ""
    last = done.stderr.splitlines()[-1]
    assert last.startswith("kimi-mcp: invalid setting KIMI_MCP_AUTH_TOKENS")
    assert "tiny1" not in done.stderr
    assert "Traceback" not in done.stderr

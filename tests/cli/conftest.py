"""Fixtures for the command-line tests: a temporary HOME, an environment pointed at the fake, and
`cli(...)`, the command run in this process."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimi_mcp.cli import main
from kimi_mcp.settings import OPTIONS
from tests.cli.helpers import Cli, Run, cli_env
from tests.support.fake_ace import FakeAce


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """`cli(*argv, env=..., stdin=None)`: `kimi_mcp.cli.main` in this process, with exactly `env`'s
    settings in the environment; root logging is restored afterwards (chat sets it up)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*argv: str, env: dict[str, str], stdin: str | None = None) -> Run:
        for name in [o.env for o in OPTIONS] + ["NO_COLOR", "HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"]:
            monkeypatch.delenv(name, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    yield run
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def env(fake: FakeAce, home: Path) -> dict[str, str]:
    return cli_env(home, ACEDATACLOUD_API_TOKEN=fake.token, ACEDATACLOUD_API_BASE_URL=fake.base_url,
                   KIMI_STORE=str(home / "conversations.sqlite3"))

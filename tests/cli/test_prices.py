"""KIMI_PRICES on the command line: `kimi-mcp serve` refuses an unusable table in one line (exit 2,
no traceback) before anything starts, and `kimi-mcp chat`'s last line shows the call's estimated
cost and, for a continued conversation, what it has cost so far."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.helpers import CID, Cli, cli_env, run_cli
from tests.support.fake_ace import FakeAce, reply

TOKEN = "sk-test-prices-0123456789"
VALID = {"as_of": "2026-12-01", "source": "mine",
         "models": {"kimi-k3": {"input_cache_miss": 1.0, "input_cache_hit": 0.5, "output": 2.0}}}


@pytest.mark.parametrize(("content", "complaint"), [
    (None, "cannot read"),
    ("{not json", "is not valid JSON"),
    (json.dumps({**VALID, "models": {"kimi-k3": {"input_cache_miss": -1, "input_cache_hit": 0, "output": 0}}}),
     "models['kimi-k3'].input_cache_miss must be a non-negative number"),
    (json.dumps({"models": {}}), "'as_of' must be a non-empty string"),
], ids=["missing", "not-json", "negative-price", "no-date"])
def test_serve_refuses_an_unusable_price_table_in_one_line(tmp_path: Path, content: str | None,
                                                           complaint: str) -> None:
    path = tmp_path / "prices.json"
    if content is not None:
        path.write_text(content)
    done = run_cli("serve", env=cli_env(tmp_path, ACEDATACLOUD_API_TOKEN=TOKEN, KIMI_STORE="memory",
                                        KIMI_PRICES=str(path)))
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("kimi-mcp: invalid setting KIMI_PRICES: ")
    assert f"'{path}'" in done.stderr and complaint in done.stderr
    assert "Traceback" not in done.stderr and TOKEN not in done.stderr


def test_the_prices_flag_is_read_too(tmp_path: Path) -> None:
    done = run_cli("serve", "--prices", str(tmp_path / "nowhere.json"),
                   env=cli_env(tmp_path, ACEDATACLOUD_API_TOKEN=TOKEN, KIMI_STORE="memory"))
    assert done.returncode == 2 and "invalid setting KIMI_PRICES: " in done.stderr and "cannot read" in done.stderr


def test_chat_shows_the_estimated_cost_and_the_conversations_total(
    cli: Cli, fake: FakeAce, env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(VALID))
    env = {**env, "KIMI_PRICES": str(path)}
    usage = {"prompt_tokens": 100_000, "completion_tokens": 10_000, "total_tokens": 110_000}
    fake.script(reply(usage=usage), reply(usage=usage))
    first = cli("chat", "--model", "kimi-k3", "hello", env=env)
    assert first.returncode == 0, first.stderr
    last = first.stderr.splitlines()[-1]
    assert "kimi-k3, 110000 tokens, ~$0.1200 estimated" in last  # 0.1M * $1 + 0.01M * $2
    match = CID.search(last)
    assert match is not None
    second = cli("chat", "--conversation", match.group(1), "again", env=env)
    assert second.returncode == 0, second.stderr
    assert "~$0.1200 estimated; conversation so far 220000 tokens, ~$0.2400 estimated" in second.stderr
    fake.script(reply(usage=usage))
    unpriced = cli("chat", "--model", "kimi-k2.5", "hi", env=env)  # not in this table
    assert re.search(r"110000 tokens, cost unknown \(no price for the model\)", unpriced.stderr)

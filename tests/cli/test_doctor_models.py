"""`kimi-mcp doctor` and the model line-up: it calls the configured default model itself (so a model
the upstream retired is found before a host meets it), cheaply, and says clearly when it is gone."""

from __future__ import annotations

import pytest

from tests.cli.helpers import Cli, chat_posts, check_lines
from tests.support.fake_ace import FakeAce
from tests.support.models import DEFAULT_ID


def test_doctor_calls_the_default_model_cheaply(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    result = cli("doctor", env=env)
    assert result.returncode == 0, result.stdout
    post = chat_posts(fake)[-1]
    assert post["model"] == DEFAULT_ID
    assert post["reasoning_effort"] == "low" and post["max_tokens"] == 512


@pytest.mark.parametrize("model", ["kimi-k2.5", "kimi-k3"])
def test_doctor_says_when_the_default_model_is_gone(cli: Cli, fake: FakeAce, env: dict[str, str],
                                                    model: str) -> None:
    fake.retired = {model}
    result = cli("doctor", env={**env, "KIMI_DEFAULT_MODEL": model})
    assert result.returncode == 1
    verdict, name, detail = check_lines(result.stdout)[-1]
    assert (verdict, name) == ("problem", "call")
    assert f"the default model {model} is gone" in detail
    assert "KIMI_DEFAULT_MODEL" in result.stdout
    others = [m for m in ("kimi-k3", "kimi-k3.1-pro", "kimi-k2.6") if m != model]
    assert all(m in result.stdout for m in others)
    assert [p["model"] for p in chat_posts(fake)] == [model]  # asked once, not retried, no other model


def test_doctor_with_another_model_that_is_gone(cli: Cli, fake: FakeAce, env: dict[str, str]) -> None:
    fake.retired = {"kimi-k2-thinking"}
    result = cli("doctor", "--model", "kimi-k2-thinking", env=env)
    assert result.returncode == 1
    assert "the model kimi-k2-thinking is gone" in check_lines(result.stdout)[-1][2]

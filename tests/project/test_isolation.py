"""The suite never touches the user's real data directory: the default store points elsewhere."""

from pathlib import Path

from kimi_mcp.store import default_store_path
from tests.conftest import TEST_DATA_HOME
from tests.support.fake_ace import FakeAce
from tests.support.harness import server_env


def test_the_default_store_is_a_throwaway_directory() -> None:
    assert default_store_path().is_relative_to(Path(TEST_DATA_HOME))
    assert not default_store_path().is_relative_to(Path.home() / ".local" / "share")


def test_subprocess_servers_get_the_same_directory(fake: FakeAce) -> None:
    env = server_env(fake)
    assert env["XDG_DATA_HOME"] == TEST_DATA_HOME and env["KIMI_STORE"] == "memory"

"""Fixtures shared by the whole suite: the anyio backend, the loopback fake of the Ace API, and a
real PostgreSQL (`tests/support/postgres.py`) for the store and replica tests.

`fake` is one `FakeAce` per test module (starting one costs a thread and a port, and the
module-scoped servers built on it outlive single tests). Every test that uses it, directly or
through another fixture, starts and ends with an empty script, no recorded requests and no
latency, so tests in a module never see each other's traffic.
"""

import os
import tempfile
from collections.abc import Iterator

import pytest

from tests.support.fake_ace import FakeAce
from tests.support.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]  # a real PostgreSQL, started only for tests that ask

# No test may touch the user's real data directory: the default store of every in-process server
# (and of subprocesses given this environment) lands in a throwaway directory instead.
TEST_DATA_HOME = tempfile.mkdtemp(prefix="kimi-mcp-test-data-")
os.environ["XDG_DATA_HOME"] = TEST_DATA_HOME


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Session-scoped, so async fixtures of any scope can use it."""
    return "asyncio"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAce]:
    """The loopback fake of the Ace API, shared by the module's tests (and its module-scoped servers)."""
    with FakeAce() as server:
        yield server


def _clear(fake: FakeAce) -> None:
    fake.reset()
    fake.latency = 0.0


@pytest.fixture(autouse=True)
def _fresh_fake(request: pytest.FixtureRequest) -> Iterator[None]:
    """Reset the fake around every test that uses it; tests that do not are left alone (no fake
    is started for them)."""
    if "fake" not in request.fixturenames:
        yield
        return
    fake: FakeAce = request.getfixturevalue("fake")
    _clear(fake)
    yield
    _clear(fake)

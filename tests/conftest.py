"""Shared fixtures: the anyio backend for async tests (session-scoped so async fixtures of any
scope can use it)."""

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"

"""Servers shared by the MCP tests of streaming, progress and thinking (each module gets its own).

Retries stay ON in these servers (`KIMI_MAX_RETRIES=2`) on purpose: the cut-stream and
cancellation tests count the fake's requests to prove that no retry follows a partial answer or
a cancel. `KIMI_EXTRA_MODELS` adds a model the catalogue does not know.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.fake_ace import FakeAce
from tests.support.harness import ServerLog, client_mode, connect, http_server, server_env

ENV = {"KIMI_MAX_RETRIES": "2", "KIMI_EXTRA_MODELS": "kimi-next-preview"}
REMOTES = [("stdio", "modern"), ("http", "modern"), ("http", "legacy")]


@pytest.fixture(scope="module")
def http_port(fake: FakeAce) -> Iterator[int]:
    """One Streamable HTTP subprocess for the module; it answers both eras, so both clients share it."""
    with http_server(server_env(fake, **ENV), "streamable-http", ServerLog()) as port:
        yield port


@pytest.fixture(scope="module", params=REMOTES, ids=[f"{k}-{e}" for k, e in REMOTES])
async def remote(request: pytest.FixtureRequest, fake: FakeAce) -> AsyncIterator[Client]:
    """A client of a subprocess server (shared by the module's tests); its calls carry progress tokens."""
    kind, era = request.param
    if kind == "stdio":
        async with connect(kind, fake, era=era, env=ENV) as client:
            yield client
        return
    url = f"http://127.0.0.1:{request.getfixturevalue('http_port')}/mcp"
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(60)) as http,
        Client(streamable_http_client(url, http_client=http), mode=client_mode(era)) as client,
    ):
        yield client


@pytest.fixture(scope="module")
async def memory(fake: FakeAce) -> AsyncIterator[Client]:
    """An in-process server, for what does not depend on the transport."""
    async with connect("memory", fake, env=ENV) as client:
        yield client


@pytest.fixture(scope="module")
async def memory_legacy(fake: FakeAce) -> AsyncIterator[Client]:
    """In process, legacy era: the one in-memory combination whose calls carry a progress token."""
    async with connect("memory", fake, era="legacy", env=ENV) as client:
        yield client

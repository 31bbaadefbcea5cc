"""The benchmark command runs end to end (`python -m benchmarks.run --quick`, from the repository
root), and upstream connections are reused across calls, plain and streamed.

No timing is asserted anywhere: the quick run only proves every phase starts its servers, makes its
calls and prints its rows; the real figures come from the full run (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fake_ace import FakeAce, reply
from tests.support.harness import connect

ROOT = Path(__file__).resolve().parents[2]
FIGURES = (
    "Per-call overhead over the SDK floor, stdio",
    "Per-call overhead over the SDK floor, Streamable HTTP",
    "concurrent calls at 200 ms upstream, stdio: wall",
    "concurrent calls at 200 ms upstream, Streamable HTTP: wall",
    "Upstream chunk -> progress notification, stdio",
    "Upstream chunk -> progress notification, Streamable HTTP",
    "Start-up to first tools/list, stdio",
    "HTTP-only modules imported on stdio",
    "Resident memory after",
    "Call cost at",
)


@pytest.fixture(scope="module")
def quick_run() -> subprocess.CompletedProcess[str]:
    """One `--quick` run shared by the assertions below (it starts about a dozen servers)."""
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=110, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def table_rows(markdown: str) -> list[list[str]]:
    """The headline table's data rows, split into cells."""
    lines = markdown.splitlines()
    start = lines.index("| figure | ours | baseline | difference | target | met? |")
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_quick_run_exits_cleanly(quick_run: subprocess.CompletedProcess[str]) -> None:
    assert quick_run.returncode == 0, quick_run.stderr[-4000:]
    assert "Traceback" not in quick_run.stderr


def test_quick_run_prints_every_figure_with_a_verdict(quick_run: subprocess.CompletedProcess[str]) -> None:
    rows = table_rows(quick_run.stdout)
    for figure in FIGURES:
        matching = [row for row in rows if figure in row[0]]
        assert matching, f"no row for {figure!r} in:\n{quick_run.stdout}"
        for row in matching:
            assert len(row) == 6, row
            assert row[5] in ("yes", "**no**", "n/a"), row
            assert "nan" not in " ".join(row[1:3]), row  # every figure was actually measured


def test_quick_run_names_the_machine_and_versions(quick_run: subprocess.CompletedProcess[str]) -> None:
    out = quick_run.stdout
    assert "## Machine" in out
    assert "- CPU: " in out
    assert "Python 3." in out
    assert "mcp 2." in out


def test_quick_run_matches_every_streamed_chunk(quick_run: subprocess.CompletedProcess[str]) -> None:
    """Each scripted chunk produced a progress notification the suite could time (3 of 3 per transport)."""
    streaming = [line for line in quick_run.stdout.splitlines() if line.startswith(("| stdio |", "| Streamable HTTP |"))
                 and " of " in line]
    assert len(streaming) == 2, quick_run.stdout
    assert all(line.rstrip(" |").endswith("3 of 3") for line in streaming), streaming


def test_unknown_phase_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--only", "nonsense"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown phase(s): nonsense" in done.stderr


# --------------------------------------------------------------------------- connection reuse


class CountingFake(FakeAce):
    """The fake, counting the TCP connections our client opens to it."""

    connections = 0

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await super()._on_connect(reader, writer)


@pytest.mark.anyio
async def test_plain_calls_reuse_one_upstream_connection() -> None:
    """Control for the test below: kimi_json without a progress token is not streamed, and its
    five calls share one pooled connection."""
    fake = CountingFake()
    with fake:
        fake.set_default(reply('{"ok": true}'))
        async with connect("memory", fake) as client:
            for _ in range(5):
                result = await client.call_tool("kimi_json", {"prompt": "Give JSON."})
                assert not result.is_error, result.content
        assert len(fake.requests) == 5
        assert all(not r.wants_stream for r in fake.requests)
        assert fake.connections == 1


@pytest.mark.anyio
async def test_streamed_calls_reuse_one_upstream_connection() -> None:
    """kimi_chat always streams; its calls should share the pooled connection like plain calls do."""
    fake = CountingFake()
    with fake:
        async with connect("memory", fake) as client:
            for _ in range(5):
                result = await client.call_tool("kimi_chat", {"prompt": "Say hello."})
                assert not result.is_error, result.content
        assert len(fake.requests) == 5
        assert all(r.wants_stream for r in fake.requests)
        assert fake.connections == 1

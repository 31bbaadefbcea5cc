"""`pip install .` builds a wheel a PyPI page shows well: README as description, classifiers,
project URLs, the console script and `py.typed`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from kimi_mcp import __version__

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (built,) = out.glob("kimi_mcp-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_metadata(wheel: zipfile.ZipFile) -> None:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(wheel.read(name).decode())
    assert meta["Name"] == "kimi-mcp"
    assert meta["Version"] == __version__
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "mcp-name: io.github.kimi-mcp/kimi-mcp" in meta.get_payload()
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert meta["License-Expression"] == "MIT"
    assert any(n.endswith("licenses/LICENSE") for n in wheel.namelist())
    urls = meta.get_all("Project-URL") or []
    assert {u.split(",")[0] for u in urls} >= {"Homepage", "Source", "Issues", "Changelog"}
    requires = meta.get_all("Requires-Dist") or []
    assert {r.split(">")[0].split("<")[0].split("=")[0].strip() for r in requires if "extra" not in r} == {
        "mcp", "httpx2", "pydantic", "anyio", "jsonschema"}


def test_wheel_contents(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "kimi_mcp/py.typed" in names
    assert "kimi_mcp/prices.json" in names  # the built-in price table is package data
    assert "kimi_mcp/store/sqlite.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "kimi-mcp = kimi_mcp.cli:main" in wheel.read(entry).decode()

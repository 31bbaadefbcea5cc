"""The README stays in step with the code: every setting and every tool is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimi_mcp.server import create_server
from kimi_mcp.settings import OPTIONS, Option, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.env)
def test_every_setting_is_in_the_configuration_table(option: Option) -> None:
    assert f"| `{option.env}` | `{option.flag}` |" in README


@pytest.mark.anyio
async def test_every_tool_is_documented() -> None:
    tools = await create_server(Settings()).list_tools()
    assert tools
    for tool in tools:
        assert f"`{tool.name}`" in README, tool.name

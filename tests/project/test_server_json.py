"""server.json follows the MCP registry's published rules and stays in step with the package.

The rules below are those of the registry's server.schema.json (2025-12-11): field patterns,
lengths and required fields, written out here because tests never reach the network.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from kimi_mcp import __version__
from kimi_mcp.settings import OPTIONS

ROOT = Path(__file__).resolve().parents[2]
SERVER_JSON = json.loads((ROOT / "server.json").read_text())

_INPUT = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "isRequired": {"type": "boolean"},
        "isSecret": {"type": "boolean"},
        "default": {"type": "string"},
        "placeholder": {"type": "string"},
        "format": {"enum": ["string", "number", "boolean", "filepath"]},
        "value": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "string"}},
    },
}
REGISTRY_RULES: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["name", "description", "version"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "name": {"type": "string", "pattern": r"^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$", "minLength": 3, "maxLength": 200},
        "description": {"type": "string", "minLength": 1, "maxLength": 100},
        "version": {"type": "string", "maxLength": 255, "not": {"pattern": r"^[\^~<>=]|\.x$|\*"}},
        "websiteUrl": {"type": "string", "format": "uri"},
        "repository": {
            "type": "object",
            "required": ["url", "source"],
            "properties": {"url": {"type": "string"}, "source": {"type": "string"}},
        },
        "packages": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["registryType", "identifier", "version", "transport"],
                "properties": {
                    "registryType": {"type": "string"},
                    "registryBaseUrl": {"type": "string", "format": "uri"},
                    "identifier": {"type": "string"},
                    "version": {"type": "string", "minLength": 1, "not": {"const": "latest"}},
                    "runtimeHint": {"type": "string"},
                    "transport": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"enum": ["stdio", "streamable-http", "sse"]}},
                    },
                    "environmentVariables": {"type": "array", "items": _INPUT},
                },
            },
        },
    },
}


def test_server_json_follows_the_registry_rules() -> None:
    jsonschema.Draft7Validator(REGISTRY_RULES).validate(SERVER_JSON)
    assert SERVER_JSON["$schema"].endswith("/2025-12-11/server.schema.json")


@pytest.mark.parametrize("bad", [
    {"name": "no-slash"},
    {"description": "x" * 101},
    {"version": "^1.0.0"},
])
def test_the_rules_reject_what_the_registry_rejects(bad: dict[str, str]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(REGISTRY_RULES).validate({**SERVER_JSON, **bad})


def test_name_is_a_github_namespace_and_readme_carries_it() -> None:
    name = SERVER_JSON["name"]
    assert re.fullmatch(r"io\.github\.[A-Za-z0-9-]+/kimi-mcp", name)
    assert f"mcp-name: {name}" in (ROOT / "README.md").read_text()


def test_versions_match_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == SERVER_JSON["packages"][0]["identifier"] == "kimi-mcp"
    assert SERVER_JSON["version"] == __version__
    assert SERVER_JSON["packages"][0]["version"] == __version__


def test_package_is_pypi_uvx_stdio() -> None:
    package = SERVER_JSON["packages"][0]
    assert package["registryType"] == "pypi"
    assert package["runtimeHint"] == "uvx"
    assert package["transport"] == {"type": "stdio"}


def test_environment_variables_equal_the_settings() -> None:
    declared = {v["name"]: v for v in SERVER_JSON["packages"][0]["environmentVariables"]}
    assert list(declared) == [o.env for o in OPTIONS]
    for option in OPTIONS:
        variable = declared[option.env]
        assert variable["isSecret"] is option.secret, option.env
        assert variable.get("default", "") == option.default, option.env
        assert variable["description"] == option.help, option.env
    token = declared["ACEDATACLOUD_API_TOKEN"]
    assert token["isRequired"] is True and token["isSecret"] is True
    assert [n for n, v in declared.items() if v["isRequired"]] == ["ACEDATACLOUD_API_TOKEN"]

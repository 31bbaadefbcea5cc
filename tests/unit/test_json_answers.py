"""JSON answers without MCP: a reply read as JSON (`kimi_mcp.chat.json_answers`: whitespace and
Markdown fences tolerated, prose refused), and a caller's `schema` argument accepted or refused
by the pure checks of `kimi_mcp.chat.schemas` (the worker process that runs them for the server
is tested in test_schemas.py)."""

from __future__ import annotations

from typing import Any

import pytest

from kimi_mcp.chat.json_answers import parse_json_reply
from kimi_mcp.chat.schemas import check, mismatch, parse_schema_arg
from kimi_mcp.errors import InvalidArguments


class TestJsonMode:
    @pytest.mark.parametrize(("text", "value"), [
        ('{"a": 1}', {"a": 1}),
        ('  \n {"a": [1, 2]}\n\t ', {"a": [1, 2]}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('\n```json\n{"a": 1}\n```\n', {"a": 1}),
        ("```\n[1, 2]\n```", [1, 2]),
        ('```JSON {"b": true}```', {"b": True}),
        ("42", 42),
    ])
    def test_parse(self, text: str, value: Any) -> None:
        assert parse_json_reply(text) == value

    @pytest.mark.parametrize("text", ["", "Sure! Here it is: {\"a\": 1}", "```json\n{\"a\": \n```", "{'a': 1}"])
    def test_parse_refuses(self, text: str) -> None:
        with pytest.raises(ValueError):
            parse_json_reply(text)

    def test_check_schema(self) -> None:
        assert parse_schema_arg(None) is None
        schema = {"type": "object", "required": ["a"]}
        assert check(schema) is None
        assert mismatch(schema, {"a": 1}) == (True, None)
        usable, problem = mismatch(schema, {})
        assert usable and problem is not None

    @pytest.mark.parametrize("schema", [{"type": "nope"}, {"required": "a"}, "object", [1]])
    def test_invalid_schema(self, schema: Any) -> None:
        """A schema that is not one: refused, naming the schema (an object by the check, anything
        else already as an argument)."""
        if isinstance(schema, dict):
            problem = check(schema)
            assert problem is not None and "schema" in problem
        else:
            with pytest.raises(InvalidArguments, match="schema"):
                parse_schema_arg(schema)

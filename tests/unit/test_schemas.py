"""A caller's JSON Schema: accepted as an object or a JSON string, held to static limits, and
checked and applied in a worker process within a deadline, so a hostile schema (exponential
`anyOf`/`$ref` nesting, a catastrophic `pattern`) never blocks the event loop or other callers.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from kimi_mcp.chat.schemas import (
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    SchemaChecker,
    check,
    mismatch,
    parse_schema_arg,
    precheck,
)
from kimi_mcp.errors import InvalidArguments

CATASTROPHIC = {"type": "string", "pattern": "^(a|a)*$"}
CATASTROPHIC_VALUE = "a" * 40 + "b"


def nested_any_of(levels: int) -> dict[str, Any]:
    """Each level doubles the branches validation walks while the schema grows by a line (the attack:
    15 levels, ~1 KB)."""
    defs: dict[str, Any] = {"d0": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}}
    for i in range(1, levels + 1):
        ref = {"$ref": f"#/$defs/d{i - 1}"}
        defs[f"d{i}"] = {"anyOf": [ref, {"allOf": [ref]}]}
    return {"$defs": defs, "$ref": f"#/$defs/d{levels}"}


def test_the_schema_argument_may_be_a_json_string() -> None:
    assert parse_schema_arg('{"type": "object"}') == {"type": "object"}
    assert parse_schema_arg({"type": "array"}) == {"type": "array"}
    assert parse_schema_arg(None) is None and parse_schema_arg("  ") is None
    with pytest.raises(InvalidArguments, match="not valid JSON"):
        parse_schema_arg("{nope")
    with pytest.raises(InvalidArguments, match="JSON Schema object"):
        parse_schema_arg("[1, 2]")


def test_static_limits() -> None:
    assert precheck({"type": "object"}) == '{"type":"object"}'
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH):
        deep = {"items": deep}
    with pytest.raises(InvalidArguments, match="nested deeper"):
        precheck(deep)
    with pytest.raises(InvalidArguments, match="larger than"):
        precheck({"enum": ["x" * 1000] * (MAX_SCHEMA_BYTES // 1000 + 1)})
    with pytest.raises(InvalidArguments, match="more than"):
        precheck({"enum": list(range(6000))})


def test_the_pure_checks() -> None:
    assert check({"type": "object"}) is None
    assert "not a valid JSON Schema" in (check({"type": "nonsense"}) or "")
    assert "cannot be used" in (check({"$ref": "https://example.invalid/schema.json"}) or "")
    assert mismatch({"type": "object", "required": ["a"]}, {"b": 1}) == (
        True, "does not match the schema at (root) ('a' is a required property)")
    assert mismatch({"type": "integer"}, 3) == (True, None)


@pytest.mark.anyio
async def test_a_worker_checks_and_applies_schemas() -> None:
    checker = SchemaChecker(deadline_s=10)
    try:
        await checker.check(precheck({"type": "object", "required": ["a"]}))
        assert await checker.mismatch(precheck({"type": "object", "required": ["a"]}), {"a": 1}) is None
        problem = await checker.mismatch(precheck({"properties": {"n": {"type": "integer"}}}), {"n": "x"})
        assert problem is not None and "at n" in problem
        with pytest.raises(InvalidArguments, match="not a valid JSON Schema"):
            await checker.check(precheck({"type": 12}))
    finally:
        await checker.close()


@pytest.mark.anyio
@pytest.mark.parametrize(("schema", "value"), [(CATASTROPHIC, CATASTROPHIC_VALUE), (nested_any_of(22), "x")],
                         ids=["catastrophic-pattern", "nested-anyOf"])
async def test_a_hostile_schema_is_refused_in_bounded_time_without_blocking_the_loop(
    schema: dict[str, Any], value: Any
) -> None:
    checker = SchemaChecker(deadline_s=1.0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.05)
            ticks += 1

    try:
        await checker.check(precheck({"type": "object"}))  # the worker is warm: time only the attack
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            with pytest.raises(InvalidArguments, match="too costly"):
                await checker.mismatch(precheck(schema), value)
            tg.cancel_scope.cancel()
        took = time.monotonic() - started
        assert took < 10, took  # generous: the deadline is 1 s
        assert ticks >= 5  # the event loop kept running other work meanwhile
        # The killed worker is replaced: the next call works.
        assert await checker.mismatch(precheck({"type": "integer"}), 3) is None
    finally:
        await checker.close()

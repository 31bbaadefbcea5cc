"""Property-based fuzzing at the MCP boundary: any JSON in any argument gets a clean answer.

One in-memory server (and one fake upstream) serves the whole module; hypothesis drives it from
sync tests through a blocking portal. The property: every call ends in a result or a clean error
result (`is_error`, one line, `structuredContent.error.kind` in the known set and not `internal`),
never a protocol error or the SDK's bare "Error executing tool"; and the server answers afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client, MCPError
from mcp_types import CallToolResult

from kimi_mcp.catalogue import CATALOGUE
from tests.support.fake_ace import DEFAULT_CONTENT, FakeAce
from tests.support.harness import connect

KNOWN_KINDS = {
    "invalid_arguments", "auth", "insufficient_balance", "forbidden", "rate_limited", "upstream", "timeout",
    "bad_request", "not_found", "network", "invalid_response", "invalid_json", "storage", "cancelled", "internal",
}
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MODEL_IDS = [m.id for m in CATALOGUE]
CHAT_PARAMS = ("prompt", "system", "messages", "model", "max_tokens", "temperature", "top_p", "stop", "thinking")


@dataclass
class Served:
    fake: FakeAce
    portal: BlockingPortal
    client: Client
    conversation_id: str

    def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        result: CallToolResult = self.portal.call(lambda: self.client.call_tool(tool, arguments))
        return result


@pytest.fixture(scope="module")
def served(fake: FakeAce) -> Iterator[Served]:
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(connect("memory", fake)) as client,
    ):
        seeded = portal.call(lambda: client.call_tool("kimi_chat", {"prompt": "a conversation to aim at"}))
        assert seeded.structured_content is not None
        yield Served(fake, portal, client, seeded.structured_content["conversation_id"])


# --------------------------------------------------------------------------- strategies


scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=24))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=60)
history_item = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "User", ""]) | json_values,
     "content": texts | json_values},
    optional={"name": json_values, "reasoning_content": json_values},
)
# JSON Schema keywords with odd values; `$ref`/`$schema` are left to the explicit cases below.
schema_keywords = ["type", "properties", "items", "required", "enum", "const", "minimum", "maximum", "minLength",
                   "maxLength", "pattern", "additionalProperties", "anyOf", "allOf", "oneOf", "not", "format",
                   "$defs", "prefixItems", "minItems", "uniqueItems", "multipleOf", "title"]
type_names = st.sampled_from(["object", "string", "integer", "number", "array", "boolean", "null", "thing"])
schemas = st.recursive(
    st.dictionaries(st.sampled_from(schema_keywords), type_names | scalars, max_size=3),
    lambda children: st.dictionaries(
        st.sampled_from(schema_keywords),
        children | type_names | st.lists(children | type_names, max_size=3)
        | st.dictionaries(st.text(max_size=6), children, max_size=3),
        max_size=4,
    ),
    max_leaves=8,
)


def chat_arguments(served: Served, wild: bool) -> dict[str, st.SearchStrategy[Any]]:
    """Each argument: plausible values (some out of range or unknown), or, when `wild`, any JSON at all."""
    ids = st.sampled_from([served.conversation_id, "", " ", "conv_nope", "x" * 250]) | texts
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "prompt": texts,
        "system": texts,
        "messages": st.lists(history_item, max_size=4),
        "model": st.sampled_from([*MODEL_IDS, "", " ", "gpt-4o", "KIMI-K2.5", "kimi-k2.5 "]),
        "max_tokens": st.integers(-5, 2_000_000),
        "temperature": st.floats(-1, 3, allow_nan=False),
        "top_p": st.floats(-1, 2, allow_nan=False),
        "stop": texts | st.lists(st.text(max_size=6), max_size=6),
        "thinking": st.sampled_from(["enabled", "disabled", "on", "ENABLED"]),
        "include_reasoning": st.booleans(),
        "conversation_id": ids,
        "resume": st.booleans(),
    }
    if not wild:
        plausible["messages"] = st.lists(
            st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": texts}),
            max_size=4,
        )
        return plausible
    return {name: values | json_values for name, values in plausible.items()}


def arguments(
    optional: dict[str, st.SearchStrategy[Any]], required: dict[str, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of the tool's arguments (plus the required ones) and a few random extra keys."""
    required = required or {}
    optional = {k: v for k, v in optional.items() if k not in required}
    known = set(optional) | set(required)
    extras = st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in known), json_values,
                             max_size=3)
    return st.tuples(st.fixed_dictionaries(required, optional=optional), extras).map(
        lambda pair: {**pair[1], **pair[0]})


def check(result: CallToolResult, tool: str) -> None:
    """The property: a clean result or a clean error result."""
    assert result.content, result
    text = getattr(result.content[0], "text", "")
    assert not text.startswith("Error executing tool"), text
    assert isinstance(result.structured_content, dict), result
    if result.is_error:
        error = result.structured_content["error"]
        assert error["kind"] in KNOWN_KINDS and error["kind"] != "internal", error
        assert isinstance(error["message"], str) and error["message"]
        heads = ("Kimi ", "Invalid arguments: ", "Conversation store error: ")
        assert "\n" not in text and text.startswith(heads), text
    elif tool in ("kimi_chat", "kimi_json"):
        assert result.structured_content["model"]
        if tool == "kimi_chat":
            assert result.structured_content["text"] == DEFAULT_CONTENT


def still_serving(served: Served) -> None:
    served.fake.reset()
    result = served.call("kimi_chat", {"prompt": "still there?", "conversation_id": served.conversation_id})
    assert not result.is_error, result.content
    assert served.fake.requests, "the health call reached the upstream"


# --------------------------------------------------------------------------- the properties


@pytest.mark.parametrize("wild", [True, False], ids=["any-json", "near-valid"])
def test_fuzz_kimi_chat(served: Served, wild: bool) -> None:
    """`near-valid` keeps the types right so calls get past schema validation into our own checks."""
    optional = chat_arguments(served, wild)
    required = {} if wild else {"prompt": st.text(min_size=1, max_size=60)}

    @FUZZ
    @given(arguments(optional, required))
    def run(args: dict[str, Any]) -> None:
        check(served.call("kimi_chat", args), "kimi_chat")

    run()
    still_serving(served)


@pytest.mark.parametrize("wild", [True, False], ids=["any-json", "near-valid"])
def test_fuzz_kimi_json(served: Served, wild: bool) -> None:
    optional = {k: v for k, v in chat_arguments(served, wild).items() if k in CHAT_PARAMS}
    optional["schema"] = schemas | json_values if wild else schemas
    required = {} if wild else {"prompt": st.text(min_size=1, max_size=60)}

    @FUZZ
    @given(arguments(optional, required))
    def run(args: dict[str, Any]) -> None:
        check(served.call("kimi_json", args), "kimi_json")

    run()
    still_serving(served)


@pytest.mark.parametrize("tool", ["kimi_list_conversations", "kimi_read_conversation", "kimi_delete_conversation"])
def test_fuzz_conversation_tools(served: Served, tool: str) -> None:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "limit": st.integers(-3, 1000) | json_values,
        "conversation_id": st.sampled_from(["conv_nope", "", "x" * 250]) | texts | json_values,
    }

    @settings(FUZZ, max_examples=40)
    @given(arguments(optional))
    def run(args: dict[str, Any]) -> None:
        if tool == "kimi_delete_conversation" and args.get("conversation_id") == served.conversation_id:
            return
        check(served.call(tool, args), tool)

    run()
    still_serving(served)


def test_fuzz_resources(served: Served) -> None:
    """Resource URIs with any id: contents or a protocol error for that read, and the session lives on."""

    @settings(FUZZ, max_examples=50)
    @given(st.sampled_from(["kimi://models/", "kimi://conversations/"]), st.text(max_size=40))
    def run(prefix: str, ident: str) -> None:
        try:
            read = served.portal.call(lambda: served.client.read_resource(prefix + ident))
        except MCPError as exc:
            assert "Traceback" not in str(exc)
            return
        assert read.contents
        json.loads(getattr(read.contents[0], "text", "") or "null")

    run()
    still_serving(served)


# --------------------------------------------------------------------------- broken schema references


@pytest.mark.parametrize("schema", [
    {"$ref": "#"},
    {"$ref": "no-such-schema"},
    {"properties": {"answer": {"$ref": "#/$defs/missing"}}},
    {"type": "object", "additionalProperties": {"$dynamicRef": "#nowhere"}},
    {"$schema": 5},
    {"$schema": []},
], ids=["self-ref", "unresolvable-ref", "dangling-pointer", "dangling-dynamic-ref", "int-schema-uri",
        "list-schema-uri"])
def test_bad_schema_references_are_invalid_arguments(served: Served, schema: dict[str, Any]) -> None:
    """A caller's broken schema is the caller's mistake (invalid_arguments), not a server bug (`internal`)."""
    result = served.call("kimi_json", {"prompt": "json please", "schema": schema})
    assert result.is_error and result.structured_content is not None
    assert result.structured_content["error"]["kind"] == "invalid_arguments"

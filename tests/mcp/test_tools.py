"""The tools and resources through a real in-memory MCP client, against the loopback fake: what is
listed (descriptions, input and output schemas, annotations, the model resources), what kimi_chat
and kimi_json send upstream for each argument and return, and how bad arguments are refused.

Each test asserts what the host's model gets back AND what the fake received on the wire. The
shared server runs with KIMI_MAX_RETRIES=0; tests that need other settings start their own
(in-memory servers are cheap). Upstream failures are in test_faults.py, sampling rules, thinking
and reasoning in test_thinking.py, progress in test_progress.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.mcp.helpers import assert_clean, error_of, ok, only_request, still_answers, text
from tests.support.fake_ace import FakeAce, ace_error, reply
from tests.support.harness import connect
from tests.support.models import ALL_IDS, DEFAULT_ID

pytestmark = pytest.mark.anyio

TOOLS = {"kimi_chat", "kimi_json", "kimi_list_conversations", "kimi_read_conversation", "kimi_delete_conversation"}
STREAM_OPTIONS = {"stream": True, "stream_options": {"include_usage": True}}
JSON_INSTRUCTION = "Answer with JSON only: one valid JSON value, no prose, no Markdown fences."
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


@pytest.fixture(scope="module")
async def client(fake: FakeAce) -> AsyncIterator[Client]:
    """One in-memory server for the module; no upstream retries."""
    async with connect("memory", fake, env={"KIMI_MAX_RETRIES": "0"}) as c:
        yield c


# ============================================================================ listing


async def test_tools_listed(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 40
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"
    chat = tools["kimi_chat"]
    assert "kimi://models" in (chat.description or "")
    props = chat.input_schema["properties"]
    assert set(props) == {"prompt", "system", "messages", "model", "max_tokens", "temperature", "top_p", "stop",
                          "thinking", "reasoning_effort", "include_reasoning", "conversation_id", "resume",
                          "answer_id", "files", "images", "store"}
    assert {"minimum": 0, "maximum": 2, "type": "number"}.items() <= props["temperature"]["anyOf"][0].items()
    assert {"minimum": 0, "maximum": 1, "type": "number"}.items() <= props["top_p"]["anyOf"][0].items()
    assert props["max_tokens"]["anyOf"][0]["minimum"] == 1
    assert props["thinking"]["anyOf"][0]["enum"] == ["enabled", "disabled"]
    assert props["reasoning_effort"]["anyOf"][0]["enum"] == ["low", "high", "max"]
    assert "reasoning_effort" in tools["kimi_json"].input_schema["properties"]
    assert chat.input_schema.get("required", []) == []
    assert "schema" in tools["kimi_json"].input_schema["properties"]


def _branches(schema: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(success, error) branches of an output schema that admits both result shapes."""
    assert schema is not None and schema["type"] == "object"
    success, error = schema["anyOf"]
    return success, error


async def test_output_schemas(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    chat_out, chat_error = _branches(tools["kimi_chat"].output_schema)
    json_out, json_error = _branches(tools["kimi_json"].output_schema)
    assert {"text", "model", "finish_reason", "usage", "id", "conversation_id", "attempts", "adjusted"} <= set(
        chat_out["properties"])
    assert {"value", "model", "usage", "attempts", "upstream_attempts", "id"} <= set(json_out["properties"])
    # Compact for the client's check of every result: nullable fields as type lists, nothing referenced.
    assert chat_out["properties"]["finish_reason"]["type"] == ["string", "null"]
    assert chat_out["properties"]["usage"]["properties"]["cached_tokens"]["type"] == ["integer", "null"]
    for name in ("kimi_chat", "kimi_json"):
        published = json.dumps(tools[name].output_schema)
        assert "$ref" not in published and "$defs" not in published
    for error in (chat_error, json_error):
        assert error["required"] == ["error"]
        assert {"kind", "message", "retryable", "hint"} <= set(error["properties"]["error"]["properties"])


async def test_error_results_match_the_declared_output_schema(client: Client, fake: FakeAce) -> None:
    """Some clients (the MCP Inspector) check structured content against the output schema even
    when isError is true: error results must match it too."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    fake.script(ace_error(403, "used_up", "Your balance is used up."))
    result = await client.call_tool("kimi_chat", {"prompt": "hi"})
    assert result.is_error
    jsonschema.validate(result.structured_content, tools["kimi_chat"].output_schema)
    bad = await client.call_tool("kimi_json", {"prompt": ""})
    assert bad.is_error
    jsonschema.validate(bad.structured_content, tools["kimi_json"].output_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"error": {"kind": "auth"}}, tools["kimi_chat"].output_schema)


# OpenAI's API refuses tool descriptions over 1,024 characters (and llama-index refuses them itself);
# agent frameworks pass ours on as they are.
DESCRIPTION_LIMIT = 800


async def test_descriptions_fit_what_agent_frameworks_accept(client: Client) -> None:
    for tool in (await client.list_tools()).tools:
        assert len(tool.description or "") <= DESCRIPTION_LIMIT, tool.name
        for name, prop in tool.input_schema["properties"].items():
            assert len(prop.get("description", "")) <= DESCRIPTION_LIMIT, f"{tool.name}.{name}"


async def test_input_schemas_are_self_contained(client: Client) -> None:
    """No `$defs`/`$ref` in published input schemas: openai-agents' strict mode falls back on them."""
    import json

    for tool in (await client.list_tools()).tools:
        text = json.dumps(tool.input_schema)
        assert "$defs" not in text and "$ref" not in text, tool.name
    tools = {t.name: t for t in (await client.list_tools()).tools}
    item = tools["kimi_chat"].input_schema["properties"]["messages"]["anyOf"][0]["items"]
    assert item["properties"]["role"]["enum"] == ["system", "user", "assistant"]
    schema = tools["kimi_json"].input_schema["properties"]["schema"]
    assert {"type": "string"} in schema["anyOf"]  # strict converters close objects: a string always works
    assert all(b.get("type") != "object" for b in schema["anyOf"])  # no open object to refuse


async def test_annotations(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("kimi_chat", "kimi_json"):
        ann = tools[name].annotations
        assert ann is not None
        assert (ann.read_only_hint, ann.open_world_hint, ann.destructive_hint) == (True, True, False)
        assert ann.title
    delete = tools["kimi_delete_conversation"].annotations
    assert delete is not None and delete.destructive_hint is True and delete.read_only_hint is False
    for name in ("kimi_list_conversations", "kimi_read_conversation"):
        ann = tools[name].annotations
        assert ann is not None and ann.read_only_hint is True and ann.open_world_hint is False


async def test_resources_listed(client: Client) -> None:
    resources = {str(r.uri): r for r in (await client.list_resources()).resources}
    assert "kimi://models" in resources
    assert resources["kimi://models"].mime_type == "application/json"
    assert resources["kimi://models"].description
    templates = {t.uri_template: t for t in (await client.list_resource_templates()).resource_templates}
    assert "kimi://models/{model_id}" in templates
    assert templates["kimi://models/{model_id}"].description


async def test_models_resource(client: Client) -> None:
    result = await client.read_resource("kimi://models")
    assert len(result.contents) == 1
    content = result.contents[0]
    assert content.mime_type == "application/json"
    data = json.loads(content.text)  # type: ignore[union-attr]
    assert data["default_model"] == DEFAULT_ID
    assert [m["id"] for m in data["models"]] == ALL_IDS
    assert [m["id"] for m in data["models"] if m["default"]] == [DEFAULT_ID]
    by_id = {m["id"]: m for m in data["models"]}
    k3 = by_id["kimi-k3"]
    assert (k3["thinking"], k3["thinking_switch"], k3["context_window"]) == ("always", False, 1_048_576)
    assert (k3["vision"], k3["reasoning_efforts"], k3["reasoning_replay"], k3["default_max_tokens"]) == (
        True, ["low", "high", "max"], "none", 16_384)
    assert [(r["param"], r.get("fixed"), r.get("not_sent")) for r in k3["sampling_rules"]] == [
        ("temperature", 1.0, None), ("top_p", None, True)]
    k25 = by_id["kimi-k2.5"]
    assert (k25["thinking"], k25["thinking_switch"], k25["context_window"]) == ("default_on", True, 262_144)
    assert {(r["param"], r["when"], r["fixed"]) for r in k25["sampling_rules"]} == {
        ("temperature", "thinking", 1.0), ("temperature", "no_thinking", 0.6), ("top_p", "always", 0.95)}
    assert (k25["status"], k25["reasoning_replay"]) == ("reported_retired", "always")
    assert by_id["kimi-k2.6"]["reasoning_replay"] == "keep"
    assert by_id["kimi-k2-thinking"]["thinking"] == "always"
    assert by_id["kimi-k2-instruct-0905"]["sampling_rules"][0]["maximum"] == 1.0
    assert by_id["kimi-k2-0711-preview"]["context_window"] == 131_072
    assert all(m["description"] and m["in_catalogue"] for m in data["models"])


async def test_one_model_resource(client: Client) -> None:
    result = await client.read_resource(f"kimi://models/{DEFAULT_ID}")
    data = json.loads(result.contents[0].text)  # type: ignore[union-attr]
    assert data["id"] == DEFAULT_ID
    assert data["default"] is True
    assert len(data["sampling_rules"]) == 2
    k25 = json.loads((await client.read_resource("kimi://models/kimi-k2.5")).contents[0].text)  # type: ignore[union-attr]
    assert (k25["id"], k25["default"], len(k25["sampling_rules"])) == ("kimi-k2.5", False, 3)
    other = json.loads((await client.read_resource("kimi://models/kimi-k2-turbo-preview")).contents[0].text)  # type: ignore[union-attr]
    assert (other["id"], other["default"], other["thinking"]) == ("kimi-k2-turbo-preview", False, "none")


async def test_unknown_model_resource(client: Client) -> None:
    with pytest.raises(MCPError) as info:
        await client.read_resource("kimi://models/kimi-nope")
    assert "kimi-nope" in str(info.value)
    assert "kimi-k2.5" in str(info.value)


# ============================================================================ kimi_chat


async def test_chat_prompt(client: Client, fake: FakeAce) -> None:
    fake.script(reply(" Hello! How can I help you today?", usage=USAGE))
    result = await client.call_tool("kimi_chat", {"prompt": "Hi"})
    out = ok(result)
    assert text(result) == " Hello! How can I help you today?"  # leading space kept
    cid = ok(result)["conversation_id"]
    assert result.content[0].text.endswith(f"\n\n[conversation_id: {cid}]")  # the id in the first text block
    assert out["text"] == text(result)
    assert out["model"] == DEFAULT_ID
    assert out["finish_reason"] == "stop"
    assert out["usage"] == {**USAGE, "reasoning_tokens": None, "cached_tokens": None}
    assert out["id"].startswith("msg_")  # the K3 stream's ids
    assert out["conversation_id"].startswith("conv_")
    assert (out["attempts"], out["adjusted"], out["notice"], out["reasoning"]) == (1, [], None, None)
    assert only_request(fake) == {"model": DEFAULT_ID, "messages": [{"role": "user", "content": "Hi"}],
                                  "max_tokens": 16_384, **STREAM_OPTIONS}  # the model's default cap
    assert fake.requests[0].headers["authorization"] == f"Bearer {fake.token}"
    assert fake.requests[0].path == "/kimi/chat/completions"
    assert_clean(result, fake.token)
    tools = {t.name: t for t in (await client.list_tools()).tools}
    jsonschema.validate(out, tools["kimi_chat"].output_schema)


async def test_chat_every_field(client: Client, fake: FakeAce) -> None:
    args = {
        "prompt": "And in French?",
        "system": "You are a translator.",
        "messages": [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello"}],
        "model": "kimi-k2-instruct-0905",
        "max_tokens": 256,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "END",
    }
    fake.script(reply("Bonjour", model="kimi-k2-instruct-0905"))
    out = ok(await client.call_tool("kimi_chat", args))
    assert (out["text"], out["model"], out["adjusted"]) == ("Bonjour", "kimi-k2-instruct-0905", [])
    assert only_request(fake) == {
        "model": "kimi-k2-instruct-0905",
        "messages": [
            {"role": "system", "content": "You are a translator."},
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "And in French?"},
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 256,
        "stop": ["END"],
        **STREAM_OPTIONS,
    }


async def test_chat_stop_list_and_history_only(client: Client, fake: FakeAce) -> None:
    """No prompt: the caller's messages are the whole conversation; `stop` as a list."""
    args = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count"}],
            "stop": ["3", "\n\n"], "model": "kimi-k2-turbo-preview"}
    ok(await client.call_tool("kimi_chat", args))
    body = only_request(fake)
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count"}]
    assert body["stop"] == ["3", "\n\n"]
    assert body["model"] == "kimi-k2-turbo-preview"


async def test_chat_system_replaces_history_system(client: Client, fake: FakeAce) -> None:
    args = {"system": "NEW", "prompt": "q",
            "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "OLD"}]}
    ok(await client.call_tool("kimi_chat", args))
    assert only_request(fake)["messages"] == [
        {"role": "system", "content": "NEW"}, {"role": "user", "content": "a"}, {"role": "user", "content": "q"}]


async def test_unknown_model(client: Client, fake: FakeAce) -> None:
    result = await client.call_tool("kimi_chat", {"prompt": "p", "model": "gpt-4"})
    error = error_of(result)
    assert error["kind"] == "invalid_arguments"
    assert error["valid_models"] == ALL_IDS
    assert "gpt-4" in error["message"]
    for model_id in ALL_IDS:
        assert model_id in error["message"]
    assert fake.requests == []
    assert error_of(await client.call_tool("kimi_json", {"prompt": "p", "model": "gpt-4"}))["kind"] == (
        "invalid_arguments")


async def test_extra_models(fake: FakeAce) -> None:
    env = {"KIMI_EXTRA_MODELS": "kimi-k4,kimi-k4-mini,kimi-k2.6", "KIMI_DEFAULT_MODEL": "kimi-k4"}
    async with connect("memory", fake, env=env) as c:
        ok(await c.call_tool("kimi_chat", {"prompt": "p"}))
        assert only_request(fake)["model"] == "kimi-k4"
        fake.reset()
        # not in the catalogue: thinking is passed through, unchecked
        ok(await c.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k4-mini", "thinking": "enabled"}))
        body = only_request(fake)
        assert (body["model"], body["thinking"]) == ("kimi-k4-mini", {"type": "enabled"})
        data = json.loads((await c.read_resource("kimi://models")).contents[0].text)  # type: ignore[union-attr]
        # kimi-k2.6 is already a catalogue row: listed once, as the row
        assert [m["id"] for m in data["models"]] == [*ALL_IDS, "kimi-k4", "kimi-k4-mini"]
        assert [m["id"] for m in data["models"] if m["default"]] == ["kimi-k4"]
        assert [m["in_catalogue"] for m in data["models"]][-3:] == [True, False, False]
        error = error_of(await c.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k5"}))
        assert error["valid_models"] == [*ALL_IDS, "kimi-k4", "kimi-k4-mini"]


BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "   "}, "prompt is empty"),
    ({}, "give a prompt"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "user turn"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content is empty"),
    ({"prompt": "p", "system": " "}, "system must not be empty"),
    ({"prompt": "p", "temperature": 5}, "temperature"),
    ({"prompt": "p", "temperature": -0.1}, "temperature"),
    ({"prompt": "p", "top_p": -1}, "top_p"),
    ({"prompt": "p", "top_p": 1.5}, "top_p"),
    ({"prompt": "p", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "p", "max_tokens": 1.5}, "max_tokens"),
    ({"prompt": "p", "max_tokens": "many"}, "max_tokens"),
    ({"prompt": "p", "stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
    ({"prompt": "p", "stop": [""]}, "stop strings must not be empty"),
    ({"prompt": "p", "stop": 7}, "stop"),
    ({"prompt": 123}, "prompt"),
    ({"prompt": ["a"]}, "prompt"),
    ({"prompt": "p", "messages": "hi"}, "messages"),
    ({"prompt": "p", "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"prompt": "p", "messages": [{"role": "user"}]}, "messages.0.content"),
    ({"prompt": "p", "thinking": "maybe"}, "thinking"),
    ({"prompt": "p", "model": ""}, None),  # blank model means the default: not an error
]


@pytest.mark.parametrize(("args", "says"), BAD_ARGUMENTS)
async def test_bad_arguments(client: Client, fake: FakeAce, args: dict[str, Any], says: str | None) -> None:
    result = await client.call_tool("kimi_chat", args)
    if says is None:
        ok(result)
        return
    error = error_of(result)
    assert error["kind"] == "invalid_arguments"
    assert (error["status"], error["retryable"]) == (None, False)
    assert says in error["message"]
    assert error["hint"]
    assert fake.requests == []
    json_error = error_of(await client.call_tool("kimi_json", args))
    assert json_error["kind"] == "invalid_arguments"
    assert fake.requests == []
    await still_answers(client, fake)


# ============================================================================ kimi_json


async def test_json_plain(client: Client, fake: FakeAce) -> None:
    fake.script(reply('{"city": "Paris", "n": 2}', usage=USAGE))
    result = await client.call_tool("kimi_json", {"prompt": "Capital of France?"})
    out = ok(result)
    assert out["value"] == {"city": "Paris", "n": 2}
    assert json.loads(result.content[0].text) == {"city": "Paris", "n": 2}
    assert (out["attempts"], out["upstream_attempts"], out["model"]) == (1, 1, DEFAULT_ID)
    assert out["usage"]["total_tokens"] == 18
    assert only_request(fake) == {
        "model": DEFAULT_ID,
        "messages": [{"role": "system", "content": JSON_INSTRUCTION},
                     {"role": "user", "content": "Capital of France?"}],
        "max_tokens": 16_384,
        "response_format": {"type": "json_object"},
    }  # no progress token: not streamed
    tools = {t.name: t for t in (await client.list_tools()).tools}
    jsonschema.validate(out, tools["kimi_json"].output_schema)
    assert_clean(result, fake.token)


@pytest.mark.parametrize(("reply_text", "value"), [
    ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
    ('```\n["x"]\n```', ["x"]),
    ('\n\n   {"a": null}  \n', {"a": None}),
    ("3.5", 3.5),
])
async def test_json_tolerant(client: Client, fake: FakeAce, reply_text: str, value: Any) -> None:
    fake.script(reply(reply_text))
    out = ok(await client.call_tool("kimi_json", {"prompt": "p"}))
    assert out["value"] == value
    assert out["attempts"] == 1
    assert len(fake.requests) == 1


async def test_json_repair(client: Client, fake: FakeAce) -> None:
    """A reply that is not JSON gets one more try, with the parser's complaint fed back."""
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    fake.script(reply("Sure! Here: {bad", usage=usage), reply('{"a": 1}', usage=usage))
    out = ok(await client.call_tool("kimi_json", {"prompt": "Give me a"}))
    assert (out["value"], out["attempts"]) == ({"a": 1}, 2)
    assert out["usage"]["total_tokens"] == 16  # both answers count
    first, second = (r.json for r in fake.wait_for_requests(2))
    assert len(fake.requests) == 2
    assert second["messages"][: len(first["messages"])] == first["messages"]
    assert second["messages"][-2] == {"role": "assistant", "content": "Sure! Here: {bad"}
    assert second["messages"][-1]["role"] == "user"
    assert "not valid JSON" in second["messages"][-1]["content"]
    assert second["response_format"] == {"type": "json_object"}


async def test_json_schema_sent(client: Client, fake: FakeAce) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    fake.script(reply('{"name": "Kimi"}'))
    out = ok(await client.call_tool("kimi_json", {"prompt": "p", "system": "Be exact.", "schema": schema}))
    assert out["value"] == {"name": "Kimi"}
    body = only_request(fake)
    system = body["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be exact.\n\n" + JSON_INSTRUCTION)
    assert json.dumps(schema) in system["content"]
    assert body["response_format"] == {"type": "json_object"}


async def test_json_schema_mismatch_twice(client: Client, fake: FakeAce) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    fake.script(reply('{"age": 3}'), reply('{"age": 4}'))
    result = await client.call_tool("kimi_json", {"prompt": "p", "schema": schema})
    error = error_of(result)
    assert error["kind"] == "invalid_json"
    assert error["retryable"] is False
    assert "'name' is a required property" in error["message"]
    assert error["raw_start"] == '{"age": 4}'
    assert error["json_attempts"] == 2
    second = fake.wait_for_requests(2)[1].json
    assert "does not match the schema" in second["messages"][-1]["content"]
    assert len(fake.requests) == 2
    await still_answers(client, fake)


async def test_json_schema_repaired(client: Client, fake: FakeAce) -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    fake.script(reply('["1"]'), reply("[1]"))
    out = ok(await client.call_tool("kimi_json", {"prompt": "p", "schema": schema}))
    assert (out["value"], out["attempts"]) == ([1], 2)


async def test_json_raw_start_is_bounded(client: Client, fake: FakeAce) -> None:
    fake.script(reply("x" * 3000), reply("y" * 3000))
    error = error_of(await client.call_tool("kimi_json", {"prompt": "p"}))
    assert error["kind"] == "invalid_json"
    assert error["raw_start"] == "y" * 500


@pytest.mark.parametrize("schema", [{"type": "nope"}, {"properties": 3}])
async def test_json_invalid_schema(client: Client, fake: FakeAce, schema: dict[str, Any]) -> None:
    error = error_of(await client.call_tool("kimi_json", {"prompt": "p", "schema": schema}))
    assert error["kind"] == "invalid_arguments"
    assert "schema" in error["message"]
    assert fake.requests == []

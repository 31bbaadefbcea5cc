"""The tools and resources through a real in-memory `mcp.Client`, against the loopback Ace fake.

Each test asserts what the host's model gets back AND what the fake received on the wire. The
shared server runs with KIMI_MAX_RETRIES=0 so one scripted error is the answer; tests that need
other settings start their own (in-memory servers are cheap).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jsonschema
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from kimi_mcp import errors
from tests.fake_ace import FakeAce, FakeResponse, ace_error, cut, moonshot_error, raw, reply
from tests.harness import connect, free_port

pytestmark = pytest.mark.anyio

ALL_IDS = [
    "kimi-k2.5",
    "kimi-k2-thinking",
    "kimi-k2-thinking-turbo",
    "kimi-k2-instruct-0905",
    "kimi-k2-0905-preview",
    "kimi-k2-turbo-preview",
    "kimi-k2-0711-preview",
]
TOOLS = {"kimi_chat", "kimi_json", "kimi_list_conversations", "kimi_read_conversation", "kimi_delete_conversation"}
STREAM_OPTIONS = {"stream": True, "stream_options": {"include_usage": True}}
JSON_INSTRUCTION = "Answer with JSON only: one valid JSON value, no prose, no Markdown fences."
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
ERROR_KEYS = {"kind", "status", "code", "message", "retryable", "retry_after_s", "trace_id", "hint"}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAce]:
    with FakeAce() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeAce) -> None:
    fake.reset()


@pytest.fixture(scope="module")
async def client(fake: FakeAce) -> AsyncIterator[Client]:
    """One in-memory server for the module; no upstream retries."""
    async with connect("memory", fake, env={"KIMI_MAX_RETRIES": "0"}) as c:
        yield c


def assert_clean(result: Any, token: str) -> None:
    """The upstream token appears nowhere in a result (text or structured)."""
    assert token not in result.model_dump_json()
    assert token not in json.dumps(result.structured_content)


def error_of(result: Any) -> dict[str, Any]:
    """The structured error of a failed call, after checking the result's shape."""
    assert result.is_error is True
    assert set(result.structured_content) == {"error"}
    error: dict[str, Any] = result.structured_content["error"]
    assert set(error) >= ERROR_KEYS
    assert len(result.content) == 1
    text = result.content[0].text
    assert "\n" not in text
    assert error["message"] in text
    return error


def ok(result: Any) -> dict[str, Any]:
    assert result.is_error is False, result.content[0].text
    structured: dict[str, Any] = result.structured_content
    return structured


def only_request(fake: FakeAce) -> dict[str, Any]:
    """The body of the one request the fake got."""
    requests = fake.requests
    assert len(requests) == 1, [r.json for r in requests]
    body: dict[str, Any] = requests[0].json
    return body


async def still_answers(client: Client, fake: FakeAce) -> None:
    """After a failure the same server answers the next call normally."""
    fake.reset()
    result = await client.call_tool("kimi_chat", {"prompt": "still there?"})
    assert ok(result)["text"] == "Hello from fake Kimi."
    assert only_request(fake)["messages"] == [{"role": "user", "content": "still there?"}]


# ============================================================================ listing


async def test_tools_listed(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 40
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"
    chat = tools["kimi_chat"]
    for model_id in ALL_IDS:
        assert model_id in (chat.description or "")
    props = chat.input_schema["properties"]
    assert set(props) == {"prompt", "system", "messages", "model", "max_tokens", "temperature", "top_p", "stop",
                          "thinking", "include_reasoning", "conversation_id", "resume"}
    assert {"minimum": 0, "maximum": 2, "type": "number"}.items() <= props["temperature"]["anyOf"][0].items()
    assert {"minimum": 0, "maximum": 1, "type": "number"}.items() <= props["top_p"]["anyOf"][0].items()
    assert props["max_tokens"]["anyOf"][0]["minimum"] == 1
    assert props["thinking"]["anyOf"][0]["enum"] == ["enabled", "disabled"]
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
    assert data["default_model"] == "kimi-k2.5"
    assert [m["id"] for m in data["models"]] == ALL_IDS
    assert [m["id"] for m in data["models"] if m["default"]] == ["kimi-k2.5"]
    by_id = {m["id"]: m for m in data["models"]}
    k25 = by_id["kimi-k2.5"]
    assert (k25["thinking"], k25["thinking_switch"], k25["context_window"]) == ("default_on", True, 262_144)
    assert {(r["param"], r["when"], r["fixed"]) for r in k25["sampling_rules"]} == {
        ("temperature", "thinking", 1.0), ("temperature", "no_thinking", 0.6), ("top_p", "always", 0.95)}
    assert by_id["kimi-k2-thinking"]["thinking"] == "always"
    assert by_id["kimi-k2-instruct-0905"]["sampling_rules"][0]["maximum"] == 1.0
    assert by_id["kimi-k2-0711-preview"]["context_window"] == 131_072
    assert all(m["description"] and m["in_catalogue"] for m in data["models"])


async def test_one_model_resource(client: Client) -> None:
    result = await client.read_resource("kimi://models/kimi-k2.5")
    data = json.loads(result.contents[0].text)  # type: ignore[union-attr]
    assert data["id"] == "kimi-k2.5"
    assert data["default"] is True
    assert len(data["sampling_rules"]) == 3
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
    assert result.content[0].text == " Hello! How can I help you today?"  # leading space kept
    assert out["text"] == result.content[0].text
    assert out["model"] == "kimi-k2.5"
    assert out["finish_reason"] == "stop"
    assert out["usage"] == {**USAGE, "reasoning_tokens": None, "cached_tokens": None}
    assert out["id"].startswith("chatcmpl-")
    assert out["conversation_id"].startswith("conv_")
    assert (out["attempts"], out["adjusted"], out["notice"], out["reasoning"]) == (1, [], None, None)
    assert only_request(fake) == {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "Hi"}],
                                  **STREAM_OPTIONS}
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


async def test_chat_sampling_adjusted(client: Client, fake: FakeAce) -> None:
    """kimi-k2.5 accepts only fixed sampling values: the server sends them and says so."""
    out = ok(await client.call_tool("kimi_chat", {"prompt": "p", "temperature": 0.3, "top_p": 0.5}))
    body = only_request(fake)
    assert (body["temperature"], body["top_p"]) == (1.0, 0.95)
    assert [(a["param"], a["requested"], a["used"]) for a in out["adjusted"]] == [
        ("temperature", 0.3, 1.0), ("top_p", 0.5, 0.95)]
    assert "Adjusted" in out["notice"]


async def test_chat_thinking_disabled(client: Client, fake: FakeAce) -> None:
    out = ok(await client.call_tool("kimi_chat", {"prompt": "p", "thinking": "disabled", "temperature": 0.3}))
    body = only_request(fake)
    assert body["thinking"] == {"type": "disabled"}
    assert body["temperature"] == 0.6
    assert out["adjusted"][0]["used"] == 0.6


async def test_chat_instruct_temperature_capped(client: Client, fake: FakeAce) -> None:
    out = ok(await client.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k2-instruct-0905",
                                                  "temperature": 1.5}))
    assert only_request(fake)["temperature"] == 1.0
    assert [(a["requested"], a["used"]) for a in out["adjusted"]] == [(1.5, 1.0)]


async def test_chat_reasoning(client: Client, fake: FakeAce) -> None:
    fake.script(reply("42", reasoning="Six times seven.", reasoning_tokens=4),
                reply("42", reasoning="Six times seven."))
    result = await client.call_tool("kimi_chat", {"prompt": "6*7?", "include_reasoning": True})
    out = ok(result)
    assert result.content[0].text == "42"
    assert (out["text"], out["reasoning"], out["reasoning_truncated"]) == ("42", "Six times seven.", False)
    assert out["usage"]["reasoning_tokens"] == 4
    out = ok(await client.call_tool("kimi_chat", {"prompt": "6*7?"}))
    assert out["reasoning"] is None
    assert "Six" not in out["text"]


async def test_chat_empty_answer_at_length(client: Client, fake: FakeAce) -> None:
    """The token budget spent on reasoning: say so instead of returning a silent empty answer."""
    fake.script(reply("", reasoning="long thought", finish_reason="length"))
    result = await client.call_tool("kimi_chat", {"prompt": "p", "max_tokens": 10})
    out = ok(result)
    assert out["text"] == ""
    assert out["finish_reason"] == "length"
    assert "max_tokens" in out["notice"]
    assert "max_tokens" in result.content[0].text


async def test_chat_progress_legacy(fake: FakeAce) -> None:
    """With a progress token (legacy era in memory) progress rises strictly and ends on the answer."""
    answer = "The answer, in several small pieces."
    fake.script(reply(answer, reasoning="thinking about it", chunk_size=4))
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect("memory", fake, era="legacy") as c:
        result = await c.call_tool("kimi_chat", {"prompt": "p"}, progress_callback=on_progress)
    assert ok(result)["text"] == answer
    assert seen, "no progress notifications"
    progress = [p for p, _, _ in seen]
    assert progress == sorted(set(progress))
    assert seen[-1][2] == answer
    assert seen[-1][0] == len(answer) + len("thinking about it")


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
    env = {"KIMI_EXTRA_MODELS": "kimi-k3,kimi-k2.6", "KIMI_DEFAULT_MODEL": "kimi-k3"}
    async with connect("memory", fake, env=env) as c:
        ok(await c.call_tool("kimi_chat", {"prompt": "p"}))
        assert only_request(fake)["model"] == "kimi-k3"
        fake.reset()
        # not in the catalogue: thinking is passed through, unchecked
        ok(await c.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k2.6", "thinking": "enabled"}))
        body = only_request(fake)
        assert (body["model"], body["thinking"]) == ("kimi-k2.6", {"type": "enabled"})
        data = json.loads((await c.read_resource("kimi://models")).contents[0].text)  # type: ignore[union-attr]
        assert [m["id"] for m in data["models"]] == [*ALL_IDS, "kimi-k3", "kimi-k2.6"]
        assert [m["id"] for m in data["models"] if m["default"]] == ["kimi-k3"]
        assert [m["in_catalogue"] for m in data["models"]][-2:] == [False, False]
        error = error_of(await c.call_tool("kimi_chat", {"prompt": "p", "model": "kimi-k4"}))
        assert error["valid_models"] == [*ALL_IDS, "kimi-k3", "kimi-k2.6"]


@pytest.mark.parametrize("model_id", ["kimi-k2-instruct-0905", "kimi-k2-thinking", "kimi-k2-turbo-preview"])
async def test_thinking_refused_on_other_models(client: Client, fake: FakeAce, model_id: str) -> None:
    error = error_of(await client.call_tool("kimi_chat", {"prompt": "p", "model": model_id,
                                                          "thinking": "disabled"}))
    assert error["kind"] == "invalid_arguments"
    assert model_id in error["message"] and "thinking" in error["message"]
    assert fake.requests == []


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
    assert (out["attempts"], out["upstream_attempts"], out["model"]) == (1, 1, "kimi-k2.5")
    assert out["usage"]["total_tokens"] == 18
    assert only_request(fake) == {
        "model": "kimi-k2.5",
        "messages": [{"role": "system", "content": JSON_INSTRUCTION},
                     {"role": "user", "content": "Capital of France?"}],
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


# ============================================================================ errors end to end


def expected(cls: type[errors.KimiError], status: int | None, code: str | None, message: str,
             trace_id: str | None = None, retry_after_s: float | None = None) -> dict[str, Any]:
    return {"kind": cls.kind, "status": status, "code": code, "message": message, "retryable": cls.retryable,
            "retry_after_s": retry_after_s, "trace_id": trace_id, "hint": cls.default_hint, "attempts": 1}


HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
TEMPERATURE_400 = "invalid temperature: only 1 is allowed for this model"
RATE_429 = "Your account request reached max RPM: 3, please try again after 1 seconds"
ERROR_CASES: list[tuple[str, FakeResponse, dict[str, Any]]] = [
    ("401 invalid_token",
     ace_error(401, "invalid_token", "The specified token is invalid or wrong.", trace_id="tr-401"),
     expected(errors.AuthError, 401, "invalid_token", "The specified token is invalid or wrong.", "tr-401")),
    ("401 token_expired",
     ace_error(401, "token_expired", "The token has expired.", trace_id="tr-401b"),
     expected(errors.AuthError, 401, "token_expired", "The token has expired.", "tr-401b")),
    ("403 used_up",
     ace_error(403, "used_up", "Your balance is used up.", trace_id="tr-403", success_false=True),
     expected(errors.InsufficientBalance, 403, "used_up", "Your balance is used up.", "tr-403")),
    ("403 disabled",
     ace_error(403, "disabled", "The token is disabled.", trace_id="tr-403d"),
     expected(errors.Forbidden, 403, "disabled", "The token is disabled.", "tr-403d")),
    ("403 forbidden",
     ace_error(403, "forbidden", "Refused by content moderation.", trace_id="tr-403f"),
     expected(errors.Forbidden, 403, "forbidden", "Refused by content moderation.", "tr-403f")),
    ("429 too_many_requests",
     ace_error(429, "too_many_requests", "You have exceeded the rate limit.", trace_id="tr-429",
               headers={"Retry-After": "3"}),
     expected(errors.RateLimited, 429, "too_many_requests", "You have exceeded the rate limit.", "tr-429", 3.0)),
    ("429 moonshot rate limit",
     moonshot_error(429, "rate_limit_reached_error", RATE_429),
     expected(errors.RateLimited, 429, "rate_limit_reached_error", RATE_429, retry_after_s=1.0)),
    ("429 moonshot quota",
     moonshot_error(429, "exceeded_current_quota_error", "Your account is suspended, please recharge."),
     expected(errors.InsufficientBalance, 429, "exceeded_current_quota_error",
              "Your account is suspended, please recharge.")),
    ("500 api_error",
     ace_error(500, "api_error", "Internal server error.", trace_id="tr-500"),
     expected(errors.UpstreamFailure, 500, "api_error", "Internal server error.", "tr-500")),
    ("502 HTML page",
     raw(502, HTML_502, content_type="text/html"),
     expected(errors.UpstreamFailure, 502, None, "502 Bad Gateway")),
    ("503 empty body",
     raw(503, b"", content_type="text/plain"),
     expected(errors.UpstreamFailure, 503, None, "the upstream answered HTTP 503 with no message")),
    ("504 timeout",
     ace_error(504, "timeout", "The upstream timed out.", trace_id="tr-504"),
     expected(errors.UpstreamTimeout, 504, "timeout", "The upstream timed out.", "tr-504")),
    ("400 ace bad_request",
     ace_error(400, "bad_request", TEMPERATURE_400, trace_id="tr-400"),
     expected(errors.BadRequest, 400, "bad_request", TEMPERATURE_400, "tr-400")),
    ("400 moonshot invalid_request_error",
     moonshot_error(400, "invalid_request_error", TEMPERATURE_400),
     expected(errors.BadRequest, 400, "invalid_request_error", TEMPERATURE_400)),
    ("404 resource_not_found_error",
     moonshot_error(404, "resource_not_found_error", "Not found the model kimi-x or Permission denied"),
     expected(errors.NotFound, 404, "resource_not_found_error", "Not found the model kimi-x or Permission denied")),
    ("200 not a completion",
     raw(200, '{"object": "list", "data": []}'),
     expected(errors.InvalidResponse, None, None, "the upstream answered 200 without a chat completion (no choices)")),
]


@pytest.mark.parametrize("tool", ["kimi_chat", "kimi_json"])
@pytest.mark.parametrize(("response", "want"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
async def test_upstream_errors(client: Client, fake: FakeAce, tool: str, response: FakeResponse,
                               want: dict[str, Any]) -> None:
    """Every upstream failure reaches the host as one line plus the exact structured error."""
    fake.script(response)
    result = await client.call_tool(tool, {"prompt": "p"})
    error = error_of(result)
    assert error == want
    assert len(fake.requests) == 1
    assert result.content[0].text.startswith(f"Kimi {want['kind'].replace('_', ' ')} error")
    assert want["hint"] in result.content[0].text
    assert_clean(result, fake.token)
    await still_answers(client, fake)


async def test_hints_say_what_to_do(client: Client, fake: FakeAce) -> None:
    cases = [
        (ace_error(401, "invalid_token", "bad"), "ACEDATACLOUD_API_TOKEN"),
        (ace_error(403, "used_up", "empty"), "recharge"),
        (moonshot_error(404, "resource_not_found_error", "no model"), "kimi://models"),
        (ace_error(429, "too_many_requests", "slow down"), "retry"),
    ]
    for response, phrase in cases:
        fake.script(response)
        error = error_of(await client.call_tool("kimi_chat", {"prompt": "p"}))
        assert phrase in error["hint"]


@pytest.mark.parametrize(("tool", "response", "kinds"), [
    ("kimi_chat", raw(200, '{"id": "chatcmpl-1", "choices": [{"mess'), {"invalid_response"}),
    ("kimi_json", raw(200, '{"id": "chatcmpl-1", "choices": [{"mess'), {"invalid_response"}),
    ("kimi_json", cut("mid_body"), {"invalid_response", "network"}),
    ("kimi_chat", cut("request"), {"network"}),
])
async def test_truncated_answers(client: Client, fake: FakeAce, tool: str, response: FakeResponse,
                                 kinds: set[str]) -> None:
    fake.script(response)
    result = await client.call_tool(tool, {"prompt": "p"})
    error = error_of(result)
    assert error["kind"] in kinds
    assert error["retryable"] is True
    assert_clean(result, fake.token)
    await still_answers(client, fake)


async def test_connection_refused(fake: FakeAce) -> None:
    env = {"ACEDATACLOUD_API_BASE_URL": f"http://127.0.0.1:{free_port()}", "KIMI_MAX_RETRIES": "0"}
    async with connect("memory", fake, env=env) as c:
        for tool in ("kimi_chat", "kimi_json"):
            result = await c.call_tool(tool, {"prompt": "p"})
            error = error_of(result)
            assert (error["kind"], error["status"], error["retryable"]) == ("network", None, True)
            assert "ACEDATACLOUD_API_BASE_URL" in error["hint"]
            assert_clean(result, fake.token)
    assert fake.requests == []


async def test_no_token_configured(fake: FakeAce) -> None:
    async with connect("memory", fake, env={"ACEDATACLOUD_API_TOKEN": ""}) as c:
        for tool in ("kimi_chat", "kimi_json"):
            error = error_of(await c.call_tool(tool, {"prompt": "p"}))
            assert error["kind"] == "auth"
            assert error["retryable"] is False
            assert error["status"] is None
            assert "no API token" in error["message"]
            assert "ACEDATACLOUD_API_TOKEN" in error["hint"]
        # the catalogue still reads without a token
        assert (await c.read_resource("kimi://models")).contents
    assert fake.requests == []


async def test_wrong_token(fake: FakeAce) -> None:
    """The fake refuses a token that is not its own, as Ace does; the wrong token is a secret too."""
    wrong = "wrong-token-abcdef-0123456789"
    async with connect("memory", fake, env={"ACEDATACLOUD_API_TOKEN": wrong}) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "p"})
    error = error_of(result)
    assert (error["kind"], error["status"], error["code"]) == ("auth", 401, "invalid_token")
    assert fake.requests[0].headers["authorization"] == f"Bearer {wrong}"
    assert len(fake.requests) == 1  # auth failures are not retried
    assert_clean(result, wrong)


async def test_retries_then_succeeds(fake: FakeAce) -> None:
    """5xx and 429 are retried (Retry-After 0 keeps it quick); a balance error never is."""
    now = {"Retry-After": "0"}
    async with connect("memory", fake, env={"KIMI_MAX_RETRIES": "2"}) as c:
        fake.script(ace_error(503, "api_error", "busy", headers=now), ace_error(429, "too_many_requests", "slow",
                                                                               headers=now), reply("finally"))
        out = ok(await c.call_tool("kimi_chat", {"prompt": "p"}))
        assert (out["text"], out["attempts"]) == ("finally", 3)
        assert len(fake.requests) == 3
        assert all(r.json == fake.requests[0].json for r in fake.requests)

        fake.reset()
        fake.script_for(3, ace_error(502, "bad_gateway", "down", headers=now))
        error = error_of(await c.call_tool("kimi_json", {"prompt": "p"}))
        assert (error["kind"], error["attempts"]) == ("upstream", 3)
        assert len(fake.requests) == 3

        fake.reset()
        fake.script(ace_error(403, "used_up", "empty"), reply("must not be asked for"))
        error = error_of(await c.call_tool("kimi_chat", {"prompt": "p"}))
        assert (error["kind"], error["attempts"]) == ("insufficient_balance", 1)
        assert len(fake.requests) == 1


async def test_kimi_chat_streams_upstream_only_when_it_helps(fake: FakeAce) -> None:
    """With nobody listening for progress and the soft deadline off, one plain completion is
    cheaper than a stream; with a listener, or a deadline that may need the partial text, it streams."""
    async with connect("memory", fake, era="legacy", env={"KIMI_SOFT_DEADLINE": "0"}) as client:
        fake.reset()
        plain = await client.call_tool("kimi_chat", {"prompt": "plain please"})

        async def ignore(progress: float, total: float | None, message: str | None) -> None:
            pass

        streamed = await client.call_tool("kimi_chat", {"prompt": "stream please"}, progress_callback=ignore)
    assert not plain.is_error and not streamed.is_error
    assert plain.structured_content is not None and streamed.structured_content is not None
    assert plain.structured_content["text"] == streamed.structured_content["text"]
    first, second = fake.requests
    assert first.json is not None and "stream" not in first.json
    assert second.json is not None and second.json["stream"] is True
    async with connect("memory", fake, env={"KIMI_SOFT_DEADLINE": "50"}) as client:
        fake.reset()
        await client.call_tool("kimi_chat", {"prompt": "deadline on"})
    assert fake.requests[0].json is not None and fake.requests[0].json["stream"] is True

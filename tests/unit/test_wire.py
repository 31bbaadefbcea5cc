"""`kimi_mcp.upstream.wire`: the request body built from a chat request (sampling rules applied and
reported, thinking switch, every optional field), and a plain completion parsed into a reply."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kimi_mcp.errors import InvalidResponse
from kimi_mcp.upstream.wire import ChatRequest, Message, build_body, encode_body, parse_completion
from tests.unit.samples import model

# --------------------------------------------------------------------------- build_body


def request(model_id: str, **kw: Any) -> ChatRequest:
    return ChatRequest(model=model(model_id), messages=(Message("user", "hi"),), **kw)


class TestBuildBody:
    def test_k25_thinking_temperature(self) -> None:
        body, adjusted = build_body(request("kimi-k2.5", temperature=0.3), stream=False)
        assert body["temperature"] == 1.0
        assert [(a.param, a.requested, a.used) for a in adjusted] == [("temperature", 0.3, 1.0)]
        assert "thinking" in adjusted[0].reason
        assert "thinking" not in body  # the model's default: not sent

    def test_k25_no_thinking_temperature_and_top_p(self) -> None:
        body, adjusted = build_body(request("kimi-k2.5", temperature=0.3, top_p=0.5, thinking=False), stream=False)
        assert body["temperature"] == 0.6
        assert body["top_p"] == 0.95
        assert body["thinking"] == {"type": "disabled"}
        assert [(a.param, a.requested, a.used) for a in adjusted] == [("temperature", 0.3, 0.6), ("top_p", 0.5, 0.95)]

    def test_allowed_values_are_not_adjusted(self) -> None:
        body, adjusted = build_body(request("kimi-k2.5", temperature=1.0, top_p=0.95, thinking=True), stream=False)
        assert (body["temperature"], body["top_p"], body["thinking"]) == (1.0, 0.95, {"type": "enabled"})
        assert adjusted == []

    def test_instruct_temperature_capped(self) -> None:
        body, adjusted = build_body(request("kimi-k2-instruct-0905", temperature=1.5), stream=False)
        assert body["temperature"] == 1.0
        assert [(a.param, a.requested, a.used) for a in adjusted] == [("temperature", 1.5, 1.0)]
        body, adjusted = build_body(request("kimi-k2-instruct-0905", temperature=0.4, top_p=0.3), stream=False)
        assert (body["temperature"], body["top_p"], adjusted) == (0.4, 0.3, [])

    def test_no_rules_model_passes_values(self) -> None:
        body, adjusted = build_body(request("kimi-k2-thinking", temperature=1.7), stream=False)
        assert body["temperature"] == 1.7 and adjusted == []

    def test_fields(self) -> None:
        req = ChatRequest(
            model=model("kimi-k2-turbo-preview"),
            messages=(Message("system", "be brief"), Message("user", "q"), Message("assistant", "a", "why"),
                      Message("user", "q2", "ignored")),
            max_tokens=123, stop=("END", "STOP"), json_mode=True,
        )
        body, _ = build_body(req, stream=True)
        assert json.loads(encode_body(body)) == {
            "model": "kimi-k2-turbo-preview",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "reasoning_content": "why"},
                {"role": "user", "content": "q2"},
            ],
            "max_tokens": 123,
            "stop": ["END", "STOP"],
            "response_format": {"type": "json_object"},
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def test_minimal_body(self) -> None:
        body, _ = build_body(request("kimi-k2.5"), stream=False)
        assert json.loads(encode_body(body)) == {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}]}

    @pytest.mark.parametrize("model_id", ["kimi-k3", "kimi-k3.1-pro", "kimi-k3.1-pro-highspeed"])
    def test_k3_temperature_fixed_and_top_p_omitted(self, model_id: str) -> None:
        body, adjusted = build_body(request(model_id, temperature=0.3, top_p=0.5), stream=False)
        assert body["temperature"] == 1.0
        assert "top_p" not in body
        assert [(a.param, a.requested, a.used) for a in adjusted] == [("temperature", 0.3, 1.0), ("top_p", 0.5, None)]
        assert [a.reason for a in adjusted] == ["K3 models accept only temperature 1",
                                                "K3 models fix top_p themselves; none is sent"]

    def test_k3_top_p_is_never_sent_even_at_a_usual_value(self) -> None:
        body, adjusted = build_body(request("kimi-k3", top_p=0.95), stream=False)
        assert "top_p" not in body
        assert [(a.param, a.requested, a.used) for a in adjusted] == [("top_p", 0.95, None)]

    def test_k3_allowed_temperature_is_not_adjusted(self) -> None:
        body, adjusted = build_body(request("kimi-k3", temperature=1.0), stream=False)
        assert (body["temperature"], adjusted) == (1.0, [])
        assert "thinking" not in body  # it always thinks: nothing to switch

    @pytest.mark.parametrize(("model_id", "given", "sent"), [
        ("kimi-k3", None, 16_384),
        ("kimi-k3", 100, 100),
        ("kimi-k3", 100_000, 100_000),  # the caller's value, even above the default
        ("kimi-k3.1-pro", None, 32_768),
        ("kimi-k2.6", None, 32_768),
        ("kimi-k2.6", 7, 7),
        ("kimi-k2.5", None, None),  # no default in its row: nothing sent
        ("kimi-k2-thinking", None, None),
    ])
    def test_default_max_tokens_only_when_the_caller_gives_none(self, model_id: str, given: int | None,
                                                                sent: int | None) -> None:
        body, _ = build_body(request(model_id, max_tokens=given), stream=True)
        assert body.get("max_tokens") == sent
        assert ("max_tokens" in body) is (sent is not None)

    def test_reasoning_effort_passed(self) -> None:
        body, _ = build_body(request("kimi-k3", reasoning_effort="low"), stream=False)
        assert json.loads(encode_body(body)) == {"model": "kimi-k3", "messages": [{"role": "user", "content": "hi"}],
                                                 "max_tokens": 16_384, "reasoning_effort": "low"}
        assert "reasoning_effort" not in build_body(request("kimi-k3"), stream=False)[0]

    @pytest.mark.parametrize("thinking", [None, True])
    def test_k26_thinking_keeps_reasoning(self, thinking: bool | None) -> None:
        """k2.6 thinking (its default, or asked for) uses preserved thinking: history carries reasoning."""
        body, adjusted = build_body(request("kimi-k2.6", thinking=thinking, temperature=0.3), stream=False)
        assert body["thinking"] == {"type": "enabled", "keep": "all"}
        assert body["temperature"] == 1.0
        assert [(a.param, a.used) for a in adjusted] == [("temperature", 1.0)]

    def test_k26_thinking_off_is_plain_disabled(self) -> None:
        body, adjusted = build_body(request("kimi-k2.6", thinking=False, temperature=0.3, top_p=0.5), stream=False)
        assert body["thinking"] == {"type": "disabled"}
        assert (body["temperature"], body["top_p"]) == (0.6, 0.95)
        assert [(a.param, a.used) for a in adjusted] == [("temperature", 0.6), ("top_p", 0.95)]

    def test_only_k26_asks_for_preserved_thinking(self) -> None:
        for model_id in ("kimi-k2.5", "kimi-k2-thinking", "kimi-k2.7-code", "kimi-k3"):
            body, _ = build_body(request(model_id), stream=False)
            assert "thinking" not in body, model_id
        body, _ = build_body(request("kimi-k2.5", thinking=True), stream=False)
        assert body["thinking"] == {"type": "enabled"}


# --------------------------------------------------------------------------- encode_body


class TestEncodeBody:
    def test_the_same_bytes_as_json_dumps_of_the_wire_form(self) -> None:
        req = ChatRequest(
            model=model("kimi-k2.6"), max_tokens=9, stop=("END",), json_mode=True,
            messages=(Message("system", "be brief"), Message("user", 'q "quoted" \u00e9\u4e2d\n'),
                      Message("assistant", "a", "why"), Message("user", "look", images=("data:image/png;base64,AA",))),
        )
        body, _ = build_body(req, stream=True)
        wire = {**body, "messages": [m.to_wire() for m in req.messages]}
        assert encode_body(body) == json.dumps(wire).encode()
        assert encode_body(wire) == json.dumps(wire).encode()  # plain dicts are encoded as they are

    def test_a_message_is_encoded_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A kept conversation's turns cost nothing to encode again on the next call."""
        history = (Message("user", "q"), Message("assistant", "a"))
        first, _ = build_body(ChatRequest(model=model("kimi-k2.5"), messages=(*history, Message("user", "q2"))),
                              stream=False)
        encode_body(first)
        calls: list[object] = []
        real = Message.to_wire
        monkeypatch.setattr(Message, "to_wire", lambda self: calls.append(self) or real(self))
        new = Message("user", "q3")
        second, _ = build_body(ChatRequest(model=model("kimi-k2.5"), messages=(*history, new)), stream=False)
        assert json.loads(encode_body(second))["messages"][-1] == {"role": "user", "content": "q3"}
        assert calls == [new]


# --------------------------------------------------------------------------- parse_completion


REFERENCE_BODY: dict[str, Any] = {
    "id": "chatcmpl-b5d9e1b799c137e3", "object": "chat.completion", "created": 1770991864,
    "model": "kimi-k2.5",
    "choices": [{"index": 0,
                 "message": {"role": "assistant", "content": " Hello! How can I help you today?",
                             "refusal": None, "reasoning_content": " The user said hello...",
                             "reasoning": " The user said hello...", "tool_calls": []},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 184, "total_tokens": 193,
              "prompt_tokens_details": {"cached_tokens_details": {}}, "completion_tokens_details": {}},
}


class TestParseCompletion:
    def test_reference_body(self) -> None:
        reply = parse_completion(REFERENCE_BODY)
        assert reply.id == "chatcmpl-b5d9e1b799c137e3"
        assert reply.model == "kimi-k2.5"
        assert reply.text == " Hello! How can I help you today?"  # the leading space is kept
        assert reply.reasoning == " The user said hello..."
        assert reply.finish_reason == "stop"
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (9, 184, 193)
        assert reply.usage.reasoning_tokens is None and reply.usage.cached_tokens is None

    def test_reasoning_key_alone(self) -> None:
        body = json.loads(json.dumps(REFERENCE_BODY))
        del body["choices"][0]["message"]["reasoning_content"]
        body["choices"][0]["message"]["reasoning"] = "only here"
        assert parse_completion(body).reasoning == "only here"
        del body["choices"][0]["message"]["reasoning"]
        assert parse_completion(body).reasoning == ""

    def test_moonshot_usage_and_content_parts(self) -> None:
        body = {
            "id": "x", "model": "kimi-k2-thinking",
            "choices": [{"message": {"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                                      {"type": "image_url"},
                                                                      {"type": "text", "text": "b"}]},
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "cached_tokens": 3,
                      "completion_tokens_details": {"reasoning_tokens": 6}},
        }
        reply = parse_completion(body)
        assert reply.text == "ab"
        assert reply.finish_reason == "length"
        assert (reply.usage.total_tokens, reply.usage.cached_tokens, reply.usage.reasoning_tokens) == (12, 3, 6)

    @pytest.mark.parametrize("body", [
        {"id": "x", "object": "chat.completion"},
        {"choices": []},
        {"choices": ["nope"]},
        {"choices": [{"index": 0}]},
        {"error": {"message": "x"}},
        [1, 2],
        "text",
        None,
    ])
    def test_not_a_completion(self, body: Any) -> None:
        with pytest.raises(InvalidResponse):
            parse_completion(body)

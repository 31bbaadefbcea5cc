"""Unit tests of the pure parts: settings, catalogue, error mapping, request bodies, reply and
stream parsing, JSON mode, retry decisions, redaction, the progress throttle, history trimming.

No network and no MCP here: each function is fed the shapes the reference documents.
"""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

import httpx2
import pytest

from kimi_mcp.catalogue import CATALOGUE, Catalogue, ModelInfo, SamplingRule
from kimi_mcp.chat.conversations import estimate_tokens, trim_history
from kimi_mcp.chat.json_answers import check_schema, parse_json_reply
from kimi_mcp.chat.progress import ProgressThrottle, describe
from kimi_mcp.errors import (
    AuthError,
    BadRequest,
    Forbidden,
    InsufficientBalance,
    InvalidArguments,
    InvalidJSON,
    InvalidResponse,
    KimiError,
    NetworkError,
    NotFound,
    RateLimited,
    TimeoutError_,
    UpstreamError,
    UpstreamFailure,
    UpstreamTimeout,
)
from kimi_mcp.redaction import MASK, RedactingFilter, redact_value
from kimi_mcp.settings import OPTIONS, Secret, Settings, SettingsError
from kimi_mcp.upstream import failures
from kimi_mcp.upstream.failures import from_status
from kimi_mcp.upstream.retry import (
    MAX_RETRY_AFTER_S,
    RetryPolicy,
    backoff_seconds,
    should_retry,
    wait_before_retry,
)
from kimi_mcp.upstream.sse import StreamAccumulator, StreamDelta
from kimi_mcp.upstream.wire import ChatRequest, Message, build_body, parse_completion
from tests import fake_ace

ALL_IDS = [
    "kimi-k2.5",
    "kimi-k2-thinking",
    "kimi-k2-thinking-turbo",
    "kimi-k2-instruct-0905",
    "kimi-k2-0905-preview",
    "kimi-k2-turbo-preview",
    "kimi-k2-0711-preview",
]
TOKEN = "sk-ace-UNIT-TEST-token-9f8e7d6c5b4a"


def model(model_id: str) -> ModelInfo:
    """A catalogue row by id (fails the test if it is missing)."""
    info = Catalogue(CATALOGUE).get(model_id)
    assert info is not None, model_id
    return info


# ============================================================================ settings


class TestSettings:
    def test_defaults_of_table_and_dataclass_agree(self) -> None:
        """The table's default strings parse to exactly the dataclass defaults."""
        assert Settings.load({}) == Settings()

    def test_every_option_is_a_field(self) -> None:
        fields = set(Settings.__dataclass_fields__)
        assert {o.field for o in OPTIONS} == fields
        assert len({o.env for o in OPTIONS}) == len(OPTIONS)
        assert len({o.flag for o in OPTIONS}) == len(OPTIONS)

    def test_env_beats_default_and_flag_beats_env(self) -> None:
        env = {"KIMI_REQUEST_TIMEOUT": "30", "KIMI_DEFAULT_MODEL": "kimi-k2-thinking"}
        assert Settings.load({}).request_timeout == 900.0
        assert Settings.load(env).request_timeout == 30.0
        loaded = Settings.load(env, {"request_timeout": "60", "default_model": None})
        assert loaded.request_timeout == 60.0
        assert loaded.default_model == "kimi-k2-thinking"  # flag None: the env still counts

    def test_values_are_parsed(self) -> None:
        s = Settings.load({
            "ACEDATACLOUD_API_BASE_URL": "http://127.0.0.1:9/ ",
            "KIMI_EXTRA_MODELS": " kimi-k3, kimi-k2.6 ,,kimi-k3",
            "LOG_LEVEL": "debug",
            "KIMI_TRANSPORT": "SSE",
            "KIMI_PORT": "0",
            "KIMI_ALLOW_UNAUTHENTICATED": "yes",
            "KIMI_MAX_RETRIES": "0",
        })
        assert s.base_url == "http://127.0.0.1:9"
        assert s.extra_models == ("kimi-k3", "kimi-k2.6")
        assert s.log_level == "DEBUG"
        assert s.transport == "sse"
        assert s.port == 0
        assert s.allow_unauthenticated is True
        assert s.max_retries == 0

    def test_empty_token_is_no_token(self) -> None:
        assert Settings.load({"ACEDATACLOUD_API_TOKEN": "   "}).api_token is None
        assert Settings.load({"ACEDATACLOUD_API_TOKEN": f" {TOKEN} "}).api_token == Secret(TOKEN)

    @pytest.mark.parametrize(("env", "value"), [
        ("KIMI_REQUEST_TIMEOUT", "abc"),
        ("KIMI_REQUEST_TIMEOUT", "0"),
        ("KIMI_REQUEST_TIMEOUT", "nan"),
        ("ACEDATACLOUD_API_BASE_URL", "ftp://x"),
        ("ACEDATACLOUD_API_BASE_URL", "api.acedata.cloud"),
        ("ACEDATACLOUD_API_BASE_URL", "http://"),
        ("LOG_LEVEL", "LOUD"),
        ("KIMI_TRANSPORT", "websocket"),
        ("KIMI_PORT", "http"),
        ("KIMI_PORT", "70000"),
        ("KIMI_PORT", "80.5"),
        ("KIMI_SOFT_DEADLINE", "-1"),
        ("KIMI_CONVERSATION_TTL_DAYS", "forever"),
        ("KIMI_MAX_TURNS", "1"),
        ("KIMI_MAX_CONVERSATION_BYTES", "10"),
        ("KIMI_MAX_RETRIES", "11"),
        ("KIMI_MAX_CONCURRENCY", "0"),
        ("KIMI_CONNECT_TIMEOUT", "0"),
        ("KIMI_FIRST_BYTE_TIMEOUT", "soon"),
        ("KIMI_IDLE_TIMEOUT", "-5"),
        ("KIMI_ALLOW_UNAUTHENTICATED", "maybe"),
        ("KIMI_MAX_REQUEST_BYTES", "1"),
    ])
    def test_malformed_env_names_the_variable(self, env: str, value: str) -> None:
        with pytest.raises(SettingsError) as info:
            Settings.load({env: value})
        message = str(info.value)
        assert env in message
        assert "\n" not in message

    def test_malformed_flag_names_the_flag(self) -> None:
        with pytest.raises(SettingsError, match="--request-timeout"):
            Settings.load({"KIMI_REQUEST_TIMEOUT": "30"}, {"request_timeout": "abc"})

    def test_secret_never_shows(self) -> None:
        secret = Secret(TOKEN)
        assert TOKEN not in repr(secret)
        assert TOKEN not in str(secret)
        assert TOKEN not in f"{secret}"
        assert secret.reveal() == TOKEN
        settings = Settings.load({"ACEDATACLOUD_API_TOKEN": TOKEN, "KIMI_MCP_AUTH_TOKENS": "alice:" + "a" * 20})
        for shown in (repr(settings), str(settings), json.dumps(settings.masked())):
            assert TOKEN not in shown
            assert "a" * 20 not in shown
        assert settings.masked()["api_token"] == "set (****)"
        assert Settings().masked()["api_token"] == "not set"
        assert TOKEN in settings.secrets()
        assert "a" * 20 in settings.secrets()


# ============================================================================ catalogue


class TestCatalogue:
    def test_all_models_present(self) -> None:
        assert Catalogue(CATALOGUE).ids == ALL_IDS
        assert model("kimi-k2-0711-preview").context_window == 131_072
        assert model("kimi-k2.5").context_window == 262_144

    def test_extra_models(self) -> None:
        cat = Catalogue(CATALOGUE, ["kimi-k3", "kimi-k2.5"])
        assert cat.ids == [*ALL_IDS, "kimi-k3"]
        extra = cat.get("kimi-k3")
        assert extra is not None
        assert (extra.in_catalogue, extra.thinking, extra.rules) == (False, "unknown", ())
        assert cat.get("kimi-k2.5") == model("kimi-k2.5")  # an extra id never replaces a row
        assert cat.get("nope") is None

    @pytest.mark.parametrize(("model_id", "requested", "expected"), [
        ("kimi-k2.5", None, True),
        ("kimi-k2.5", True, True),
        ("kimi-k2.5", False, False),
        ("kimi-k2-thinking", None, True),
        ("kimi-k2-thinking", False, True),
        ("kimi-k2-thinking-turbo", None, True),
        ("kimi-k2-instruct-0905", None, False),
        ("kimi-k2-instruct-0905", True, False),
        ("kimi-k2-turbo-preview", None, False),
    ])
    def test_thinks(self, model_id: str, requested: bool | None, expected: bool) -> None:
        assert model(model_id).thinks(requested) is expected

    def test_extra_model_does_not_think_by_default(self) -> None:
        extra = Catalogue(CATALOGUE, ["kimi-k3"]).get("kimi-k3")
        assert extra is not None and extra.thinks(None) is False

    def test_rules(self) -> None:
        fixed = SamplingRule("temperature", "r", fixed=1.0, when="thinking")
        assert fixed.applies(True) and not fixed.applies(False)
        assert fixed.allowed(0.3) == 1.0
        capped = SamplingRule("temperature", "r", maximum=1.0)
        assert capped.applies(True) and capped.applies(False)
        assert (capped.allowed(1.5), capped.allowed(0.4)) == (1.0, 0.4)
        k25 = model("kimi-k2.5").to_dict("kimi-k2.5")
        assert k25["default"] is True
        assert {(r["param"], r["when"], r.get("fixed")) for r in k25["sampling_rules"]} == {
            ("temperature", "thinking", 1.0), ("temperature", "no_thinking", 0.6), ("top_p", "always", 0.95),
        }
        assert model("kimi-k2-instruct-0905").to_dict("kimi-k2.5")["default"] is False
        assert model("kimi-k2-thinking").rules == ()


# ============================================================================ failures.from_status


def ace_body(code: str, message: str, trace_id: str = "trace-1", **extra: Any) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}, "trace_id": trace_id, **extra}).encode()


def moonshot_body(type_: str, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_}}).encode()


class TestFromUpstream:
    @pytest.mark.parametrize(("status", "code", "cls", "retryable"), [
        (400, "bad_request", BadRequest, False),
        (400, "no_token", AuthError, False),
        (400, "token_mismatched", AuthError, False),
        (401, "invalid_token", AuthError, False),
        (401, "token_expired", AuthError, False),
        (403, "used_up", InsufficientBalance, False),
        (403, "disabled", Forbidden, False),
        (403, "forbidden", Forbidden, False),
        (404, "no_api", NotFound, False),
        (408, "timeout", UpstreamTimeout, True),
        (429, "too_many_requests", RateLimited, True),
        (500, "api_error", UpstreamFailure, True),
        (502, "bad_gateway", UpstreamFailure, True),
        (503, "unavailable", UpstreamFailure, True),
        (504, "timeout", UpstreamTimeout, True),
    ])
    def test_issue_table(self, status: int, code: str, cls: type[UpstreamError], retryable: bool) -> None:
        error = from_status(status, ace_body(code, "the message", "t-42"), httpx2.Headers())
        assert type(error) is cls
        assert (error.status, error.code, error.message, error.trace_id) == (status, code, "the message", "t-42")
        assert error.retryable is retryable
        assert error.retry_after_s is None
        assert error.hint  # every kind says what to do

    def test_kinds(self) -> None:
        kinds = {
            401: "auth", 403: "forbidden", 429: "rate_limited", 500: "upstream", 504: "timeout",
            400: "bad_request", 404: "not_found",
        }
        for status, kind in kinds.items():
            assert from_status(status, b"", {}).kind == kind
        assert from_status(403, ace_body("used_up", "x"), {}).kind == "insufficient_balance"

    def test_success_false(self) -> None:
        error = from_status(403, ace_body("used_up", "Balance used up.", success=False), {})
        assert isinstance(error, InsufficientBalance)
        assert error.message == "Balance used up."

    def test_error_as_plain_string(self) -> None:
        error = from_status(500, json.dumps({"error": "boom", "trace_id": "t"}).encode(), {})
        assert isinstance(error, UpstreamFailure)
        assert (error.message, error.code, error.trace_id) == ("boom", None, "t")

    def test_top_level_code_and_message(self) -> None:
        error = from_status(403, json.dumps({"code": "used_up", "message": "no money"}).encode(), {})
        assert isinstance(error, InsufficientBalance)
        assert error.message == "no money"

    def test_empty_body(self) -> None:
        error = from_status(502, b"", {})
        assert isinstance(error, UpstreamFailure)
        assert error.message == "the upstream answered HTTP 502 with no message"
        assert error.code is None and error.trace_id is None

    def test_html_proxy_page(self) -> None:
        page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>"
        error = from_status(502, page, {"content-type": "text/html"})
        assert isinstance(error, UpstreamFailure)
        assert error.message == "502 Bad Gateway"
        untitled = from_status(503, b"<html><body>down</body></html>", {})
        assert untitled.message == "an HTML error page"

    def test_plain_text_and_odd_json(self) -> None:
        assert from_status(500, b"Internal Server Error", {}).message == "Internal Server Error"
        assert from_status(500, b"[1, 2]", {}).message == "[1, 2]"
        long = from_status(500, json.dumps({"error": {"message": "x" * 2000}}).encode(), {})
        assert len(long.message) == 500

    def test_moonshot_shape(self) -> None:
        error = from_status(400, moonshot_body("invalid_request_error",
                                                 "invalid temperature: only 1 is allowed for this model"), {})
        assert isinstance(error, BadRequest)
        assert error.code == "invalid_request_error"
        assert error.message == "invalid temperature: only 1 is allowed for this model"
        assert isinstance(from_status(404, moonshot_body("resource_not_found_error", "Not found"), {}), NotFound)
        assert isinstance(from_status(401, moonshot_body("invalid_authentication_error", "bad key"), {}), AuthError)

    def test_moonshot_quota_at_429_is_balance(self) -> None:
        """Moonshot reports an empty balance as 429: it must not look retryable."""
        error = from_status(429, moonshot_body("exceeded_current_quota_error", "Your account is suspended"), {})
        assert isinstance(error, InsufficientBalance)
        assert error.kind == "insufficient_balance"
        assert error.retryable is False
        assert should_retry(error, retries_done=0, policy=RetryPolicy(), answer_started=False) is False

    def test_moonshot_rate_limit_wait_from_message(self) -> None:
        message = "Your account org-x request reached max RPM: 3, please try again after 1 seconds"
        error = from_status(429, moonshot_body("rate_limit_reached_error", message), {})
        assert isinstance(error, RateLimited)
        assert error.retry_after_s == 1.0
        assert error.code == "rate_limit_reached_error"

    def test_retry_after_header(self) -> None:
        body = ace_body("too_many_requests", "You have exceeded the rate limit.")
        assert from_status(429, body, httpx2.Headers({"Retry-After": "7"})).retry_after_s == 7.0
        # the header wins over the message's hint; a date we cannot read falls back to it
        hinted = moonshot_body("rate_limit_reached_error", "please try again after 3 seconds")
        assert from_status(429, hinted, httpx2.Headers({"Retry-After": "5"})).retry_after_s == 5.0
        dated = httpx2.Headers({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})
        assert from_status(429, hinted, dated).retry_after_s == 3.0

    def test_unknown_statuses(self) -> None:
        assert isinstance(from_status(418, b"", {}), BadRequest)
        assert isinstance(from_status(599, b"", {}), UpstreamFailure)

    def test_payload_and_line(self) -> None:
        error = from_status(403, ace_body("used_up", "Balance used up.", "t-9"), {})
        payload = error.payload()
        assert payload == {
            "kind": "insufficient_balance", "status": 403, "code": "used_up", "message": "Balance used up.",
            "retryable": False, "retry_after_s": None, "trace_id": "t-9", "hint": InsufficientBalance.default_hint,
        }
        assert error.line().startswith("Kimi insufficient balance error (HTTP 403, used_up): Balance used up. — ")
        assert "\n" not in error.line()


# ============================================================================ build_body


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
        assert body == {
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
        assert body == {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}]}


# ============================================================================ parse_completion

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


# ============================================================================ StreamAccumulator


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """One Ace chunk object (the reference's example shape)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {"id": "chatcmpl-952dd5e75583c4d1", "object": "chat.completion.chunk", "created": 1770992031,
            "model": "kimi-k2.5", "system_fingerprint": None, "choices": choices, "usage": None, **extra}


USAGE = {"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29,
         "completion_tokens_details": {"reasoning_tokens": 12}}


def sse(*chunks: Any, done: bool = True, nl: str = "\n", comments: bool = False) -> str:
    """The event-stream text for these chunks."""
    parts = [(f": keep-alive{nl}{nl}" if comments else "") + f"data: {json.dumps(c)}{nl}{nl}" for c in chunks]
    if done:
        parts.append(f"data: [DONE]{nl}{nl}")
    return "".join(parts)


def feed(text: str, acc: StreamAccumulator | None = None) -> tuple[StreamAccumulator, list[StreamDelta]]:
    """Feed the text line by line, keeping each line's ending as the wire had it."""
    acc = acc or StreamAccumulator()
    deltas = [d for line in text.splitlines(keepends=True) if (d := acc.feed_line(line)) is not None]
    return acc, deltas


ACE_STREAM = [
    chunk({"content": "", "role": "assistant"}),
    chunk({"reasoning_content": " The", "reasoning": " The"}),
    chunk({"reasoning_content": " user", "reasoning": " user"}),
    chunk({"reasoning_content": ".", "reasoning": ".", "content": " Hello"}),
    chunk({"content": "! How"}),
    chunk({"content": " are you?"}, finish="stop"),
    chunk(None, usage=USAGE),
]


class TestStream:
    def test_ace_stream(self) -> None:
        acc, deltas = feed(sse(*ACE_STREAM))
        assert acc.done
        assert acc.text == " Hello! How are you?"
        assert acc.reasoning == " The user."
        assert deltas == [
            StreamDelta(" The", ""), StreamDelta(" user", ""), StreamDelta(".", " Hello"),
            StreamDelta("", "! How"), StreamDelta("", " are you?"),
        ]
        reply = acc.reply()
        assert (reply.id, reply.model, reply.finish_reason) == ("chatcmpl-952dd5e75583c4d1", "kimi-k2.5", "stop")
        assert (reply.usage.prompt_tokens, reply.usage.total_tokens, reply.usage.reasoning_tokens) == (9, 29, 12)
        assert (acc.reasoning_chars, acc.content_chars) == (len(" The user."), len(" Hello! How are you?"))

    def test_moonshot_usage_inside_choice(self) -> None:
        last = chunk({"content": "ok"}, finish="stop")
        last["choices"][0]["usage"] = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6,
                                       "cached_tokens": 4}
        acc, _ = feed(sse(chunk({"role": "assistant", "content": ""}), last))
        assert acc.text == "ok"
        assert acc.usage is not None
        assert (acc.usage.total_tokens, acc.usage.cached_tokens) == (6, 4)
        # and Moonshot's extra `choices: []` chunk without usage keeps it
        acc, _ = feed(sse(chunk(None)), acc)
        assert acc.usage is not None and acc.usage.total_tokens == 6

    def test_comments_and_crlf(self) -> None:
        acc, deltas = feed(sse(*ACE_STREAM, nl="\r\n", comments=True))
        assert acc.done
        assert acc.text == " Hello! How are you?"
        assert acc.reasoning == " The user."
        assert len(deltas) == 5

    def test_multi_line_data(self) -> None:
        """One event's data lines join with newlines before parsing."""
        text = ('data: {"id": "c1", "model": "m",\ndata: "choices": [{"index": 0, "delta": {"content": "hi"},\n'
                'data: "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
        acc, deltas = feed(text)
        assert deltas == [StreamDelta("", "hi")]
        assert (acc.text, acc.finish_reason, acc.id, acc.done) == ("hi", "stop", "c1", True)

    def test_done_only_at_done(self) -> None:
        acc, _ = feed(sse(*ACE_STREAM, done=False))
        assert not acc.done
        assert acc.text == " Hello! How are you?"

    def test_flush_dispatches_unterminated_event(self) -> None:
        acc, _ = feed(f"data: {json.dumps(chunk({'content': 'x'}))}\n")
        assert acc.text == ""
        assert acc.flush() == StreamDelta("", "x")
        assert acc.text == "x"
        acc.feed_line("data: [DONE]")
        acc.flush()
        assert acc.done

    def test_non_json_chunk(self) -> None:
        acc = StreamAccumulator()
        acc.feed_line("data: {not json")
        with pytest.raises(InvalidResponse, match="not JSON"):
            acc.feed_line("")

    @pytest.mark.parametrize("data", ['"a string"', "[1]"])
    def test_bad_chunks(self, data: str) -> None:
        with pytest.raises(InvalidResponse):
            feed(f"data: {data}\n\n")

    @pytest.mark.parametrize(("data", "cls", "retryable"), [
        ('{"error": {"message": "overloaded"}}', UpstreamFailure, True),
        ('{"error": "boom"}', UpstreamFailure, True),
        ('{"error": {"code": "used_up", "message": "Balance used up."}}', InsufficientBalance, False),
        ('{"error": {"type": "rate_limit_reached_error", "message": "slow down"}}', RateLimited, True),
        ('{"error": {"code": "invalid_token", "message": "bad"}}', AuthError, False),
        ('{"error": {"code": "resource_not_found_error", "message": "no model"}}', NotFound, False),
    ])
    def test_error_events_use_the_status_body_map(self, data: str, cls: type[KimiError], retryable: bool) -> None:
        """An error event means what the same code means in a status body (one map for both)."""
        with pytest.raises(cls) as raised:
            feed(f"data: {data}\n\n")
        assert raised.value.retryable is retryable
        assert raised.value.auto_retry is retryable

    def test_ignores_other_fields_and_empty_deltas(self) -> None:
        text = "event: message\nid: 7\nretry: 100\n" + sse(chunk({"content": ""}), chunk({"role": "assistant"}),
                                                          chunk({"content": "z"}))
        _, deltas = feed(text)
        assert deltas == [StreamDelta("", "z")]

    @pytest.mark.parametrize("options", [
        {}, {"moonshot_usage": True}, {"crlf": True, "comments": True}, {"mixed_chunk": False},
        {"chunk_size": 1},
    ])
    def test_fake_shapes(self, options: dict[str, Any]) -> None:
        """The parser reads every shape the loopback fake produces (the fake is held to Ace elsewhere)."""
        resp = fake_ace.reply(" Answer text, twenty+", reasoning="Thinking it over", reasoning_tokens=5, **options)
        text = b"".join(fake_ace._sse_blocks(resp, {"model": "kimi-k2.5", "messages": []})).decode()
        acc, _ = feed(text)
        assert acc.done
        assert acc.text == " Answer text, twenty+"
        assert acc.reasoning == "Thinking it over"
        assert acc.usage is not None and acc.usage.reasoning_tokens == 5


# ============================================================================ JSON mode


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
        assert check_schema(None) is None
        validator = check_schema({"type": "object", "required": ["a"]})
        assert validator is not None
        assert validator.is_valid({"a": 1}) and not validator.is_valid({})

    @pytest.mark.parametrize("schema", [{"type": "nope"}, {"required": "a"}, "object", [1]])
    def test_invalid_schema(self, schema: Any) -> None:
        with pytest.raises(InvalidArguments, match="schema"):
            check_schema(schema)


# ============================================================================ retry


POLICY = RetryPolicy(max_retries=3)


class TestRetry:
    @pytest.mark.parametrize("error", [
        InsufficientBalance("x", status=403), BadRequest("x", status=400), AuthError("x", status=401),
        Forbidden("x", status=403), NotFound("x", status=404), InvalidArguments("x"), InvalidJSON("x"),
        InvalidResponse("x"), TimeoutError_("x"),
    ])
    def test_never_retried(self, error: KimiError) -> None:
        assert should_retry(error, retries_done=0, policy=POLICY, answer_started=False) is False

    @pytest.mark.parametrize("error", [
        RateLimited("x", status=429), UpstreamFailure("x", status=500), UpstreamTimeout("x", status=504),
        NetworkError("x"),
    ])
    def test_retried(self, error: KimiError) -> None:
        assert should_retry(error, retries_done=0, policy=POLICY, answer_started=False) is True
        assert should_retry(error, retries_done=2, policy=POLICY, answer_started=False) is True
        assert should_retry(error, retries_done=3, policy=POLICY, answer_started=False) is False
        assert should_retry(error, retries_done=0, policy=RetryPolicy(max_retries=0), answer_started=False) is False
        assert should_retry(error, retries_done=0, policy=POLICY, answer_started=True) is False
        error.answer_began = True
        assert should_retry(error, retries_done=0, policy=POLICY, answer_started=False) is False

    def test_retry_after_wins(self) -> None:
        assert wait_before_retry(RateLimited("x", retry_after_s=5.0), 0, POLICY) == 5.0
        assert wait_before_retry(RateLimited("x", retry_after_s=0.0), 2, POLICY) == 0.0
        assert wait_before_retry(RateLimited("x", retry_after_s=10_000.0), 0, POLICY) == MAX_RETRY_AFTER_S

    def test_backoff_bounded(self) -> None:
        for retries_done in range(12):
            ceiling = min(POLICY.max_delay_s, POLICY.base_delay_s * 2**retries_done)
            for _ in range(50):
                delay = backoff_seconds(retries_done, POLICY)
                assert ceiling / 2 <= delay <= ceiling
                assert 0 < wait_before_retry(UpstreamFailure("x"), retries_done, POLICY) <= POLICY.max_delay_s
        assert backoff_seconds(30, POLICY) <= POLICY.max_delay_s


# ============================================================================ redaction


class TestRedaction:
    def test_filter_masks_message_args_and_exception(self) -> None:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler.addFilter(RedactingFilter((TOKEN, "")))
        logger = logging.getLogger("kimi_mcp.tests.redaction")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        try:
            logger.info("header Bearer " + TOKEN)
            logger.warning("token is %s and %r", TOKEN, {"auth": TOKEN})
            try:
                raise RuntimeError(f"request failed with Authorization: Bearer {TOKEN}")
            except RuntimeError:
                logger.exception("call failed for %s", TOKEN)
            logger.info("stack", stack_info=True, extra={})
        finally:
            logger.removeHandler(handler)
        out = stream.getvalue()
        assert TOKEN not in out
        assert out.count(MASK) >= 5
        assert "RuntimeError: request failed with Authorization: Bearer ****" in out
        assert "Traceback" in out

    def test_filter_without_secrets_leaves_records(self) -> None:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("b",), None)
        assert RedactingFilter(("",)).filter(record)
        assert record.getMessage() == "a b"

    def test_redact_value(self) -> None:
        value = {"a": [TOKEN, {"b": f"x{TOKEN}y"}], "n": 1, "none": None}
        assert redact_value(value, (TOKEN,)) == {"a": [MASK, {"b": f"x{MASK}y"}], "n": 1, "none": None}


# ============================================================================ progress throttle


def content_acc(*pieces: str, reasoning: str = "") -> StreamAccumulator:
    acc = StreamAccumulator()
    if reasoning:
        acc.feed_chunk(chunk({"reasoning_content": reasoning}))
    for piece in pieces:
        acc.feed_chunk(chunk({"content": piece}))
    return acc


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[float, str]] = []

    async def __call__(self, progress: float, message: str) -> None:
        self.sent.append((progress, message))


@pytest.mark.anyio
class TestProgress:
    async def test_first_at_once_then_held_then_flushed(self) -> None:
        sink = Sink()
        throttle = ProgressThrottle(sink, interval=3600)
        acc = StreamAccumulator()
        acc.feed_chunk(chunk({"content": "Hel"}))
        await throttle.update(acc)
        assert sink.sent == [(3, "Hel")]
        acc.feed_chunk(chunk({"content": "lo"}))
        await throttle.update(acc)
        acc.feed_chunk(chunk({"content": " you"}))
        await throttle.update(acc)
        assert sink.sent == [(3, "Hel")]  # held back within the interval
        await throttle.flush()
        assert sink.sent == [(3, "Hel"), (9, "Hello you")]  # the final state, once
        await throttle.flush()
        assert len(sink.sent) == 2

    async def test_without_interval_every_update_goes(self) -> None:
        sink = Sink()
        throttle = ProgressThrottle(sink, interval=0)
        acc = StreamAccumulator()
        for piece in ("a", "b", "c"):
            acc.feed_chunk(chunk({"content": piece}))
            await throttle.update(acc)
            await throttle.update(acc)  # no new progress: nothing sent
        await throttle.flush()
        assert sink.sent == [(1, "a"), (2, "ab"), (3, "abc")]

    async def test_strictly_increasing_with_status(self) -> None:
        sink = Sink()
        throttle = ProgressThrottle(sink, interval=0)
        await throttle.status("queued")
        await throttle.update(content_acc(reasoning="abcd"))
        await throttle.status("still queued")
        await throttle.update(content_acc("xy", reasoning="abcd"))
        progress = [p for p, _ in sink.sent]
        assert progress == sorted(set(progress))
        assert sink.sent[0] == (0.0, "queued")
        assert sink.sent[1] == (4, "thinking… 4 characters of reasoning")
        assert sink.sent[-1] == (6, "xy")

    async def test_describe_tail(self) -> None:
        acc = content_acc("x" * 3000, "END")
        progress, message = describe(acc)
        assert progress == 3003
        assert message.startswith("…") and message.endswith("END") and len(message) == 2001


# ============================================================================ conversations


def small_model(window: int) -> ModelInfo:
    return ModelInfo("tiny", "test", context_window=window)


class TestTrimHistory:
    def test_estimate_tokens(self) -> None:
        assert estimate_tokens("") == 1
        assert estimate_tokens("abcd" * 100) == 101
        assert estimate_tokens("你好") == 3
        assert estimate_tokens("ab你好") == 3 + 0  # 2 ASCII chars round down to 0 tokens

    def test_fits_nothing_dropped(self) -> None:
        history = [Message("user", "q1"), Message("assistant", "a1")]
        kept, dropped = trim_history(history, [Message("user", "q2")], model("kimi-k2.5"), None, True)
        assert (kept, dropped) == (history, 0)

    def test_drops_oldest_whole_exchanges(self) -> None:
        """Each turn costs 25 + 1 (empty reasoning) + 4 = 31 tokens; the window leaves room for two of six."""
        turn = "x" * 100
        history = [Message(role, f"{turn}") for role in ("user", "assistant") * 3]
        fixed = [Message("user", "q")]  # 0 + 1 + 4 = 5
        window = 10 + 5 + 62  # max_tokens reserve, fixed, two turns
        kept, dropped = trim_history(history, fixed, small_model(window), 10, False)
        assert dropped == 4
        assert kept == history[4:]
        assert kept[0].role == "user"

    def test_never_starts_with_assistant(self) -> None:
        history = [Message("user", "u" * 100), Message("assistant", "a" * 100), Message("assistant", "b" * 100),
                   Message("user", "v" * 100), Message("assistant", "c" * 100)]
        kept, dropped = trim_history(history, [], small_model(10 + 62), 10, False)
        assert dropped == 3
        assert [m.content[0] for m in kept] == ["v", "c"]

    def test_reasoning_counts_and_reserve(self) -> None:
        history = [Message("user", "u"), Message("assistant", "a", reasoning="r" * 400)]
        kept, dropped = trim_history(history, [], small_model(4096 + 50), None, False)
        assert dropped == 2 and kept == []
        # thinking models reserve more for the answer when max_tokens is not given
        kept, dropped = trim_history([Message("user", "u")], [], small_model(4096 + 50), None, True)
        assert dropped == 1


def test_retry_after_as_an_http_date() -> None:
    """Retry-After may be an HTTP date (RFC 9110): the wait is the time until then."""
    from email.utils import formatdate

    wait = failures.retry_after_seconds({"retry-after": formatdate(time.time() + 30, usegmt=True)}, None)
    assert wait is not None and 25 <= wait <= 30
    assert failures.retry_after_seconds({"retry-after": formatdate(time.time() - 30, usegmt=True)}, None) is None
    assert failures.retry_after_seconds({"retry-after": "inf"}, None) is None

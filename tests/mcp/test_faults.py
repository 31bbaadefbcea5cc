"""Every way the upstream can fail, through a real in-memory MCP client against the loopback fake.

The fault matrix scripts each failure (statuses and body shapes, broken connections and answers,
recoveries), continues a stored conversation in the failing call, and checks the error kind, the
number of upstream attempts (what the fake received AND what the result says), the stored
conversation unchanged, the server still serving, and the token in no output. Then: the exact
error result of each failure, retries (which, how many, how long: Retry-After, the request
deadline), the timeouts, and the concurrency cap on upstream requests. The retry decisions
themselves are unit-tested in tests/unit/test_retry.py, the status mapping in test_failures.py.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult

from kimi_mcp import errors
from kimi_mcp.upstream.retry import MAX_DELAY_S
from tests.mcp.helpers import assert_clean, error_of, ok, still_answers
from tests.support.fake_ace import (
    DEFAULT_CONTENT,
    FakeAce,
    FakeResponse,
    RecordedRequest,
    ace_error,
    cut,
    moonshot_error,
    raw,
    reply,
    stall,
    stream_raw,
)
from tests.support.harness import connect, free_port
from tests.support.models import CURRENT_IDS, DEFAULT_ID

pytestmark = pytest.mark.anyio

KNOWN_KINDS = {
    "invalid_arguments", "auth", "insufficient_balance", "forbidden", "rate_limited", "upstream", "timeout",
    "bad_request", "not_found", "network", "invalid_response", "invalid_json", "storage", "cancelled", "internal",
}
NEVER_RETRYABLE = {"auth", "insufficient_balance", "forbidden", "bad_request", "not_found", "invalid_arguments"}
ERROR_KEYS = {"kind", "status", "code", "message", "retryable", "retry_after_s", "trace_id", "hint", "attempts"}
BASE_ENV = {"KIMI_MAX_RETRIES": "2", "KIMI_IDLE_TIMEOUT": "5", "KIMI_FIRST_BYTE_TIMEOUT": "10"}
RA0 = {"Retry-After": "0"}
HUGE = b"x" * (16 * 1024 * 1024 + 1024)
HTML_502 = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)


def sse(obj: dict[str, Any]) -> str:
    """One SSE event block for `stream_raw`."""
    return f"data: {json.dumps(obj)}\n\n"


def content_chunk(text: str) -> str:
    return sse({"id": "chatcmpl-x", "model": "kimi-k2.5",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


@dataclass(frozen=True)
class Case:
    """One scripted fault: what the fake answers, and what the call must come back with."""

    id: str
    script: tuple[FakeResponse, ...]
    kind: str | None  # None: the call succeeds after retries
    attempts: int
    env: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    code: str | None = None
    message: str | None = None  # a piece of the error message
    partial: bool = False  # the error keeps the text that had arrived


def times(n: int, response: FakeResponse) -> tuple[FakeResponse, ...]:
    return (response,) * n


# Statuses and body shapes, each failing every attempt (KIMI_MAX_RETRIES=2: up to 3 attempts).
STATUS_CASES = [
    Case("ace-400-bad_request", (ace_error(400, "bad_request", "The request is invalid."),),
         "bad_request", 1, status=400, code="bad_request", message="The request is invalid."),
    Case("ace-400-no_token", (ace_error(400, "no_token", "No token given."),), "auth", 1, code="no_token"),
    Case("ace-401-invalid_token", (ace_error(401, "invalid_token", "The specified token is invalid or wrong."),),
         "auth", 1, status=401, code="invalid_token"),
    Case("ace-401-token_expired", (ace_error(401, "token_expired", "Expired."),), "auth", 1),
    Case("ace-403-used_up", (ace_error(403, "used_up", "Your balance is used up."),),
         "insufficient_balance", 1, status=403, code="used_up"),
    Case("ace-403-used_up-success_false", (ace_error(403, "used_up", "Used up.", success_false=True),),
         "insufficient_balance", 1, code="used_up"),
    Case("ace-403-used_up-with-retry_after", (ace_error(403, "used_up", "Used up.", headers=RA0),),
         "insufficient_balance", 1),
    Case("ace-403-disabled", (ace_error(403, "disabled", "Token disabled."),), "forbidden", 1, code="disabled"),
    Case("ace-403-forbidden", (ace_error(403, "forbidden", "Refused by moderation."),), "forbidden", 1),
    Case("ace-404-no_api", (ace_error(404, "no_api", "The specified API is not found."),), "not_found", 1),
    Case("moonshot-400-invalid_request", (moonshot_error(400, "invalid_request_error", "invalid temperature"),),
         "bad_request", 1, code="invalid_request_error", message="invalid temperature"),
    Case("moonshot-400-content_filter", (moonshot_error(400, "content_filter", "high risk"),), "bad_request", 1),
    Case("moonshot-401-invalid_authentication",
         (moonshot_error(401, "invalid_authentication_error", "Invalid Authentication"),), "auth", 1),
    Case("moonshot-404-resource_not_found", (moonshot_error(404, "resource_not_found_error", "Not found the model"),),
         "not_found", 1),
    Case("moonshot-429-exceeded_current_quota",
         (moonshot_error(429, "exceeded_current_quota_error", "Your account is suspended, please check your plan",
                         headers=RA0),),
         "insufficient_balance", 1, status=429, code="exceeded_current_quota_error"),
    Case("ace-429-too_many_requests",
         times(3, ace_error(429, "too_many_requests", "You have exceeded the rate limit.", headers=RA0)),
         "rate_limited", 3, status=429, code="too_many_requests"),
    Case("moonshot-429-rate_limit_reached",
         times(3, moonshot_error(429, "rate_limit_reached_error", "rate limit reached", headers=RA0)),
         "rate_limited", 3, code="rate_limit_reached_error"),
    Case("moonshot-429-engine_overloaded",
         times(3, moonshot_error(429, "engine_overloaded_error", "The engine is currently overloaded", headers=RA0)),
         "rate_limited", 3, code="engine_overloaded_error"),
    Case("ace-500-api_error", times(3, ace_error(500, "api_error", "Internal server error.", headers=RA0)),
         "upstream", 3, status=500, code="api_error", message="Internal server error."),
    Case("ace-500-success_false",
         times(3, ace_error(500, "api_error", "Internal server error.", success_false=True, headers=RA0)),
         "upstream", 3),
    Case("500-plain-string-error", times(3, raw(500, '{"error": "upstream exploded"}', headers=RA0)),
         "upstream", 3, message="upstream exploded"),
    Case("500-text-plain", times(3, raw(500, "boom", content_type="text/plain", headers=RA0)),
         "upstream", 3, message="boom"),
    Case("moonshot-500-server_error", times(3, moonshot_error(500, "server_error", "server error", headers=RA0)),
         "upstream", 3),
    Case("502-html-page", times(3, raw(502, HTML_502, content_type="text/html", headers=RA0)),
         "upstream", 3, status=502, message="502 Bad Gateway"),
    Case("503-empty-body", times(3, raw(503, b"", headers=RA0)), "upstream", 3, status=503, message="no message"),
    Case("504-ace-timeout", times(3, ace_error(504, "timeout", "Upstream timed out.", headers=RA0)),
         "timeout", 3, status=504),
    Case("418-unknown-4xx", (raw(418, "{}"),), "bad_request", 1, status=418),
]

# A retryable failure (or two) and then an answer: the call succeeds, having taken more attempts.
RECOVERY_CASES = [
    Case("recover-429", (ace_error(429, "too_many_requests", "slow down", headers=RA0), reply()), None, 2),
    Case("recover-500-then-html-502",
         (ace_error(500, "api_error", "x", headers=RA0), raw(502, HTML_502, content_type="text/html", headers=RA0),
          reply()), None, 3),
    Case("recover-503-empty", (raw(503, b"", headers=RA0), reply()), None, 2),
    Case("recover-moonshot-overloaded",
         (moonshot_error(429, "engine_overloaded_error", "overloaded", headers=RA0), reply()), None, 2),
    Case("recover-closed-before-response", (cut("request"), reply()), None, 2),
    Case("recover-reset-before-headers", (cut("reset"), reply()), None, 2),
    Case("recover-closed-after-headers", (cut("headers"), reply()), None, 2),
]

# Broken connections and broken answers (KIMI_MAX_RETRIES=1 where a retry happens, to keep it fast).
WIRE_CASES = [
    Case("closed-before-response", times(2, cut("request")), "network", 2, env={"KIMI_MAX_RETRIES": "1"}),
    Case("reset-before-headers", times(2, cut("reset")), "network", 2, env={"KIMI_MAX_RETRIES": "1"}),
    Case("reset-mid-body", (cut("mid_body"),), "network", 1, message="cut after"),
    Case("reset-mid-stream", (cut("mid_stream"),), "network", 1, partial=True),
    Case("stream-ends-before-done",
         (stream_raw([content_chunk("Hello "), content_chunk("from")], done=False),), "network", 1, partial=True),
    Case("truncated-json-200", (raw(200, '{"id": "chatcmpl-1", "choices": [{"index": 0, "mess'),),
         "invalid_response", 1),
    Case("json-200-without-choices", (raw(200, '{"id": "chatcmpl-1", "object": "chat.completion"}'),),
         "invalid_response", 1),
    Case("stream-chunk-not-json", (stream_raw(['data: {"id": "chatcmpl-1", "choi\n\n']),), "invalid_response", 1),
    # An error event inside a stream means what the same code means in a status body (one map).
    Case("stream-error-chunk", times(2, stream_raw([sse({"error": {"message": "engine died"}})])), "upstream", 2,
         env={"KIMI_MAX_RETRIES": "1"}),
    Case("stream-error-used-up", (stream_raw([sse({"error": {"code": "used_up", "message": "Balance used up."}})]),),
         "insufficient_balance", 1, code="used_up"),
    Case("stream-error-after-text",
         (stream_raw([content_chunk("Hello "), sse({"error": {"code": "used_up", "message": "Balance used up."}})]),),
         "insufficient_balance", 1, partial=True),
    Case("slow-headers", (reply(delay=5),), "timeout", 1, env={"KIMI_FIRST_BYTE_TIMEOUT": "0.3"}),
    Case("stalled-stream", (stall(after_chunks=2),), "timeout", 1, env={"KIMI_IDLE_TIMEOUT": "0.5"}, partial=True),
    Case("huge-200-body", (raw(200, HUGE),), "invalid_response", 1, message="larger than 16 MiB"),
    Case("huge-error-body", (raw(500, HUGE, content_type="text/plain"),), "invalid_response", 1),
]

CHAT_CASES = STATUS_CASES + RECOVERY_CASES + WIRE_CASES

JSON_OK = '{"answer": 42}'
# kimi_json without a progress token asks for a plain (non-streamed) answer: the other code path.
JSON_CASES = [
    Case("used_up", (ace_error(403, "used_up", "Used up."),), "insufficient_balance", 1),
    Case("exceeded_current_quota", (moonshot_error(429, "exceeded_current_quota_error", "quota"),),
         "insufficient_balance", 1),
    Case("429-all", times(3, ace_error(429, "too_many_requests", "x", headers=RA0)), "rate_limited", 3),
    Case("502-html-all", times(3, raw(502, HTML_502, content_type="text/html", headers=RA0)), "upstream", 3),
    Case("recover-500", (ace_error(500, "api_error", "x", headers=RA0), reply(JSON_OK)), None, 2),
    Case("recover-reset", (cut("reset"), reply(JSON_OK)), None, 2),
    Case("reset-mid-body", (cut("mid_body"),), "network", 1),
    Case("truncated-json-200", (raw(200, '{"choices": [{"mess'),), "invalid_response", 1),
    Case("slow-headers", (stall(seconds=5),), "timeout", 1, env={"KIMI_FIRST_BYTE_TIMEOUT": "0.3"}),
    Case("huge-200-body", (raw(200, HUGE),), "invalid_response", 1),
]


class Outputs:
    """Everything the client was shown, to prove a secret never appears in any of it."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, result: CallToolResult) -> CallToolResult:
        self.texts.extend(getattr(block, "text", "") for block in result.content)
        self.texts.append(json.dumps(result.structured_content))
        return result

    def assert_clean(self, *secrets: str, extra: str = "") -> None:
        everything = "\n".join([*self.texts, extra])
        for secret in secrets:
            assert secret not in everything


@pytest.fixture(autouse=True)
def log_everything(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the server's log at DEBUG, so the token checks see every line it writes."""
    caplog.set_level(logging.DEBUG)


@pytest.fixture(scope="module")
async def base_client(fake: FakeAce) -> AsyncIterator[Client]:
    """One in-memory server for the cases that need no settings of their own (server start-up costs)."""
    async with connect("memory", fake, env=BASE_ENV) as client:
        yield client


@pytest.fixture(scope="module")
async def no_retry_client(fake: FakeAce) -> AsyncIterator[Client]:
    """One in-memory server without retries: one scripted error is the answer."""
    async with connect("memory", fake, env={"KIMI_MAX_RETRIES": "0"}) as c:
        yield c


@asynccontextmanager
async def client_for(case: Case, fake: FakeAce, base: Client) -> AsyncIterator[Client]:
    """The shared server, or a fresh one when the case changes settings."""
    if not case.env:
        yield base
        return
    async with connect("memory", fake, env={**BASE_ENV, **case.env}) as client:
        yield client


def body(request: RecordedRequest) -> dict[str, Any]:
    """The JSON body the fake received."""
    assert isinstance(request.json, dict)
    return request.json


def check_error(result: CallToolResult, case: Case, content: str = DEFAULT_CONTENT) -> dict[str, Any]:
    """The clean error result shape, with the case's kind, attempts and details (`content`: the
    answer the fake was sending, of which a partial text must be a prefix)."""
    assert result.is_error, result.content
    text = result.content[0].text  # type: ignore[union-attr]
    assert "\n" not in text and text.startswith("Kimi ")
    assert result.structured_content is not None
    error: dict[str, Any] = result.structured_content["error"]
    assert set(error) >= ERROR_KEYS
    assert error["kind"] == case.kind
    assert error["attempts"] == case.attempts
    if case.kind in NEVER_RETRYABLE:
        assert error["retryable"] is False
    if case.status is not None:
        assert error["status"] == case.status
    if case.code is not None:
        assert error["code"] == case.code
    if case.message is not None:
        assert case.message in error["message"]
    if case.partial:
        assert error["partial_text"] and content.startswith(error["partial_text"])
    else:
        assert "partial_text" not in error
    return error


# --------------------------------------------------------------------------- the fault matrix


@pytest.mark.anyio
@pytest.mark.parametrize("case", CHAT_CASES, ids=lambda c: c.id)
async def test_kimi_chat_fault(
    fake: FakeAce, base_client: Client, case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Outputs()
    async with client_for(case, fake, base_client) as c:
        first = seen.add(await c.call_tool("kimi_chat", {"prompt": "first question"}))
        assert not first.is_error
        assert first.structured_content is not None
        cid = first.structured_content["conversation_id"]
        before = seen.add(await c.call_tool("kimi_read_conversation", {"conversation_id": cid}))
        assert before.structured_content is not None and len(before.structured_content["turns"]) == 2

        fake.reset()
        fake.script(*case.script)
        result = seen.add(await c.call_tool("kimi_chat", {"prompt": "second question", "conversation_id": cid}))
        received = fake.requests
        assert len(received) == case.attempts
        for request in received:  # every attempt carried the stored history and the new prompt
            contents = [m["content"] for m in body(request)["messages"]]
            assert contents == ["first question", DEFAULT_CONTENT, "second question"]
            assert body(request)["stream"] is True

        middle = seen.add(await c.call_tool("kimi_read_conversation", {"conversation_id": cid}))
        assert middle.structured_content is not None
        if case.kind is None:
            assert not result.is_error, result.content
            assert result.structured_content is not None
            assert result.structured_content["attempts"] == case.attempts
            assert result.structured_content["text"] == DEFAULT_CONTENT
            assert len(middle.structured_content["turns"]) == 4
        else:
            check_error(result, case)
            assert middle.structured_content == before.structured_content

        # Still serving: the next call on the same conversation succeeds and adds exactly one exchange.
        fake.reset()
        following = seen.add(await c.call_tool("kimi_chat", {"prompt": "third question", "conversation_id": cid}))
        assert not following.is_error, following.content
        assert following.structured_content is not None and following.structured_content["attempts"] == 1
        after = seen.add(await c.call_tool("kimi_read_conversation", {"conversation_id": cid}))
        assert after.structured_content is not None
        turns = after.structured_content["turns"]
        assert len(turns) == len(middle.structured_content["turns"]) + 2
        assert [t["content"] for t in turns[-2:]] == ["third question", DEFAULT_CONTENT]
    seen.assert_clean(fake.token, extra=caplog.text)


@pytest.mark.anyio
@pytest.mark.parametrize("case", JSON_CASES, ids=lambda c: c.id)
async def test_kimi_json_fault(
    fake: FakeAce, base_client: Client, case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    """The non-streamed path (kimi_json without a progress token) under the same faults."""
    seen = Outputs()
    async with client_for(case, fake, base_client) as c:
        fake.script(*case.script)
        result = seen.add(await c.call_tool("kimi_json", {"prompt": "give me json"}))
        assert len(fake.requests) == case.attempts
        assert all(body(r).get("stream") is not True for r in fake.requests)
        if case.kind is None:
            assert not result.is_error, result.content
            assert result.structured_content is not None
            assert result.structured_content["value"] == {"answer": 42}
            assert result.structured_content["upstream_attempts"] == case.attempts
        else:
            check_error(result, case)
        fake.reset()
        following = seen.add(await c.call_tool("kimi_json", {"prompt": "again"}))
        assert not following.is_error, following.content
        assert following.structured_content is not None and following.structured_content["upstream_attempts"] == 1
    seen.assert_clean(fake.token, extra=caplog.text)


@pytest.mark.anyio
async def test_upstream_message_echoing_the_token_is_redacted(fake: FakeAce, caplog: pytest.LogCaptureFixture) -> None:
    """An upstream that echoes our token back in its error: the result shows a mask instead."""
    seen = Outputs()
    async with connect("memory", fake) as c:
        fake.script(ace_error(401, "invalid_token", f"The token {fake.token} is invalid or wrong."))
        result = seen.add(await c.call_tool("kimi_chat", {"prompt": "hi"}))
        error = check_error(result, Case("echo", (), "auth", 1))
        assert "****" in error["message"] and "****" in result.content[0].text  # type: ignore[union-attr]
    seen.assert_clean(fake.token, extra=caplog.text)


# --------------------------------------------------------------------------- the error result of each failure


def expected(cls: type[errors.KimiError], status: int | None, code: str | None, message: str,
             trace_id: str | None = None, retry_after_s: float | None = None) -> dict[str, Any]:
    return {"kind": cls.kind, "status": status, "code": code, "message": message, "retryable": cls.retryable,
            "retry_after_s": retry_after_s, "trace_id": trace_id, "hint": cls.default_hint, "attempts": 1}


HTML_502_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
TEMPERATURE_400 = "invalid temperature: only 1 is allowed for this model"
RATE_429 = "Your account request reached max RPM: 3, please try again after 1 seconds"
OTHER_CURRENT = [m for m in CURRENT_IDS if m != DEFAULT_ID]
GONE_HINT = (f"the upstream does not know {DEFAULT_ID} (retired or never available there); call again with a "
             f"current model: {', '.join(OTHER_CURRENT)} (see kimi://models); it is the server's default: set "
             f"KIMI_DEFAULT_MODEL to one of them")
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
     raw(502, HTML_502_PAGE, content_type="text/html"),
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
     # a model the upstream does not know: the hint names the current ones and the setting to change
     expected(errors.NotFound, 404, "resource_not_found_error", "Not found the model kimi-x or Permission denied")
     | {"hint": GONE_HINT, "model": DEFAULT_ID, "current_models": OTHER_CURRENT}),
    ("200 not a completion",
     raw(200, '{"object": "list", "data": []}'),
     expected(errors.InvalidResponse, None, None, "the upstream answered 200 without a chat completion (no choices)")),
]


@pytest.mark.parametrize("tool", ["kimi_chat", "kimi_json"])
@pytest.mark.parametrize(("response", "want"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
async def test_upstream_errors(no_retry_client: Client, fake: FakeAce, tool: str, response: FakeResponse,
                               want: dict[str, Any]) -> None:
    """Every upstream failure reaches the host as one line plus the exact structured error."""
    fake.script(response)
    result = await no_retry_client.call_tool(tool, {"prompt": "p"})
    error = error_of(result)
    assert error == want
    assert len(fake.requests) == 1
    assert result.content[0].text.startswith(f"Kimi {want['kind'].replace('_', ' ')} error")
    assert want["hint"] in result.content[0].text
    assert_clean(result, fake.token)
    await still_answers(no_retry_client, fake)


async def test_hints_say_what_to_do(no_retry_client: Client, fake: FakeAce) -> None:
    cases = [
        (ace_error(401, "invalid_token", "bad"), "ACEDATACLOUD_API_TOKEN"),
        (ace_error(403, "used_up", "empty"), "recharge"),
        (moonshot_error(404, "resource_not_found_error", "no model"), "call again with a current model: kimi-k3.1-pro"),
        (ace_error(429, "too_many_requests", "slow down"), "retry"),
    ]
    for response, phrase in cases:
        fake.script(response)
        error = error_of(await no_retry_client.call_tool("kimi_chat", {"prompt": "p"}))
        assert phrase in error["hint"]


@pytest.mark.parametrize(("tool", "response", "kinds"), [
    ("kimi_chat", raw(200, '{"id": "chatcmpl-1", "choices": [{"mess'), {"invalid_response"}),
    ("kimi_json", raw(200, '{"id": "chatcmpl-1", "choices": [{"mess'), {"invalid_response"}),
    ("kimi_json", cut("mid_body"), {"invalid_response", "network"}),
    ("kimi_chat", cut("request"), {"network"}),
])
async def test_truncated_answers(no_retry_client: Client, fake: FakeAce, tool: str, response: FakeResponse,
                                 kinds: set[str]) -> None:
    fake.script(response)
    result = await no_retry_client.call_tool(tool, {"prompt": "p"})
    error = error_of(result)
    assert error["kind"] in kinds
    assert error["retryable"] is True
    assert_clean(result, fake.token)
    await still_answers(no_retry_client, fake)


async def test_nothing_listening_is_a_network_error_naming_the_base_url(fake: FakeAce) -> None:
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


# --------------------------------------------------------------------------- retries


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


@pytest.mark.anyio
@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_retries_stop_at_max_retries(fake: FakeAce, retries: int) -> None:
    fake.set_default(ace_error(500, "api_error", "Internal server error.", headers=RA0))
    async with connect("memory", fake, env={"KIMI_MAX_RETRIES": str(retries)}) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "hi"})
    check_error(result, Case("max", (), "upstream", retries + 1))
    assert len(fake.requests) == retries + 1


@pytest.mark.anyio
@pytest.mark.parametrize("response", [
    ace_error(403, "used_up", "Used up.", headers=RA0),
    moonshot_error(429, "exceeded_current_quota_error", "quota exceeded", headers=RA0),
], ids=["used_up", "exceeded_current_quota_error"])
async def test_balance_errors_are_never_retried(fake: FakeAce, response: FakeResponse) -> None:
    """Even with retries to spare and a Retry-After: one attempt, and the payload says not retryable."""
    fake.set_default(response)
    async with connect("memory", fake, env={"KIMI_MAX_RETRIES": "5"}) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "hi"})
        json_result = await c.call_tool("kimi_json", {"prompt": "hi"})
    for got in (result, json_result):
        error = check_error(got, Case("balance", (), "insufficient_balance", 1))
        assert error["retryable"] is False
        assert "recharge" in error["hint"]
    assert len(fake.requests) == 2


@pytest.mark.anyio
async def test_retry_after_header_is_honoured(fake: FakeAce) -> None:
    fake.script(ace_error(429, "too_many_requests", "slow down", headers={"Retry-After": "1"}), reply())
    async with connect("memory", fake) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "hi"})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["attempts"] == 2
    first, second = fake.requests
    gap = second.received_at - first.received_at
    assert 1.0 <= gap < MAX_DELAY_S + 5  # waited at least the header's value, and not unboundedly


@pytest.mark.anyio
async def test_moonshot_try_again_after_is_honoured(fake: FakeAce) -> None:
    message = "Your account org-1 request reached max request: 3, please try again after 1 seconds"
    fake.script(moonshot_error(429, "rate_limit_reached_error", message), reply())
    async with connect("memory", fake) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "hi"})
        assert not result.is_error and result.structured_content is not None
        assert result.structured_content["attempts"] == 2
        first, second = fake.requests
        assert 1.0 <= second.received_at - first.received_at < MAX_DELAY_S + 5
        # And when no retry is left, the payload carries the wait for the caller.
        fake.reset()
        fake.script(moonshot_error(429, "rate_limit_reached_error", message))
    async with connect("memory", fake, env={"KIMI_MAX_RETRIES": "0"}) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "hi"})
    error = check_error(result, Case("ra", (), "rate_limited", 1))
    assert error["retry_after_s"] == 1.0


@pytest.mark.anyio
async def test_odd_retry_after_values_stay_clean(fake: FakeAce) -> None:
    """Infinite, NaN, negative, HTTP-date or junk Retry-After: a clean error whose payload is valid JSON
    (no Infinity/NaN) and whose wait is a finite number of seconds or absent."""
    odd = ["inf", "nan", "1e400", "-3", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", ""]
    async with connect("memory", fake, env={"KIMI_MAX_RETRIES": "0"}) as c:
        for value in odd:
            fake.script(ace_error(429, "too_many_requests", "slow down", headers={"Retry-After": value}))
            result = await c.call_tool("kimi_chat", {"prompt": "hi"})
            error = check_error(result, Case(value, (), "rate_limited", 1))
            json.dumps(result.structured_content, allow_nan=False)
            wait = error["retry_after_s"]
            assert wait is None or 0 <= wait <= 3600, (value, wait)
    assert len(fake.requests) == len(odd)


@pytest.mark.anyio
async def test_retry_after_beyond_the_deadline_gives_up_at_once(fake: FakeAce) -> None:
    """A Retry-After that ends past KIMI_REQUEST_TIMEOUT: no pointless wait, one attempt, wait reported."""
    fake.set_default(ace_error(429, "too_many_requests", "slow down", headers={"Retry-After": "30"}))
    async with connect("memory", fake, env={"KIMI_REQUEST_TIMEOUT": "1", "KIMI_MAX_RETRIES": "5"}) as c:
        with anyio.fail_after(10):
            result = await c.call_tool("kimi_chat", {"prompt": "hi"})
    error = check_error(result, Case("deadline", (), "rate_limited", 1))
    assert error["retry_after_s"] == 30.0
    assert len(fake.requests) == 1


@pytest.mark.anyio
async def test_retries_never_run_past_the_request_timeout(fake: FakeAce) -> None:
    """Plenty of retries allowed, each 0.3 s apart: they stop at the 1 s overall deadline."""
    fake.set_default(ace_error(500, "api_error", "x", headers={"Retry-After": "0.3"}))
    async with connect("memory", fake, env={"KIMI_REQUEST_TIMEOUT": "1", "KIMI_MAX_RETRIES": "10"}) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "hi"})
        received = fake.requests
        assert result.is_error and result.structured_content is not None
        error = result.structured_content["error"]
        assert error["kind"] in ("upstream", "timeout")
        assert error["attempts"] == len(received)
        assert 2 <= len(received) < 11  # stopped by the deadline, not by the retry count
        assert received[-1].received_at - received[0].received_at < 1.0 + 0.3
        fake.reset()
        assert not (await c.call_tool("kimi_chat", {"prompt": "hi"})).is_error


@pytest.mark.anyio
async def test_connection_refused(caplog: pytest.LogCaptureFixture) -> None:
    """Nobody listening: retried (nothing was sent), then `network`; the server recovers when it returns."""
    port = free_port()
    seen = Outputs()
    with FakeAce(port=port) as first_fake:
        async with connect("memory", first_fake, env={"KIMI_MAX_RETRIES": "1"}) as c:
            made = seen.add(await c.call_tool("kimi_chat", {"prompt": "first question"}))
            assert made.structured_content is not None
            cid = made.structured_content["conversation_id"]
            before = seen.add(await c.call_tool("kimi_read_conversation", {"conversation_id": cid}))
            first_fake.stop()
            result = seen.add(await c.call_tool("kimi_chat", {"prompt": "lost", "conversation_id": cid}))
            check_error(result, Case("refused", (), "network", 2))
            unchanged = seen.add(await c.call_tool("kimi_read_conversation", {"conversation_id": cid}))
            assert unchanged.structured_content == before.structured_content
            with FakeAce(port=port) as second_fake:
                again = seen.add(await c.call_tool("kimi_chat", {"prompt": "back", "conversation_id": cid}))
                assert not again.is_error, again.content
                assert len(second_fake.requests) == 1
            seen.assert_clean(first_fake.token, extra=caplog.text)


# --------------------------------------------------------------------------- timeouts


@pytest.mark.anyio
async def test_slow_stream_hits_the_overall_timeout(fake: FakeAce) -> None:
    """Bytes keep coming (so no idle timeout), but the whole answer takes longer than allowed."""
    fake.script(reply("word " * 40, chunk_size=5, chunk_delay=0.1))
    async with connect("memory", fake, env={"KIMI_REQUEST_TIMEOUT": "1", "KIMI_IDLE_TIMEOUT": "5"}) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "hi"})
    error = check_error(result, Case("overall", (), "timeout", 1, partial=True), content="word " * 40)
    assert "within 1 s" in error["message"]
    assert len(fake.requests) == 1


@pytest.mark.anyio
async def test_slow_headers_error_names_the_first_byte_timeout(fake: FakeAce) -> None:
    """The error names the limit that fired (the first-byte timeout's value, not the idle timeout's)."""
    fake.script(reply(delay=5))
    async with connect("memory", fake, env={"KIMI_FIRST_BYTE_TIMEOUT": "0.3", "KIMI_IDLE_TIMEOUT": "7"}) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "hi"})
    error = check_error(result, Case("slow", (), "timeout", 1))
    assert "0.3 s" in error["message"] and "7 s" not in error["message"]


@pytest.mark.anyio
async def test_stream_gaps_within_idle_timeout_are_fine(fake: FakeAce) -> None:
    """Gaps between stream chunks are governed by KIMI_IDLE_TIMEOUT, not KIMI_FIRST_BYTE_TIMEOUT
    (the first-byte limit applies to the headers only, not to the reads that follow)."""
    fake.script(reply("sixteen chars!!!", chunk_size=16, chunk_delay=0.6))
    async with connect("memory", fake, env={"KIMI_FIRST_BYTE_TIMEOUT": "0.2", "KIMI_IDLE_TIMEOUT": "5"}) as c:
        result = await c.call_tool("kimi_chat", {"prompt": "hi"})
    assert not result.is_error, result.content
    assert result.structured_content is not None and result.structured_content["text"] == "sixteen chars!!!"


# --------------------------------------------------------------------------- the concurrency cap


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same instant)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


async def run_queued_calls(
    client: Client, fake: FakeAce, calls: int, holders: int
) -> tuple[dict[int, CallToolResult], dict[int, list[str]]]:
    """Start `holders` calls (which take every slot), then the others one by one, each only once the
    previous one was told it is queued: a known arrival order. Returns results and progress messages."""
    messages: dict[int, list[str]] = {i: [] for i in range(calls)}
    queued = {i: anyio.Event() for i in range(calls)}
    results: dict[int, CallToolResult] = {}

    async def call(i: int) -> None:
        async def progress(progress: float, total: float | None, message: str | None) -> None:
            messages[i].append(message or "")
            if (message or "").startswith("queued"):
                queued[i].set()

        results[i] = await client.call_tool("kimi_chat", {"prompt": f"call {i}"}, progress_callback=progress)

    async with anyio.create_task_group() as tg:
        for i in range(holders):
            tg.start_soon(call, i)
        await anyio.to_thread.run_sync(fake.wait_for_requests, holders)
        for i in range(holders, calls):
            tg.start_soon(call, i)
            with anyio.fail_after(10):
                await queued[i].wait()
    return results, messages


@pytest.mark.anyio
async def test_concurrency_cap_bounds_the_upstream(fake: FakeAce) -> None:
    """KIMI_MAX_CONCURRENCY=2 and 6 calls: the upstream never sees more than 2 at once, and each
    waiting streamer hears "queued" and then still gets its answer streamed.

    The first two answers take 2 s (so the slots stay busy while the others queue, however slow the
    machine); the rest take 0.3 s."""
    fake.latency = 0.3
    fake.script(reply(delay=2.0), reply(delay=2.0))
    async with connect("memory", fake, era="legacy", env={"KIMI_MAX_CONCURRENCY": "2"}) as c:
        results, messages = await run_queued_calls(c, fake, calls=6, holders=2)
    assert sorted(results) == list(range(6)) and not any(r.is_error for r in results.values())
    received = fake.requests
    assert len(received) == 6
    assert sorted(body(r)["messages"][-1]["content"] for r in received[:2]) == ["call 0", "call 1"]
    intervals = [(r.received_at, r.finished_at) for r in received]
    assert all(end is not None for _, end in intervals)
    assert max_overlap(intervals) == 2  # type: ignore[arg-type]
    assert not any(m.startswith("queued") for m in messages[0] + messages[1])
    for i in range(2, 6):
        assert messages[i][-1] == DEFAULT_CONTENT


@pytest.mark.anyio
async def test_queued_calls_reach_the_upstream_in_arrival_order(fake: FakeAce) -> None:
    """One slot (so no two waiters are ever let go at the same instant): first come, first served."""
    fake.script(reply(delay=2.0))
    async with connect("memory", fake, era="legacy", env={"KIMI_MAX_CONCURRENCY": "1"}) as c:
        results, _ = await run_queued_calls(c, fake, calls=5, holders=1)
    assert not any(r.is_error for r in results.values())
    received = fake.requests
    assert [body(r)["messages"][-1]["content"] for r in received] == [f"call {i}" for i in range(5)]
    for earlier, later in itertools.pairwise(received):
        assert earlier.finished_at is not None and earlier.finished_at <= later.received_at

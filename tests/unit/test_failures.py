"""`kimi_mcp.upstream.failures`: an upstream status and body become the right error class, in the
shapes Ace and Moonshot send (and HTML pages, plain text, empty bodies), with code, message,
trace id, hint and the wait from Retry-After or the message; the error's payload and one line."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import pytest

from kimi_mcp.errors import (
    AuthError,
    BadRequest,
    Forbidden,
    InsufficientBalance,
    NotFound,
    RateLimited,
    UpstreamError,
    UpstreamFailure,
    UpstreamTimeout,
)
from kimi_mcp.upstream import failures
from kimi_mcp.upstream.failures import from_status
from kimi_mcp.upstream.retry import RetryPolicy, should_retry


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
    def test_status_and_code_table(self, status: int, code: str, cls: type[UpstreamError], retryable: bool) -> None:
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

    @pytest.mark.parametrize(("body", "model"), [
        (moonshot_body("invalid_request_error", "Model kimi-k2.5 has been retired"), "kimi-k2.5"),
        (moonshot_body("invalid_request_error", "The model `kimi-k2-0905-preview` does not exist"),
         "kimi-k2-0905-preview"),
        (ace_body("bad_request", "Unknown model: KIMI-K2-TURBO-PREVIEW"), "kimi-k2-turbo-preview"),
    ])
    def test_a_400_naming_the_requested_model_as_gone_is_not_found(self, body: bytes, model: str) -> None:
        """Some gateways answer a retired or unknown model with 400: it is the model id to fix, not the
        caller's request, so it becomes not_found (and keeps the upstream's status, code and message)."""
        error = from_status(400, body, {}, model=model)
        assert isinstance(error, NotFound)
        assert (error.kind, error.status, error.retryable) == ("not_found", 400, False)
        assert error.message == json.loads(body)["error"]["message"]
        assert error.code in ("invalid_request_error", "bad_request")

    @pytest.mark.parametrize(("body", "model"), [
        # names the model but says nothing about it being gone
        (moonshot_body("invalid_request_error", "invalid temperature for kimi-k3: only 1 is allowed"), "kimi-k3"),
        # says "unknown" but about something else, not the model
        (moonshot_body("invalid_request_error", "unknown field: stop_words"), "kimi-k3"),
        # a retired model, but not the one asked for
        (moonshot_body("invalid_request_error", "Model kimi-k2.5 has been retired"), "kimi-k2-thinking"),
        # the request's model unknown to the caller of from_status: unchanged
        (moonshot_body("invalid_request_error", "Model kimi-k2.5 has been retired"), None),
        # a parameter the model does not support is the caller's request, not a gone model
        (moonshot_body("invalid_request_error", "top_p is not supported for model kimi-k3"), "kimi-k3"),
        # kimi-k3 is a prefix of kimi-k3.1-pro, not the same id
        (moonshot_body("invalid_request_error", "Model kimi-k3.1-pro has been retired"), "kimi-k3"),
    ])
    def test_an_unrelated_400_stays_a_bad_request(self, body: bytes, model: str | None) -> None:
        error = from_status(400, body, {}, model=model)
        assert type(error) is BadRequest
        assert error.kind == "bad_request"

    def test_only_a_400_is_reclassified(self) -> None:
        gone = moonshot_body("server_error", "model kimi-k2.5 is not available right now")
        assert type(from_status(503, gone, {}, model="kimi-k2.5")) is UpstreamFailure
        # the code says so whatever the status or message: no model needed
        assert type(from_status(400, ace_body("model_not_found", "no such thing"), {})) is NotFound
        assert type(from_status(401, ace_body("invalid_token", "kimi-k2.5 unknown token"), {}, model="kimi-k2.5")) is (
            AuthError)

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


def test_retry_after_as_an_http_date() -> None:
    """Retry-After may be an HTTP date (RFC 9110): the wait is the time until then."""
    from email.utils import formatdate

    wait = failures.retry_after_seconds({"retry-after": formatdate(time.time() + 30, usegmt=True)}, None)
    assert wait is not None and 25 <= wait <= 30
    assert failures.retry_after_seconds({"retry-after": formatdate(time.time() - 30, usegmt=True)}, None) is None
    assert failures.retry_after_seconds({"retry-after": "inf"}, None) is None

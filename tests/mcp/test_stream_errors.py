"""Every upstream error code, arriving as an `error` event inside a stream, means what the same code
means as an HTTP status body (one map): the same kind, retryability and retry count, through a real
MCP client. Each code is also tried after part of the answer came: never retried (it may be billed),
and the partial text is kept for the report."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mcp import Client

from tests.mcp.helpers import Progress, call, error_of
from tests.support.fake_ace import FakeAce, FakeResponse, ace_error, moonshot_error, stream_error
from tests.support.harness import connect

pytestmark = pytest.mark.anyio

# (status, code, moonshot shape?) for every code the reference lists.
CODES = [
    (400, "bad_request", False), (400, "no_token", False), (400, "token_mismatched", False),
    (400, "api_not_implemented", False), (401, "invalid_token", False), (401, "token_expired", False),
    (403, "used_up", False), (403, "disabled", False), (403, "forbidden", False), (404, "no_api", False),
    (429, "too_many_requests", False), (500, "api_error", False), (504, "timeout", False),
    (400, "invalid_request_error", True), (401, "invalid_authentication_error", True),
    (403, "permission_denied_error", True), (404, "resource_not_found_error", True),
    (429, "rate_limit_reached_error", True), (503, "engine_overloaded_error", True),
    (429, "exceeded_current_quota_error", True), (400, "content_filter", True), (500, "server_error", True),
]
ENV = {"KIMI_MAX_RETRIES": "1", "KIMI_EXTRA_MODELS": "kimi-next-preview"}


@pytest.fixture(scope="module")
async def streaming(fake: FakeAce) -> AsyncIterator[Client]:
    """In process, legacy era: its calls carry a progress token, so answers are streamed."""
    async with connect("memory", fake, era="legacy", env=ENV) as client:
        yield client


@pytest.fixture(scope="module")
async def plain(fake: FakeAce) -> AsyncIterator[Client]:
    async with connect("memory", fake, env=ENV) as client:
        yield client


def status_body(status: int, code: str, moonshot: bool) -> FakeResponse:
    headers = {"Retry-After": "0"}
    if moonshot:
        return moonshot_error(status, code, f"{code} happened", headers=headers)
    return ace_error(status, code, f"{code} happened", headers=headers)


@pytest.mark.parametrize(("status", "code", "moonshot"), CODES, ids=[c[1] for c in CODES])
async def test_a_code_in_a_stream_means_what_it_means_in_a_status_body(
        streaming: Client, plain: Client, fake: FakeAce, status: int, code: str, moonshot: bool) -> None:
    fake.set_default(status_body(status, code, moonshot))
    by_status = error_of(await call(plain, "kimi_chat", {"prompt": "p"}))
    status_attempts = len(fake.requests)
    fake.reset()

    fake.set_default(stream_error(code, f"{code} happened", moonshot=moonshot))
    in_stream = error_of(await call(streaming, "kimi_chat", {"prompt": "p"}, Progress()))
    stream_attempts = len(fake.requests)
    assert fake.requests[0].wants_stream
    assert in_stream["kind"] == by_status["kind"], (code, in_stream["message"])
    assert in_stream["retryable"] == by_status["retryable"]
    assert stream_attempts == status_attempts  # retried exactly when the status body is
    assert f"{code} happened" in in_stream["message"] and in_stream["trace_id"] == "trace-in-stream"


@pytest.mark.parametrize(("status", "code", "moonshot"), CODES, ids=[c[1] for c in CODES])
async def test_a_code_after_part_of_the_answer_is_never_retried(
        streaming: Client, fake: FakeAce, status: int, code: str, moonshot: bool) -> None:
    fake.set_default(stream_error(code, "late failure", before="Half an answer", moonshot=moonshot))
    error = error_of(await call(streaming, "kimi_chat", {"prompt": "p"}, Progress()))
    assert len(fake.requests) == 1
    assert error["partial_text"] == "Half an answer"

"""The upstream client without sockets: `KimiClient` driven through `httpx2.MockTransport`.

What goes out (URL, headers, body), what comes back (plain and streamed replies), and every
retry decision: the error class says whether, the client only adds "never after the answer began"
and the budget. Cuts, stalls and resets that a mock cannot fake are covered against the real
loopback fake in the MCP tests.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import httpx2
import pytest

from kimi_mcp.errors import (
    AuthError,
    InsufficientBalance,
    InvalidResponse,
    KimiError,
    NetworkError,
    RateLimited,
    UpstreamFailure,
)
from kimi_mcp.settings import Secret
from kimi_mcp.upstream import CHAT_PATH, KimiClient, RetryPolicy, StreamAccumulator, Timeouts

pytestmark = pytest.mark.anyio

TOKEN = "unit-token-0123456789abcdef"
BASE = "http://ace.test"
TIMEOUTS = Timeouts(connect=1.0, first_byte=5.0, idle=5.0, overall=10.0)
FAST_RETRY = RetryPolicy(max_retries=2, base_delay_s=0.0, max_delay_s=0.0)

Handler = Callable[[httpx2.Request], Any]


def completion(text: str = "Hello!", *, model: str = "kimi-k2.5") -> dict[str, Any]:
    return {
        "id": "chatcmpl-unit", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-unit", "object": "chat.completion.chunk", "model": "kimi-k2.5", "choices": choices,
            **extra}


def sse(*events: dict[str, Any], done: bool = True) -> bytes:
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    return (text + ("data: [DONE]\n\n" if done else "")).encode()


def stream_response(body: bytes | AsyncIterator[bytes]) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, json={"error": {"code": code, "message": message}, "trace_id": "t-1"},
                           headers=headers)


class Recorder:
    """A MockTransport handler that answers from a script and records every request."""

    def __init__(self, answers: Iterable[httpx2.Response | Exception]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def body(self, index: int = -1) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.requests[index].content)
        return data


def client_for(handler: Handler, *, token: str | None = TOKEN, retry: RetryPolicy = FAST_RETRY) -> KimiClient:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return KimiClient(http, base_url=BASE + "/", token=Secret(token) if token else None, timeouts=TIMEOUTS,
                      retry=retry, max_concurrency=4)


BODY = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "Hi"}]}
STREAM_BODY = {**BODY, "stream": True, "stream_options": {"include_usage": True}}


async def test_plain_call_sends_one_post_with_the_token() -> None:
    recorder = Recorder([httpx2.Response(200, json=completion("Hello!"))])
    outcome = await client_for(recorder).chat(dict(BODY))
    assert (outcome.reply.text, outcome.reply.model, outcome.attempts) == ("Hello!", "kimi-k2.5", 1)
    assert outcome.reply.usage.total_tokens == 7
    request = recorder.requests[0]
    assert (request.method, str(request.url)) == ("POST", BASE + CHAT_PATH)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/json"
    assert recorder.body() == BODY


async def test_streamed_call_reports_each_delta_and_assembles_the_reply() -> None:
    events = [chunk({"role": "assistant", "content": ""}), chunk({"reasoning_content": "Think."}),
              chunk({"content": "Hel"}), chunk({"content": "lo"}, finish="stop"),
              chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})]
    recorder = Recorder([stream_response(sse(*events))])
    seen: list[tuple[str, str]] = []

    async def on_delta(acc: StreamAccumulator) -> None:
        seen.append((acc.reasoning, acc.text))

    outcome = await client_for(recorder).chat(dict(STREAM_BODY), on_delta=on_delta)
    assert seen == [("Think.", ""), ("Think.", "Hel"), ("Think.", "Hello")]
    assert (outcome.reply.text, outcome.reply.reasoning, outcome.reply.finish_reason) == ("Hello", "Think.", "stop")
    assert outcome.reply.usage.total_tokens == 5
    assert recorder.requests[0].headers["accept"] == "text/event-stream"


async def test_no_token_refuses_before_any_request() -> None:
    recorder = Recorder([httpx2.Response(200, json=completion())])
    with pytest.raises(AuthError, match="no API token"):
        await client_for(recorder, token=None).chat(dict(BODY))
    assert recorder.requests == []


@pytest.mark.parametrize(("answers", "cls", "attempts"), [
    ([error_response(429, "too_many_requests", "slow down", {"retry-after": "0"})], RateLimited, 3),
    ([error_response(500, "api_error", "Internal server error.")], UpstreamFailure, 3),
    ([httpx2.ConnectError("refused")], NetworkError, 3),
    ([error_response(403, "used_up", "Balance used up.")], InsufficientBalance, 1),
    ([error_response(401, "invalid_token", "The specified token is invalid or wrong.")], AuthError, 1),
    ([httpx2.Response(200, content=b"<html>not json</html>")], InvalidResponse, 1),
], ids=["429", "500", "connect-error", "used_up", "invalid_token", "200-not-json"])
async def test_retries_follow_the_error_class(answers: list[Any], cls: type[KimiError], attempts: int) -> None:
    recorder = Recorder(answers)
    with pytest.raises(cls) as raised:
        await client_for(recorder).chat(dict(BODY))
    assert len(recorder.requests) == attempts == raised.value.details["attempts"]
    assert raised.value.auto_retry is (attempts > 1)


async def test_a_retry_that_succeeds_reports_its_attempts() -> None:
    recorder = Recorder([error_response(502, "api_error", "bad gateway"), httpx2.Response(200, json=completion("ok"))])
    outcome = await client_for(recorder).chat(dict(BODY))
    assert (outcome.reply.text, outcome.attempts, len(recorder.requests)) == ("ok", 2, 2)


async def test_stream_error_event_is_mapped_like_a_status_body_and_never_retried() -> None:
    """`used_up` inside a 200 stream is a balance problem (not 'invalid_response, retry later')."""
    recorder = Recorder([stream_response(sse({"error": {"code": "used_up", "message": "Balance used up."}},
                                             done=False))])
    with pytest.raises(InsufficientBalance) as raised:
        await client_for(recorder).chat(dict(STREAM_BODY), on_delta=_ignore)
    assert raised.value.retryable is False
    assert raised.value.code == "used_up"
    assert len(recorder.requests) == 1


async def test_stream_error_after_text_keeps_the_partial_answer_and_is_not_retried() -> None:
    events = [chunk({"content": "Half an "}), {"error": {"code": "api_error", "message": "engine died"}}]
    recorder = Recorder([stream_response(sse(*events, done=False)), stream_response(sse(chunk({"content": "x"})))])
    with pytest.raises(UpstreamFailure) as raised:
        await client_for(recorder).chat(dict(STREAM_BODY), on_delta=_ignore)
    assert raised.value.details["partial_text"] == "Half an "
    assert raised.value.answer_began
    assert len(recorder.requests) == 1


async def test_stream_error_before_any_text_is_retried_when_its_class_allows() -> None:
    failing = stream_response(sse({"error": {"code": "engine_overloaded_error", "message": "busy"}}, done=False))
    recorder = Recorder([failing, stream_response(sse(chunk({"content": "fine"}, finish="stop")))])
    outcome = await client_for(recorder).chat(dict(STREAM_BODY), on_delta=_ignore)
    assert (outcome.reply.text, outcome.attempts) == ("fine", 2)


async def test_stream_cut_before_done_is_a_network_error_with_the_partial_text() -> None:
    recorder = Recorder([stream_response(sse(chunk({"content": "Hello "}), done=False))])
    with pytest.raises(NetworkError, match="before \\[DONE\\]") as raised:
        await client_for(recorder).chat(dict(STREAM_BODY), on_delta=_ignore)
    assert raised.value.details["partial_text"] == "Hello "


async def test_concurrency_cap_reports_queueing() -> None:
    """With every slot taken, a caller hears 'queued' before its request goes out."""
    release = anyio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        await release.wait()
        yield sse(chunk({"content": "done"}, finish="stop"))

    async def handler(request: httpx2.Request) -> httpx2.Response:
        return stream_response(slow_body())

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    client = KimiClient(http, base_url=BASE, token=Secret(TOKEN), timeouts=TIMEOUTS, retry=FAST_RETRY,
                        max_concurrency=1)
    queued: list[str] = []

    async def on_queued() -> None:
        queued.append("queued")
        release.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: client.chat(dict(STREAM_BODY), on_delta=_ignore))
        await anyio.sleep(0.05)
        outcome = await client.chat(dict(STREAM_BODY), on_delta=_ignore, on_queued=on_queued)
    assert queued == ["queued"]
    assert outcome.reply.text == "done"


async def _ignore(acc: StreamAccumulator) -> None:
    return None

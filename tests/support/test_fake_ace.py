"""The loopback fake of the Ace API itself (tests/support/fake_ace.py), through a real HTTP client:
the completion and stream shapes Ace documents, token checks, scripting (queue, per-count, default),
error factories, broken connections and stalls, the control API and command line, latency,
keep-alive and pipelining, and 200 concurrent requests.

Other tests trust the fake to behave like Ace; these tests hold it to that.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.support.fake_ace import (
    CHAT_PATH,
    DEFAULT_CONTENT,
    FakeAce,
    FakeResponse,
    ace_error,
    cut,
    moonshot_error,
    raw,
    reply,
    stall,
    stream_raw,
)

BODY: dict[str, Any] = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def fake() -> Iterator[FakeAce]:
    """A fresh fake per test, overriding the suite's module-scoped one: these tests stop it, count
    its open connections and time it, which must not carry over from one test to the next."""
    with FakeAce() as server:
        yield server


@pytest.fixture
def client(fake: FakeAce) -> Iterator[httpx2.Client]:
    headers = {"Authorization": f"Bearer {fake.token}"}
    # Plain HTTP on loopback: verify=False only skips loading the CA bundle (tens of ms per client).
    with httpx2.Client(base_url=fake.base_url, headers=headers, timeout=5, verify=False) as c:
        yield c


def post_chat(base_url: str, authorization: str | None = None) -> httpx2.Response:
    """One chat call on a throwaway client."""
    headers = {"Authorization": authorization} if authorization else {}
    return httpx2.post(base_url + CHAT_PATH, json=BODY, headers=headers, verify=False)


def chat(client: httpx2.Client, **extra: Any) -> httpx2.Response:
    return client.post(CHAT_PATH, json={**BODY, **extra})


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an event stream, ignoring comments and tolerating CRLF."""
    lines = text.replace("\r\n", "\n").split("\n")
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


def sse_chunks(text: str) -> list[dict[str, Any]]:
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def joined(chunks: list[dict[str, Any]], key: str) -> str:
    return "".join(c["choices"][0]["delta"].get(key, "") for c in chunks if c["choices"])


# --------------------------------------------------------------------------- success shapes


def test_default_reply_has_ace_completion_shape(fake: FakeAce, client: httpx2.Client) -> None:
    response = chat(client)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert (body["object"], body["model"]) == ("chat.completion", "kimi-k2.5")
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": DEFAULT_CONTENT, "refusal": None, "tool_calls": []},
        "logprobs": None,
        "finish_reason": "stop",
    }
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert usage["prompt_tokens_details"] == {"cached_tokens_details": {}}
    assert usage["completion_tokens_details"] == {}
    [recorded] = fake.requests
    assert recorded.json == BODY
    assert recorded.headers["authorization"] == f"Bearer {fake.token}"
    assert recorded.finished_at is not None and recorded.finished_at >= recorded.received_at
    assert not recorded.client_closed


def test_reply_with_reasoning_model_and_usage(fake: FakeAce, client: httpx2.Client) -> None:
    fake.script(
        reply(" Hi.", reasoning=" The user said hello.", model="kimi-k2-thinking", reasoning_tokens=40),
        reply("x", usage={"prompt_tokens": 1}, finish_reason="length"),
    )
    body = chat(client).json()
    message = body["choices"][0]["message"]
    assert message["content"] == " Hi."
    assert message["reasoning_content"] == message["reasoning"] == " The user said hello."
    assert body["model"] == "kimi-k2-thinking"
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 40}
    assert body["usage"]["completion_tokens"] > 40
    second = chat(client).json()
    assert second["usage"] == {"prompt_tokens": 1}
    assert second["choices"][0]["finish_reason"] == "length"


def test_json_mode_default_is_a_json_object(client: httpx2.Client) -> None:
    body = chat(client, response_format={"type": "json_object"}).json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"answer": DEFAULT_CONTENT}


def test_default_rejects_a_body_without_messages(client: httpx2.Client) -> None:
    response = client.post(CHAT_PATH, content=b"not json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


def test_stream_follows_ace_order(fake: FakeAce, client: httpx2.Client) -> None:
    fake.script(reply("Hello there, friend.", reasoning="Let me think about it."))
    response = chat(client, stream=True)
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    chunks = sse_chunks(response.text)
    assert chunks[0]["choices"][0]["delta"] == {"content": "", "role": "assistant"}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "kimi-k2.5" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
    kinds = ["reasoning" in d for d in deltas]
    assert kinds == sorted(kinds, reverse=True), "reasoning comes before content"
    assert any("reasoning" in d and "content" in d for d in deltas), "one chunk carries both"
    assert all(d.get("reasoning") == d.get("reasoning_content") for d in deltas)
    assert joined(chunks, "reasoning_content") == "Let me think about it."
    assert joined(chunks, "content") == "Hello there, friend."
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finishes == [None] * (len(chunks) - 2) + ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_stream_moonshot_usage_rides_in_the_finishing_choice(fake: FakeAce, client: httpx2.Client) -> None:
    fake.script(reply("Hello there.", moonshot_usage=True, mixed_chunk=False))
    chunks = sse_chunks(chat(client, stream=True).text)
    assert all(c["choices"] for c in chunks)
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "stop"
    assert last["usage"]["completion_tokens"] > 0


def test_stream_crlf_and_comments(fake: FakeAce, client: httpx2.Client) -> None:
    fake.script(reply("Hello there.", crlf=True, comments=True, chunk_size=3))
    text = chat(client, stream=True).text
    assert "\r\n\r\n" in text and "\n\n" not in text.replace("\r\n", "")
    assert text.count(": keep-alive") >= 5
    assert joined(sse_chunks(text), "content") == "Hello there."


def test_stream_empty_content_still_finishes(fake: FakeAce, client: httpx2.Client) -> None:
    fake.script(reply("", reasoning="long thoughts", finish_reason="length"))
    chunks = sse_chunks(chat(client, stream=True).text)
    assert joined(chunks, "content") == ""
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


# --------------------------------------------------------------------------- auth and routing


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic abc"])
def test_bad_token_gets_ace_401_and_keeps_the_queue(fake: FakeAce, header: str | None) -> None:
    fake.script(reply("scripted"))
    response = post_chat(fake.base_url, header)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == {"code": "invalid_token", "message": "The specified token is invalid or wrong."}
    uuid.UUID(body["trace_id"])
    good = post_chat(fake.base_url, f"Bearer {fake.token}")
    assert good.json()["choices"][0]["message"]["content"] == "scripted"


def test_check_token_false_accepts_anything() -> None:
    with FakeAce(check_token=False, token="other") as fake:
        assert post_chat(fake.base_url).status_code == 200


def test_unknown_path_is_no_api(client: httpx2.Client) -> None:
    response = client.post("/kimi/nothing", json=BODY)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_api"
    assert client.get(CHAT_PATH).status_code == 404


# --------------------------------------------------------------------------- scripting


def test_script_queue_order_then_script_for_then_default(fake: FakeAce, client: httpx2.Client) -> None:
    fake.script(reply("one"), reply("two"))
    fake.script_for(2, reply("again"))
    fake.set_default(reply("fallback"))
    contents = [chat(client).json()["choices"][0]["message"]["content"] for _ in range(6)]
    assert contents == ["one", "two", "again", "again", "fallback", "fallback"]
    fake.reset()
    assert fake.requests == []
    assert chat(client).json()["choices"][0]["message"]["content"] == DEFAULT_CONTENT


def test_error_factories(fake: FakeAce, client: httpx2.Client) -> None:
    limited = ace_error(429, "too_many_requests", "You have exceeded the rate limit.", headers={"Retry-After": "2"})
    fake.script(
        limited,
        ace_error(403, "used_up", "Balance used up.", trace_id="t-1", success_false=True),
        moonshot_error(429, "rate_limit_reached_error", "please try again after 1 seconds"),
        raw(502, "<html><body>Bad Gateway</body></html>", content_type="text/html"),
        raw(500, b""),
        raw(400, '{"error": "plain string"}'),
        raw(200, '{"choices": [{"mess'),
    )
    first = chat(client)
    assert (first.status_code, first.headers["retry-after"]) == (429, "2")
    assert first.json()["error"]["code"] == "too_many_requests"
    assert first.json()["trace_id"] == json.loads(limited.body)["trace_id"]
    assert chat(client).json() == {
        "error": {"code": "used_up", "message": "Balance used up."},
        "trace_id": "t-1",
        "success": False,
    }
    assert chat(client).json() == {
        "error": {"message": "please try again after 1 seconds", "type": "rate_limit_reached_error"}
    }
    html = chat(client)
    assert (html.status_code, html.headers["content-type"]) == (502, "text/html")
    empty = chat(client)
    assert (empty.status_code, empty.content) == (500, b"")
    assert chat(client).json() == {"error": "plain string"}
    assert chat(client).text == '{"choices": [{"mess'


def test_ace_error_trace_id_is_fixed_per_response(fake: FakeAce, client: httpx2.Client) -> None:
    error = ace_error(500, "api_error", "Internal server error.")
    fake.script_for(2, error)
    ids = {chat(client).json()["trace_id"] for _ in range(2)}
    assert ids == {json.loads(error.body)["trace_id"]}


def test_stream_raw_sends_literal_blocks(fake: FakeAce, client: httpx2.Client) -> None:
    fake.script(
        stream_raw(['data: {"a": 1}\n\n', ": ping\n\n", 'data: {"b"', ": 2}\n\n"]),
        stream_raw(['data: {"a": 1}\n\n'], done=False),
    )
    assert chat(client, stream=True).text == 'data: {"a": 1}\n\n: ping\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    assert chat(client, stream=True).text == 'data: {"a": 1}\n\n'


@pytest.mark.parametrize(
    "response",
    [
        reply(),
        reply("c", reasoning="r", usage={"x": 1}, crlf=True, headers={"X-A": "b"}),
        ace_error(429, "too_many_requests", "slow down", success_false=True),
        moonshot_error(400, "content_filter", "blocked"),
        raw(200, b"\xff\xfe not utf-8"),
        stream_raw(["data: 1\n\n"], chunk_delay=0.1, done=False),
        cut("reset"),
        stall(1, 2.5),
    ],
)
def test_fake_response_round_trips_through_json(response: FakeResponse) -> None:
    data = json.loads(json.dumps(response.to_dict()))
    assert FakeResponse.from_dict(data) == response


def test_from_dict_rejects_unknown_things() -> None:
    with pytest.raises(ValueError):
        FakeResponse.from_dict({"kind": "explode"})
    with pytest.raises(ValueError):
        FakeResponse.from_dict({"kind": "reply", "colour": "red"})
    with pytest.raises(ValueError):
        FakeResponse.from_dict({"kind": "cut", "after": "never"})


# --------------------------------------------------------------------------- broken connections


@pytest.mark.parametrize(
    ("after", "stream", "error"),
    [
        ("request", False, httpx2.RemoteProtocolError),
        ("reset", False, httpx2.ReadError),
        ("headers", False, httpx2.RemoteProtocolError),
        ("mid_body", False, httpx2.RemoteProtocolError),
        ("mid_stream", False, httpx2.RemoteProtocolError),
        ("mid_stream", True, httpx2.RemoteProtocolError),
    ],
)
def test_cut_modes_break_the_client(
    fake: FakeAce, client: httpx2.Client, after: str, stream: bool, error: type[Exception]
) -> None:
    fake.script(FakeResponse.from_dict({"kind": "cut", "after": after}))
    with pytest.raises(error):
        chat(client, stream=stream)
    assert chat(client).status_code == 200, "the next request gets a fresh connection"


def test_mid_stream_cut_delivers_partial_text_without_done(fake: FakeAce, client: httpx2.Client) -> None:
    fake.script(cut("mid_stream"))
    received: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        client.stream("POST", CHAT_PATH, json={**BODY, "stream": True}) as r,
    ):
        received.extend(r.iter_text())
    data = sse_data("".join(received))
    assert data and "[DONE]" not in data
    assert joined([json.loads(d) for d in data], "content") == DEFAULT_CONTENT[:16]


@pytest.mark.anyio
async def test_stall_then_client_close_is_observed(fake: FakeAce) -> None:
    fake.script(stall(after_chunks=1, seconds=60))
    headers = {"Authorization": f"Bearer {fake.token}"}
    async with httpx2.AsyncClient(base_url=fake.base_url, headers=headers, verify=False) as client:
        body = {**BODY, "stream": True}
        async with client.stream("POST", CHAT_PATH, json=body) as response:
            seen = ""
            async for text in response.aiter_text():
                seen += text
                if len(sse_data(seen)) == 2:
                    break
        left_at = time.monotonic()
    recorded = await anyio.to_thread.run_sync(fake.wait_for_close)
    assert recorded.client_closed and recorded.finished_at is None
    assert recorded.closed_at is not None and recorded.closed_at - left_at < 1.0
    assert fake.open_connections == 0


def test_stall_resumes_and_finishes(fake: FakeAce, client: httpx2.Client) -> None:
    fake.script(stall(after_chunks=1, seconds=0.2), stall(seconds=0.2))
    started = time.monotonic()
    assert joined(sse_chunks(chat(client, stream=True).text), "content") == DEFAULT_CONTENT
    assert chat(client).json()["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    assert time.monotonic() - started >= 0.4


def test_stall_times_out_the_client_and_stop_is_prompt(fake: FakeAce, client: httpx2.Client) -> None:
    fake.script(stall(seconds=3600), stall(seconds=3600))
    with pytest.raises(httpx2.ReadTimeout):
        client.post(CHAT_PATH, json={**BODY, "stream": True}, timeout=0.2)
    fake.wait_for_close(0)
    errors: list[Exception] = []

    def hang() -> None:
        try:
            client.post(CHAT_PATH, json=BODY, timeout=10)
        except httpx2.HTTPError as err:
            errors.append(err)

    thread = threading.Thread(target=hang)
    thread.start()
    fake.wait_for_requests(2)
    started = time.monotonic()
    fake.stop()
    thread.join(2)
    assert time.monotonic() - started < 1.0
    assert isinstance(errors[0], httpx2.RemoteProtocolError)


# --------------------------------------------------------------------------- control endpoints


def test_control_endpoints(fake: FakeAce, client: httpx2.Client) -> None:
    script = {
        "responses": [
            {"kind": "ace_error", "status": 429, "code": "too_many_requests", "message": "slow"},
            reply("from the script").to_dict(),
        ]
    }
    assert client.post("/_fake/script", json=script).json() == {"queued": 2}
    assert chat(client).status_code == 429
    assert chat(client).json()["choices"][0]["message"]["content"] == "from the script"
    client.post(
        "/_fake/default", json={"kind": "moonshot_error", "status": 500, "type": "server_error", "message": "x"}
    )
    assert chat(client).json()["error"]["type"] == "server_error"
    client.post("/_fake/default", json=None)
    assert chat(client).status_code == 200
    recorded = client.get("/_fake/requests").json()
    assert len(recorded) == 4
    assert recorded[0]["json"] == BODY and recorded[0]["method"] == "POST" and not recorded[0]["client_closed"]
    assert recorded[0]["headers"]["authorization"] == f"Bearer {fake.token}"
    assert client.post("/_fake/reset").status_code == 200
    assert fake.requests == [] and client.get("/_fake/requests").json() == []


def test_control_endpoints_reject_bad_input(client: httpx2.Client) -> None:
    assert client.post("/_fake/script", json={"responses": [{"kind": "nope"}]}).status_code == 400
    assert client.post("/_fake/script", content=b"{").status_code == 400
    assert client.get("/_fake/unknown").status_code == 404


def test_command_line_serves_until_terminated() -> None:
    script = Path(__file__).with_name("fake_ace.py")
    args = [sys.executable, str(script), "--token", "cli-token", "--latency", "0"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:")
            response = post_chat(base_url, "Bearer cli-token")
            assert response.json()["choices"][0]["message"]["content"] == DEFAULT_CONTENT
        finally:
            proc.terminate()
        assert proc.wait(5) == 0


# --------------------------------------------------------------------------- timing, reuse, load


def test_latency_delays_default_answers_only(fake: FakeAce, client: httpx2.Client) -> None:
    fake.latency = 0.2
    started = time.monotonic()
    chat(client)
    assert time.monotonic() - started >= 0.2
    fake.script(reply("quick"))
    started = time.monotonic()
    chat(client)
    assert time.monotonic() - started < 0.15


def test_keep_alive_reuses_one_connection(fake: FakeAce, client: httpx2.Client) -> None:
    for _ in range(5):
        assert chat(client).status_code == 200
    assert chat(client, stream=True).status_code == 200
    assert fake.open_connections == 1


def raw_exchange(fake: FakeAce, data: bytes) -> bytes:
    host, port = fake.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_pipelined_requests_on_one_socket(fake: FakeAce) -> None:
    body = json.dumps(BODY).encode()
    request = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fake.token}\r\nContent-Length: {len(body)}\r\n"
    ).encode()
    data = raw_exchange(fake, request + b"\r\n" + body + request + b"Connection: close\r\n\r\n" + body)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.count(b'"content": "Hello from fake Kimi."') == 2


def test_chunked_request_body_and_expect_continue(fake: FakeAce) -> None:
    body = json.dumps(BODY).encode()
    request = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fake.token}\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    data = raw_exchange(fake, request + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert fake.requests[0].json == BODY


@pytest.mark.parametrize(
    "garbage",
    [b"GARBAGE\r\n\r\n", b"POST / HTTP/1.1\r\nno colon here\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"],
)
def test_garbage_gets_400_and_a_close(fake: FakeAce, garbage: bytes) -> None:
    data = raw_exchange(fake, garbage)
    assert data.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"Connection: close" in data
    assert fake.requests == []


def test_wait_for_requests_times_out(fake: FakeAce) -> None:
    with pytest.raises(TimeoutError):
        fake.wait_for_requests(1, timeout=0.05)


@pytest.mark.anyio
async def test_two_hundred_concurrent_requests(fake: FakeAce) -> None:
    fake.latency = 0.2  # every request holds its connection long enough for all 200 to overlap
    limits = httpx2.Limits(max_connections=256, max_keepalive_connections=256)
    headers = {"Authorization": f"Bearer {fake.token}"}
    results: list[int] = []
    options: dict[str, Any] = {"headers": headers, "limits": limits, "timeout": 10, "verify": False}
    async with httpx2.AsyncClient(base_url=fake.base_url, **options) as c:

        async def one(i: int) -> None:
            response = await c.post(CHAT_PATH, json={**BODY, "stream": i % 2 == 0})
            results.append(response.status_code)

        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for i in range(200):
                group.start_soon(one, i)
        elapsed = time.monotonic() - started
        assert fake.open_connections == 200
    assert results == [200] * 200
    assert elapsed < 5.0, "the latency overlaps instead of adding up (40 s if serial)"
    assert len(fake.requests) == 200


def test_the_prefix_cache_reports_the_prefix_shared_with_an_earlier_request(
    fake: FakeAce, client: httpx2.Client
) -> None:
    history = [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "y" * 400}]
    first = chat(client, messages=[*history, {"role": "user", "content": "one"}]).json()["usage"]
    assert "cached_tokens" not in first  # off by default: nothing cached, as before
    fake.cache_prefixes = True
    cold = chat(client, messages=[*history, {"role": "user", "content": "two"}]).json()["usage"]
    assert cold["cached_tokens"] == 0  # the fake remembers prompts only while the cache is on
    warm = chat(client, messages=[*history, {"role": "user", "content": "three"}]).json()["usage"]
    assert 200 <= warm["cached_tokens"] < warm["prompt_tokens"]
    assert warm["prompt_tokens_details"]["cached_tokens"] == warm["cached_tokens"]
    other = chat(client, messages=[{"role": "user", "content": "z" * 800}]).json()["usage"]
    assert other["cached_tokens"] <= 10  # only the opening of the first message is shared
    assert fake.requests[-2].cached_tokens == warm["cached_tokens"]
    four = [*history, {"role": "user", "content": "four"}]
    stream = client.post(CHAT_PATH, json={**BODY, "stream": True, "messages": four})
    assert '"cached_tokens"' in stream.text

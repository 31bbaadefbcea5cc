"""Hostile upstream text and secrets, at the unit level: linear-time parsing of what the upstream
controls, surrogates split across chunks, token fragments masked, log lines kept on one line,
odd 200 answers classified.

Time-sensitive cases assert a generous bound ("well under a second") on inputs that took many
seconds with the old quadratic patterns; they measure nothing finer than that.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from typing import Any

import httpx2
import pytest

from kimi_mcp.chat.json_answers import parse_json_reply, unfence
from kimi_mcp.errors import AuthError, InsufficientBalance, InvalidResponse
from kimi_mcp.redaction import MASK, MIN_FRAGMENT, RedactingFilter, escape_controls, redact, redact_value
from kimi_mcp.settings import Secret
from kimi_mcp.upstream import KimiClient, RetryPolicy, StreamAccumulator, Timeouts
from kimi_mcp.upstream.failures import from_status, html_title
from kimi_mcp.upstream.wire import clean_text, parse_completion

TOKEN = "ace-Zq81mP0xR7vK2wT9yB4nL6cH3dF5gJ"
GENEROUS_S = 1.0


def elapsed(fn: Any, *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


# --------------------------------------------------------------------------- linear-time parsing


@pytest.mark.parametrize(("text", "value"), [
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ('```{"a":1}```', {"a": 1}),
    ('```json {"a":1}```', {"a": 1}),
    ('```JSON\n[1, 2]\n```', [1, 2]),
    ('```{"a": 1,\n"b": 2}```', {"a": 1, "b": 2}),
    (' {"a": 1} ', {"a": 1}),
])
def test_fences_are_unwrapped(text: str, value: Any) -> None:
    assert parse_json_reply(text) == value


def test_fence_parsing_is_linear_in_the_reply() -> None:
    """A 24 KB reply stalled every client 6.8 s with the old backtracking pattern."""
    hostile = "```" + " \n" * 200_000 + "x"
    assert elapsed(unfence, hostile) < GENEROUS_S
    assert elapsed(unfence, "```" + "\n" * 200_000 + "```") < GENEROUS_S


def test_html_title_is_found_in_linear_time() -> None:
    """A 112 KB 502 page stalled 11.7 s per attempt with the old `<title>(.*?)</title>` pattern."""
    page = "<html>" + "<title>" * 200_000
    assert elapsed(html_title, page) < GENEROUS_S
    assert html_title("<html><head><TITLE> 502 Bad Gateway </TITLE></head>") == "502 Bad Gateway"
    assert html_title("<html><body>down</body></html>") == "an HTML error page"
    assert from_status(502, page.encode(), {}).message  # bounded, and never empty


# --------------------------------------------------------------------------- surrogates


def test_a_surrogate_pair_split_across_chunks_is_joined() -> None:
    acc = StreamAccumulator()
    for piece in ("Hi \\ud83d", "\\ude00!"):
        acc.feed_line('data: {"choices": [{"delta": {"content": "' + piece + '"}}]}')
        acc.feed_line("")
    assert acc.text == "Hi \U0001F600!"
    assert acc.content_chars == len(acc.text)


def test_lone_surrogates_are_replaced_not_fatal() -> None:
    acc = StreamAccumulator()
    for piece in ("a\\udc00b", "c\\ud83d"):
        acc.feed_line('data: {"choices": [{"delta": {"reasoning_content": "' + piece + '", "content": "'
                      + piece + '"}}]}')
        acc.feed_line("")
    reply = acc.reply()
    assert reply.text == reply.reasoning == "a\ufffdbc\ufffd"
    reply.text.encode("utf-8")  # would raise with a lone surrogate
    plain = parse_completion({"choices": [{"message": {"content": "x\ud800y", "reasoning_content": "\udfff"}}]})
    assert (plain.text, plain.reasoning) == ("x\ufffdy", "\ufffd")
    assert clean_text("plain ascii") == "plain ascii"


# --------------------------------------------------------------------------- secrets


def test_whole_tokens_and_fragments_are_masked() -> None:
    assert redact(f"Bearer {TOKEN} echoed", (TOKEN,)) == f"Bearer {MASK} echoed"
    cut = f"error: Authorization: Bearer {TOKEN}"[:-1]  # the message was cut one character short
    assert TOKEN[:MIN_FRAGMENT] not in redact(cut, (TOKEN,))
    assert TOKEN[-MIN_FRAGMENT:] not in redact(f"{TOKEN[3:]} and more", (TOKEN,))
    middle = TOKEN[5:5 + MIN_FRAGMENT + 3]
    assert middle not in redact(f"x{middle}y", (TOKEN,))
    assert redact("ordinary text 0123", (TOKEN,)) == "ordinary text 0123"
    assert redact("abc", ("abc",)) == MASK  # a short secret is masked whole


def test_json_keys_are_masked_too() -> None:
    value = {TOKEN: {"nested": [TOKEN[:20]]}, "ok": 1}
    masked = redact_value(value, (TOKEN,))
    assert TOKEN[:MIN_FRAGMENT] not in json.dumps(masked)
    assert masked["ok"] == 1


def test_log_records_are_masked_and_kept_on_one_line() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "session %s token %s", ("abc\r\nFAKE LINE", TOKEN),
                               None)
    RedactingFilter((TOKEN,)).filter(record)
    assert "\n" not in record.msg and "\r" not in record.msg
    assert "abc\\r\\nFAKE LINE" in record.msg and TOKEN not in record.msg
    assert escape_controls("tab\there \x1b[31m") == "tab\\there \\x1b[31m"
    unmasked = logging.LogRecord("x", logging.INFO, __file__, 1, "id %s", ("a\nb",), None)
    RedactingFilter(()).filter(unmasked)
    assert unmasked.msg == "id a\\nb"


# --------------------------------------------------------------------------- odd answers and odd tokens


def client_for(answer: httpx2.Response, token: str = TOKEN) -> tuple[KimiClient, list[httpx2.Request]]:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return answer

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return KimiClient(http, base_url="http://ace.test", token=Secret(token),
                      timeouts=Timeouts(connect=1, first_byte=5, idle=5, overall=10),
                      retry=RetryPolicy(max_retries=2, base_delay_s=0, max_delay_s=0), max_concurrency=2), seen


BODY = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_an_html_200_page_is_an_invalid_response_not_a_network_error(stream: bool) -> None:
    page = httpx2.Response(200, headers={"content-type": "text/html"},
                           content=b"<html><title>Captive portal</title></html>")
    client, seen = client_for(page)

    async def ignore(acc: StreamAccumulator) -> None:
        return None

    with pytest.raises(InvalidResponse, match=r"HTML page \(Captive portal\)") as raised:
        await client.chat({**BODY, "stream": stream}, on_delta=ignore if stream else None)
    assert len(seen) == 1 and not raised.value.auto_retry


@pytest.mark.anyio
async def test_a_200_body_carrying_an_error_keeps_the_upstream_message() -> None:
    client, seen = client_for(httpx2.Response(200, json={"error": {"code": "used_up", "message": "No balance."}}))
    with pytest.raises(InsufficientBalance, match=r"No balance\."):
        await client.chat(dict(BODY))
    assert len(seen) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("token", ["abc\ndef-0123456789", "tökén-0123456789", "two words-0123456789"])
async def test_a_token_that_cannot_be_sent_is_an_auth_error_before_any_request(token: str) -> None:
    client, seen = client_for(httpx2.Response(200, json={}), token=token)
    with pytest.raises(AuthError, match="cannot be sent") as raised:
        await client.chat(dict(BODY))
    assert seen == []
    assert token not in raised.value.line()


# --------------------------------------------------------------------------- bounded reading


async def _chunks(*parts: bytes) -> Any:
    for part in parts:
        yield part


@pytest.mark.anyio
async def test_a_gzip_bomb_is_inflated_in_bounded_steps_and_refused() -> None:
    import gzip

    from kimi_mcp.upstream.reading import CHUNK, MAX_BODY_BYTES, decoded_chunks, read_body

    def raw(encoding: str, body: bytes) -> httpx2.Response:
        """A response whose body is still to be read, as from the network (not decoded by httpx2)."""
        return httpx2.Response(200, headers={"content-encoding": encoding}, content=_chunks(body))

    bomb = gzip.compress(b"\0" * (MAX_BODY_BYTES + CHUNK * 4))
    assert len(bomb) < MAX_BODY_BYTES // 100
    sizes = [len(chunk) async for chunk in decoded_chunks(raw("gzip", bomb))]
    assert max(sizes) <= CHUNK and sum(sizes) == MAX_BODY_BYTES + CHUNK * 4
    with pytest.raises(InvalidResponse, match="larger than 16 MiB"):
        await read_body(raw("gzip", bomb))
    assert await read_body(raw("gzip", gzip.compress(b'{"ok": 1}'))) == b'{"ok": 1}'
    assert await read_body(raw("deflate", zlib.compress(b'{"ok": 2}'))) == b'{"ok": 2}'
    with pytest.raises(InvalidResponse, match="not asked for"):
        await read_body(raw("br", b"x"))
    with pytest.raises(InvalidResponse, match="corrupt"):
        await read_body(raw("gzip", b"not gzip"))


@pytest.mark.anyio
async def test_stream_lines_are_capped_in_length_and_in_total() -> None:
    from kimi_mcp.upstream.reading import lines

    got = [line async for line in lines(_chunks(b"data: a\r\n\r\ndata: ", b"b\n\n"), max_line=64)]
    assert got == ["data: a\r", "\r", "data: b", ""]
    with pytest.raises(InvalidResponse, match="line longer"):
        async for _ in lines(_chunks(b"data: " + b"x" * 100, b"y" * 100), max_line=64):
            pass
    with pytest.raises(InvalidResponse, match="larger than"):
        async for _ in lines(_chunks(*[b"data: {}\n\n"] * 1000), max_total=1024 * 1024 // 128, max_line=64):
            pass


def test_an_endless_answer_fails_at_the_answer_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from kimi_mcp.upstream import sse

    monkeypatch.setattr(sse, "MAX_ANSWER_CHARS", 100)
    acc = StreamAccumulator()
    with pytest.raises(InvalidResponse, match="longer than 100 characters"):
        for _ in range(20):
            acc.feed_line('data: {"choices": [{"delta": {"content": "0123456789"}}]}')
            acc.feed_line("")
    assert acc.content_chars <= 110


@pytest.mark.anyio
async def test_the_client_asks_only_for_encodings_it_can_bound() -> None:
    client, seen = client_for(httpx2.Response(200, json={"choices": [{"message": {"content": "ok"}}]}))
    await client.chat(dict(BODY))
    assert seen[0].headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.anyio
async def test_a_slow_drip_request_body_is_dropped() -> None:
    import anyio

    from kimi_mcp.server import http

    messages = [{"type": "http.request", "body": b"{", "more_body": True}]

    async def drip() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await anyio.sleep(3600)  # the client never sends the rest
        raise AssertionError("unreachable")

    receive = http._body_deadline(drip, 0.2)
    assert (await receive())["body"] == b"{"
    started = time.monotonic()
    assert await receive() == {"type": "http.disconnect"}
    assert time.monotonic() - started < 5

    done = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def complete() -> dict[str, Any]:
        if done:
            return done.pop(0)
        await anyio.sleep(0.5)  # waiting for a disconnect after the body: not timed
        return {"type": "http.disconnect", "late": True}

    receive = http._body_deadline(complete, 0.2)
    await receive()
    assert (await receive()).get("late") is True

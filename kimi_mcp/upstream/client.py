"""The upstream client: one pooled HTTP client, one request per attempt, failures mapped once.

`KimiClient.chat` sends a body to `POST {base}/kimi/chat/completions`, plain or streamed, retries
what a retry can fix (see `retry`), holds a concurrency slot while it talks to the upstream, and
returns a `ChatReply` or raises a `KimiError`. Each call is one OpenTelemetry CLIENT span and
its attempts, retries, waits and tokens are counted (`kimi_mcp.telemetry`). Nothing here knows about
MCP, conversations or tools: it may import `kimi_mcp.errors`, `kimi_mcp.settings`,
`kimi_mcp.telemetry`, `kimi_mcp.prices` and this package.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2

from .. import telemetry
from ..errors import TOKEN_HELP, AuthError, InvalidResponse, KimiError, NetworkError, TimeoutError_
from ..prices import PriceTable, estimate_cost
from ..settings import Secret, Settings
from .failures import from_error_object, from_status, html_title
from .reading import ACCEPT_ENCODING, decoded_chunks, lines, read_body
from .retry import RetryPolicy, should_retry, wait_before_retry
from .sse import StreamAccumulator
from .wire import ChatReply, encode_body, parse_completion

__all__ = ["CHAT_PATH", "DeltaHook", "KimiClient", "Outcome", "Timeouts", "make_http_client"]

log = logging.getLogger(__name__)

CHAT_PATH = "/kimi/chat/completions"
DRAIN_S = 1.0
MAX_PARTIAL_CHARS = 1_000_000
"""An error report keeps at most this much of a broken answer."""
DeltaHook = Callable[[StreamAccumulator], Awaitable[None]]
QueueHook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Connect, first byte (headers), idle (between stream bytes) and overall, in seconds.

    No defaults here: the settings table is the one place they are chosen."""

    connect: float
    first_byte: float
    idle: float
    overall: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Timeouts:
        return cls(connect=settings.connect_timeout, first_byte=settings.first_byte_timeout,
                   idle=settings.idle_timeout, overall=settings.request_timeout)


@dataclass(slots=True)
class _Received:
    """What the current attempt has received: decides whether a retry is allowed, and keeps the
    partial text for an error report."""

    acc: StreamAccumulator | None = None
    delivered: bool = False  # some of the answer reached the caller: never retry after this
    sent: float | None = None
    """When the attempt got its concurrency slot (None: it never did)."""
    first_token_s: float | None = None
    """Seconds from `sent` to the first answer or reasoning token of a stream."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished call: the reply and how many upstream attempts it took."""

    reply: ChatReply
    attempts: int


def make_http_client(timeouts: Timeouts, max_connections: int) -> httpx2.AsyncClient:
    """The process's one pooled client. Only the connect timeout is httpx2's: first byte, idle and
    overall are enforced by `KimiClient` around each phase, so each error names the right limit."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(None, connect=timeouts.connect),
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        follow_redirects=False,
        trust_env=False,
    )


class KimiClient:
    """Talks to the Kimi chat-completions endpoint; one instance per process."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        base_url: str,
        token: Secret | None,
        timeouts: Timeouts,
        retry: RetryPolicy,
        max_concurrency: int,
        prices: PriceTable | None = None,
    ) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + CHAT_PATH
        parts = urlsplit(self._url)
        self._server = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        self._token = token
        self._timeouts = timeouts
        self._retry = retry
        self._prices = prices
        """The table whose estimates the cost metric counts (None: the built-in one)."""
        self._slots = anyio.CapacityLimiter(max_concurrency)
        telemetry.watch_slots(self._slots)

    async def chat(
        self,
        body: dict[str, Any],
        *,
        on_delta: DeltaHook | None = None,
        on_queued: QueueHook | None = None,
    ) -> Outcome:
        """One call with retries, all inside the call's overall deadline, as one span."""
        with telemetry.upstream_call(body, address=self._server[0], port=self._server[1]) as measured:
            outcome, received = await self._chat(body, on_delta, on_queued, measured)
            reply = outcome.reply
            model = str(body.get("model") or "")
            measured.finished(response_id=reply.id, response_model=reply.model, finish_reason=reply.finish_reason,
                              usage=reply.usage, attempts=outcome.attempts, first_token_s=received.first_token_s,
                              cost_usd=estimate_cost(model, reply.usage, self._prices))
            return outcome

    async def _chat(
        self,
        body: dict[str, Any],
        on_delta: DeltaHook | None,
        on_queued: QueueHook | None,
        measured: telemetry.UpstreamCall,
    ) -> tuple[Outcome, _Received]:
        if self._token is None:
            raise AuthError("no API token is configured", hint=TOKEN_HELP)
        if not _sendable(self._token.reveal()):
            raise AuthError("the configured API token contains a space, a line break or a non-ASCII character, "
                            "so it cannot be sent", hint=f"fix ACEDATACLOUD_API_TOKEN: {TOKEN_HELP}")
        overall = self._timeouts.overall
        deadline = time.monotonic() + overall
        attempts = 0
        received = _Received()
        try:
            with anyio.fail_after(overall):
                while True:
                    attempts += 1
                    received = _Received()
                    measured.begin()
                    try:
                        reply = await self._attempt(body, on_delta, on_queued, received)
                    except KimiError as error:
                        measured.attempt(error.kind, first_token_s=received.first_token_s)
                        error.details["attempts"] = attempts
                        if not should_retry(error, retries_done=attempts - 1, policy=self._retry,
                                            answer_started=received.delivered):
                            raise
                        delay = wait_before_retry(error, attempts - 1, self._retry)
                        if time.monotonic() + delay >= deadline:
                            raise
                        log.info("upstream %s (attempt %d); retrying in %.2fs", error.kind, attempts, delay)
                        measured.retry(error, attempts, delay)
                        await anyio.sleep(delay)
                    else:
                        measured.attempt(None, first_token_s=received.first_token_s)
                        return Outcome(reply, attempts), received
        except TimeoutError:
            late = TimeoutError_(f"no complete answer within {overall:g} s (KIMI_REQUEST_TIMEOUT)",
                                 details={"attempts": attempts})
            raise _with_partial(late, received.acc) from None

    async def _attempt(
        self,
        body: dict[str, Any],
        on_delta: DeltaHook | None,
        on_queued: QueueHook | None,
        received: _Received,
    ) -> ChatReply:
        if on_queued is not None and self._slots.available_tokens < 1:
            await on_queued()
        asked = time.monotonic()
        async with self._slots:
            received.sent = time.monotonic()
            telemetry.queue_wait(received.sent - asked)
            try:
                if body.get("stream"):
                    return await self._stream(body, on_delta, received)
                return await self._plain(body)
            except httpx2.TimeoutException as exc:
                raise self._timeout_error(exc) from None
            except httpx2.TransportError as exc:
                raise NetworkError(f"connection to the upstream failed: {type(exc).__name__}") from None

    def _headers(self, accept: str) -> dict[str, str]:
        assert self._token is not None
        return {"Authorization": f"Bearer {self._token.reveal()}", "Content-Type": "application/json",
                "Accept": accept, "Accept-Encoding": ACCEPT_ENCODING}

    def _timeout_error(self, exc: httpx2.TimeoutException) -> KimiError:
        if isinstance(exc, httpx2.ConnectTimeout):
            return NetworkError(f"could not connect to the upstream within {self._timeouts.connect:g} s")
        return TimeoutError_(f"the upstream timed out ({type(exc).__name__})")

    @asynccontextmanager
    async def _open(self, body: dict[str, Any], accept: str) -> AsyncIterator[httpx2.Response]:
        """Send the request; the headers must come within the first-byte timeout."""
        request = self._http.build_request("POST", self._url, content=encode_body(body),
                                           headers=self._headers(accept))
        first_byte = self._timeouts.first_byte
        try:
            with anyio.fail_after(first_byte):
                response = await self._http.send(request, stream=True)
        except TimeoutError:
            raise TimeoutError_(f"the upstream did not start answering within {first_byte:g} s "
                                "(KIMI_FIRST_BYTE_TIMEOUT)", hint=_limit_hint("KIMI_FIRST_BYTE_TIMEOUT")) from None
        try:
            yield response
        finally:
            await response.aclose()

    async def _plain(self, body: dict[str, Any]) -> ChatReply:
        async with self._open(body, "application/json") as response:
            data = await self._read_body(response)
            if response.status_code != 200:
                raise from_status(response.status_code, data, response.headers, model=body.get("model"))
        return _completion(data)

    async def _read_body(self, response: httpx2.Response) -> bytes:
        idle = self._timeouts.idle
        try:
            with anyio.fail_after(idle):
                return await read_body(response)
        except TimeoutError:
            raise TimeoutError_(f"the upstream answer stalled for {idle:g} s (KIMI_IDLE_TIMEOUT)",
                                hint=_limit_hint("KIMI_IDLE_TIMEOUT")) from None

    async def _stream(self, body: dict[str, Any], on_delta: DeltaHook | None, received: _Received) -> ChatReply:
        acc = received.acc = StreamAccumulator()
        async with self._open(body, "text/event-stream") as response:
            if response.status_code != 200:
                raise from_status(response.status_code, await self._read_body(response), response.headers,
                                  model=body.get("model"))
            content_type = response.headers.get("content-type", "")
            if "event-stream" not in content_type:
                # Some gateways ignore stream=true and answer with one plain completion; a proxy
                # may answer 200 with an HTML page: neither is a stream.
                return _completion(await self._read_body(response))
            try:
                await self._consume(response, on_delta, received)
            except (httpx2.TransportError, KimiError) as exc:
                raise _with_partial(self._stream_error(exc), acc) from None
        return acc.reply()

    def _stream_error(self, exc: Exception) -> KimiError:
        if isinstance(exc, KimiError):
            return exc
        if isinstance(exc, httpx2.TimeoutException):
            return TimeoutError_(
                f"the upstream stream stalled: no bytes for {self._timeouts.idle:g} s (KIMI_IDLE_TIMEOUT)",
                hint=_limit_hint("KIMI_IDLE_TIMEOUT"),
            )
        return NetworkError(f"the upstream stream was cut before it finished ({type(exc).__name__})")

    async def _consume(self, response: httpx2.Response, on_delta: DeltaHook | None, received: _Received) -> None:
        acc = received.acc
        assert acc is not None
        # From here on every read may wait at most the idle timeout: httpcore reads this dict at each
        # read, which is far cheaper than a cancel scope around every SSE line.
        timeouts = response.request.extensions.get("timeout")
        if isinstance(timeouts, dict):
            timeouts["read"] = self._timeouts.idle
        stream = lines(decoded_chunks(response)).__aiter__()
        while not acc.done:
            try:
                line = await stream.__anext__()
            except StopAsyncIteration:
                acc.flush()
                if acc.done:
                    return
                raise NetworkError("the upstream stream ended before [DONE]") from None
            if acc.feed_line(line) is None:
                continue
            if received.first_token_s is None and received.sent is not None:
                received.first_token_s = time.monotonic() - received.sent
            if on_delta is not None:
                received.delivered = True
                await on_delta(acc)
        # Read the stream to its end (normally just the blank line and the chunked terminator), so
        # the connection goes back to the pool instead of being closed half-read.
        with anyio.move_on_after(DRAIN_S):
            async for _ in stream:
                pass


def _with_partial(error: KimiError, acc: StreamAccumulator | None) -> KimiError:
    """A failure mid-stream, carrying what had arrived so far."""
    if acc is not None and (acc.content_chars or acc.reasoning_chars):
        error.answer_began = True
        text = acc.text
        error.details["partial_text"] = text[:MAX_PARTIAL_CHARS]
        if len(text) > MAX_PARTIAL_CHARS:
            error.details["partial_truncated"] = True
        error.details["partial_reasoning_chars"] = acc.reasoning_chars
    return error


def _limit_hint(setting: str) -> str:
    return f"no answer in time; retry, raise {setting}, or use a turbo model"


def _sendable(token: str) -> bool:
    """Whether the token can go into an HTTP header as it is (printable ASCII, no spaces)."""
    return token.isascii() and token.isprintable() and " " not in token


def _completion(data: bytes) -> ChatReply:
    """A 200 body as a reply: a completion, an error object (mapped like an error status), or
    something else (`InvalidResponse`, naming an HTML page by its title)."""
    try:
        parsed = json.loads(data)
    except ValueError:
        text = data[:65_536].decode("utf-8", "replace").strip()
        what = f"an HTML page ({html_title(text)})" if text.startswith("<") else f"{len(data)} bytes that are not JSON"
        raise InvalidResponse(f"the upstream answered 200 with {what}") from None
    if isinstance(parsed, dict) and "choices" not in parsed and isinstance(parsed.get("error"), dict | str):
        raise from_error_object(parsed, "the upstream answered 200 with an error")
    return parse_completion(parsed)

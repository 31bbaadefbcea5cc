"""A loopback fake of Ace Data Cloud's Kimi chat-completions API, for tests and benchmarks.

A real HTTP/1.1 server on raw asyncio streams, running its own event loop in a daemon thread, so
that sync tests, async tests and subprocesses can all talk to it, and so that every byte on the
wire is ours to control: keep-alive, chunked SSE, cut and reset connections, slow headers, stalls.
Bodies, streams and errors take the shapes Ace documents for Kimi (and Moonshot's native ones).

Script answers with the factories (`reply`, `ace_error`, `moonshot_error`, `raw`, `stream_raw`,
`cut`, `stall`) through `FakeAce.script`, or over HTTP at `/_fake/*` from another process.
Run `python tests/support/fake_ace.py [--port N] [--token T] [--latency S]` to serve until killed.
With `cache_prefixes` on (`POST /_fake/cache {"prefixes": true}`), usage reports `cached_tokens` as
Kimi's automatic prefix cache would: the longest prefix shared with an earlier request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import math
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, get_args

try:
    from tests.support.fake_parts import content_problem
except ImportError:  # started as a script by path: its own directory is on sys.path
    from fake_parts import content_problem  # type: ignore[import-not-found, no-redef]

__all__ = [
    "CHAT_PATH",
    "DEFAULT_CONTENT",
    "DEFAULT_TOKEN",
    "FakeAce",
    "FakeResponse",
    "RecordedRequest",
    "ace_error",
    "cut",
    "main",
    "moonshot_error",
    "raw",
    "reply",
    "stall",
    "stream_error",
    "stream_raw",
]

DEFAULT_TOKEN = "test-token-s3cr3t-0123456789"
DEFAULT_CONTENT = "Hello from fake Kimi."
DEFAULT_MODEL = "kimi-k2.5"
CHAT_PATH = "/kimi/chat/completions"
CONTROL_PREFIX = "/_fake/"
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
MAX_PENDING = 1024 * 1024  # bytes a watched connection may pipeline before we stop reading it
READ_SIZE = 64 * 1024

Kind = Literal["reply", "raw", "stream_raw", "cut", "stall"]
CutPoint = Literal["request", "reset", "headers", "mid_body", "mid_stream"]
StreamShape = Literal["auto", "ace", "k3"]
K3_PREFIX = "kimi-k3"
THINKS_ALWAYS = ("kimi-k3", "kimi-k2.7-code")
"""Prefixes of models whose unscripted replies carry reasoning (they always think)."""
DEFAULT_REASONING = "The user greets me; I answer briefly."
KEEPS_REASONING = ("kimi-k2.7-code",)
"""Models that refuse a history whose assistant turns lack reasoning_content (k2.6 too, with thinking.keep)."""


# --------------------------------------------------------------------------- recorded requests


@dataclass
class RecordedRequest:
    """One request as the fake received it; the timing fields let tests check cancellation."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any | None
    received_at: float
    finished_at: float | None = None
    client_closed: bool = False
    closed_at: float | None = None
    cached_tokens: int | None = None  # what the prefix cache served (with `cache_prefixes` on)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view for `GET /_fake/requests` (body text only when it is not JSON)."""
        out: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "headers": dict(self.headers),
            "json": self.json,
            "client_closed": self.client_closed,
            "received_at": self.received_at,
            "finished_at": self.finished_at,
            "closed_at": self.closed_at,
            "cached_tokens": self.cached_tokens,
        }
        if self.json is None:
            out["body"] = self.body.decode("utf-8", "replace")
        return out

    @property
    def wants_stream(self) -> bool:
        """Whether the body asked for Server-Sent Events."""
        return isinstance(self.json, dict) and self.json.get("stream") is True


# --------------------------------------------------------------------------- scripted responses


@dataclass
class FakeResponse:
    """One scripted answer. Build it with the factories; `kind` says which fields matter.

    It round-trips through JSON (`to_dict` / `from_dict`) so other processes can script the fake.
    """

    kind: Kind
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # reply, stall, and the partial bodies of cut
    content: str = DEFAULT_CONTENT
    reasoning: str | None = None
    model: str | None = None
    finish_reason: str | None = "stop"
    usage: dict[str, Any] | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    """Prompt tokens served from Kimi's prefix cache (set by the fake when `cache_prefixes` is on)."""
    chunk_size: int = 8
    chunk_delay: float = 0.0
    moonshot_usage: bool = False
    crlf: bool = False
    comments: bool = False
    mixed_chunk: bool = True
    shape: StreamShape = "auto"
    """The stream's shape: Ace's k2.5 shape, the K3 shape, or (auto) by the requested model."""
    # raw
    body: bytes = b""
    content_type: str = "application/json"
    # stream_raw
    events: list[str] = field(default_factory=list)
    done: bool = True
    # cut and stall
    after: CutPoint = "headers"
    after_chunks: int = 2
    seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.kind not in get_args(Kind):
            raise ValueError(f"unknown response kind {self.kind!r}")
        if self.after not in get_args(CutPoint):
            raise ValueError(f"unknown cut point {self.after!r}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"bad HTTP status {self.status}")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from their defaults, plus `kind`; bytes as text or base64."""
        out: dict[str, Any] = {"kind": self.kind}
        defaults = FakeResponse(kind=self.kind)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "kind" or value == getattr(defaults, f.name):
                continue
            if f.name == "body":
                try:
                    out["body"] = value.decode("utf-8")
                except UnicodeDecodeError:
                    out["body_b64"] = base64.b64encode(value).decode("ascii")
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FakeResponse:
        """Inverse of `to_dict`; also takes `{"kind": "ace_error" | "moonshot_error", ...}`."""
        d = dict(data)
        kind = d.pop("kind", None)
        if kind == "ace_error":
            return ace_error(**d)
        if kind == "moonshot_error":
            return moonshot_error(type_=d.pop("type"), **d)
        if "body_b64" in d:
            d["body"] = base64.b64decode(d.pop("body_b64"))
        elif isinstance(d.get("body"), str):
            d["body"] = d["body"].encode("utf-8")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown FakeResponse fields: {sorted(unknown)}")
        return cls(kind=kind, **d)


def reply(
    content: str = DEFAULT_CONTENT,
    *,
    shape: StreamShape = "auto",
    reasoning: str | None = None,
    model: str | None = None,
    finish_reason: str | None = "stop",
    usage: dict[str, Any] | None = None,
    delay: float = 0.0,
    chunk_size: int = 8,
    chunk_delay: float = 0.0,
    moonshot_usage: bool = False,
    crlf: bool = False,
    comments: bool = False,
    reasoning_tokens: int | None = None,
    mixed_chunk: bool = True,
    headers: dict[str, str] | None = None,
) -> FakeResponse:
    """A successful completion: a chat.completion body, or Ace's SSE stream when asked to stream.

    `mixed_chunk`: the last reasoning piece and the first content piece share one chunk, as Ace's
    streams sometimes do. `usage=None` computes plausible counts (characters / 4). Without a
    `chunk_delay` the whole stream leaves in one write; set one to make the client read in pieces.
    """
    return FakeResponse(
        kind="reply",
        content=content,
        reasoning=reasoning,
        model=model,
        finish_reason=finish_reason,
        usage=usage,
        delay=delay,
        chunk_size=chunk_size,
        chunk_delay=chunk_delay,
        moonshot_usage=moonshot_usage,
        crlf=crlf,
        comments=comments,
        reasoning_tokens=reasoning_tokens,
        mixed_chunk=mixed_chunk,
        headers=dict(headers or {}),
        shape=shape,
    )


def ace_error(
    status: int,
    code: str,
    message: str,
    *,
    trace_id: str | None = None,
    success_false: bool = False,
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> FakeResponse:
    """Ace's error body; the trace id is fixed here so a test can look for it in reports."""
    payload: dict[str, Any] = {
        "error": {"code": code, "message": message},
        "trace_id": trace_id or str(uuid.uuid4()),
    }
    if success_false:
        payload["success"] = False
    return raw(status, _json_bytes(payload), headers=headers, delay=delay)


def moonshot_error(status: int, type_: str, message: str, *, headers: dict[str, str] | None = None) -> FakeResponse:
    """Moonshot's native error body, which Ace may or may not pass through."""
    return raw(status, _json_bytes({"error": {"message": message, "type": type_}}), headers=headers)


def raw(
    status: int,
    body: bytes | str,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> FakeResponse:
    """Any plain response, byte for byte: odd error shapes, HTML pages, truncated JSON."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    return FakeResponse(
        kind="raw",
        status=status,
        body=data,
        content_type=content_type,
        headers=dict(headers or {}),
        delay=delay,
    )


def stream_raw(events: list[str], *, chunk_delay: float = 0.0, done: bool = True) -> FakeResponse:
    """A 200 event stream of literal blocks, each sent verbatim as one HTTP chunk (bring your own
    blank lines); `done` appends `data: [DONE]`."""
    return FakeResponse(kind="stream_raw", events=list(events), chunk_delay=chunk_delay, done=done)


def stream_error(code: str | None, message: str, *, before: str = "", moonshot: bool = False,
                 model: str = "kimi-k3") -> FakeResponse:
    """A stream that fails midway: optional answer text, then a gateway's `error` event (Ace's
    `{"error": {"code", "message"}}`, or Moonshot's `{"error": {"type", "message"}}`)."""
    events = []
    if before:
        chunk = {"id": "msg_0", "object": "chat.completion.chunk", "model": model,
                 "choices": [{"index": 0, "delta": {"content": before}, "finish_reason": None}]}
        events.append(f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n")
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["type" if moonshot else "code"] = code
    events.append(f"data: {json.dumps({'error': error, 'trace_id': 'trace-in-stream'})}\n\n")
    return stream_raw(events, done=False)


def cut(after: CutPoint = "headers") -> FakeResponse:
    """A broken connection: closed before anything, reset, after headers, mid-body, mid-stream."""
    return FakeResponse(kind="cut", after=after)


def stall(after_chunks: int = 2, seconds: float = 3600.0) -> FakeResponse:
    """A stream that goes quiet after `after_chunks` content chunks for `seconds`, then finishes.

    A non-streamed request waits `seconds` before the headers instead (slow headers).
    """
    return FakeResponse(kind="stall", after_chunks=after_chunks, seconds=seconds)


# --------------------------------------------------------------------------- bodies


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _usage(resp: FakeResponse, request: dict[str, Any]) -> dict[str, Any]:
    """The given usage verbatim, or counts derived from the text sizes."""
    if resp.usage is not None:
        return resp.usage
    prompt = max(1, _tokens(json.dumps(request.get("messages", []))))
    details: dict[str, Any] = {}
    cached: dict[str, Any] = {} if resp.cached_tokens is None else {"cached_tokens": resp.cached_tokens}
    if resp.reasoning_tokens is not None:
        completion = _tokens(resp.content) + resp.reasoning_tokens
        details["reasoning_tokens"] = resp.reasoning_tokens
    else:
        completion = _tokens(resp.content) + _tokens(resp.reasoning or "")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        **cached,  # Moonshot's own place for it, as well as OpenAI's below
        "prompt_tokens_details": {"cached_tokens_details": {}, **cached},
        "completion_tokens_details": details,
    }


def _model(resp: FakeResponse, request: dict[str, Any]) -> str:
    model = resp.model or request.get("model")
    return model if isinstance(model, str) else DEFAULT_MODEL


def _completion(resp: FakeResponse, request: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed chat.completion exactly in Ace's key order."""
    message: dict[str, Any] = {"role": "assistant", "content": resp.content, "refusal": None}
    if resp.reasoning is not None:
        message["reasoning_content"] = resp.reasoning
        message["reasoning"] = resp.reasoning
    message["tool_calls"] = []
    return {
        "id": f"chatcmpl-{secrets.token_hex(8)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _model(resp, request),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": resp.finish_reason}],
        "usage": _usage(resp, request),
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _deltas(resp: FakeResponse) -> list[dict[str, Any]]:
    """Role, reasoning, then content deltas, in Ace's order."""
    size = resp.chunk_size
    thinking = [{"reasoning_content": p, "reasoning": p} for p in _pieces(resp.reasoning or "", size)]
    content: list[dict[str, Any]] = [{"content": p} for p in _pieces(resp.content, size)]
    if resp.mixed_chunk and thinking and content:
        thinking[-1] |= content.pop(0)
    if not content and not (thinking and "content" in thinking[-1]):
        content = [{"content": ""}]
    return [{"content": "", "role": "assistant"}, *thinking, *content]


def _is_k3(resp: FakeResponse, request: dict[str, Any]) -> bool:
    return resp.shape == "k3" or (resp.shape == "auto" and _model(resp, request).startswith(K3_PREFIX))


def _k3_chunks(resp: FakeResponse, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The K3 stream through Ace: `msg_` ids, reasoning only as reasoning_content, the stop in its
    own empty-delta chunk, then a `choices: []` chunk with only the three counts."""
    base = {"id": f"msg_{secrets.token_hex(12)}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": _model(resp, request)}
    deltas = [{k: v for k, v in d.items() if k != "reasoning"} for d in _deltas(resp)]
    chunks = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": resp.finish_reason}]})
    usage = _usage(resp, request)
    chunks.append({**base, "choices": [], "usage": {k: usage[k] for k in ("prompt_tokens", "completion_tokens",
                                                                          "total_tokens")}})
    return chunks


def _sse_chunks(resp: FakeResponse, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunk objects of a streamed reply, usage last (Ace) or in the finishing choice (Moonshot)."""
    if _is_k3(resp, request):
        return _k3_chunks(resp, request)
    base = {
        "id": f"chatcmpl-{secrets.token_hex(8)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": _model(resp, request),
        "system_fingerprint": None,
    }
    deltas = _deltas(resp)
    choices: list[dict[str, Any]] = [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None} for delta in deltas
    ]
    choices[-1]["finish_reason"] = resp.finish_reason
    usage = _usage(resp, request)
    if resp.moonshot_usage:
        choices[-1]["usage"] = usage
    chunks = [{**base, "choices": [choice], "usage": None} for choice in choices]
    if not resp.moonshot_usage:
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


def _sse_blocks(resp: FakeResponse, request: dict[str, Any]) -> list[bytes]:
    """Each SSE event as bytes, ending with `[DONE]`; comments ride in front of events."""
    nl = "\r\n" if resp.crlf else "\n"
    prefix = f": keep-alive{nl}{nl}" if resp.comments else ""
    compact = {"separators": (",", ":")} if _is_k3(resp, request) else {}
    datas = [json.dumps(c, ensure_ascii=False, **compact) for c in _sse_chunks(resp, request)] + ["[DONE]"]
    return [f"{prefix}data: {d}{nl}{nl}".encode() for d in datas]


def _default_reply(body: Any) -> FakeResponse:
    """The unscripted answer; a JSON object when the request asked for JSON mode."""
    if not (isinstance(body, dict) and isinstance(body.get("model"), str) and body.get("messages")):
        return ace_error(400, "bad_request", "The request body needs a model and at least one message.")
    fmt = body.get("response_format")
    reasoning = DEFAULT_REASONING if str(body["model"]).startswith(THINKS_ALWAYS) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return reply(json.dumps({"answer": DEFAULT_CONTENT}), reasoning=reasoning)
    return reply(reasoning=reasoning)


def _model_rules(body: Any, retired: set[str]) -> FakeResponse | None:
    """What Moonshot refuses, per model: a retired id, K3's fixed sampling, k2.7-code's thinking,
    and a preserved-thinking history missing an earlier turn's reasoning."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return None
    model: str = body["model"]
    if model in retired:
        return moonshot_error(404, "resource_not_found_error", f"Not found the model {model} or Permission denied")
    if model.startswith(K3_PREFIX):
        if body.get("temperature", 1) != 1:
            return moonshot_error(400, "invalid_request_error", "invalid temperature: only 1 is allowed for this model")
        for fixed in ("top_p", "presence_penalty", "frequency_penalty"):
            if fixed in body:
                return moonshot_error(400, "invalid_request_error", f"{fixed} is fixed for this model")
        effort = body.get("reasoning_effort", "max")
        if effort not in ("low", "high", "max"):
            return moonshot_error(400, "invalid_request_error", f"invalid reasoning_effort: {effort}")
    thinking = body.get("thinking")
    thinking = thinking if isinstance(thinking, dict) else {}
    if model.startswith(KEEPS_REASONING) and thinking.get("type") == "disabled":
        return moonshot_error(400, "invalid_request_error", "thinking cannot be disabled for this model")
    if model.startswith(KEEPS_REASONING) or thinking.get("keep") == "all":
        for index, message in enumerate(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "assistant" and not message.get(
                    "reasoning_content"):
                return moonshot_error(400, "invalid_request_error",
                                      f"thinking is enabled but reasoning_content is missing in assistant message "
                                      f"at index {index}")
    return None


# --------------------------------------------------------------------------- the wire


class _BadRequest(Exception):
    """The bytes are not an HTTP/1.1 request we can answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _ClientGone(Exception):
    """The client closed or reset the connection while we were answering."""


class _Conn:
    """One client connection: buffered reads, and pauses and writes that notice a departed client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.keep_alive = True
        self.gone = asyncio.Event()
        self.gone_at: float | None = None
        self.request: RecordedRequest | None = None  # the one being answered, to stamp finished_at
        self._watcher: asyncio.Task[None] | None = None

    async def _fill(self) -> bool:
        try:
            data = await self.reader.read(READ_SIZE)
        except OSError:
            return False
        self.buf += data
        return bool(data)

    async def read_until(self, sep: bytes, limit: int) -> bytes | None:
        """Bytes before `sep` (consumed); None on a clean EOF before anything arrived."""
        while (i := self.buf.find(sep)) < 0:
            if len(self.buf) > limit:
                raise _BadRequest("request head too large", 431)
            if not await self._fill():
                if self.buf:
                    raise _ClientGone
                return None
        out = bytes(self.buf[:i])
        del self.buf[: i + len(sep)]
        return out

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise _ClientGone
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _mark_gone(self) -> None:
        if not self.gone.is_set():
            self.gone_at = time.monotonic()
            self.gone.set()

    async def _watch(self) -> None:
        while len(self.buf) < MAX_PENDING:
            if not await self._fill():
                self._mark_gone()
                return

    async def pause(self, seconds: float) -> None:
        """Sleep, but raise `_ClientGone` as soon as the client leaves."""
        if seconds > 0 and not self.gone.is_set():
            if self._watcher is None:
                self._watcher = asyncio.create_task(self._watch())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gone.wait(), seconds)
        if self.gone.is_set():
            raise _ClientGone

    async def stop_watching(self) -> None:
        """End the watcher and wait for it, so the next request read has the stream to itself."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])
            self._watcher = None

    def _finished(self) -> None:
        # Stamped before the last bytes leave, so a client holding the answer always sees it set.
        if self.request is not None and self.request.finished_at is None:
            self.request.finished_at = time.monotonic()

    async def send(self, data: bytes, *, final: bool = False) -> None:
        """Write and drain; `final` marks the end of the current answer."""
        if self.gone.is_set() or self.writer.is_closing():
            raise _ClientGone
        if final:
            self._finished()
        self.writer.write(data)
        try:
            await self.writer.drain()
        except OSError as err:
            self._mark_gone()
            raise _ClientGone from err

    def head(self, status: int, headers: dict[str, str]) -> bytes:
        """A status line and headers; `Connection: close` when the client asked for it."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        if not self.keep_alive:
            headers = {**headers, "Connection": "close"}
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def reset(self) -> None:
        """Abort with SO_LINGER 0, so the peer gets a TCP RST instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._finished()
        self.writer.transport.abort()

    def close(self) -> None:
        """Close with a FIN; for a scripted cut, that is where the answer ends."""
        self._finished()
        if self._watcher is not None:
            self._watcher.cancel()
        if not self.writer.is_closing():
            self.writer.close()


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Request line and headers (names lower-cased, repeats joined with a comma)."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError as err:
        raise _BadRequest("malformed request line") from err
    if not version.startswith("HTTP/1.") or not method.isalpha():
        raise _BadRequest("not an HTTP/1.x request")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not name or " " in name:
            raise _BadRequest("malformed header line")
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    return method, target.split("?", 1)[0], version, headers


async def _read_chunked(conn: _Conn) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await conn.read_until(b"\r\n", MAX_HEAD)
        try:
            size = int((line or b"").split(b";")[0].strip(), 16)
        except ValueError as err:
            raise _BadRequest("malformed chunk size") from err
        total += size
        if total > MAX_BODY:
            raise _BadRequest("request body too large", 413)
        if size == 0:
            while await conn.read_until(b"\r\n", MAX_HEAD):
                pass  # trailers
            return b"".join(parts)
        parts.append(await conn.read_exact(size))
        if await conn.read_exact(2) != b"\r\n":
            raise _BadRequest("malformed chunk")


async def _read_body(conn: _Conn, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(conn)
    length = headers.get("content-length")
    if length is None:
        return b""
    if not length.isdigit():
        raise _BadRequest("invalid Content-Length")
    if int(length) > MAX_BODY:
        raise _BadRequest("request body too large", 413)
    return await conn.read_exact(int(length))


def _keeps_alive(version: str, headers: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens


def _parse_json(body: bytes) -> Any | None:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


async def _read_request(conn: _Conn) -> RecordedRequest | None:
    """The next request on the connection, or None when the client closed it between requests."""
    head = await conn.read_until(b"\r\n\r\n", MAX_HEAD)
    if head is None:
        return None
    method, path, version, headers = _parse_head(head)
    conn.keep_alive = _keeps_alive(version, headers)
    if headers.get("expect", "").lower() == "100-continue":
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await _read_body(conn, headers)
    return RecordedRequest(method, path, headers, body, _parse_json(body), time.monotonic())


# --------------------------------------------------------------------------- answering


def _plain(conn: _Conn, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> bytes:
    base = {"Content-Type": content_type, "Content-Length": str(len(body))}
    return conn.head(status, {**base, **headers}) + body


async def _send_chunked(
    conn: _Conn,
    blocks: list[bytes],
    resp: FakeResponse,
    *,
    stall_at: int | None = None,
    cut_at: int | None = None,
) -> None:
    """An event stream, one HTTP chunk per block; bytes between pauses leave in one write."""
    base = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "Transfer-Encoding": "chunked"}
    out = [conn.head(200, {**base, **resp.headers})]
    for i, block in enumerate(blocks):
        if i == cut_at:
            await conn.send(b"".join(out))
            conn.close()
            return
        wait = resp.seconds if i == stall_at else (resp.chunk_delay if i > 0 else 0.0)
        if wait > 0:
            await conn.send(b"".join(out))
            out.clear()
            await conn.pause(wait)
        out.append(b"%x\r\n%s\r\n" % (len(block), block))
    out.append(b"0\r\n\r\n")
    await conn.send(b"".join(out), final=True)


async def _send_cut(conn: _Conn, resp: FakeResponse, req: RecordedRequest, body: dict[str, Any]) -> None:
    """Break the connection at the scripted point."""
    if resp.after == "reset":
        conn.reset()
        return
    if resp.after == "mid_stream" and req.wants_stream:
        blocks = _sse_blocks(resp, body)
        await _send_chunked(conn, blocks, resp, cut_at=min(3, len(blocks) - 1))
        return
    if resp.after != "request":
        data = _json_bytes(_completion(resp, body))
        head = conn.head(200, {"Content-Type": "application/json", "Content-Length": str(len(data))})
        await conn.send(head + (b"" if resp.after == "headers" else data[: len(data) // 2]))
    conn.close()


async def _answer(conn: _Conn, req: RecordedRequest, resp: FakeResponse, delay: float) -> bool:
    """Send `resp` for `req`; False when the connection cannot be reused afterwards."""
    await conn.pause(resp.delay + delay)
    body = req.json if isinstance(req.json, dict) else {}
    if resp.kind == "cut":
        await _send_cut(conn, resp, req, body)
        return False
    if resp.kind == "raw":
        await conn.send(_plain(conn, resp.status, resp.body, resp.content_type, resp.headers), final=True)
    elif resp.kind == "stream_raw":
        blocks = [e.encode("utf-8") for e in resp.events if e]
        if resp.done:
            blocks.append(b"data: [DONE]\n\n")
        await _send_chunked(conn, blocks, resp)
    elif req.wants_stream:
        blocks = _sse_blocks(resp, body)
        stall_at = min(1 + resp.after_chunks, len(blocks) - 1) if resp.kind == "stall" else None
        await _send_chunked(conn, blocks, resp, stall_at=stall_at)
    else:
        if resp.kind == "stall":
            await conn.pause(resp.seconds)
        data = _json_bytes(_completion(resp, body))
        await conn.send(_plain(conn, resp.status, data, "application/json", resp.headers), final=True)
    return True


# --------------------------------------------------------------------------- the server


class FakeAce:
    """The fake upstream: start it, script answers, inspect what our client sent.

    Thread-safe: scripting and inspection happen on the caller's thread, serving on the fake's own.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        check_token: bool = True,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.check_token = check_token
        self.latency = latency
        self.cache_prefixes = False
        """Report `cached_tokens` as Kimi's automatic prefix cache would (off: none, as before)."""
        self._prompts: deque[str] = deque(maxlen=16)  # a conversation's previous request is among the last few
        self.base_url = ""
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[FakeResponse] = deque()
        self._default: FakeResponse | None = None
        self._requests: list[RecordedRequest] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._open = 0
        self._stopping = False
        self.retired: set[str] = set()
        """Model ids this upstream no longer knows (answered 404 resource_not_found_error)."""

    # ---- lifecycle

    def start(self) -> FakeAce:
        """Bind and serve in a daemon thread; returns once `base_url` is valid."""
        if self._thread is not None:
            raise RuntimeError("FakeAce is already running")
        started: list[asyncio.Server | BaseException] = []
        ready = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(started, ready), name="fake-ace", daemon=True)
        self._thread.start()
        ready.wait()
        result = started[0]
        if isinstance(result, BaseException):
            self._thread.join()
            self._thread = None
            raise result
        port = result.sockets[0].getsockname()[1]
        self.base_url = f"http://{self._host}:{port}"
        return self

    def _run(self, started: list[asyncio.Server | BaseException], ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._on_connect, self._host, self._port, backlog=2048)
            )
        except OSError as err:
            started.append(err)
            ready.set()
            loop.close()
            return
        started.append(server)
        ready.set()
        try:
            loop.run_forever()
            loop.run_until_complete(self._shutdown(server))
        finally:
            loop.close()

    async def _shutdown(self, server: asyncio.Server) -> None:
        """Close the listener, then cancel every connection (and watcher) task and let them finish."""
        self._stopping = True
        server.close()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1.0)

    def stop(self) -> None:
        """Stop serving: open connections (stalls included) are closed at once."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeAce:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- scripting and inspection

    def script(self, *responses: FakeResponse) -> None:
        """Queue answers: the next chat requests get these, in order."""
        with self._lock:
            self._queue.extend(responses)

    def script_for(self, n: int, response: FakeResponse) -> None:
        """The next `n` chat requests get `response`."""
        self.script(*([response] * n))

    def set_default(self, response: FakeResponse | None) -> None:
        """The answer when nothing is queued; None restores the built-in `reply()`."""
        with self._lock:
            self._default = response

    def reset(self) -> None:
        """Forget the queue, the default and the recorded requests."""
        with self._lock:
            self._queue.clear()
            self._default = None
            self._requests.clear()
            self.retired = set()
            self._prompts.clear()
            self.cache_prefixes = False

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every chat/API request received, in order (control calls excluded)."""
        with self._lock:
            return list(self._requests)

    @property
    def open_connections(self) -> int:
        """Client connections open right now (keep-alive ones included), for reuse and load checks."""
        return self._open

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least `n` requests were recorded; TimeoutError otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} of {n} requests arrived within {timeout}s")
            return list(self._requests)

    def wait_for_close(self, index: int = -1, timeout: float = 5.0) -> RecordedRequest:
        """Block until the client of request `index` is seen leaving before its answer ended."""

        def closed() -> bool:
            try:
                return self._requests[index].client_closed
            except IndexError:
                return False

        with self._changed:
            if not self._changed.wait_for(closed, timeout):
                raise TimeoutError(f"request {index} was not closed by the client within {timeout}s")
            return self._requests[index]

    # ---- serving

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(reader, writer)
        if self._stopping:
            conn.close()
            return
        self._open += 1
        try:
            await self._serve(conn)
        except (_ClientGone, asyncio.CancelledError):
            # Cancelled only by stop(); ending normally keeps Python 3.11's stream callback quiet.
            pass
        finally:
            self._open -= 1
            conn.close()

    async def _serve(self, conn: _Conn) -> None:
        """Answer requests on one connection until either side ends it."""
        while True:
            try:
                req = await _read_request(conn)
            except _BadRequest as err:
                conn.keep_alive = False
                body = ace_error(err.status, "bad_request", str(err)).body
                await conn.send(_plain(conn, err.status, body, "application/json", {}))
                return
            if req is None or not await self._dispatch(conn, req) or not conn.keep_alive:
                return

    async def _dispatch(self, conn: _Conn, req: RecordedRequest) -> bool:
        """Record and answer one request; False when the connection must not be reused."""
        if req.path.startswith(CONTROL_PREFIX):
            status, payload = self._control(req)
            await conn.send(_plain(conn, status, _json_bytes(payload), "application/json", {}))
            return True
        with self._changed:
            self._requests.append(req)
            self._changed.notify_all()
        resp, delay = self._choose(req)
        if self.cache_prefixes and resp.kind in ("reply", "stall") and resp.usage is None:
            resp = dataclasses.replace(resp, cached_tokens=self._cached_tokens(req))
        conn.request = req
        try:
            keep = await _answer(conn, req, resp, delay)
        except _ClientGone:
            with self._changed:
                req.finished_at = None
                req.client_closed = True
                req.closed_at = conn.gone_at or time.monotonic()
                self._changed.notify_all()
            return False
        finally:
            conn.request = None
            await conn.stop_watching()
        return keep and not conn.gone.is_set()

    def _cached_tokens(self, req: RecordedRequest) -> int:
        """Kimi caches prompt prefixes: the tokens of the longest prefix this request's messages share
        with an earlier request's (whole characters of their JSON; binary search on C-speed compares)."""
        body = req.json if isinstance(req.json, dict) else {}
        prompt = json.dumps(body.get("messages", []))
        best = 0
        with self._lock:
            for earlier in self._prompts:
                low, high = best, min(len(prompt), len(earlier))
                if prompt[:low] != earlier[:low]:
                    continue
                while low < high:
                    mid = (low + high + 1) // 2
                    if prompt[:mid] == earlier[:mid]:
                        low = mid
                    else:
                        high = mid - 1
                best = low
            self._prompts.append(prompt)
        req.cached_tokens = min(_tokens(prompt[:best]), max(1, _tokens(prompt)) - 1) if best else 0
        return req.cached_tokens

    def _choose(self, req: RecordedRequest) -> tuple[FakeResponse, float]:
        """Route, check the token, then take the queue, the default, or the built-in reply."""
        if req.method != "POST" or req.path != CHAT_PATH:
            return ace_error(404, "no_api", "The specified API is not found."), 0.0
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if self.check_token and (scheme.lower() != "bearer" or token.strip() != self.token):
            return ace_error(401, "invalid_token", "The specified token is invalid or wrong."), 0.0
        refused = _model_rules(req.json, self.retired)
        if refused is not None:
            return refused, 0.0
        malformed = content_problem(req.json)  # content parts (text, image_url) checked as an upstream would
        if malformed is not None:
            return ace_error(400, "bad_request", malformed), 0.0
        with self._lock:
            if self._queue:
                return self._queue.popleft(), 0.0
            default = self._default
        return (_default_reply(req.json) if default is None else default), self.latency

    def _control(self, req: RecordedRequest) -> tuple[int, Any]:
        """The `/_fake/*` endpoints, so another process can script and inspect the fake."""
        try:
            body = req.json if isinstance(req.json, dict) else {}
            if (req.method, req.path) == ("POST", "/_fake/script"):
                responses = [FakeResponse.from_dict(d) for d in body["responses"]]
                self.script(*responses)
                return 200, {"queued": len(responses)}
            if (req.method, req.path) == ("POST", "/_fake/default"):
                self.set_default(None if req.json is None else FakeResponse.from_dict(body))
                return 200, {"ok": True}
            if (req.method, req.path) == ("POST", "/_fake/reset"):
                self.reset()
                return 200, {"ok": True}
            if (req.method, req.path) == ("POST", "/_fake/cache"):
                self.cache_prefixes = body["prefixes"] is True
                return 200, {"ok": True}
            if (req.method, req.path) == ("GET", "/_fake/requests"):
                return 200, [r.to_dict() for r in self.requests]
        except (KeyError, TypeError, ValueError) as err:
            return 400, {"error": f"{type(err).__name__}: {err}"}
        return 404, {"error": f"no control endpoint {req.method} {req.path}"}


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the first stdout line is the base URL."""
    parser = argparse.ArgumentParser(description="A loopback fake of Ace Data Cloud's Kimi API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--no-check-token", action="store_true")
    args = parser.parse_args(argv)
    fake = FakeAce(
        token=args.token,
        check_token=not args.no_check_token,
        latency=args.latency,
        host=args.host,
        port=args.port,
    ).start()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    print(fake.base_url, flush=True)
    while not stopping.wait(0.5):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reading an upstream body within bounds: what the upstream sends cannot grow our memory.

Decompression is ours (the client asks only for gzip/deflate, reads raw bytes, and inflates at
most `CHUNK` bytes at a time, so a gzip bomb never inflates in one go); a plain body is capped at
`MAX_BODY_BYTES`, a stream at `MAX_STREAM_BYTES` in all and `MAX_LINE_BYTES` per line (a line that
never ends fails as soon as it is too long). Imports only `kimi_mcp.errors`.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import httpx2

from ..errors import InvalidResponse, NetworkError

__all__ = [
    "ACCEPT_ENCODING", "MAX_BODY_BYTES", "MAX_LINE_BYTES", "MAX_STREAM_BYTES", "decoded_chunks", "lines", "read_body",
]

MIB = 1024 * 1024
MAX_BODY_BYTES = 16 * MIB
MAX_STREAM_BYTES = 256 * MIB
"""A stream is mostly JSON envelope around a few characters a chunk: a 128K-token answer is ~30 MiB."""
MAX_LINE_BYTES = 4 * MIB
CHUNK = 256 * 1024
ACCEPT_ENCODING = "gzip, deflate"


async def decoded_chunks(response: httpx2.Response) -> AsyncIterator[bytes]:
    """The body's bytes, decompressed here in bounded steps."""
    if response.is_stream_consumed:  # built in memory (a test transport): httpx2 already decoded it
        yield response.content
        return
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        async for raw in response.aiter_raw():
            yield raw
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise InvalidResponse(f"the upstream answered with content-encoding {encoding!r}, which was not asked for")
    inflater = zlib.decompressobj(47)  # 32 + 15: a gzip or zlib header, detected
    try:
        async for raw in response.aiter_raw():
            data = inflater.decompress(raw, CHUNK)
            while True:
                if data:
                    yield data
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, CHUNK)
        rest = inflater.flush()
    except zlib.error as exc:
        raise InvalidResponse(f"the upstream's {encoding} body is corrupt ({exc})") from None
    if rest:
        yield rest


async def read_body(response: httpx2.Response, limit: int = MAX_BODY_BYTES) -> bytes:
    """A whole body, refused past `limit` bytes (decompressed); a cut after the first byte is a
    network error that may have been billed (never retried)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in decoded_chunks(response):
            size += len(chunk)
            if size > limit:
                raise InvalidResponse(f"the upstream answer is larger than {limit // MIB} MiB")
            chunks.append(chunk)
    except httpx2.TransportError as exc:
        if not size:
            raise
        error = NetworkError(f"the upstream answer was cut after {size} bytes ({type(exc).__name__})")
        error.answer_began = True
        raise error from None
    return b"".join(chunks)


async def lines(chunks: AsyncIterator[bytes], *, max_total: int = MAX_STREAM_BYTES,
                max_line: int = MAX_LINE_BYTES) -> AsyncIterator[str]:
    """Lines of an event stream (without their `\\n`), within the caps."""
    total = 0
    pending = bytearray()
    async for chunk in chunks:
        total += len(chunk)
        if total > max_total:
            raise InvalidResponse(f"the upstream stream is larger than {max_total // MIB} MiB")
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending += chunk[start:end]
            if len(pending) > max_line:
                break
            yield pending.decode("utf-8", "replace")
            pending.clear()
            start = end + 1
        else:
            pending += chunk[start:]
        if len(pending) > max_line:
            raise InvalidResponse(f"the upstream stream sent a line longer than {max_line // MIB} MiB")
    if pending:
        yield pending.decode("utf-8", "replace")

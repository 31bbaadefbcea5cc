"""stdio with the limits HTTP has: a request line larger than KIMI_MAX_REQUEST_BYTES is refused
without ever being held whole in memory, and reading stdin never keeps a stopping server alive.

The SDK reads stdin with an uncancellable thread per line and no size limit; `BoundedStdin` is the
stream handed to the SDK's `stdio_server` instead. An oversized line is skipped in bounded
chunks, and the client gets a JSON-RPC error for its request id (read from the line's start), so
it is not left waiting.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from typing import BinaryIO

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.lowlevel import EventLoopToken
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["TOO_LARGE_METHOD", "BoundedStdin"]

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
TOO_LARGE_METHOD = "kimi-mcp/request-too-large"
_ID = re.compile(rb'"id"\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?\d{1,20})')


class BoundedStdin:
    """Async iteration over stdin lines (text), each at most `limit` bytes."""

    def __init__(self, limit: int, source: BinaryIO | None = None) -> None:
        self.limit = limit
        # A reader of our own on a duplicate of fd 0: the interpreter's sys.stdin is never locked by
        # our thread at exit (that aborts the process), and fd 0 itself is left alone.
        self._source = source if source is not None else os.fdopen(os.dup(sys.stdin.fileno()), "rb")
        self._lines: MemoryObjectReceiveStream[str | None] | None = None

    def __aiter__(self) -> BoundedStdin:
        return self

    async def __anext__(self) -> str:
        if self._lines is None:
            # A daemon thread of our own reads, one line at a time (a zero-size buffer): a read
            # blocked on a quiet stdin must not keep a stopping process alive, as a worker would.
            send, self._lines = anyio.create_memory_object_stream[str | None](0)
            token = anyio.lowlevel.current_token()
            threading.Thread(target=self._pump, args=(send, token), name="kimi-mcp-stdin", daemon=True).start()
        try:
            line = await self._lines.receive()
        except anyio.EndOfStream:
            line = None
        if line is None:
            raise StopAsyncIteration
        return line

    def _pump(self, send: MemoryObjectSendStream[str | None], token: EventLoopToken) -> None:
        try:
            while True:
                line = self._read_line()
                anyio.from_thread.run(send.send, line, token=token)
                if line is None:
                    return
        except Exception:  # the event loop is gone (the server stopped): nothing left to feed
            log.debug("stdin reader stopped", exc_info=True)

    def _read_line(self) -> str | None:
        line = self._source.readline(self.limit + 1)
        if not line:
            return None
        if len(line) <= self.limit or (line.endswith(b"\n") and len(line) == self.limit + 1):
            return line.decode("utf-8", "replace")
        head = line[:512]
        while not line.endswith(b"\n"):  # skip the rest of the oversized line, a chunk at a time
            line = self._source.readline(CHUNK)
            if not line:
                break
        log.warning("refused a stdio request larger than %d bytes (KIMI_MAX_REQUEST_BYTES)", self.limit)
        return self._refusal(head)

    def _refusal(self, head: bytes) -> str:
        """A request the server answers at once with an error naming the problem (same id), or a
        line it reports as unparseable when the id cannot be read."""
        found = _ID.search(head)
        if found is None:
            return "{}\n"
        request_id = json.loads(found.group(1))
        return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": TOO_LARGE_METHOD,
                           "params": {"limit_bytes": self.limit}}) + "\n"

"""The SDK's floor: a bare `MCPServer` with one trivial tool that makes the same upstream POST.

kimi-mcp's per-call overhead is measured against this server on the same transport: whatever it
costs is the price of the SDK, the transport and one pooled `httpx2` request, which no MCP server
built on the SDK can avoid. The tool sends exactly the body kimi_chat sends (taken from
`FLOOR_BODY`, the prompt put in its last message), reads the whole answer, and returns a short
string. It parses nothing and stores nothing.

    python benchmarks/floor_server.py                      # stdio
    python benchmarks/floor_server.py --http --port 8123   # Streamable HTTP on /mcp

Environment: `FLOOR_URL` (the full chat-completions URL), `FLOOR_TOKEN`, `FLOOR_BODY` (JSON body
template, optional), `FLOOR_MAX_CONNECTIONS` (pool size, default 512), `FLOOR_PARSE=1` (read the
answer line by line and decode each SSE chunk, as any streaming tool must: a second reference).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

DEFAULT_BODY: dict[str, Any] = {
    "model": "kimi-k3",
    "messages": [{"role": "user", "content": ""}],
    "max_tokens": 16384,
    "stream": True,
    "stream_options": {"include_usage": True},
}


@asynccontextmanager
async def lifespan(server: MCPServer[httpx2.AsyncClient]) -> AsyncIterator[httpx2.AsyncClient]:
    """One pooled client per process, as kimi-mcp has."""
    size = int(os.environ.get("FLOOR_MAX_CONNECTIONS", "512"))
    limits = httpx2.Limits(max_connections=size, max_keepalive_connections=size)
    async with httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(600, connect=10), trust_env=False) as http:
        yield http


server: MCPServer[httpx2.AsyncClient] = MCPServer("floor", lifespan=lifespan)
# kimi-mcp keeps httpx2's per-request INFO line out of its log; so does the floor.
logging.getLogger("httpx2").setLevel(logging.WARNING)
URL = os.environ.get("FLOOR_URL", "http://127.0.0.1:9/kimi/chat/completions")
TEMPLATE: dict[str, Any] = json.loads(os.environ["FLOOR_BODY"]) if os.environ.get("FLOOR_BODY") else DEFAULT_BODY
PARSE = os.environ.get("FLOOR_PARSE") == "1"
HEADERS = {
    "Authorization": f"Bearer {os.environ.get('FLOOR_TOKEN', '')}",
    "Content-Type": "application/json",
    "Accept": "text/event-stream",
}


@server.tool(description="POST the prompt upstream and return how many bytes came back.")
async def chat(ctx: Context[httpx2.AsyncClient, Any], prompt: str) -> str:
    body = copy.deepcopy(TEMPLATE)
    body["messages"][-1]["content"] = prompt
    http = ctx.request_context.lifespan_context
    async with http.stream("POST", URL, content=json.dumps(body).encode(), headers=HEADERS) as response:
        if not PARSE:
            data = await response.aread()
            return f"{response.status_code} {len(data)} bytes"
        text = []
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices") or []:
                    text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP instead of stdio")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if not args.http:
        server.run()
        return
    import anyio
    import uvicorn

    # No access log, as kimi-mcp's HTTP runner: a log line per request is not the SDK's cost.
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                            log_config=None)
    anyio.run(uvicorn.Server(config).serve)


if __name__ == "__main__":
    main()

"""Stand-in MCP server for the third-party-client CI scripts.

Used only until the real `kimi_mcp` server exists, so that `inspector.sh` and
`conformance.sh` can be exercised end to end. It mirrors the real server's
public surface (tool names, resource URI, command line) and nothing more.

Command line (same shape as `python -m kimi_mcp`):

    python standin_server.py                                   # stdio
    python standin_server.py --transport streamable-http --port 8765 [--host 127.0.0.1]
    ... --upstream      # answer through the Ace API at ACEDATACLOUD_API_BASE_URL (e.g. tests/support/fake_ace.py)

Like the real server it wants ACEDATACLOUD_API_TOKEN in its environment: a
tool call without it is an `isError` result (which proves that env vars reach
a stdio child). Without --upstream the tools answer locally, and a prompt
starting with `__rate_limited__` returns the structured error the real server
is expected to give for an upstream 429. With --upstream, kimi_chat / kimi_json
POST to {ACEDATACLOUD_API_BASE_URL}/kimi/chat/completions and map an HTTP 429
to that same structured error.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import httpx2
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent

RATE_LIMIT_MAGIC = "__rate_limited__"
CHAT_PATH = "/kimi/chat/completions"

server = MCPServer("kimi-mcp-standin", version="0.0.0-standin")
_UPSTREAM = False

_MODELS = {"models": [{"id": "kimi-k2", "default": True}, {"id": "kimi-k2-thinking", "default": False}]}


def _error(kind: str, message: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"{kind}: {message}")],
        structured_content={"error": {"kind": kind, "message": message}},
        is_error=True,
    )


async def _answer(prompt: str, *, json_mode: bool) -> str | CallToolResult:
    """The model's text, or a structured error result."""
    token = os.environ.get("ACEDATACLOUD_API_TOKEN")
    if not token:
        return _error("configuration", "ACEDATACLOUD_API_TOKEN is not set")
    if not _UPSTREAM:
        if prompt.startswith(RATE_LIMIT_MAGIC):
            return _error("rate_limited", "You have exceeded the rate limit.")
        if json_mode:
            return json.dumps({"answer": f"stand-in JSON answer to: {prompt}"})
        return f"stand-in answer to: {prompt}"
    base = os.environ.get("ACEDATACLOUD_API_BASE_URL", "").rstrip("/")
    if not base:
        return _error("configuration", "ACEDATACLOUD_API_BASE_URL is not set")
    body: dict[str, Any] = {"model": "kimi-k2", "messages": [{"role": "user", "content": prompt}]}
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    async with httpx2.AsyncClient(timeout=30) as client:
        resp = await client.post(base + CHAT_PATH, json=body, headers={"authorization": f"Bearer {token}"})
    if resp.status_code == 429:
        return _error("rate_limited", "You have exceeded the rate limit.")
    if resp.status_code != 200:
        return _error("upstream", f"HTTP {resp.status_code}")
    return str(resp.json()["choices"][0]["message"]["content"])


@server.tool(description="Ask Kimi a question and get a plain-text answer.")
async def kimi_chat(prompt: str) -> CallToolResult:
    answer = await _answer(prompt, json_mode=False)
    if isinstance(answer, CallToolResult):
        return answer
    return CallToolResult(content=[TextContent(type="text", text=answer)])


@server.tool(description="Ask Kimi for an answer as a JSON object.")
async def kimi_json(prompt: str) -> dict[str, Any]:
    answer = await _answer(prompt, json_mode=True)
    if isinstance(answer, CallToolResult):
        raise ToolError(answer.content[0].text)  # type: ignore[union-attr]
    parsed = json.loads(answer)
    return parsed if isinstance(parsed, dict) else {"result": parsed}


@server.resource("kimi://models", name="models", description="Kimi models available", mime_type="application/json")
def models() -> dict[str, Any]:
    return _MODELS


def main() -> None:
    global _UPSTREAM
    parser = argparse.ArgumentParser(description="Stand-in for kimi_mcp (CI scripts only).")
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--upstream", action="store_true", help="answer through ACEDATACLOUD_API_BASE_URL")
    args = parser.parse_args()
    _UPSTREAM = args.upstream
    if args.transport == "stdio":
        server.run()
    else:
        server.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()

"""The upstream layer: everything about talking to `POST {base}/kimi/chat/completions`.

    wire      the request body we send and the reply we parse (pure)
    sse       a streamed reply, line by line (pure)
    reading   a body or a stream read within bounds (size, line length, bounded decompression)
    failures  the one map from an upstream failure (status body or stream event) to an error class
    retry     whether and when to try again
    client    `KimiClient`: the pooled HTTP client, the concurrency cap, timeouts, retries

May import: `kimi_mcp.errors`, `kimi_mcp.settings`, `kimi_mcp.catalogue` (the model a request is for),
`kimi_mcp.telemetry` (its span and metrics) and `kimi_mcp.prices` (the cost metric). Never the chat,
store, server or cli layers, and never the MCP SDK.
"""

from .client import CHAT_PATH, KimiClient, Outcome, Timeouts, make_http_client
from .retry import RetryPolicy
from .sse import StreamAccumulator
from .wire import Adjustment, ChatReply, ChatRequest, Message, Usage, build_body, encode_body, parse_completion

__all__ = [
    "CHAT_PATH",
    "Adjustment",
    "ChatReply",
    "ChatRequest",
    "KimiClient",
    "Message",
    "Outcome",
    "RetryPolicy",
    "StreamAccumulator",
    "Timeouts",
    "Usage",
    "build_body",
    "encode_body",
    "make_http_client",
    "parse_completion",
]

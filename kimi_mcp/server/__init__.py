"""The MCP surface: the only package that imports the MCP SDK (`mcp`, `mcp_types`).

    app            `KimiServer` / `create_server`: registration, lifespan, the one exit of every result
    tools          kimi_chat, kimi_json and the model resources
    conversations  the conversation tools and resources
    prompts        the MCP prompts
    arguments      tool argument types and the descriptions a host's model reads
    results        typed results and `error_result`, the one map from an error to a tool result
    context        who is calling, progress, the process's `ChatTools`, from the SDK's context
    roots          the client's roots (asked only when a call reads a local path), as plain paths
    http           HTTP only (never imported for stdio): client auth, /healthz, Origin/Host, uvicorn

May import: `kimi_mcp.chat`, `kimi_mcp.runtime`, `kimi_mcp.store` (its value types), `kimi_mcp.upstream`
(its value types) and the root modules. Never `kimi_mcp.cli`.
"""

from .app import KimiServer, create_server

__all__ = ["KimiServer", "create_server"]

"""kimi-mcp: Moonshot's Kimi models, through Ace Data Cloud, as an MCP server."""

__version__ = "0.1.0"

__all__ = ["__version__"]

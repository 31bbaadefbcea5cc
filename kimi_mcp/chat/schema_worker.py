"""The schema worker process: `python -m kimi_mcp.chat.schema_worker` (see `chat.schemas`).

A module of its own so that running it does not import `chat.schemas` twice.
"""

from kimi_mcp.chat.schemas import serve_jobs

if __name__ == "__main__":
    serve_jobs()

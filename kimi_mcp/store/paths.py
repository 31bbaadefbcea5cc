"""Where the conversation store lives by default: the platform's per-user data directory.

Computed here with the standard library only, to avoid a dependency for three path rules.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["default_store_path"]

_APP = "kimi-mcp"
_FILE = "conversations.sqlite3"


def default_store_path() -> Path:
    """`<user data dir>/kimi-mcp/conversations.sqlite3`, read from the environment at call time."""
    return _data_dir() / _APP / _FILE


def _data_dir() -> Path:
    """Per-user data directory: XDG on Linux/BSD, Application Support on macOS, LocalAppData on Windows."""
    platform = sys.platform  # read once into a plain str so every branch stays type-checked
    if platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return Path(local) if local else Path.home() / "AppData" / "Local"
    if platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    xdg = os.environ.get("XDG_DATA_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg)
    return Path.home() / ".local" / "share"

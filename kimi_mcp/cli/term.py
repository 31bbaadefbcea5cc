"""Terminal output for the user-facing commands: colour only on a terminal, and never with NO_COLOR.

Only `chat`, `config` and `doctor` print here; `serve` owns stdout for the protocol.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

__all__ = ["Painter", "wants_colour"]

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def wants_colour(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """Colour when the stream is a terminal, NO_COLOR is unset or empty (no-color.org) and TERM is not dumb."""
    env = os.environ if env is None else env
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Painter:
    """Wraps text in ANSI styles when colour is on, and returns it unchanged when it is off."""

    def __init__(self, stream: TextIO | None = None, *, colour: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.colour = wants_colour(self.stream) if colour is None else colour

    def style(self, text: str, *styles: str) -> str:
        if not self.colour or not styles or not text:
            return text
        codes = ";".join(_CODES[name] for name in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def start(self, *styles: str) -> str:
        """The escape that opens a style (for text written piece by piece); '' without colour."""
        return f"\x1b[{';'.join(_CODES[name] for name in styles)}m" if self.colour and styles else ""

    def end(self) -> str:
        return "\x1b[0m" if self.colour else ""

    def is_terminal(self) -> bool:
        """Whether the stream is a terminal (status lines that overwrite themselves make sense there)."""
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
        except ValueError:  # a closed stream
            return False

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

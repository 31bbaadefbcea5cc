"""Streamed completions: SSE lines in, a growing reply out (pure, no I/O).

Tolerates both stream shapes in the reference: Ace's (usage in a final `choices: []` chunk) and
Moonshot's (usage inside `choices[0]`), comment lines, CRLF, and a chunk that carries reasoning
and content at once. The caller feeds lines; `[DONE]` is the only proper end. An `error` event
goes through `failures.from_stream_event`, the same map as a status body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidResponse
from .failures import from_stream_event
from .wire import ChatReply, Usage, clean_text, parse_usage, text_of

__all__ = ["MAX_ANSWER_CHARS", "StreamAccumulator", "StreamDelta"]

MAX_ANSWER_CHARS = 16 * 1024 * 1024
"""Reasoning plus content of one answer, like the plain body's 16 MiB: past it the stream fails."""


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """What one SSE line added."""

    reasoning: str = ""
    content: str = ""


class StreamAccumulator:
    """Collects a streamed completion line by line."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self._reasoning: list[str] = []
        self._content: list[str] = []
        # A high surrogate that ended a piece, waiting for its low half in the next chunk.
        self._held = {"reasoning": "", "content": ""}
        self.reasoning_chars = 0
        self.content_chars = 0
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.done = False
        self._data: list[str] = []

    def feed_line(self, line: str) -> StreamDelta | None:
        """Take one line of the event stream; returns the text it added, if any."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def _dispatch(self) -> StreamDelta | None:
        """End of an event: its data lines form one JSON chunk (or [DONE])."""
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data = []
        if data.strip() == "[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            raise InvalidResponse(f"the upstream stream sent a chunk that is not JSON: {data[:120]!r}") from None
        return self.feed_chunk(chunk)

    def flush(self) -> StreamDelta | None:
        """The stream ended: dispatch an event left without its blank line."""
        return self._dispatch()

    def feed_chunk(self, chunk: Any) -> StreamDelta | None:
        if not isinstance(chunk, dict):
            raise InvalidResponse("the upstream stream sent a chunk that is not an object")
        if isinstance(chunk.get("error"), dict | str):
            raise from_stream_event(chunk)
        self.id = self.id or str(chunk.get("id") or "")
        self.model = self.model or str(chunk.get("model") or "")
        self.usage = parse_usage(chunk.get("usage")) or self.usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        choice = choices[0]
        self.usage = parse_usage(choice.get("usage")) or self.usage
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return None
        reasoning = delta.get("reasoning_content")
        if reasoning is None:
            reasoning = delta.get("reasoning")
        reasoning = self._rejoin("reasoning", reasoning if isinstance(reasoning, str) else "")
        raw = delta.get("content")
        content = self._rejoin("content", raw if isinstance(raw, str) else text_of(raw))
        if reasoning:
            self._reasoning.append(reasoning)
            self.reasoning_chars += len(reasoning)
        if content:
            self._content.append(content)
            self.content_chars += len(content)
        if self.content_chars + self.reasoning_chars > MAX_ANSWER_CHARS:
            raise InvalidResponse(f"the upstream answer is longer than {MAX_ANSWER_CHARS:,} characters")
        return StreamDelta(reasoning, content) if reasoning or content else None

    def _rejoin(self, kind: str, piece: str) -> str:
        """The piece as clean text, a surrogate pair split across two chunks joined again."""
        if not piece:
            return ""
        piece = self._held[kind] + piece
        self._held[kind] = ""
        if "\ud800" <= piece[-1] <= "\udbff":
            piece, self._held[kind] = piece[:-1], piece[-1]
        return clean_text(piece)

    @property
    def text(self) -> str:
        return "".join(self._content)

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)

    def reply(self) -> ChatReply:
        """The whole reply; a high surrogate still waiting for its other half becomes U+FFFD."""
        for kind, parts in (("reasoning", self._reasoning), ("content", self._content)):
            if self._held[kind]:
                parts.append("\ufffd")
                self._held[kind] = ""
        return ChatReply(
            id=self.id,
            model=self.model,
            text=self.text,
            reasoning=self.reasoning,
            finish_reason=self.finish_reason,
            usage=self.usage or Usage(),
        )

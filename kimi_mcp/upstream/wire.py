"""Chat-completions wire data: the request we send and the reply we parse (pure, no I/O).

`build_body` applies the catalogue's sampling rules, so a value the upstream would refuse is
replaced and reported (`Adjustment`) instead of costing a round trip and a 400; `encode_body`
makes it bytes, each message from the JSON it made once (a long history is not encoded again on
every call of its conversation).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..catalogue import ModelInfo
from ..errors import InvalidResponse

__all__ = [
    "Adjustment", "ChatReply", "ChatRequest", "Message", "Usage", "build_body", "encode_body", "parse_completion",
]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One turn sent upstream; `reasoning` is an earlier assistant turn's reasoning_content; `images`
    are data URLs sent with a user turn, after its text, as OpenAI content parts. (No slots: its
    `wire_json` is remembered on the instance.)"""

    role: Role
    content: str
    reasoning: str | None = None
    images: tuple[str, ...] = field(default=(), repr=False)

    def to_wire(self) -> dict[str, Any]:
        content: str | list[dict[str, Any]] = self.content
        if self.images:
            content = [{"type": "text", "text": self.content},
                       *({"type": "image_url", "image_url": {"url": url}} for url in self.images)]
        out: dict[str, Any] = {"role": self.role, "content": content}
        if self.reasoning and self.role == "assistant":
            out["reasoning_content"] = self.reasoning
        return out

    @functools.cached_property
    def wire_json(self) -> bytes:
        """`to_wire()` as JSON bytes, made once: the chat layer keeps a conversation's messages
        between calls, so each stored turn is encoded once, not on every call."""
        return json.dumps(self.to_wire()).encode()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated call, ready to become one upstream request."""

    model: ModelInfo
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    thinking: bool | None = None
    json_mode: bool = False
    reasoning_effort: str | None = None
    preserve_thinking: bool = True
    """Ask a `keep` model for preserved thinking (False when the history lacks some turn's reasoning)."""


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A sampling value we changed because the model accepts no other."""

    param: str
    requested: float
    used: float | None
    """None: the model fixes this value itself, so none was sent."""
    reason: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ChatReply:
    """What one completion produced, whichever way (plain or streamed) it arrived."""

    id: str
    model: str
    text: str
    reasoning: str
    finish_reason: str | None
    usage: Usage = field(default_factory=Usage)


def build_body(request: ChatRequest, *, stream: bool) -> tuple[dict[str, Any], list[Adjustment]]:
    """The upstream JSON body, plus what the catalogue's rules changed in it."""
    model = request.model
    thinks = model.thinks(request.thinking)
    body: dict[str, Any] = {
        "model": model.id,
        "messages": request.messages,  # `Message`s: `encode_body` writes their wire form
    }
    adjustments: list[Adjustment] = []
    for param in ("temperature", "top_p"):
        value: float | None = getattr(request, param)
        if value is None:
            continue
        sent: float | None = value
        for rule in model.rules:
            if sent is not None and rule.param == param and rule.applies(thinks):
                allowed = rule.allowed(sent)
                if allowed != sent:
                    adjustments.append(Adjustment(param, value, allowed, rule.reason))
                    sent = allowed
        if sent is not None:
            body[param] = sent
    max_tokens = request.max_tokens if request.max_tokens is not None else model.default_max_tokens
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if model.reasoning_replay == "keep" and thinks and request.preserve_thinking:
        body["thinking"] = {"type": "enabled", "keep": "all"}  # preserved thinking: history carries reasoning
    elif request.thinking is not None:
        body["thinking"] = {"type": "enabled" if request.thinking else "disabled"}
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    if request.json_mode:
        body["response_format"] = {"type": "json_object"}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body, adjustments


def encode_body(body: dict[str, Any]) -> bytes:
    """The body as sent: exactly `json.dumps` of it with each `Message` as its `to_wire()`, but with
    the messages' JSON made once per message (`wire_json`), and the bytes joined in one go (a long
    history is one large allocation, not one per concatenation)."""
    parts: list[bytes] = [b"{"]
    for key, value in body.items():
        if len(parts) > 1:
            parts.append(b", ")
        if key == "messages" and isinstance(value, tuple):  # build_body's: `Message`s
            parts.append(b'"messages": [')
            for i, message in enumerate(value):
                if i:
                    parts.append(b", ")
                parts.append(message.wire_json)
            parts.append(b"]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value)}".encode())
    parts.append(b"}")
    return b"".join(parts)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_usage(data: Any) -> Usage | None:
    """Usage from either Ace's or Moonshot's shape; None when absent or not an object."""
    if not isinstance(data, dict):
        return None
    details = data.get("completion_tokens_details")
    prompt_details = data.get("prompt_tokens_details")
    reasoning = _int(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    cached = _int(data.get("cached_tokens"))
    if cached is None and isinstance(prompt_details, dict):
        cached = _int(prompt_details.get("cached_tokens"))
    prompt = _int(data.get("prompt_tokens")) or 0
    completion = _int(data.get("completion_tokens")) or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_int(data.get("total_tokens")) or prompt + completion,
        reasoning_tokens=reasoning,
        cached_tokens=cached,
    )


def clean_text(text: str) -> str:
    """Text that can be encoded: surrogate pairs (JSON `\\ud83d\\ude00`) joined into their character,
    a lone surrogate replaced by U+FFFD, so an odd answer never fails when it is sent or stored."""
    if text.isascii():
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def text_of(value: Any) -> str:
    """Message content as text: a string, or the text parts of a content-part list."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return clean_text("".join(
            str(part.get("text", "")) for part in value if isinstance(part, dict) and part.get("type") == "text"
        ))
    return ""


def parse_completion(data: Any) -> ChatReply:
    """A non-streamed 200 body as a reply; anything else is `InvalidResponse`."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InvalidResponse("the upstream answered 200 without a chat completion (no choices)")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise InvalidResponse("the upstream answered 200 with a choice that has no message")
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    reasoning = clean_text(reasoning) if isinstance(reasoning, str) else ""
    return ChatReply(
        id=str(data.get("id") or ""),
        model=str(data.get("model") or ""),
        text=text_of(message.get("content")),
        reasoning=reasoning if isinstance(reasoning, str) else "",
        finish_reason=choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None,
        usage=parse_usage(data.get("usage")) or Usage(),
    )

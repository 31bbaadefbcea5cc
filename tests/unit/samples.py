"""Small builders shared by the unit tests: a catalogue row by id, and one upstream stream chunk."""

from __future__ import annotations

from typing import Any

from kimi_mcp.catalogue import CATALOGUE, Catalogue, ModelInfo


def model(model_id: str) -> ModelInfo:
    """A catalogue row by id (fails the test if it is missing)."""
    info = Catalogue(CATALOGUE).get(model_id)
    assert info is not None, model_id
    return info


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """One Ace chunk object (the reference's example shape); no choices when `delta` is None."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {"id": "chatcmpl-952dd5e75583c4d1", "object": "chat.completion.chunk", "created": 1770992031,
            "model": "kimi-k2.5", "system_fingerprint": None, "choices": choices, "usage": None, **extra}

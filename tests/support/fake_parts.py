"""What the fake Ace checks in messages whose `content` is a list of OpenAI content parts, and helpers
for tests to read what a request carried.

Kimi's vision models take `{"type": "text", "text": ...}` and `{"type": "image_url", "image_url":
{"url": "data:image/png;base64,..."}}` parts (png, jpeg, webp, gif; `ms://` file ids need Moonshot's
files API, which Ace does not offer). A malformed part is answered 400 with a message saying what is
wrong, as an upstream would.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

__all__ = ["IMAGE_TYPES", "content_problem", "image_parts", "text_parts", "user_contents"]

IMAGE_TYPES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


def _image_problem(url: Any, where: str) -> str | None:
    if not isinstance(url, str):
        return f"{where}.image_url.url must be a string"
    head, comma, payload = url.partition(",")
    if not head.startswith("data:") or not comma:
        return f"{where}.image_url.url must be a data: URL (data:image/png;base64,...)"
    media, _, encoding = head[5:].partition(";")
    if media not in IMAGE_TYPES:
        return f"{where}.image_url.url has unsupported image type {media!r} (png, jpeg, webp, gif)"
    if encoding != "base64":
        return f"{where}.image_url.url must be base64-encoded"
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return f"{where}.image_url.url is not valid base64"
    if not data.startswith(IMAGE_TYPES[media]) or (media == "image/webp" and data[8:12] != b"WEBP"):
        return f"{where}.image_url.url is not a valid {media} image"
    return None


def _part_problem(part: Any, where: str, role: Any) -> str | None:
    if not isinstance(part, dict):
        return f"{where} must be an object"
    kind = part.get("type")
    if kind == "text":
        return None if isinstance(part.get("text"), str) else f"{where}.text must be a string"
    if kind == "image_url":
        if role != "user":
            return f"{where}: image_url parts are only accepted in user messages"
        image = part.get("image_url")
        if not isinstance(image, dict):
            return f"{where}.image_url must be an object with a url"
        return _image_problem(image.get("url"), where)
    return f"{where}.type {kind!r} is not supported (text, image_url)"


def content_problem(body: Any) -> str | None:
    """What is wrong with the content parts of a chat-completions body, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return None
    for index, message in enumerate(body["messages"]):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        if not content:
            return f"messages[{index}].content must not be an empty list"
        for number, part in enumerate(content):
            found = _part_problem(part, f"messages[{index}].content[{number}]", message.get("role"))
            if found is not None:
                return f"Invalid request: {found}"
    return None


def user_contents(body: Any) -> list[Any]:
    """The `content` of every user message of a recorded body, oldest first."""
    messages = body.get("messages", []) if isinstance(body, dict) else []
    return [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]


def text_parts(content: Any) -> str:
    """A message content's text: the string itself, or its text parts joined."""
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text")


def image_parts(content: Any) -> list[bytes]:
    """The decoded bytes of a message content's image parts (none for a plain string)."""
    if not isinstance(content, list):
        return []
    urls = [p["image_url"]["url"] for p in content if isinstance(p, dict) and p.get("type") == "image_url"]
    return [base64.b64decode(url.partition(",")[2]) for url in urls]

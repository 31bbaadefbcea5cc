"""The fake Ace's check of content parts (tests/support/fake_parts.py), through a real HTTP client: well
formed text and image parts are answered, a malformed one is a 400 that says what is wrong, and what
was received can be read back."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.support.fake_ace import CHAT_PATH, DEFAULT_CONTENT, FakeAce
from tests.support.fake_parts import image_parts, text_parts, user_contents

PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
WEBP = b"RIFF" + bytes(4) + b"WEBPVP8 " + bytes(8)


def url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def body(*parts: Any, role: str = "user") -> dict[str, Any]:
    return {"model": "kimi-k3", "messages": [{"role": role, "content": list(parts)}]}


def image(value: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": value}}


@pytest.fixture(scope="module")
def http(fake: FakeAce) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=fake.base_url, headers={"Authorization": f"Bearer {fake.token}"}, timeout=5,
                       verify=False) as c:
        yield c


def test_well_formed_parts_are_answered_and_recorded(http: httpx2.Client, fake: FakeAce) -> None:
    sent = body({"type": "text", "text": "look"}, image(url(PNG)), image(url(WEBP, "image/webp")))
    answer = http.post(CHAT_PATH, json=sent)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    content = user_contents(fake.requests[-1].json)[-1]
    assert text_parts(content) == "look" and image_parts(content) == [PNG, WEBP]


@pytest.mark.parametrize(("parts", "role", "said"), [
    ((), "user", "content must not be an empty list"),
    (({"type": "video"},), "user", "content[0].type 'video' is not supported"),
    (({"type": "text", "text": 3},), "user", "content[0].text must be a string"),
    (({"type": "image_url", "image_url": "data:x"},), "user", "image_url must be an object"),
    ((image("https://example.com/a.png"),), "user", "must be a data: URL"),
    ((image(url(PNG, "image/svg+xml")),), "user", "unsupported image type 'image/svg+xml'"),
    ((image("data:image/png;base64,!!!"),), "user", "is not valid base64"),
    ((image(url(b"GIF89a....", "image/png")),), "user", "is not a valid image/png image"),
    ((image(url(PNG)),), "assistant", "only accepted in user messages"),
])
def test_malformed_parts_are_a_400_that_says_what_is_wrong(
        http: httpx2.Client, parts: tuple[Any, ...], role: str, said: str) -> None:
    answer = http.post(CHAT_PATH, json=body(*parts, role=role))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "bad_request" and said in error["message"] and "messages[0]" in error["message"]


def test_plain_string_content_is_untouched(http: httpx2.Client) -> None:
    assert http.post(CHAT_PATH, json={"model": "kimi-k2.5", "messages": [
        {"role": "user", "content": "hi"}]}).status_code == 200

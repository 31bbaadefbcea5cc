"""MCP prompts: listed with descriptions and arguments, rendered into a message that tells the host's
model how to call kimi_chat, over a real in-memory client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from kimi_mcp.server import create_server
from kimi_mcp.server.prompts import (
    CODE_REVIEW_SYSTEM,
    PROMPT_NAMES,
    SECOND_OPINION_SYSTEM,
    register_prompts,
)
from tests.support.fake_ace import FakeAce, reply
from tests.support.harness import settings_for

pytestmark = pytest.mark.anyio

SYSTEM_LINE = re.compile(r"^- system: (.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
async def client(fake: FakeAce) -> AsyncIterator[Client]:
    server = create_server(settings_for(fake))
    register_prompts(server)
    register_prompts(server)  # a second call must add nothing
    async with Client(server) as connected:
        yield connected


def text_of(result: Any) -> str:
    assert len(result.messages) == 1
    message = result.messages[0]
    assert message.role == "user"
    assert message.content.type == "text"
    text: str = message.content.text
    return text


def tagged(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>\n(.*)\n</{tag}>", text, re.DOTALL)
    assert match, text
    return match.group(1)


async def test_prompts_are_listed_with_descriptions_and_arguments(client: Client) -> None:
    prompts = {p.name: p for p in (await client.list_prompts()).prompts}
    assert set(prompts) == set(PROMPT_NAMES)
    for prompt in prompts.values():
        assert prompt.title and prompt.description
        assert prompt.arguments
        for argument in prompt.arguments:
            assert argument.description, (prompt.name, argument.name)
    shapes = {name: [(a.name, a.required) for a in p.arguments or []] for name, p in prompts.items()}
    assert shapes == {
        "kimi_second_opinion": [("subject", True), ("focus", False)],
        "kimi_code_review": [("code", True), ("language", False), ("focus", False)],
        "kimi_translate": [("text", True), ("target_language", True), ("tone", False)],
    }


async def test_second_opinion_message(client: Client) -> None:
    plan = "Plan: migrate the monolith to 40 microservices in one sprint.\nRollback: none."
    result = await client.get_prompt("kimi_second_opinion", {"subject": plan, "focus": "risks"})
    text = text_of(result)
    assert "kimi_chat" in text
    assert SYSTEM_LINE.search(text).group(1) == SECOND_OPINION_SYSTEM  # type: ignore[union-attr]
    assert tagged(text, "material") == plan
    assert '"Focus on: risks"' in text
    assert result.description


async def test_second_opinion_without_focus_says_nothing_about_it(client: Client) -> None:
    text = text_of(await client.get_prompt("kimi_second_opinion", {"subject": "Is 2+2=5?", "focus": "  "}))
    assert "Focus" not in text
    assert tagged(text, "material") == "Is 2+2=5?"


async def test_code_review_message(client: Client) -> None:
    code = "fn main() {\n    let v: Vec<u8> = vec![];\n    println!(\"{}\", v[0]);\n}"
    text = text_of(await client.get_prompt("kimi_code_review", {"code": code, "language": "Rust",
                                                                  "focus": "panics"}))
    assert SYSTEM_LINE.search(text).group(1) == CODE_REVIEW_SYSTEM.format(language="Rust ")  # type: ignore[union-attr]
    assert "senior Rust engineer" in text
    assert tagged(text, "code") == code
    assert '"Focus the review on: panics"' in text
    plain = text_of(await client.get_prompt("kimi_code_review", {"code": "x = 1"}))
    assert "senior engineer" in plain


async def test_translate_message(client: Client) -> None:
    source = "Bonjour à tous — 你好!\n\n**Merci.**"
    text = text_of(await client.get_prompt("kimi_translate", {"text": source, "target_language": "English",
                                                               "tone": "formal"}))
    system = SYSTEM_LINE.search(text).group(1)  # type: ignore[union-attr]
    assert "into English, in a formal tone." in system
    assert "Answer with the translation only." in system
    assert tagged(text, "text") == source
    assert "into English" in text.splitlines()[0]


@pytest.mark.parametrize(
    ("name", "arguments"),
    [("kimi_translate", {"text": "hola"}), ("kimi_code_review", {}), ("kimi_nonexistent", {"x": "y"})],
)
async def test_missing_arguments_and_unknown_prompts_are_refused(client: Client, name: str,
                                                                 arguments: dict[str, str]) -> None:
    """Refused, though the SDK words it only as "Internal server error" (see the report)."""
    with pytest.raises(MCPError):
        await client.get_prompt(name, arguments)


@pytest.mark.parametrize(
    ("name", "arguments", "problem"),
    [
        ("kimi_second_opinion", {"subject": "   "}, "subject must not be empty"),
        ("kimi_translate", {"text": "hola", "target_language": ""}, "target_language must not be empty"),
        ("kimi_code_review", {"code": "\n"}, "code must not be empty"),
    ],
)
async def test_empty_arguments_are_refused_with_a_reason(client: Client, name: str, arguments: dict[str, str],
                                                         problem: str) -> None:
    with pytest.raises(MCPError, match=problem) as caught:
        await client.get_prompt(name, arguments)
    assert caught.value.code == INVALID_PARAMS


async def test_following_the_prompt_reaches_kimi_as_written(client: Client, fake: FakeAce) -> None:
    """What a host's model does with the message: call kimi_chat with the named system prompt and the
    material; the upstream receives exactly those."""
    fake.reset()
    fake.script(reply("Too risky: no rollback."))
    subject = "We will deploy on Fridays at 17:00."
    text = text_of(await client.get_prompt("kimi_second_opinion", {"subject": subject}))
    system = SYSTEM_LINE.search(text).group(1)  # type: ignore[union-attr]
    result = await client.call_tool("kimi_chat", {"system": system, "prompt": tagged(text, "material")})
    assert not result.is_error, result.content
    assert result.structured_content["text"] == "Too risky: no rollback."  # type: ignore[index]
    assert fake.requests[-1].json["messages"] == [
        {"role": "system", "content": SECOND_OPINION_SYSTEM},
        {"role": "user", "content": subject},
    ]

"""MCP prompts: ready-made requests a host can offer its user (e.g. as slash commands).

Each prompt returns one user message telling the host's model to call `kimi_chat` with a
suitable system prompt and the user's material, then what to do with Kimi's answer. The
material is placed between tags so the model passes it on verbatim.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import Field

__all__ = ["PROMPT_NAMES", "code_review", "register_prompts", "second_opinion", "translate"]

PROMPT_NAMES = ("kimi_second_opinion", "kimi_code_review", "kimi_translate")

SECOND_OPINION_SYSTEM = (
    "You are an independent expert reviewer giving a second opinion. Judge the material on its merits; "
    "do not assume it is right. Say plainly what is sound, what is wrong or risky and why, what is "
    "missing, and what you would do instead. Be specific and concise."
)
CODE_REVIEW_SYSTEM = (
    "You are a senior {language}engineer doing a careful code review. Report real problems first: bugs, "
    "security issues, wrong edge cases, concurrency and resource leaks; then maintainability. For each "
    "finding give the severity (high, medium, low), where it is, why it matters and a concrete fix. "
    "Do not pad the review with praise or restate the code."
)
TRANSLATE_SYSTEM = (
    "You are a professional translator. Translate the user's text into {target}{tone}. Keep the meaning, "
    "formatting, Markdown, code, names and numbers intact. Answer with the translation only."
)

Subject = Annotated[str, Field(description="The question, plan, design, argument or piece of work to get "
                                           "Kimi's independent view on.")]
Focus = Annotated[str | None, Field(description="Optional: what to concentrate on (e.g. risks, correctness, "
                                                "cost, alternatives).")]
Code = Annotated[str, Field(description="The code to review (a file, a function or a diff).")]
Language = Annotated[str | None, Field(description="Optional: the programming language, if not obvious.")]
ReviewFocus = Annotated[str | None, Field(description="Optional: what to concentrate on (e.g. security, "
                                                      "performance, error handling).")]
Text = Annotated[str, Field(description="The text to translate.")]
TargetLanguage = Annotated[str, Field(description="The language to translate into (e.g. English, 简体中文, "
                                                  "French).")]
Tone = Annotated[str | None, Field(description="Optional: the tone or register (e.g. formal, casual, "
                                               "technical).")]


def _given(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


def _required(value: str, name: str) -> str:
    """A required argument with text in it; an MCPError reaches the client with its message (the SDK
    turns other exceptions into a bare "Internal server error")."""
    if not value.strip():
        raise MCPError(INVALID_PARAMS, f"{name} must not be empty")
    return value


def _instruction(task: str, system: str, tag: str, material: str, extra: str | None, then: str) -> str:
    added = f' followed by a blank line and "{extra}"' if extra else ""
    return (
        f"{task} Call the kimi_chat tool with:\n"
        f"- system: {system}\n"
        f"- prompt: the text inside <{tag}> below, verbatim{added}.\n\n"
        f"<{tag}>\n{material}\n</{tag}>\n\n"
        f"{then}"
    )


def second_opinion(subject: str, focus: str | None = None) -> str:
    focus = _given(focus)
    return _instruction(
        "Get an independent second opinion from Kimi on the material below.",
        SECOND_OPINION_SYSTEM,
        "material",
        _required(subject, "subject"),
        f"Focus on: {focus}" if focus else None,
        "Then show Kimi's view, and say briefly where you agree or disagree with it and why.",
    )


def code_review(code: str, language: str | None = None, focus: str | None = None) -> str:
    language, focus = _given(language), _given(focus)
    return _instruction(
        "Ask Kimi to review the code below.",
        CODE_REVIEW_SYSTEM.format(language=f"{language} " if language else ""),
        "code",
        _required(code, "code"),
        f"Focus the review on: {focus}" if focus else None,
        "Then present Kimi's findings ordered by severity, and mark any you believe are mistaken.",
    )


def translate(text: str, target_language: str, tone: str | None = None) -> str:
    tone = _given(tone)
    target = _required(target_language, "target_language").strip()
    return _instruction(
        f"Have Kimi translate the text below into {target}.",
        TRANSLATE_SYSTEM.format(target=target, tone=f", in a {tone} tone" if tone else ""),
        "text",
        _required(text, "text"),
        None,
        "Then give the user Kimi's translation exactly as it answered.",
    )


def register_prompts(server: MCPServer[Any]) -> None:
    """Add the prompts to the server (called once, by `KimiServer`'s constructor)."""

    @server.prompt(
        name="kimi_second_opinion",
        title="Second opinion from Kimi",
        description="Ask Kimi for an independent view on a question, plan or piece of work, then compare it "
                    "with your own.",
    )
    async def kimi_second_opinion(subject: Subject, focus: Focus = None) -> UserMessage:
        return UserMessage(second_opinion(subject, focus))

    @server.prompt(
        name="kimi_code_review",
        title="Code review by Kimi",
        description="Have Kimi review code (a file, function or diff) and report findings by severity.",
    )
    async def kimi_code_review(code: Code, language: Language = None, focus: ReviewFocus = None) -> UserMessage:
        return UserMessage(code_review(code, language, focus))

    @server.prompt(
        name="kimi_translate",
        title="Translate with Kimi",
        description="Have Kimi translate text into another language, keeping formatting, optionally in a "
                    "given tone.",
    )
    async def kimi_translate(text: Text, target_language: TargetLanguage, tone: Tone = None) -> UserMessage:
        return UserMessage(translate(text, target_language, tone))

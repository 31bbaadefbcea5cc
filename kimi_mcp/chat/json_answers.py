"""JSON answers: ask in JSON mode, parse tolerantly, check the caller's schema, repair once.

A reply that is not JSON, or does not match the schema, gets one more try with the parser's or
validator's complaint fed back; a second failure is `InvalidJSON` with the raw start attached.
The schema itself is checked and applied by `schemas.SchemaChecker`, off the event loop.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InvalidJSON
from ..upstream import Message, Usage
from .progress import StreamListener
from .schemas import SchemaChecker, parse_schema_arg, precheck
from .service import ChatArgs, ChatService, Completed

__all__ = ["JsonOutcome", "parse_json_reply", "run_json", "unfence"]

RAW_PREVIEW_CHARS = 500
MAX_ATTEMPTS = 2
_FENCE_TAG = re.compile(r"[A-Za-z0-9_-]*")
FENCE = "```"


@dataclass(frozen=True, slots=True)
class JsonOutcome:
    value: Any
    text: str
    completed: Completed
    usage: Usage
    json_attempts: int
    cost_usd: float | None = None
    """Every answer's estimated cost (a repair costs a second call); None when the model has no prices."""


def instruction(schema: dict[str, Any] | None) -> str:
    """The system-turn instruction for JSON mode."""
    text = "Answer with JSON only: one valid JSON value, no prose, no Markdown fences."
    if schema is not None:
        text += " The JSON must match this JSON Schema:\n" + json.dumps(schema, ensure_ascii=False)
    return text


def unfence(text: str) -> str:
    """The inside of a Markdown code fence (```json ... ```), in linear time: the reply is the
    upstream's, so no backtracking pattern may run over it."""
    if len(text) < 2 * len(FENCE) or not (text.startswith(FENCE) and text.endswith(FENCE)):
        return text
    inner = text[len(FENCE):-len(FENCE)]
    first, newline, rest = inner.partition("\n")
    if newline:
        tag = first.strip()
        return (rest if _FENCE_TAG.fullmatch(tag) else inner).strip()
    found = _FENCE_TAG.match(inner)
    return inner[found.end() if found else 0:].strip()


def parse_json_reply(text: str) -> Any:
    """JSON from a reply, tolerating surrounding whitespace and a ```json fence; ValueError otherwise."""
    return json.loads(unfence(text.strip()))


async def _problem(text: str, schema_json: str | None, schemas: SchemaChecker) -> tuple[Any, str | None]:
    """(value, None) when the reply is good, else (None, what is wrong)."""
    try:
        value = parse_json_reply(text)
    except ValueError as exc:
        return None, f"is not valid JSON ({exc})"
    if schema_json is not None:
        problem = await schemas.mismatch(schema_json, value)
        if problem is not None:
            return None, problem
    return value, None


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
        a.total_tokens + b.total_tokens,
        None if a.reasoning_tokens is None and b.reasoning_tokens is None
        else (a.reasoning_tokens or 0) + (b.reasoning_tokens or 0),
        None if a.cached_tokens is None and b.cached_tokens is None
        else (a.cached_tokens or 0) + (b.cached_tokens or 0),
    )


async def run_json(
    service: ChatService,
    args: ChatArgs,
    schema: Any,
    listener: StreamListener | None,
    schemas: SchemaChecker,
) -> JsonOutcome:
    """Ask for JSON, repair once if needed, and return the parsed value."""
    wanted = parse_schema_arg(schema)
    schema_json = precheck(wanted) if wanted is not None else None
    args = await service.attach(args)
    request = service.prepare(args, json_mode=True, system_suffix=instruction(wanted))
    if schema_json is not None:
        await schemas.check(schema_json)
    usage = Usage()
    problem = ""
    text = ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        completed = await service.complete(request, listener=listener)
        usage = _add(usage, completed.reply.usage)
        text = completed.reply.text
        value, found = await _problem(text, schema_json, schemas)
        if found is None:
            return JsonOutcome(value, json.dumps(value, ensure_ascii=False), completed, usage, attempt,
                               service.cost(request.model, usage))
        problem = found
        if listener is not None:
            listener.new_attempt()
        request = replace(request, messages=(
            *request.messages,
            Message("assistant", text),
            Message("user", f"Your previous answer {problem}. Answer again with only the corrected JSON."),
        ))
    raise InvalidJSON(
        f"Kimi's answer {problem}, also after one repair",
        details={"raw_start": text[:RAW_PREVIEW_CHARS], "json_attempts": MAX_ATTEMPTS},
    )

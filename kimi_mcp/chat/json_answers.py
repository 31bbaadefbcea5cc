"""JSON answers: ask in JSON mode, parse tolerantly, check the caller's schema, repair once.

A reply that is not JSON, or does not match the schema, gets one more try with the parser's or
validator's complaint fed back; a second failure is `InvalidJSON` with the raw start attached.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArguments, InvalidJSON
from ..upstream import Message, Usage
from .progress import StreamListener
from .service import ChatArgs, ChatService, Completed

if TYPE_CHECKING:  # jsonschema is imported on first use: it costs start-up time every host pays
    from jsonschema.protocols import Validator
    from referencing import Registry

__all__ = ["JsonOutcome", "check_schema", "parse_json_reply", "run_json"]

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


def instruction(schema: dict[str, Any] | None) -> str:
    """The system-turn instruction for JSON mode."""
    text = "Answer with JSON only: one valid JSON value, no prose, no Markdown fences."
    if schema is not None:
        text += " The JSON must match this JSON Schema:\n" + json.dumps(schema, ensure_ascii=False)
    return text


@functools.cache
def _local_only() -> Registry[Any]:
    """A `$ref` registry that resolves nothing remote: a caller's schema must never make the server
    fetch anything (no SSRF through `$ref`)."""
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource

    def refuse(uri: str) -> Resource[Any]:
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs field

    return Registry(retrieve=refuse)  # type: ignore[call-arg]  # attrs alias


def check_schema(schema: Any) -> Validator | None:
    """A validator for the caller's schema; a schema that is not valid is `InvalidArguments`."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise InvalidArguments("schema must be a JSON Schema object")
    import jsonschema
    from jsonschema.exceptions import SchemaError

    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        validator: Validator = cls(schema, registry=_local_only())
        list(validator.iter_errors(None))  # surfaces a top-level $ref that cannot be resolved
    except SchemaError as exc:
        raise InvalidArguments(f"schema is not a valid JSON Schema: {exc.message}") from None
    except (Exception, RecursionError) as exc:
        raise InvalidArguments(f"schema cannot be used: {_reason(exc)}") from None
    return validator


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it refers to itself without end"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


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


def _problem(text: str, validator: Validator | None) -> tuple[Any, str | None]:
    """(value, None) when the reply is good, else (None, what is wrong)."""
    try:
        value = parse_json_reply(text)
    except ValueError as exc:
        return None, f"is not valid JSON ({exc})"
    if validator is not None:
        from jsonschema.exceptions import best_match

        try:
            error = best_match(validator.iter_errors(value))
        except (Exception, RecursionError) as exc:
            raise InvalidArguments(f"schema cannot be used: {_reason(exc)}") from None
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return None, f"does not match the schema at {where} ({error.message})"
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
) -> JsonOutcome:
    """Ask for JSON, repair once if needed, and return the parsed value."""
    validator = check_schema(schema)
    request = service.prepare(args, json_mode=True, system_suffix=instruction(schema if validator else None))
    usage = Usage()
    problem = ""
    text = ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        completed = await service.complete(request, listener=listener)
        usage = _add(usage, completed.reply.usage)
        text = completed.reply.text
        value, found = _problem(text, validator)
        if found is None:
            return JsonOutcome(value, json.dumps(value, ensure_ascii=False), completed, usage, attempt)
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

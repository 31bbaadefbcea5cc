"""A caller's JSON Schema, checked and applied without ever blocking the event loop.

A schema is the caller's code: 15 nested `anyOf`/`$ref` levels or a pattern like `^(a|a)*$` can
take minutes of CPU, and Python's regex engine cannot be interrupted. So a schema is first held to
cheap static limits here (size, depth, node count), and then checked, and every answer validated,
in a worker process of our own (`python -m kimi_mcp.chat.schema_worker`, JSON lines on its stdin and
stdout) within a deadline; a worker past the deadline is killed and the call refused with
`invalid_arguments`. `$ref` resolves only inside the schema: it never makes the server fetch a URL.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from ..errors import InternalError, InvalidArguments

__all__ = ["MAX_SCHEMA_BYTES", "MAX_SCHEMA_DEPTH", "MAX_SCHEMA_NODES", "SchemaChecker", "check", "mismatch",
           "parse_schema_arg", "precheck"]

MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_NODES = 5_000
DEADLINE_S = 2.0
WORKERS = 2
MAX_REPLY_BYTES = 1024 * 1024
TOO_COSTLY = ("simplify it: fewer nested anyOf/oneOf/allOf and $ref levels, simpler patterns")


def parse_schema_arg(schema: Any) -> dict[str, Any] | None:
    """The `schema` argument as an object: given as one, or as a JSON string (strict-mode tool
    converters turn a free-form object argument into `{}`, so a string is the portable way)."""
    if schema is None or isinstance(schema, dict):
        return schema
    if isinstance(schema, str):
        if not schema.strip():
            return None
        try:
            parsed = json.loads(schema)
        except ValueError as exc:
            raise InvalidArguments(f"schema is a string but not valid JSON: {exc}") from None
        if isinstance(parsed, dict):
            return parsed
    raise InvalidArguments("schema must be a JSON Schema object (or that object as a JSON string)")


def precheck(schema: dict[str, Any]) -> str:
    """The schema as compact JSON, after the static limits (linear in its size)."""
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise InvalidArguments(f"schema is larger than {MAX_SCHEMA_BYTES // 1024} KiB; {TOO_COSTLY}")
    for nodes, depth in enumerate(_depths(schema), start=1):
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidArguments(f"schema is nested deeper than {MAX_SCHEMA_DEPTH} levels; {TOO_COSTLY}")
        if nodes > MAX_SCHEMA_NODES:
            raise InvalidArguments(f"schema has more than {MAX_SCHEMA_NODES:,} parts; {TOO_COSTLY}")
    return text


def _depths(value: Any) -> Iterator[int]:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        yield depth
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)


# --------------------------------------------------------------------------- run in the worker


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource

    def refuse(uri: str) -> Resource[Any]:
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs field

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, registry=Registry(retrieve=refuse))  # type: ignore[call-arg]  # attrs alias


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it refers to itself without end"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def check(schema: dict[str, Any]) -> str | None:
    """What is wrong with the schema, or None (runs in the worker)."""
    from jsonschema.exceptions import SchemaError

    try:
        validator = _validator(schema)
        list(validator.iter_errors(None))  # surfaces a top-level $ref that cannot be resolved
    except SchemaError as exc:
        return f"schema is not a valid JSON Schema: {exc.message}"
    except (Exception, RecursionError) as exc:
        return f"schema cannot be used: {_reason(exc)}"
    return None


def mismatch(schema: dict[str, Any], value: Any) -> tuple[bool, str | None]:
    """(schema usable, how the value fails it or None) (runs in the worker)."""
    from jsonschema.exceptions import best_match

    try:
        error = best_match(_validator(schema).iter_errors(value))
    except (Exception, RecursionError) as exc:
        return False, f"schema cannot be used: {_reason(exc)}"
    if error is None:
        return True, None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return True, f"does not match the schema at {where} ({error.message})"


def _answer(job: dict[str, Any]) -> dict[str, Any]:
    if job.get("op") == "check":
        return {"problem": check(job["schema"])}
    usable, problem = mismatch(job["schema"], job["value"])
    return {"usable": usable, "problem": problem}


def serve_jobs() -> None:
    """The worker (`python -m kimi_mcp.chat.schema_worker`): one JSON job per line in, one JSON
    answer per line out, until stdin closes."""
    for line in sys.stdin.buffer:
        try:
            reply = _answer(json.loads(line))
        except Exception as exc:  # a bug of ours: report it, keep serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------- the server's side


@dataclass
class _Worker:
    process: Process
    replies: BufferedByteReceiveStream


class SchemaChecker:
    """Up to `WORKERS` schema worker processes, started on first use, each job within `DEADLINE_S`."""

    def __init__(self, deadline_s: float = DEADLINE_S, workers: int = WORKERS) -> None:
        self.deadline_s = deadline_s
        self._slots = anyio.CapacityLimiter(workers)
        self._idle: list[_Worker] = []

    async def check(self, schema_json: str) -> None:
        """Refuse a schema that is invalid, unusable or too costly to check."""
        reply = await self._run(f'{{"op":"check","schema":{schema_json}}}', "check")
        if reply.get("problem"):
            raise InvalidArguments(str(reply["problem"]))

    async def mismatch(self, schema_json: str, value: Any) -> str | None:
        """How the value fails the (checked) schema, or None."""
        value_json = json.dumps(value, ensure_ascii=False)
        job = f'{{"op":"validate","schema":{schema_json},"value":{value_json}}}'
        reply = await self._run(job, "check the answer against")
        if not reply.get("usable", True):
            raise InvalidArguments(str(reply.get("problem")))
        problem = reply.get("problem")
        return str(problem) if problem else None

    async def _run(self, job: str, doing: str) -> dict[str, Any]:
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._start()
            healthy = False
            try:
                with anyio.fail_after(self.deadline_s):
                    await worker.process.stdin.send(job.encode() + b"\n")  # type: ignore[union-attr]
                    line = await worker.replies.receive_until(b"\n", MAX_REPLY_BYTES)
                reply: dict[str, Any] = json.loads(line)
                healthy = True
            except TimeoutError:
                raise InvalidArguments(
                    f"schema is too costly to {doing} (over {self.deadline_s:g} s); {TOO_COSTLY}"
                ) from None
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, ValueError) as exc:
                raise InternalError(f"the schema worker failed ({type(exc).__name__})") from None
            finally:
                if healthy:
                    self._idle.append(worker)
                else:
                    await _stop(worker)
        if "error" in reply:
            raise InternalError(f"the schema worker failed: {reply['error']}")
        return reply

    async def _start(self) -> _Worker:
        try:
            process = await anyio.open_process([sys.executable, "-m", "kimi_mcp.chat.schema_worker"], stderr=None)
        except OSError as exc:
            raise InternalError(f"cannot start the schema worker: {exc.strerror or exc}") from None
        assert process.stdout is not None
        return _Worker(process, BufferedByteReceiveStream(process.stdout))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for worker in idle:
            await _stop(worker)


async def _stop(worker: _Worker) -> None:
    with anyio.CancelScope(shield=True):
        if worker.process.returncode is None:
            worker.process.kill()
        await worker.process.aclose()


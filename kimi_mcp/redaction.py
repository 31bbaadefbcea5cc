"""Keeping the API token (and client tokens) out of everything we emit.

The token is never put into a message on purpose; this is the net under that rule, applied at
every exit: tool results, progress messages, resources, stored turns, log lines, `doctor` output.
A fragment counts too: any `MIN_FRAGMENT` characters of a secret in a row are masked, so a token
cut short by a length limit (or echoed in part) still never shows. Log lines are plain text or,
for log collectors, one JSON object each (`JsonFormatter`, with the call's context from
`kimi_mcp.telemetry`).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from .telemetry import current_call

__all__ = ["JsonFormatter", "RedactingFilter", "escape_controls", "redact", "redact_value", "setup_logging"]

MASK = "****"
MIN_FRAGMENT = 10
"""Runs of at least this many characters of a secret are masked wherever they appear."""


@functools.lru_cache(maxsize=256)
def _pieces(secret: str) -> frozenset[str]:
    """Every MIN_FRAGMENT-character piece of a secret (made once per secret, not per string)."""
    return frozenset(secret[i:i + MIN_FRAGMENT] for i in range(len(secret) - MIN_FRAGMENT + 1))


def _fragment_spans(text: str, secret: str) -> list[tuple[int, int]]:
    """Where any MIN_FRAGMENT-character piece of the secret occurs, merged into spans (C-speed finds,
    one per piece of the secret, so the cost is linear in the text)."""
    found: list[tuple[int, int]] = []
    for piece in _pieces(secret):
        at = text.find(piece)
        while at >= 0:
            found.append((at, at + MIN_FRAGMENT))
            at = text.find(piece, at + 1)
    found.sort()
    merged: list[tuple[int, int]] = []
    for start, end in found:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


SHORT = 128
"""Strings up to this long (a result's keys, ids, model names) are redacted once and remembered."""


def redact(text: str, secrets: tuple[str, ...]) -> str:
    if len(text) <= SHORT:
        return _redact_short(text, secrets)
    return _redact(text, secrets)


@functools.lru_cache(maxsize=4096)
def _redact_short(text: str, secrets: tuple[str, ...]) -> str:
    return _redact(text, secrets)


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if not secret:
            continue
        if len(secret) < MIN_FRAGMENT:
            text = text.replace(secret, MASK)
            continue
        if len(text) < MIN_FRAGMENT:  # too short to hold a fragment (most values of a result are)
            continue
        spans = _fragment_spans(text, secret)
        if spans:
            parts, last = [], 0
            for start, end in spans:
                parts += [text[last:start], MASK]
                last = end
            text = "".join([*parts, text[last:]])
    return text


def redact_value(value: Any, secrets: tuple[str, ...]) -> Any:
    """`redact` applied to every string inside a JSON-like value, object keys included."""
    if not secrets:
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(str(k), secrets): redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, secrets) for v in value]
    return value


_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def escape_controls(text: str) -> str:
    """A log message on one line: CR, LF and other control characters (a peer's session id, say)
    written as escapes, so nobody can forge a log line."""
    return text.translate(_CONTROL) if not text.isprintable() else text


class RedactingFilter(logging.Filter):
    """Rewrites each record (message, arguments, traceback text) with the secrets masked and the
    message's control characters escaped."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = escape_controls(redact(record.getMessage(), self._secrets))
        record.args = None
        if not self._secrets:
            return True
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self._secrets)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True


CALL_FIELDS = ("request_id", "principal", "tool", "model")
RECORD_FIELDS = ("duration_s", "outcome", "error_kind")
"""Fields a record may carry as `extra` (a tool call's closing line)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: timestamp (UTC), level, logger, message, and where
    known the tool call's request id, principal, tool and model, its duration and error kind, and
    the trace and span ids. Every string is masked again here (`extra` fields bypass the filter)."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        out: dict[str, Any] = {"timestamp": stamp.replace("+00:00", "Z"), "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        call = current_call()
        if call is not None:
            out.update({name: value for name in CALL_FIELDS if (value := getattr(call, name))})
        for name in RECORD_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            out["trace_id"], out["span_id"] = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(redact_value(out, self._secrets), ensure_ascii=False, default=str)


def setup_logging(level: str, secrets: tuple[str, ...], fmt: str = "plain") -> None:
    """Logs to stderr only (stdout is the protocol on stdio), every line redacted; `fmt` "json":
    one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(secrets))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Quiet libraries that log every request, and every result (sse_starlette at DEBUG): the
    # conversation text is the user's, not the operator's.
    for noisy in ("httpx2", "httpcore", "httpcore2", "uvicorn.access", "sse_starlette", "mcp.server.sse"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))

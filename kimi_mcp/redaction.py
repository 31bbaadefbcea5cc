"""Keeping the API token out of everything we emit: tool results, log lines, exception text.

The token is never put into a message on purpose; this is the net under that rule, applied at
the two exits (the tool result and the log handler).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["RedactingFilter", "redact", "redact_value", "setup_logging"]

MASK = "****"


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def redact_value(value: Any, secrets: tuple[str, ...]) -> Any:
    """`redact` applied to every string inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, secrets) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Rewrites each record (message, arguments, traceback text) with the secrets masked."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg = redact(record.getMessage(), self._secrets)
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self._secrets)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True


def setup_logging(level: str, secrets: tuple[str, ...]) -> None:
    """Logs to stderr only (stdout is the protocol on stdio), every line redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Quiet libraries that log every request, and every result (sse_starlette at DEBUG): the
    # conversation text is the user's, not the operator's.
    for noisy in ("httpx2", "httpcore", "httpcore2", "uvicorn.access", "sse_starlette"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))

"""The one map from an upstream failure to an error class: a status body or an error event in a stream.

Both shapes go through `_classify`, so a code means the same wherever it arrives (`used_up` is a
balance problem, never retryable, whether it came as HTTP 403 or as an SSE `error` event).
Imports only `kimi_mcp.errors`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from ..errors import (
    AuthError,
    BadRequest,
    Forbidden,
    InsufficientBalance,
    NotFound,
    RateLimited,
    UpstreamError,
    UpstreamFailure,
    UpstreamTimeout,
)

__all__ = ["from_error_object", "from_status", "from_stream_event", "html_title", "retry_after_seconds"]

_BY_STATUS: dict[int, type[UpstreamError]] = {
    400: BadRequest,
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    408: UpstreamTimeout,
    429: RateLimited,
    500: UpstreamFailure,
    502: UpstreamFailure,
    503: UpstreamFailure,
    504: UpstreamTimeout,
}
# Codes that override the status: balance problems must never look retryable.
_BY_CODE: dict[str, type[UpstreamError]] = {
    "used_up": InsufficientBalance,
    "exceeded_current_quota_error": InsufficientBalance,
    "invalid_token": AuthError,
    "token_expired": AuthError,
    "no_token": AuthError,
    "token_mismatched": AuthError,
    "invalid_authentication_error": AuthError,
    "resource_not_found_error": NotFound,
    "model_not_found": NotFound,
}
# Codes that name a failure when no status does (an error event inside a 200 stream).
_BY_CODE_ALONE: dict[str, type[UpstreamError]] = {
    "no_api": NotFound,
    "disabled": Forbidden,
    "forbidden": Forbidden,
    "permission_denied_error": Forbidden,
    "too_many_requests": RateLimited,
    "rate_limit_reached_error": RateLimited,
    "engine_overloaded_error": UpstreamFailure,
    "api_error": UpstreamFailure,
    "server_error": UpstreamFailure,
    "timeout": UpstreamTimeout,
    "bad_request": BadRequest,
    "invalid_request_error": BadRequest,
    "api_not_implemented": BadRequest,
    "content_filter": BadRequest,
}
_TRY_AGAIN = re.compile(r"try again after (\d+(?:\.\d+)?) ?s", re.IGNORECASE)
MAX_MESSAGE = 500


def _classify(status: int | None, code: str | None) -> type[UpstreamError]:
    """The class for an overriding code, else the status, else any known code; an unknown failure
    is a retryable upstream failure unless a status below 500 says it was the request's fault."""
    cls = (_BY_CODE.get(code or "") or (_BY_STATUS.get(status) if status is not None else None)
           or _BY_CODE_ALONE.get(code or ""))
    if cls is not None:
        return cls
    return BadRequest if status is not None and status < 500 else UpstreamFailure


_GONE_WORDS = ("not found", "not exist", "unknown model", "retired", "deprecated", "no longer", "not available",
               "invalid model", "decommissioned")


def _names_gone_model(message: str | None, model: str | None) -> bool:
    """A 400 whose message names the model (as a whole id: kimi-k3 is not kimi-k3.1-pro) and says it
    is unknown or retired: a `not_found`, not the caller's bad request (the model id is ours to fix)."""
    if not model or not message:
        return False
    lower, wanted = message.lower(), model.lower()
    named = False
    start = lower.find(wanted)
    while start >= 0 and not named:
        end = start + len(wanted)
        before = lower[start - 1] if start > 0 else " "
        after = lower[end] if end < len(lower) else " "
        named = not (before.isalnum() or before in "-_.") and not (after.isalnum() or after in "-_" or
                                                                   (after == "." and lower[end + 1:end + 2].isalnum()))
        start = lower.find(wanted, start + 1)
    return named and any(word in lower for word in _GONE_WORDS)


def html_title(text: str) -> str:
    """The <title> of an HTML error page, found in linear time (no regular expression)."""
    lower = text.lower()
    start = lower.find("<title>")
    if start < 0:
        return "an HTML error page"
    end = lower.find("</title>", start)
    title = text[start + 7:end if end >= 0 else start + 7 + MAX_MESSAGE].strip()
    return title[:MAX_MESSAGE] or "an HTML error page"


def _fields(data: Any) -> tuple[str | None, str | None, str | None]:
    """(code, message, trace_id) from Ace's, Moonshot's or a proxy's JSON error object."""
    if not isinstance(data, dict):
        return None, str(data)[:MAX_MESSAGE], None
    trace_id = data.get("trace_id")
    error = data.get("error")
    code: Any = None
    message: Any = None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = error.get("message")
    elif isinstance(error, str):
        message = error
    message = message or data.get("message") or data.get("detail")
    code = code or data.get("code")
    return (
        str(code) if code else None,
        str(message)[:MAX_MESSAGE] if message else None,
        str(trace_id) if trace_id else None,
    )


def _parse_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        data: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        if text.startswith("<"):
            return None, html_title(text), None
        return None, text[:MAX_MESSAGE] or None, None
    return _fields(data)


def retry_after_seconds(headers: Mapping[str, str], message: str | None) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds or an HTTP date) or Moonshot's "try again after N seconds"."""
    raw = headers.get("retry-after")
    if raw:
        try:
            seconds = float(raw)
            if math.isfinite(seconds):
                return max(0.0, seconds)
        except ValueError:
            try:  # an HTTP date; one already past says nothing
                wait = parsedate_to_datetime(raw).timestamp() - time.time()
                if wait > 0:
                    return wait
            except (TypeError, ValueError):
                pass
    match = _TRY_AGAIN.search(message or "")
    return float(match.group(1)) if match else None


def from_status(status: int, body: bytes, headers: Mapping[str, str], *, model: str | None = None) -> UpstreamError:
    """An HTTP error answer as our error; `model` is the id the request asked for."""
    code, message, trace_id = _parse_body(body)
    cls = _classify(status, code)
    if cls is BadRequest and _names_gone_model(message, model):
        cls = NotFound
    return cls(
        message or f"the upstream answered HTTP {status} with no message",
        status=status,
        code=code,
        trace_id=trace_id,
        retry_after_s=retry_after_seconds(headers, message),
    )


def from_stream_event(chunk: Mapping[str, Any]) -> UpstreamError:
    """An `error` event inside a stream (`data: {"error": {...}}`), mapped like the same code in a body."""
    return from_error_object(chunk, "the stream failed midway")


def from_error_object(data: Mapping[str, Any], where: str) -> UpstreamError:
    """An error object that came with HTTP 200 (a stream event, or a 200 body that is an error).

    The HTTP status said nothing, so only a status the object itself names is used.
    """
    code, message, trace_id = _fields(data)
    error = data.get("error")
    raw_status = (error.get("status") if isinstance(error, dict) else None) or data.get("status")
    status = raw_status if isinstance(raw_status, int) and not isinstance(raw_status, bool) else None
    return _classify(status, code)(
        f"{where}: {message or 'the upstream reported an error'}",
        status=status,
        code=code,
        trace_id=trace_id,
        retry_after_s=retry_after_seconds({}, message),
    )

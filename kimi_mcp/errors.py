"""Every failure a call can meet, as typed errors, and the one map from upstream answers to them.

    KimiError                      kind                  retryable
    ├── InvalidArguments           invalid_arguments     no
    ├── UpstreamError  (an HTTP error answer)
    │   ├── AuthError              auth                  no
    │   ├── InsufficientBalance    insufficient_balance  no
    │   ├── Forbidden              forbidden             no
    │   ├── RateLimited            rate_limited          yes
    │   ├── UpstreamFailure        upstream              yes
    │   ├── UpstreamTimeout        timeout               yes
    │   ├── BadRequest             bad_request           no
    │   └── NotFound               not_found             no
    ├── NetworkError               network               yes
    ├── TimeoutError_              timeout               yes
    ├── InvalidResponse            invalid_response      yes
    ├── InvalidJSON                invalid_json          no
    ├── StorageFailure             storage               no
    ├── Cancelled                  cancelled             yes
    └── InternalError              internal              no

`from_upstream` is the only place an HTTP status and body become an error; `results.error_result`
is the only place an error becomes a tool result.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

__all__ = [
    "AuthError",
    "BadRequest",
    "Cancelled",
    "Forbidden",
    "InsufficientBalance",
    "InternalError",
    "InvalidArguments",
    "InvalidJSON",
    "InvalidResponse",
    "KimiError",
    "NetworkError",
    "NotFound",
    "RateLimited",
    "StorageFailure",
    "TimeoutError_",
    "UpstreamError",
    "UpstreamFailure",
    "UpstreamTimeout",
    "from_upstream",
    "retry_after_seconds",
]

TOKEN_HELP = "set ACEDATACLOUD_API_TOKEN to your Ace Data Cloud token (https://platform.acedata.cloud)"


class KimiError(Exception):
    """Root of our errors: what happened, whether a retry can help, and what to do."""

    kind: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False
    default_hint: ClassVar[str] = ""
    answer_began: bool = False
    """Set when part of the answer had arrived: such a failure is never retried (it may be billed)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        trace_id: str | None = None,
        retry_after_s: float | None = None,
        hint: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.trace_id = trace_id
        self.retry_after_s = retry_after_s
        self.hint = hint if hint is not None else self.default_hint
        self.details: dict[str, Any] = dict(details or {})

    def payload(self) -> dict[str, Any]:
        """The machine-readable form a host's model reads (the `error` object)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "retry_after_s": self.retry_after_s,
            "trace_id": self.trace_id,
            "hint": self.hint,
        }
        out.update(self.details)
        return out

    def line(self) -> str:
        """One readable line: what happened and what to do."""
        head = f"Kimi {self.kind.replace('_', ' ')} error"
        if self.status is not None:
            head += f" (HTTP {self.status}{', ' + self.code if self.code else ''})"
        text = f"{head}: {self.message}"
        return f"{text} — {self.hint}" if self.hint else text


class InvalidArguments(KimiError):
    kind = "invalid_arguments"
    default_hint = "fix the arguments and call again"


class UpstreamError(KimiError):
    """The upstream answered with an HTTP error status."""

    kind = "upstream"


class AuthError(UpstreamError):
    kind = "auth"
    default_hint = f"the API token was refused: {TOKEN_HELP}"


class InsufficientBalance(UpstreamError):
    kind = "insufficient_balance"
    default_hint = "the Ace Data Cloud balance is used up: recharge at https://platform.acedata.cloud; do not retry"


class Forbidden(UpstreamError):
    kind = "forbidden"
    default_hint = "the request was refused (account disabled or content moderation); change the request"


class RateLimited(UpstreamError):
    kind = "rate_limited"
    retryable = True
    default_hint = "rate limited: wait and retry, or lower the number of parallel calls"


class UpstreamFailure(UpstreamError):
    kind = "upstream"
    retryable = True
    default_hint = "the upstream failed; retry in a few seconds"


class UpstreamTimeout(UpstreamError):
    kind = "timeout"
    retryable = True
    default_hint = "the upstream timed out; retry, perhaps with a smaller max_tokens or a turbo model"


class BadRequest(UpstreamError):
    kind = "bad_request"
    default_hint = "the upstream refused a parameter; change it and call again"


class NotFound(UpstreamError):
    kind = "not_found"
    default_hint = "the model or endpoint is unknown upstream; read kimi://models for valid model ids"


class NetworkError(KimiError):
    kind = "network"
    retryable = True
    default_hint = "could not talk to the upstream; check ACEDATACLOUD_API_BASE_URL and the network, then retry"


class TimeoutError_(KimiError):
    kind = "timeout"
    retryable = True
    default_hint = "no answer in time; retry, raise KIMI_REQUEST_TIMEOUT, or use a turbo model"


class InvalidResponse(KimiError):
    kind = "invalid_response"
    retryable = True
    default_hint = "the upstream answered with something that is not a chat completion; retry later"


class InvalidJSON(KimiError):
    kind = "invalid_json"
    default_hint = "Kimi did not produce valid JSON twice; simplify the schema or the request"


class StorageFailure(KimiError):
    kind = "storage"
    default_hint = "the conversation store failed; nothing was saved. Check KIMI_STORE's disk, or use KIMI_STORE=memory"


class Cancelled(KimiError):
    """The work was stopped before it finished (the server is shutting down)."""

    kind = "cancelled"
    retryable = True
    default_hint = "the server stopped this answer before it finished; call again"


class InternalError(KimiError):
    """A bug of ours: the call failed but the server keeps serving."""

    kind = "internal"
    default_hint = "an unexpected server error; the details are in the server's log"


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
}
_TRY_AGAIN = re.compile(r"try again after (\d+(?:\.\d+)?) ?s", re.IGNORECASE)
_MAX_MESSAGE = 500


def _parse_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(code, message, trace_id) from Ace's, Moonshot's or a proxy's error body."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        if text.lstrip().startswith("<"):
            title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
            return None, (title.group(1).strip() if title else "an HTML error page"), None
        return None, text[:_MAX_MESSAGE] or None, None
    if not isinstance(data, dict):
        return None, str(data)[:_MAX_MESSAGE], None
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
        str(message)[:_MAX_MESSAGE] if message else None,
        str(trace_id) if trace_id else None,
    )


def retry_after_seconds(headers: Mapping[str, str], message: str | None) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds) or Moonshot's "try again after N seconds"."""
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


def from_upstream(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """Map an upstream error answer to our error class (the one place this happens)."""
    code, message, trace_id = _parse_body(body)
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = UpstreamFailure if status >= 500 else BadRequest
    return cls(
        message or f"the upstream answered HTTP {status} with no message",
        status=status,
        code=code,
        trace_id=trace_id,
        retry_after_s=retry_after_seconds(headers, message),
    )

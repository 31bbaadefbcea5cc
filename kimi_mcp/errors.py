"""Every failure a call can meet, as typed errors. Imports nothing of ours: every layer may use it.

    KimiError                      kind                  retryable  auto_retry
    ├── InvalidArguments           invalid_arguments     no         no
    ├── UpstreamError  (the upstream answered with an error: a status body or a stream event)
    │   ├── AuthError              auth                  no         no
    │   ├── InsufficientBalance    insufficient_balance  no         no
    │   ├── Forbidden              forbidden             no         no
    │   ├── RateLimited            rate_limited          yes        yes
    │   ├── UpstreamFailure        upstream              yes        yes
    │   ├── UpstreamTimeout        timeout               yes        yes
    │   ├── BadRequest             bad_request           no         no
    │   └── NotFound               not_found             no         no
    ├── NetworkError               network               yes        yes
    ├── TimeoutError_              timeout               yes        no   (our own limit ran out)
    ├── InvalidResponse            invalid_response      yes        no   (a broken 200 may be billed)
    ├── InvalidJSON                invalid_json          no         no
    ├── StorageFailure             storage               no         no
    ├── Cancelled                  cancelled             yes        no
    ├── Interrupted                interrupted           yes        no   (its process stopped: a restart)
    └── InternalError              internal              no         no

`retryable` is what the host's model reads: calling again later can help. `auto_retry` is whether
the upstream client retries by itself (`upstream.retry.should_retry` reads only this column).
`upstream.failures` is the only map from an upstream answer to a class here; `server.results.error_result`
the only place an error becomes a tool result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "AuthError",
    "BadRequest",
    "Cancelled",
    "Forbidden",
    "InsufficientBalance",
    "InternalError",
    "Interrupted",
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
]

TOKEN_HELP = "set ACEDATACLOUD_API_TOKEN to your Ace Data Cloud token (https://platform.acedata.cloud)"


class KimiError(Exception):
    """Root of our errors: what happened, whether a retry can help, and what to do."""

    kind: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False
    auto_retry: ClassVar[bool] = False
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

    label: ClassVar[str] = ""
    """How `line` begins, for failures that never involved Kimi (default: "Kimi <kind> error")."""

    def line(self) -> str:
        """One readable line: what happened and what to do."""
        head = self.label or f"Kimi {self.kind.replace('_', ' ')} error"
        if self.status is not None:
            head += f" (HTTP {self.status}{', ' + self.code if self.code else ''})"
        text = f"{head}: {self.message}"
        return f"{text} — {self.hint}" if self.hint else text


class InvalidArguments(KimiError):
    kind = "invalid_arguments"
    label = "Invalid arguments"
    default_hint = "fix the arguments and call again"


class UpstreamError(KimiError):
    """The upstream answered with an error: an HTTP error status, or an error event inside a stream."""

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
    auto_retry = True
    default_hint = "rate limited: wait and retry, or lower the number of parallel calls"


class UpstreamFailure(UpstreamError):
    kind = "upstream"
    retryable = True
    auto_retry = True
    default_hint = "the upstream failed; retry in a few seconds"


class UpstreamTimeout(UpstreamError):
    kind = "timeout"
    retryable = True
    auto_retry = True
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
    auto_retry = True
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
    label = "Conversation store error"
    default_hint = "the conversation store failed; nothing was saved. Check KIMI_STORE's disk, or use KIMI_STORE=memory"


class Cancelled(KimiError):
    """The work was stopped before it finished (the server is shutting down)."""

    kind = "cancelled"
    retryable = True
    default_hint = "the server stopped this answer before it finished; call again"


class Interrupted(KimiError):
    """An answer whose process stopped (a restart, a crash) before it finished: it will not finish.
    `details["partial_text"]` holds what had arrived."""

    kind = "interrupted"
    retryable = True
    label = "Interrupted"
    default_hint = "call again (what had arrived is in partial_text)"


class InternalError(KimiError):
    """A bug of ours: the call failed but the server keeps serving."""

    kind = "internal"
    label = "kimi-mcp internal error"
    default_hint = "an unexpected server error; the details are in the server's log"

"""When to retry an upstream call and how long to wait: a few constants and three small functions.

Whether a failure can be retried at all is the error class's `auto_retry` (the table in
`kimi_mcp.errors`); this module adds only what depends on the call: the retry budget, and never
after part of the answer reached the caller. Imports only `kimi_mcp.errors`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import KimiError

__all__ = ["RetryPolicy", "backoff_seconds", "should_retry", "wait_before_retry"]

BASE_DELAY_S = 0.5
MAX_DELAY_S = 8.0
MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 3
    base_delay_s: float = BASE_DELAY_S
    max_delay_s: float = MAX_DELAY_S


def should_retry(error: KimiError, *, retries_done: int, policy: RetryPolicy, answer_started: bool) -> bool:
    """The error's class allows it, the budget is not spent, and nothing has reached the client yet."""
    if answer_started or error.answer_began or retries_done >= policy.max_retries:
        return False
    return error.auto_retry


def backoff_seconds(retries_done: int, policy: RetryPolicy) -> float:
    """Capped exponential backoff with full jitter (half fixed, half random)."""
    ceiling = min(policy.max_delay_s, policy.base_delay_s * (2.0**retries_done))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def wait_before_retry(error: KimiError, retries_done: int, policy: RetryPolicy) -> float:
    """The upstream's own hint (Retry-After, "try again after N seconds") wins over backoff."""
    if error.retry_after_s is not None:
        return min(error.retry_after_s, MAX_RETRY_AFTER_S)
    return backoff_seconds(retries_done, policy)

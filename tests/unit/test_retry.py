"""`kimi_mcp.upstream.retry`: which errors are retried and for how long (the retry budget, never
after the answer began), the upstream's wait winning but capped, and backoff within its bounds."""

from __future__ import annotations

import pytest

from kimi_mcp.errors import (
    AuthError,
    BadRequest,
    Forbidden,
    InsufficientBalance,
    InvalidArguments,
    InvalidJSON,
    InvalidResponse,
    KimiError,
    NetworkError,
    NotFound,
    RateLimited,
    TimeoutError_,
    UpstreamFailure,
    UpstreamTimeout,
)
from kimi_mcp.upstream.retry import MAX_RETRY_AFTER_S, RetryPolicy, backoff_seconds, should_retry, wait_before_retry

POLICY = RetryPolicy(max_retries=3)


class TestRetry:
    @pytest.mark.parametrize("error", [
        InsufficientBalance("x", status=403), BadRequest("x", status=400), AuthError("x", status=401),
        Forbidden("x", status=403), NotFound("x", status=404), InvalidArguments("x"), InvalidJSON("x"),
        InvalidResponse("x"), TimeoutError_("x"),
    ])
    def test_never_retried(self, error: KimiError) -> None:
        assert should_retry(error, retries_done=0, policy=POLICY, answer_started=False) is False

    @pytest.mark.parametrize("error", [
        RateLimited("x", status=429), UpstreamFailure("x", status=500), UpstreamTimeout("x", status=504),
        NetworkError("x"),
    ])
    def test_retried(self, error: KimiError) -> None:
        assert should_retry(error, retries_done=0, policy=POLICY, answer_started=False) is True
        assert should_retry(error, retries_done=2, policy=POLICY, answer_started=False) is True
        assert should_retry(error, retries_done=3, policy=POLICY, answer_started=False) is False
        assert should_retry(error, retries_done=0, policy=RetryPolicy(max_retries=0), answer_started=False) is False
        assert should_retry(error, retries_done=0, policy=POLICY, answer_started=True) is False
        error.answer_began = True
        assert should_retry(error, retries_done=0, policy=POLICY, answer_started=False) is False

    def test_retry_after_wins(self) -> None:
        assert wait_before_retry(RateLimited("x", retry_after_s=5.0), 0, POLICY) == 5.0
        assert wait_before_retry(RateLimited("x", retry_after_s=0.0), 2, POLICY) == 0.0
        assert wait_before_retry(RateLimited("x", retry_after_s=10_000.0), 0, POLICY) == MAX_RETRY_AFTER_S

    def test_backoff_bounded(self) -> None:
        for retries_done in range(12):
            ceiling = min(POLICY.max_delay_s, POLICY.base_delay_s * 2**retries_done)
            for _ in range(50):
                delay = backoff_seconds(retries_done, POLICY)
                assert ceiling / 2 <= delay <= ceiling
                assert 0 < wait_before_retry(UpstreamFailure("x"), retries_done, POLICY) <= POLICY.max_delay_s
        assert backoff_seconds(30, POLICY) <= POLICY.max_delay_s


def test_default_policy_wait_and_backoff() -> None:
    """With the default policy: the upstream's wait wins but is capped; backoff stays within its bounds."""
    policy = RetryPolicy()
    assert wait_before_retry(RateLimited("x", retry_after_s=2.5), 0, policy) == 2.5
    assert wait_before_retry(RateLimited("x", retry_after_s=3600), 0, policy) == MAX_RETRY_AFTER_S
    for done in range(8):
        ceiling = min(policy.max_delay_s, policy.base_delay_s * 2**done)
        for _ in range(20):
            assert ceiling / 2 <= backoff_seconds(done, policy) <= ceiling
        assert ceiling / 2 <= wait_before_retry(UpstreamFailure("x"), done, policy) <= ceiling

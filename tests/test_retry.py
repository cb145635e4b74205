"""Table tests for the pure retry policy: backoff, Retry-After, x-should-retry, deadline, budget."""

from __future__ import annotations

import pytest

from providers.errors import (
    AuthFailed,
    Permanent,
    ProviderError,
    QuotaExhausted,
    Retryable,
    TransportUnavailable,
)
from providers.retry import RetryBudget, RetryDecision, RetryPolicy, backoff, decide, error_kind

POLICY = RetryPolicy()


def _const(value: float) -> float:
    return value


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, 1.0, 1.0),
        (1, 1.0, 2.0),
        (2, 1.0, 4.0),
        (4, 1.0, 16.0),
        (5, 1.0, 30.0),  # 32 capped at 30
        (50, 1.0, 30.0),
        (10_000, 1.0, 30.0),  # no overflow for absurd attempt numbers
        (3, 0.5, 4.0),
        (3, 0.0, 0.0),
        (-1, 1.0, 1.0),  # a negative attempt is treated as the first retry
    ],
)
def test_backoff_is_full_jitter_up_to_the_cap(attempt: int, rand: float, expected: float) -> None:
    """Retry n waits rand·min(cap, base·2ⁿ): full jitter between 0 and the capped ceiling."""
    assert backoff(POLICY, attempt, lambda: rand) == pytest.approx(expected)


def test_backoff_honours_custom_base_and_cap() -> None:
    """A policy's own base and cap shape the ceiling."""
    policy = RetryPolicy(base=0.5, cap=3.0)
    assert [backoff(policy, n, lambda: 1.0) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def _retryable(**kwargs: object) -> Retryable:
    return Retryable("boom", provider="kimi", **kwargs)  # type: ignore[arg-type]


def _vetoed(verdict: bool) -> Retryable:
    error = Retryable("boom", provider="kimi", status=503)
    error.should_retry = verdict
    return error


@pytest.mark.parametrize(
    ("error", "attempt", "now", "expected"),
    [
        # Retryable without Retry-After: full-jitter backoff of retry attempt-1.
        (_retryable(status=503), 1, 100.0, RetryDecision("retry", "http_503", delay=0.5)),
        (_retryable(status=503), 2, 100.0, RetryDecision("retry", "http_503", delay=1.0)),
        (_retryable(), 1, 100.0, RetryDecision("retry", "connection", delay=0.5)),
        (_retryable(ambiguous=True), 1, 100.0, RetryDecision("retry", "ambiguous", delay=0.5)),
        # attempts=3: the third failure is the last.
        (_retryable(status=503), 3, 100.0, RetryDecision("give_up", "attempts_exhausted")),
        # Retry-After within the cap replaces the backoff, exactly.
        (
            _retryable(status=429, retry_after=7.0),
            1,
            100.0,
            RetryDecision("retry", "retry_after", delay=7.0),
        ),
        (
            _retryable(status=429, retry_after=60.0),
            1,
            100.0,
            RetryDecision("retry", "retry_after", delay=60.0),
        ),
        # Beyond the cap: the provider is parked until then, even on the last attempt.
        (
            _retryable(status=429, retry_after=61.0),
            1,
            100.0,
            RetryDecision("park", "retry_after", until=161.0),
        ),
        (
            _retryable(status=429, retry_after=600.0),
            3,
            100.0,
            RetryDecision("park", "retry_after", until=700.0),
        ),
        # The deadline (600 s from started=0) forbids a retry that would end past it.
        (_retryable(status=503), 1, 599.6, RetryDecision("give_up", "deadline")),
        (_retryable(status=503), 1, 599.5, RetryDecision("retry", "http_503", delay=0.5)),
        (_retryable(retry_after=30.0), 1, 580.0, RetryDecision("give_up", "deadline")),
        # x-should-retry: false vetoes; true changes nothing.
        (_vetoed(False), 1, 100.0, RetryDecision("give_up", "server_said_no")),
        (_vetoed(True), 1, 100.0, RetryDecision("retry", "http_503", delay=0.5)),
        # Only Retryable errors are retried.
        (Permanent("no", reason="too_large"), 1, 100.0, RetryDecision("give_up", "permanent")),
        (AuthFailed("no", status=401), 1, 100.0, RetryDecision("give_up", "auth_failed")),
        (QuotaExhausted("no", retry_after=5.0), 1, 100.0, RetryDecision("give_up", "quota")),
        (TransportUnavailable("no"), 1, 100.0, RetryDecision("give_up", "transport_unavailable")),
    ],
)
def test_decide_table(
    error: ProviderError, attempt: int, now: float, expected: RetryDecision
) -> None:
    """Each failure maps to exactly the retry, park or give-up the policy prescribes."""
    decision = decide(POLICY, attempt=attempt, error=error, started=0.0, now=now, rand=lambda: 0.5)
    assert decision == expected


def test_decide_ignores_a_non_finite_retry_after() -> None:
    """An infinite or negative Retry-After falls back to the jittered backoff."""
    for value in (float("inf"), -3.0):
        error = _retryable(status=429, retry_after=value)
        decision = decide(POLICY, attempt=1, error=error, started=0.0, now=1.0, rand=lambda: 1.0)
        assert decision == RetryDecision("retry", "http_429", delay=1.0)


def test_error_kind_of_a_bare_provider_error() -> None:
    """An unclassified ProviderError still gets a stable label."""
    assert error_kind(ProviderError("x")) == "provider_error"


def test_budget_floor_then_ratio_of_calls() -> None:
    """A fresh budget allows `floor` retries; afterwards only ratio·calls more."""
    budget = RetryBudget(ratio=0.2, floor=2.0, refill_seconds=60.0, now=0.0)
    assert [budget.try_spend(0.0) for _ in range(3)] == [True, True, False]
    for _ in range(10):
        budget.record_call(0.0)
    assert budget.tokens(0.0) == pytest.approx(2.0)
    assert [budget.try_spend(0.0) for _ in range(3)] == [True, True, False]


def test_budget_storm_allows_about_twenty_percent() -> None:
    """In a storm of 1,000 failing calls wanting 2 retries each, retries stay at 20 % + floor."""
    budget = RetryBudget(ratio=0.2, floor=10.0, refill_seconds=60.0, now=0.0)
    granted = 0
    for _ in range(1000):
        budget.record_call(0.0)
        granted += sum(budget.try_spend(0.0) for _ in range(2))
    assert granted == 210


def test_budget_reserve_refills_over_time_but_not_backwards() -> None:
    """The floor refills linearly over refill_seconds; a clock going backwards refills nothing."""
    budget = RetryBudget(ratio=0.2, floor=10.0, refill_seconds=60.0, now=0.0)
    for _ in range(10):
        assert budget.try_spend(0.0)
    assert budget.tokens(30.0) == pytest.approx(5.0)
    assert budget.tokens(10.0) == pytest.approx(5.0)
    assert budget.tokens(1000.0) == pytest.approx(10.0)


def test_budget_earned_tokens_are_capped() -> None:
    """A long healthy run cannot bank more than floor + ratio·earn_window tokens."""
    budget = RetryBudget(ratio=0.2, floor=10.0, earn_window=100, now=0.0)
    for _ in range(10_000):
        budget.record_call(0.0)
    assert budget.tokens(0.0) == pytest.approx(30.0)


def test_budget_for_policy_uses_policy_knobs() -> None:
    """for_policy sizes the bucket from budget_ratio and budget_floor."""
    budget = RetryBudget.for_policy(RetryPolicy(budget_ratio=0.5, budget_floor=1.0), now=0.0)
    assert (budget.ratio, budget.floor, budget.tokens(0.0)) == (0.5, 1.0, 1.0)

"""Table tests for the pure retry policy: backoff, Retry-After, x-should-retry, deadline, budget."""

from __future__ import annotations

import pytest

from providers.errors import (
    AuthFailed,
    Permanent,
    ProviderError,
    QuotaExhausted,
    Retryable,
    Throttled,
    TransportUnavailable,
)
from providers.retry import (
    RetryBudget,
    RetryDecision,
    RetryPolicy,
    backoff,
    decide,
    error_kind,
    gives_up,
    later,
)

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


@pytest.mark.parametrize(
    ("attempts", "rand", "expected"),
    [
        (0, 1.0, 30.0),  # no send yet (parked by a breaker): the first ceiling
        (1, 1.0, 30.0),
        (3, 1.0, 30.0),  # one pass of 3 attempts
        (4, 1.0, 60.0),  # into the second pass
        (6, 0.5, 30.0),
        (15, 1.0, 480.0),
        (18, 1.0, 900.0),  # 960 capped at 15 min
        (10**9, 1.0, 900.0),  # no overflow
        (9, 0.0, 0.0),
    ],
)
def test_later_doubles_per_pass_up_to_15_minutes(
    attempts: int, rand: float, expected: float
) -> None:
    """A file failing transiently waits uniform(0, min(900, 30·2ⁿ)), n its passes minus one."""
    assert later(POLICY, attempts=attempts, rand=lambda: rand) == expected


@pytest.mark.parametrize(
    ("give_up_after", "first_tried", "now", "expected"),
    [
        (0.0, 0.0, 10**9, False),  # 0: never
        (3600.0, 0.0, 3599.0, False),
        (3600.0, 0.0, 3600.0, True),
        (3600.0, 100.0, 3700.5, True),
    ],
)
def test_gives_up_only_when_set_and_passed(
    give_up_after: float, first_tried: float, now: float, expected: bool
) -> None:
    """give_up_after is opt-in: 0 never gives up, else from the file's first try."""
    assert gives_up(give_up_after, first_tried=first_tried, now=now) is expected


@pytest.mark.parametrize(
    ("error", "attempt", "throttles", "now", "expected"),
    [
        # A rate-limit answer retries whatever the attempts spent, after the named wait.
        (Throttled("rpm", retry_after=2.0), 3, 1, 0.0, RetryDecision("retry", "throttled", 2.0)),
        # No wait named: full-jitter backoff by the throttles so far (rand 0.5).
        (Throttled("rpm"), 1, 3, 0.0, RetryDecision("retry", "throttled", 2.0)),
        # A wait past retry_after_cap parks the file until then.
        (
            Throttled("rpm", retry_after=61.0),
            1,
            1,
            5.0,
            RetryDecision("park", "throttled", until=66.0),
        ),
        # Never past the deadline.
        (Throttled("rpm", retry_after=30.0), 1, 1, 580.0, RetryDecision("give_up", "deadline")),
        # One more try after a failed extraction, then never.
        (
            Permanent("x", reason="extract_failed"),
            1,
            0,
            0.0,
            RetryDecision("retry", "extract_failed", 0.5),
        ),
        (Permanent("x", reason="extract_failed"), 2, 0, 0.0, RetryDecision("give_up", "permanent")),
    ],
)
def test_throttled_and_extract_failed_decisions(
    error: ProviderError, attempt: int, throttles: int, now: float, expected: RetryDecision
) -> None:
    """Rate limits wait without spending attempts; a failed extraction gets one more try."""
    decision = decide(
        POLICY,
        attempt=attempt,
        error=error,
        started=0.0,
        now=now,
        rand=lambda: 0.5,
        throttles=throttles,
    )
    assert decision == expected

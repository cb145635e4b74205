"""The one retry policy: full-jitter backoff, Retry-After, deadline, and a retry budget.

Pure: plain values in (``now`` included, and the random source), a decision out. The async
shell that acts on the decisions is ``providers.retry_loop``; nothing else retries.

Backoff is AWS "full jitter": retry ``n`` (0-based) waits ``uniform(0, min(cap, base·2ⁿ))``.
A server's ``Retry-After`` replaces the backoff when it is at most ``retry_after_cap``; a longer
one parks the provider until then (its breaker opens) instead of holding a worker asleep.
A ``Throttled`` answer (a rate limit) spends no attempt: the file waits the named wait (or a
short backoff) and calls the same provider again; a wait past ``retry_after_cap`` parks the file.
A file that failed only transiently is never given up on by default: ``later`` says when it is
tried again (30 s doubling to 15 min, full jitter) unless ``give_up_after`` is set and passed.
An ``x-should-retry: false`` veto (``providers.classify.should_retry``) is obeyed; ``true``
never turns a non-Retryable error into a retry (the body decides the class, not the header).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from providers.classify import should_retry
from providers.errors import (
    AuthFailed,
    Permanent,
    ProviderError,
    QuotaExhausted,
    Retryable,
    Throttled,
    TransportUnavailable,
)

__all__ = [
    "COMMON_ERROR_KINDS",
    "RetryBudget",
    "RetryDecision",
    "RetryPolicy",
    "backoff",
    "decide",
    "error_kind",
    "gives_up",
    "later",
]

_KINDS: tuple[tuple[type[ProviderError], str], ...] = (
    (Permanent, "permanent"),
    (AuthFailed, "auth_failed"),
    (QuotaExhausted, "quota"),
    (TransportUnavailable, "transport_unavailable"),
)
# 2**62 seconds is far beyond any cap; clamping the exponent keeps 2.0**n finite.
_MAX_EXPONENT = 62
# Tokens are sums of ratio (0.2 is inexact in binary): forgive rounding when spending one.
_EPSILON = 1e-9


@dataclass(frozen=True)
class RetryPolicy:
    """How one provider's calls are retried (``[providers.<name>.retry]``).

    ``attempts`` counts calls to one provider for one file (1 = no retry; rate-limit answers
    are not counted); ``deadline`` bounds one pass of the file across providers, in seconds
    from its first attempt. ``budget_ratio`` and ``budget_floor`` size the provider's
    ``RetryBudget``. A file whose pass failed only transiently waits ``later(...)`` seconds
    (``later_base`` doubling up to ``later_cap``) and is tried again; ``give_up_after`` > 0
    quarantines it (``upload_failed``) once it has been failing that long (0: never).
    """

    attempts: int = 3
    base: float = 1.0
    cap: float = 30.0
    deadline: float = 600.0
    retry_after_cap: float = 60.0
    budget_ratio: float = 0.2
    budget_floor: float = 10.0
    give_up_after: float = 0.0
    later_base: float = 30.0
    later_cap: float = 900.0


@dataclass(frozen=True)
class RetryDecision:
    """What to do after a failed attempt.

    ``retry``: sleep ``delay`` seconds, then call the same provider again. ``park``: the
    server asked for a pause longer than the cap; the provider is unavailable until ``until``
    (wall clock) and the file moves on. ``give_up``: stop calling this provider for this file.
    ``reason`` is a stable, low-cardinality code (a metric label).
    """

    action: Literal["retry", "park", "give_up"]
    reason: str
    delay: float = 0.0
    until: float | None = None


def backoff(policy: RetryPolicy, attempt: int, rand: Callable[[], float]) -> float:
    """Full-jitter delay before retry ``attempt`` (0-based): uniform(0, min(cap, base·2ⁿ))."""
    return _jitter(policy.base, policy.cap, attempt, rand)


def _jitter(base: float, cap: float, n: int, rand: Callable[[], float]) -> float:
    exponent = min(max(n, 0), _MAX_EXPONENT)
    ceiling = min(cap, base * 2.0**exponent)
    return max(0.0, ceiling * rand())


def later(policy: RetryPolicy, *, attempts: int, rand: Callable[[], float]) -> float:
    """Seconds before a file whose every failure was transient is tried again.

    ``attempts`` is the file's sends so far (the ledger row's count); every ``policy.attempts``
    of them double the ceiling: uniform(0, min(later_cap, later_base·2ⁿ)), n = passes - 1.
    """
    passes = -(-max(attempts, 1) // max(policy.attempts, 1))
    return _jitter(policy.later_base, policy.later_cap, passes - 1, rand)


def gives_up(give_up_after: float, *, first_tried: float, now: float) -> bool:
    """True when a file failing since ``first_tried`` is past ``give_up_after`` (0: never)."""
    return give_up_after > 0 and now - first_tried >= give_up_after


# The kinds most failed calls end in, so metrics can show them at 0 from start
# (``http_<status>`` is open-ended: a rarer status still gets its own series when it occurs).
COMMON_ERROR_KINDS: tuple[str, ...] = (
    "ambiguous",
    "connection",
    "http_429",
    "throttled",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "permanent",
    "auth_failed",
    "quota",
    "transport_unavailable",
)


def error_kind(error: ProviderError) -> str:
    """A stable, low-cardinality code for an error (a retry or give-up metric label)."""
    if isinstance(error, Throttled):
        return "throttled"
    if isinstance(error, Retryable):
        if error.ambiguous:
            return "ambiguous"
        if error.status is not None:
            return f"http_{error.status}"
        return "connection"
    return next((kind for cls, kind in _KINDS if isinstance(error, cls)), "provider_error")


def decide(
    policy: RetryPolicy,
    *,
    attempt: int,
    error: ProviderError,
    started: float,
    now: float,
    rand: Callable[[], float],
    throttles: int = 0,
) -> RetryDecision:
    """Whether, and when, to call the same provider again after ``attempt`` (1-based) failed.

    ``started`` is when the file's first attempt began; ``now`` is after this failure (both
    wall-clock seconds). Only ``Retryable`` errors are retried, and a first ``extract_failed``
    (the provider could not extract the file: one more try at most). ``throttles`` counts the
    rate-limit answers so far, this one included (their backoff when no wait was named).
    """
    if isinstance(error, Permanent) and error.reason == "extract_failed" and attempt == 1:
        return _within_deadline(
            policy, backoff(policy, 0, rand), "extract_failed", started=started, now=now
        )
    if not isinstance(error, Retryable):
        return RetryDecision("give_up", error_kind(error))
    if isinstance(error, Throttled):
        return _throttled(policy, error, throttles=throttles, started=started, now=now, rand=rand)
    return _transient(policy, attempt=attempt, error=error, started=started, now=now, rand=rand)


def _transient(
    policy: RetryPolicy,
    *,
    attempt: int,
    error: Retryable,
    started: float,
    now: float,
    rand: Callable[[], float],
) -> RetryDecision:
    if should_retry(error) is False:
        return RetryDecision("give_up", "server_said_no")
    retry_after = error.retry_after
    if (
        retry_after is not None
        and math.isfinite(retry_after)
        and retry_after > policy.retry_after_cap
    ):
        return RetryDecision("park", "retry_after", until=now + retry_after)
    if attempt >= policy.attempts:
        return RetryDecision("give_up", "attempts_exhausted")
    if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
        delay, reason = retry_after, "retry_after"
    else:
        delay, reason = backoff(policy, attempt - 1, rand), error_kind(error)
    return _within_deadline(policy, delay, reason, started=started, now=now)


def _within_deadline(
    policy: RetryPolicy, delay: float, reason: str, *, started: float, now: float
) -> RetryDecision:
    if now + delay > started + policy.deadline:
        return RetryDecision("give_up", "deadline")
    return RetryDecision("retry", reason, delay=delay)


def _throttled(
    policy: RetryPolicy,
    error: Throttled,
    *,
    throttles: int,
    started: float,
    now: float,
    rand: Callable[[], float],
) -> RetryDecision:
    """A rate-limit answer: wait the named wait (or a backoff) and call again; park the file
    when the wait is past ``retry_after_cap``. No attempt is spent."""
    wait = error.retry_after
    if wait is None or not math.isfinite(wait) or wait < 0:
        wait = backoff(policy, throttles - 1, rand)
    elif wait > policy.retry_after_cap:
        return RetryDecision("park", "throttled", until=now + wait)
    return _within_deadline(policy, wait, "throttled", started=started, now=now)


class RetryBudget:
    """A per-provider token bucket that caps retries at about ``ratio`` of calls plus a floor.

    Every first attempt deposits ``ratio`` tokens; every retry spends one. A reserve of
    ``floor`` tokens refills linearly over ``refill_seconds``, so a quiet provider can always
    retry a little, while a storm of failures cannot multiply load by ``attempts``. Earned
    tokens are capped at ``floor + ratio·earn_window`` so a long healthy run cannot bank an
    unbounded number of retries. Time is passed in (wall or monotonic, used consistently).
    """

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        floor: float = 10.0,
        refill_seconds: float = 60.0,
        earn_window: int = 100,
        now: float = 0.0,
    ) -> None:
        self.ratio = ratio
        self.floor = floor
        self.refill_seconds = refill_seconds
        self.capacity = floor + ratio * earn_window
        self._tokens = floor
        self._last = now

    @classmethod
    def for_policy(cls, policy: RetryPolicy, *, now: float) -> RetryBudget:
        """A budget sized by ``policy.budget_ratio`` and ``policy.budget_floor``."""
        return cls(ratio=policy.budget_ratio, floor=policy.budget_floor, now=now)

    def tokens(self, now: float) -> float:
        """The tokens available at ``now`` (after the reserve's refill)."""
        self._refill(now)
        return self._tokens

    def record_call(self, now: float) -> None:
        """A first attempt was made: earn ``ratio`` of a retry."""
        self._refill(now)
        self._tokens = min(self.capacity, self._tokens + self.ratio)

    def try_spend(self, now: float) -> bool:
        """Take one retry's token; False (and nothing taken) when the budget is spent."""
        self._refill(now)
        if self._tokens < 1.0 - _EPSILON:
            return False
        self._tokens -= 1.0
        return True

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        self._last = now
        if elapsed <= 0 or self._tokens >= self.floor:
            # A clock that went backwards refills nothing; earned tokens above the floor stay.
            return
        rate = self.floor / self.refill_seconds if self.refill_seconds > 0 else math.inf
        self._tokens = min(self.floor, self._tokens + elapsed * rate)

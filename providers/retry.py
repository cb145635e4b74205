"""The one retry policy: full-jitter backoff, Retry-After, deadline, and a retry budget.

Pure: plain values in (``now`` included, and the random source), a decision out. The async
shell that acts on the decisions is ``providers.dispatch``; nothing else retries.

Backoff is AWS "full jitter": retry ``n`` (0-based) waits ``uniform(0, min(cap, base·2ⁿ))``.
A server's ``Retry-After`` replaces the backoff when it is at most ``retry_after_cap``; a longer
one parks the provider until then (its breaker opens) instead of holding a worker asleep.
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

    ``attempts`` counts calls to one provider for one file (1 = no retry); ``deadline`` bounds
    the whole file across providers, in seconds from its first attempt. ``budget_ratio`` and
    ``budget_floor`` size the provider's ``RetryBudget``.
    """

    attempts: int = 3
    base: float = 1.0
    cap: float = 30.0
    deadline: float = 600.0
    retry_after_cap: float = 60.0
    budget_ratio: float = 0.2
    budget_floor: float = 10.0


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
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    ceiling = min(policy.cap, policy.base * 2.0**exponent)
    return max(0.0, ceiling * rand())


# The kinds most failed calls end in, so metrics can show them at 0 from start
# (``http_<status>`` is open-ended: a rarer status still gets its own series when it occurs).
COMMON_ERROR_KINDS: tuple[str, ...] = (
    "ambiguous",
    "connection",
    "http_429",
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
) -> RetryDecision:
    """Whether, and when, to call the same provider again after ``attempt`` (1-based) failed.

    ``started`` is when the file's first attempt began; ``now`` is after this failure (both
    wall-clock seconds). Only ``Retryable`` errors are retried.
    """
    if not isinstance(error, Retryable):
        return RetryDecision("give_up", error_kind(error))
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
    if now + delay > started + policy.deadline:
        return RetryDecision("give_up", "deadline")
    return RetryDecision("retry", reason, delay=delay)


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

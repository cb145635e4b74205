"""One provider call's end as the circuit breaker counts it: success, failure, neutral, ...

``outcome_of`` maps the error tree (``providers.errors``) onto the few kinds the breaker's state
machine (``providers.breaker.record``) tells apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from providers.errors import (
    AuthFailed,
    Permanent,
    ProviderError,
    QuotaExhausted,
    Throttled,
    TransportUnavailable,
)

__all__ = ["CallOutcome", "CallOutcomeKind", "outcome_of"]

CallOutcomeKind = Literal["success", "failure", "neutral", "auth_failed", "quota", "throttled"]


@dataclass(frozen=True)
class CallOutcome:
    """One call's result as the breaker counts it.

    ``throttled`` is a 429 whose Retry-After is too long to wait for: the provider opens
    until then. ``retry_after`` (seconds) also lengthens a failure's or quota's open period;
    ``exact``: a quota park lasts exactly ``retry_after`` (the provider named its reset time),
    not at least ``quota_park``.
    """

    kind: CallOutcomeKind
    retry_after: float | None = None
    exact: bool = False


def outcome_of(error: ProviderError | None, *, now: float | None = None) -> CallOutcome:
    """How the breaker counts a call that ended with ``error`` (None: it succeeded).

    A rate-limit answer (``Throttled``) is neutral. A ``QuotaExhausted`` that names when the
    cap resets (``until``, wall clock) parks the provider until then (``now`` needed).
    """
    if error is None:
        return CallOutcome("success")
    if isinstance(error, (Permanent, Throttled)):
        return CallOutcome("neutral")
    if isinstance(error, AuthFailed):
        return CallOutcome("auth_failed")
    if isinstance(error, QuotaExhausted):
        return _quota(error, now)
    if isinstance(error, TransportUnavailable):
        # Every transport unusable (a bug or a broken install): the provider cannot be used.
        return CallOutcome("failure")
    return CallOutcome("failure", error.retry_after)


def _quota(error: QuotaExhausted, now: float | None) -> CallOutcome:
    if error.until is not None and now is not None and math.isfinite(error.until):
        return CallOutcome("quota", max(0.0, error.until - now), exact=True)
    return CallOutcome("quota", error.retry_after)

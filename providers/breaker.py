"""The per-provider circuit breaker: a pure state machine over ``BreakerRecord``.

::

    CLOSED ──window/consecutive failures──▶ OPEN ──open_until passed + claim──▶ HALF_OPEN
       ▲                                     ▲ ▲                                   │
       └───────── probe success ─────────────┼─┼───────────────────────────────────┤
                                             │ └──────── probe failure ────────────┘
      any state ──QuotaExhausted / long Retry-After──┘   (longer open; counted apart)
      (a rate-limit answer, Throttled, is neutral: the limiter paces it, the breaker never opens)
      any state ──AuthFailed──▶ FORCED_OPEN ──reset (reload, `inboxd breaker reset`)──▶ CLOSED

HALF_OPEN is entered only through ``claim`` (the store's conditional UPDATE does the same; both
follow ``CLAIM_RULE``), which grants exactly one probe lease; CLOSED never goes to HALF_OPEN
directly. Within one open period ``open_until`` only moves forward. Permanent (validation)
errors are neutral. Every time is WALL-clock unix seconds, as on disk; ``sanitize`` clamps what
a clock jump made absurd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

from providers.call_outcome import CallOutcome
from providers.types import BreakerRecord

__all__ = [
    "ANY",
    "CLAIM_RULE",
    "CLOSED",
    "FORCED_OPEN",
    "HALF_OPEN",
    "OPEN",
    "STATES",
    "BreakerConfig",
    "VsNow",
    "availability",
    "claim",
    "claim_decision",
    "open_duration",
    "probe_due",
    "record",
    "reset",
    "sanitize",
    "vs_now",
]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
FORCED_OPEN = "forced_open"
STATES = (CLOSED, OPEN, HALF_OPEN, FORCED_OPEN)

# Open durations are jittered by ±20 % so providers' probes do not synchronise.
_JITTER = 0.2
# consecutive_opens beyond this cannot lengthen anything (open_max caps long before).
_MAX_OPENS = 64


@dataclass(frozen=True)
class BreakerConfig:
    """When one provider's breaker opens and for how long (``[providers.<name>.breaker]``).

    ``probe_lease`` bounds one half-open probe: a prober that dies without an answer frees
    the probe after it (set it above the upload timeout).
    """

    window: int = 10
    min_calls: int = 5
    failure_ratio: float = 0.5
    consecutive_failures: int = 5
    open_base: float = 30.0
    open_max: float = 900.0
    quota_park: float = 3600.0
    probe_lease: float = 600.0


def open_duration(config: BreakerConfig, opens: int, rand: Callable[[], float]) -> float:
    """How long the ``opens``-th consecutive open lasts: open_base·2ⁿ⁻¹, jittered, ≤ open_max."""
    exponent = min(max(opens - 1, 0), _MAX_OPENS)
    nominal = config.open_base * 2.0**exponent
    jittered = nominal * (1.0 - _JITTER + 2 * _JITTER * rand())
    return max(0.0, min(config.open_max, jittered))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _open(
    rec: BreakerRecord, *, now: float, until: float, reason: str, opens: int
) -> BreakerRecord:
    if rec.state == OPEN and rec.open_until is not None:
        until = max(until, rec.open_until)  # never backwards within one open period
    return replace(
        rec,
        state=OPEN,
        open_until=until,
        consecutive_opens=min(opens, _MAX_OPENS),
        probe_until=None,
        reason=reason,
        updated_at=now,
    )


def _trip(
    config: BreakerConfig,
    rec: BreakerRecord,
    outcome: CallOutcome,
    *,
    now: float,
    rand: Callable[[], float],
    reason: str,
) -> BreakerRecord:
    opens = rec.consecutive_opens + 1
    retry_after = _finite(outcome.retry_after)
    if retry_after is not None:
        until = now + min(retry_after, config.quota_park)
        reason = "retry_after"
    else:
        until = now + open_duration(config, opens, rand)
    return _open(rec, now=now, until=until, reason=reason, opens=opens)


def _should_trip(config: BreakerConfig, window: tuple[bool, ...], consecutive: int) -> str | None:
    if consecutive >= config.consecutive_failures:
        return "consecutive_failures"
    if len(window) >= config.min_calls and sum(window) / len(window) >= config.failure_ratio:
        return "failure_ratio"
    return None


def record(
    config: BreakerConfig,
    rec: BreakerRecord,
    outcome: CallOutcome,
    *,
    now: float,
    rand: Callable[[], float],
) -> BreakerRecord:
    """The record after one call ended with ``outcome`` at ``now``.

    In HALF_OPEN the outcome is the probe's: success closes (window cleared), failure
    re-opens for longer, neutral frees the lease. In OPEN, late answers of calls started
    before it opened change nothing except to lengthen it.
    """
    if rec.state == FORCED_OPEN or outcome.kind == "neutral":
        return _neutral(rec, now=now)
    if outcome.kind == "auth_failed":
        return replace(
            rec,
            state=FORCED_OPEN,
            open_until=None,
            probe_until=None,
            reason="auth_failed",
            updated_at=now,
        )
    if outcome.kind in ("quota", "throttled"):
        return _park(config, rec, outcome, now=now)
    if rec.state == OPEN:
        return _late_answer(config, rec, outcome, now=now)
    if rec.state == HALF_OPEN:
        return _probe_answer(config, rec, outcome, now=now, rand=rand)
    return _record_closed(config, rec, outcome, now=now, rand=rand)


def _neutral(rec: BreakerRecord, *, now: float) -> BreakerRecord:
    # Only a reset leaves FORCED_OPEN; a neutral answer to the probe frees its lease.
    if rec.state == HALF_OPEN:
        return replace(rec, probe_until=None, updated_at=now)
    return rec


def _probe_answer(
    config: BreakerConfig,
    rec: BreakerRecord,
    outcome: CallOutcome,
    *,
    now: float,
    rand: Callable[[], float],
) -> BreakerRecord:
    if outcome.kind == "success":
        # consecutive_opens survives until the close proves clean (see _record_closed).
        return BreakerRecord(state=CLOSED, consecutive_opens=rec.consecutive_opens, updated_at=now)
    return _trip(config, rec, outcome, now=now, rand=rand, reason="probe_failed")


def _park(
    config: BreakerConfig, rec: BreakerRecord, outcome: CallOutcome, *, now: float
) -> BreakerRecord:
    wait = _finite(outcome.retry_after)
    if outcome.kind == "quota" and outcome.exact and wait is not None:
        span, reason = wait, "quota"  # the provider named when the cap resets
    elif outcome.kind == "quota":
        span, reason = max(config.quota_park, wait or 0.0), "quota"
    else:
        span, reason = (config.open_base if wait is None else wait), "retry_after"
    until = now + min(span, max(config.quota_park, config.open_max))
    # Counted apart: a park does not lengthen the next failure-driven open.
    return _open(rec, now=now, until=until, reason=reason, opens=rec.consecutive_opens)


def _late_answer(
    config: BreakerConfig, rec: BreakerRecord, outcome: CallOutcome, *, now: float
) -> BreakerRecord:
    wait = _finite(outcome.retry_after)
    if outcome.kind == "failure" and wait is not None and rec.open_until is not None:
        until = now + min(wait, config.quota_park)
        if until > rec.open_until:
            return replace(rec, open_until=until, updated_at=now)
    return rec


def _record_closed(
    config: BreakerConfig,
    rec: BreakerRecord,
    outcome: CallOutcome,
    *,
    now: float,
    rand: Callable[[], float],
) -> BreakerRecord:
    failed = outcome.kind == "failure"
    window = (*rec.window, failed)[-config.window :] if config.window > 0 else ()
    consecutive = rec.consecutive_failures + 1 if failed else 0
    rec = replace(rec, window=window, consecutive_failures=consecutive, updated_at=now)
    reason = _should_trip(config, window, consecutive) if failed else None
    if reason is None:
        if rec.consecutive_opens and len(window) >= config.min_calls:
            # A clean close: a full window without tripping ends the growth of open periods.
            rec = replace(rec, consecutive_opens=0)
        return rec
    tripped = _trip(config, rec, outcome, now=now, rand=rand, reason=reason)
    return replace(tripped, window=(), consecutive_failures=0)


# (state, open_until vs now, probe_until vs now) -> may the one probe be claimed now? The first
# matching row decides; ANY matches all; a state no row names is refused. Written once: ``claim``
# and the tests' fake use it, the store's SQL (``_ledger_sql.CLAIM_PROBE``) implements it, and
# tests/contracts/test_breaker_claim.py runs every row against all three.
ANY: Final = "any"
VsNow = Literal["unset", "passed", "now", "ahead"]
CLAIM_RULE: tuple[tuple[str, VsNow | Literal["any"], VsNow | Literal["any"], bool], ...] = (
    (CLOSED, ANY, ANY, False),  # only failures open a breaker; CLOSED never probes
    (FORCED_OPEN, ANY, ANY, False),  # only a reset leaves it
    (OPEN, "unset", ANY, False),  # no end chosen: not due (see probe_due)
    (OPEN, "passed", ANY, True),
    (OPEN, "now", ANY, True),  # open_until <= now
    (OPEN, "ahead", ANY, False),
    (HALF_OPEN, ANY, "unset", True),  # no probe in flight
    (HALF_OPEN, ANY, "passed", True),  # the prober died without an answer: its lease ran out
    (HALF_OPEN, ANY, "now", True),  # probe_until <= now
    (HALF_OPEN, ANY, "ahead", False),  # a probe is in flight
)


def vs_now(value: float | None, now: float) -> VsNow:
    """Where a deadline stands against ``now`` (None or NaN: unset, as SQLite stores NaN)."""
    if value is None or math.isnan(value):
        return "unset"
    if value < now:
        return "passed"
    return "now" if value == now else "ahead"


def claim_decision(state: str, opens: VsNow, probe: VsNow) -> bool:
    """``CLAIM_RULE``'s answer: the first row matching the case decides; no row: refused."""
    for rule_state, open_rule, probe_rule, granted in CLAIM_RULE:
        if rule_state == state and open_rule in (ANY, opens) and probe_rule in (ANY, probe):
            return granted
    return False


def probe_due(rec: BreakerRecord, *, now: float) -> bool:
    """Whether the one half-open probe may be claimed now: ``CLAIM_RULE``'s answer for ``rec``.

    An OPEN record without ``open_until`` is refused. ``record`` never writes one (every open
    sets an end): it comes from an old or hand-edited state file, or a forced open spelled
    "open". No one chose when to probe it, so it is not due (a restart never resumes blindly;
    a probe does not undo a forced open); ``sanitize``, which every load runs, gives it an end
    ``open_base`` from then, and the probe follows. The SQL agrees: ``NULL <= now`` is not true.
    """
    return claim_decision(rec.state, vs_now(rec.open_until, now), vs_now(rec.probe_until, now))


def claim(
    config: BreakerConfig, rec: BreakerRecord, *, now: float, lease_until: float | None = None
) -> BreakerRecord | None:
    """The HALF_OPEN record granting the one probe, or None when no probe may start now.

    Granted where ``CLAIM_RULE`` grants it (as ``BreakerStore.claim_probe`` is).
    """
    if not probe_due(rec, now=now):
        return None
    lease = now + config.probe_lease if lease_until is None else lease_until
    return replace(rec, state=HALF_OPEN, probe_until=lease, updated_at=now)


def availability(rec: BreakerRecord, *, now: float) -> float | None:
    """None when a call may start now (CLOSED, or a probe can be claimed); else when it may.

    FORCED_OPEN answers ``math.inf``: only a reset reopens it; so does an OPEN record without
    ``open_until`` (not yet sanitized, see ``CLAIM_RULE``). A HALF_OPEN breaker whose probe is
    in flight answers the lease's end (the probe usually answers sooner).
    """
    if rec.state == CLOSED or probe_due(rec, now=now):
        return None
    if rec.state == OPEN:
        return math.inf if vs_now(rec.open_until, now) == "unset" else rec.open_until
    if rec.state in (HALF_OPEN, FORCED_OPEN):
        return math.inf if rec.state == FORCED_OPEN else rec.probe_until
    return None


def reset(*, now: float) -> BreakerRecord:
    """A fresh CLOSED record (config reload or ``inboxd breaker reset``)."""
    return BreakerRecord(state=CLOSED, reason="reset", updated_at=now)


def sanitize(rec: BreakerRecord, *, now: float, config: BreakerConfig) -> BreakerRecord:
    """``rec`` as loaded from disk, with absurd values clamped; never a blind CLOSED.

    A clock jump (or a hand-edited file) can leave ``open_until`` far in the future or not a
    number: it is clamped to the longest open this config could have set from ``now``. An
    unknown state becomes OPEN for ``open_base``.
    """
    opens = min(max(rec.consecutive_opens, 0), _MAX_OPENS)
    consecutive = max(rec.consecutive_failures, 0)
    window = rec.window[-config.window :] if config.window > 0 else ()
    updated = rec.updated_at if math.isfinite(rec.updated_at) else now
    clean = replace(
        rec,
        consecutive_opens=opens,
        consecutive_failures=consecutive,
        window=window,
        updated_at=updated,
    )
    if rec.state == CLOSED:
        return replace(clean, open_until=None, probe_until=None)
    if rec.state == FORCED_OPEN:
        return replace(clean, open_until=None, probe_until=None)
    if rec.state not in STATES:
        return replace(
            clean,
            state=OPEN,
            open_until=now + config.open_base,
            probe_until=None,
            reason="sanitized",
        )
    horizon = max(config.open_max, config.quota_park) * (1.0 + _JITTER)
    until = rec.open_until
    if until is None or math.isnan(until):
        until = now + config.open_base if rec.state == OPEN else now
    until = min(max(until, 0.0), now + horizon)
    if rec.state == OPEN:
        return replace(clean, open_until=until, probe_until=None)
    probe = rec.probe_until
    if probe is not None and (math.isnan(probe) or probe > now + config.probe_lease):
        probe = now + config.probe_lease
    return replace(clean, open_until=until, probe_until=probe)

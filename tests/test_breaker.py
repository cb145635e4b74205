"""The pure circuit breaker: transition tables, sanitize on load, and hypothesis invariants."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.breaker import (
    CLOSED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    STATES,
    BreakerConfig,
    availability,
    claim,
    open_duration,
    record,
    reset,
    sanitize,
)
from providers.call_outcome import CallOutcome, CallOutcomeKind, outcome_of
from providers.errors import (
    AuthFailed,
    Permanent,
    ProviderError,
    QuotaExhausted,
    Retryable,
    Throttled,
    TransportUnavailable,
)
from providers.types import BreakerRecord

CONFIG = BreakerConfig()
FAIL = CallOutcome("failure")
OK = CallOutcome("success")


def _mid() -> float:
    return 0.5  # jitter factor exactly 1.0


def _run(rec: BreakerRecord, outcomes: list[CallOutcome], *, now: float = 1000.0) -> BreakerRecord:
    for outcome in outcomes:
        rec = record(CONFIG, rec, outcome, now=now, rand=_mid)
    return rec


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, CallOutcome("success")),
        (Retryable("x", status=503), CallOutcome("failure")),
        (Retryable("x", status=429, retry_after=9.0), CallOutcome("failure", 9.0)),
        (Permanent("x"), CallOutcome("neutral")),
        (AuthFailed("x", status=401), CallOutcome("auth_failed")),
        (QuotaExhausted("x", retry_after=5.0), CallOutcome("quota", 5.0)),
        (TransportUnavailable("x"), CallOutcome("failure")),
    ],
)
def test_outcome_of_maps_the_error_tree(error: ProviderError | None, expected: CallOutcome) -> None:
    """Each error class is counted as the breaker semantics say (Permanent is neutral)."""
    assert outcome_of(error) == expected


@pytest.mark.parametrize(
    ("opens", "rand", "expected"),
    [
        (1, 0.5, 30.0),
        (2, 0.5, 60.0),
        (3, 0.5, 120.0),
        (5, 0.5, 480.0),
        (6, 0.5, 900.0),  # 960 capped at open_max
        (500, 0.5, 900.0),
        (1, 0.0, 24.0),  # -20 % jitter
        (1, 1.0, 36.0),  # +20 % jitter
        (6, 0.0, 768.0),
    ],
)
def test_open_duration_grows_with_jitter_to_the_max(
    opens: int, rand: float, expected: float
) -> None:
    """The open period doubles per consecutive open from 30 s, jittered ±20 %, capped at 15 min."""
    assert open_duration(CONFIG, opens, lambda: rand) == pytest.approx(expected)


def test_five_consecutive_failures_open() -> None:
    """Five consecutive failures open the breaker for open_base, window and counter cleared."""
    rec = _run(BreakerRecord(), [FAIL] * 4)
    assert (rec.state, rec.consecutive_failures) == (CLOSED, 4)
    rec = _run(rec, [FAIL])
    assert rec == BreakerRecord(
        state=OPEN,
        open_until=1030.0,
        consecutive_opens=1,
        reason="consecutive_failures",
        updated_at=1000.0,
    )


def test_failure_ratio_opens_only_after_min_calls() -> None:
    """The count window opens at ≥ 50 % failures only once it holds at least min_calls calls."""
    config = BreakerConfig(consecutive_failures=100)
    rec = BreakerRecord()
    for outcome in [FAIL, OK, FAIL, OK]:
        rec = record(config, rec, outcome, now=0.0, rand=_mid)
    assert rec.state == CLOSED  # 50 % but only 4 calls
    rec = record(config, rec, FAIL, now=0.0, rand=_mid)
    assert (rec.state, rec.reason) == (OPEN, "failure_ratio")


def test_window_keeps_only_the_last_calls() -> None:
    """The window holds the last `window` outcomes, so old failures age out."""
    config = BreakerConfig(consecutive_failures=100)
    rec = BreakerRecord()
    for outcome in [FAIL, FAIL, FAIL, FAIL] + [OK] * 10:
        rec = record(config, rec, outcome, now=0.0, rand=_mid)
    assert rec.window == (False,) * 10
    assert rec.state == CLOSED


def test_neutral_is_neither_failure_nor_success() -> None:
    """A Permanent error leaves the window and the consecutive counter untouched."""
    rec = _run(BreakerRecord(), [FAIL] * 4 + [CallOutcome("neutral")] * 3)
    assert (rec.window, rec.consecutive_failures) == ((True,) * 4, 4)


def test_half_open_probe_success_closes_and_a_clean_window_resets_growth() -> None:
    """Probe success closes with a clear window; a clean full window resets consecutive_opens."""
    rec = BreakerRecord(state=OPEN, open_until=10.0, consecutive_opens=3)
    probing = claim(CONFIG, rec, now=10.0, lease_until=70.0)
    assert probing == replace(rec, state=HALF_OPEN, probe_until=70.0, updated_at=10.0)
    closed = record(CONFIG, probing, OK, now=20.0, rand=_mid)
    assert closed == BreakerRecord(state=CLOSED, consecutive_opens=3, updated_at=20.0)
    clean = _run(closed, [OK] * 5, now=30.0)
    assert (clean.state, clean.consecutive_opens) == (CLOSED, 0)


def test_probe_failure_reopens_for_longer() -> None:
    """A failed probe opens again for the next, doubled duration."""
    rec = BreakerRecord(state=HALF_OPEN, open_until=10.0, consecutive_opens=2, probe_until=70.0)
    after = record(CONFIG, rec, FAIL, now=20.0, rand=_mid)
    assert after == BreakerRecord(
        state=OPEN,
        open_until=20.0 + 120.0,
        consecutive_opens=3,
        reason="probe_failed",
        updated_at=20.0,
    )


def test_probe_failure_with_retry_after_opens_until_then() -> None:
    """A failed probe whose 429 names a Retry-After opens exactly until then."""
    rec = BreakerRecord(state=HALF_OPEN, consecutive_opens=1, probe_until=70.0)
    after = record(CONFIG, rec, CallOutcome("failure", 45.0), now=20.0, rand=_mid)
    assert (after.state, after.open_until, after.reason) == (OPEN, 65.0, "retry_after")


def test_neutral_probe_frees_the_lease() -> None:
    """A probe answered by a validation error frees the lease for the next probe."""
    rec = BreakerRecord(state=HALF_OPEN, open_until=10.0, probe_until=70.0)
    after = record(CONFIG, rec, CallOutcome("neutral"), now=20.0, rand=_mid)
    assert (after.state, after.probe_until) == (HALF_OPEN, None)
    assert availability(after, now=20.0) is None


def test_auth_failed_forces_open_until_reset() -> None:
    """AuthFailed forces the breaker open; nothing but reset leaves it."""
    rec = _run(BreakerRecord(), [CallOutcome("auth_failed")])
    assert (rec.state, rec.reason, rec.open_until) == (FORCED_OPEN, "auth_failed", None)
    assert _run(rec, [OK, FAIL, CallOutcome("quota")]) == rec
    assert claim(CONFIG, rec, now=1e12) is None
    assert availability(rec, now=1e12) == math.inf
    assert reset(now=5.0) == BreakerRecord(state=CLOSED, reason="reset", updated_at=5.0)


def test_quota_parks_for_quota_park_counted_apart() -> None:
    """QuotaExhausted opens for quota_park, with its own reason, not growing consecutive_opens."""
    rec = _run(BreakerRecord(consecutive_opens=2), [CallOutcome("quota")], now=100.0)
    assert (rec.state, rec.open_until, rec.reason, rec.consecutive_opens) == (
        OPEN,
        3700.0,
        "quota",
        2,
    )


def test_throttled_opens_until_retry_after() -> None:
    """A long Retry-After parks the provider exactly until then."""
    rec = _run(BreakerRecord(), [CallOutcome("throttled", 300.0)], now=100.0)
    assert (rec.state, rec.open_until, rec.reason) == (OPEN, 400.0, "retry_after")


def test_open_ignores_late_answers_but_extends_for_retry_after() -> None:
    """In OPEN a late success changes nothing; a late 429 may only push open_until forward."""
    rec = BreakerRecord(state=OPEN, open_until=500.0, consecutive_opens=1)
    assert record(CONFIG, rec, OK, now=100.0, rand=_mid) == rec
    assert record(CONFIG, rec, CallOutcome("failure", 10.0), now=100.0, rand=_mid) == rec
    longer = record(CONFIG, rec, CallOutcome("failure", 600.0), now=100.0, rand=_mid)
    assert longer.open_until == 700.0
    shorter_park = record(CONFIG, rec, CallOutcome("throttled", 1.0), now=100.0, rand=_mid)
    assert shorter_park.open_until == 500.0


@pytest.mark.parametrize(
    ("rec", "now", "expected"),
    [
        (BreakerRecord(), 0.0, None),
        (BreakerRecord(state=OPEN, open_until=50.0), 10.0, 50.0),
        (BreakerRecord(state=OPEN, open_until=50.0), 50.0, None),
        (BreakerRecord(state=HALF_OPEN, probe_until=70.0), 10.0, 70.0),
        (BreakerRecord(state=HALF_OPEN, probe_until=70.0), 70.0, None),
        (BreakerRecord(state=HALF_OPEN, probe_until=None), 10.0, None),
        (BreakerRecord(state=FORCED_OPEN), 10.0, math.inf),
        (BreakerRecord(state=OPEN, open_until=None), 10.0, math.inf),
    ],
)
def test_availability_table(rec: BreakerRecord, now: float, expected: float | None) -> None:
    """availability answers None when a call (or a probe claim) may start, else the reopening."""
    assert availability(rec, now=now) == expected


@pytest.mark.parametrize(
    ("rec", "now", "granted"),
    [
        (BreakerRecord(), 100.0, False),  # never CLOSED → HALF_OPEN
        (BreakerRecord(state=OPEN, open_until=150.0), 100.0, False),
        (BreakerRecord(state=OPEN, open_until=100.0), 100.0, True),
        (BreakerRecord(state=HALF_OPEN, probe_until=101.0), 100.0, False),
        (BreakerRecord(state=HALF_OPEN, probe_until=99.0), 100.0, True),
        (BreakerRecord(state=FORCED_OPEN), 100.0, False),
        (BreakerRecord(state=OPEN, open_until=None), 100.0, False),  # no end chosen: not due
    ],
)
def test_claim_table(rec: BreakerRecord, now: float, granted: bool) -> None:
    """A probe is granted only from a due OPEN or a HALF_OPEN without a live lease."""
    got = claim(CONFIG, rec, now=now)
    assert (got is not None) == granted
    if got is not None:
        assert (got.state, got.probe_until) == (HALF_OPEN, now + CONFIG.probe_lease)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("opens", [None, 99.0, 100.0, 101.0])
@pytest.mark.parametrize("probe", [None, 99.0, 100.0, 101.0])
def test_availability_agrees_with_the_claim_rule(
    state: str, opens: float | None, probe: float | None
) -> None:
    """availability says "now" (None) exactly when the breaker is CLOSED or a probe may be
    claimed, so a caller told "now" is never refused the probe."""
    rec = BreakerRecord(state=state, open_until=opens, probe_until=probe)
    now_ok = availability(rec, now=100.0) is None
    assert now_ok == (state == CLOSED or claim(CONFIG, rec, now=100.0) is not None)


NOW = 10_000.0


@pytest.mark.parametrize(
    ("rec", "expected"),
    [
        # Clock jumped back a day: open_until is clamped to the longest possible open.
        (
            BreakerRecord(state=OPEN, open_until=NOW + 86_400, consecutive_opens=2),
            BreakerRecord(state=OPEN, open_until=NOW + 4320.0, consecutive_opens=2),
        ),
        # Negative / missing values.
        (
            BreakerRecord(state=OPEN, open_until=-5.0, consecutive_opens=-3),
            BreakerRecord(state=OPEN, open_until=0.0),
        ),
        (
            BreakerRecord(state=OPEN, open_until=None),
            BreakerRecord(state=OPEN, open_until=NOW + 30.0),
        ),
        (
            BreakerRecord(state=OPEN, open_until=math.nan),
            BreakerRecord(state=OPEN, open_until=NOW + 30.0),
        ),
        # A lease longer than probe_lease is cut to it.
        (
            BreakerRecord(state=HALF_OPEN, open_until=NOW - 1, probe_until=NOW + 99_999),
            BreakerRecord(state=HALF_OPEN, open_until=NOW - 1, probe_until=NOW + 600.0),
        ),
        # An unknown state is never a blind CLOSED.
        (
            BreakerRecord(state="bogus"),
            BreakerRecord(state=OPEN, open_until=NOW + 30.0, reason="sanitized"),
        ),
        (
            BreakerRecord(state=CLOSED, open_until=5.0, probe_until=5.0, window=(True,) * 30),
            BreakerRecord(state=CLOSED, window=(True,) * 10),
        ),
        (
            BreakerRecord(state=FORCED_OPEN, reason="auth_failed", open_until=3.0),
            BreakerRecord(state=FORCED_OPEN, reason="auth_failed"),
        ),
        (BreakerRecord(updated_at=math.inf), BreakerRecord(updated_at=NOW)),
    ],
)
def test_sanitize_table(rec: BreakerRecord, expected: BreakerRecord) -> None:
    """sanitize clamps what a clock jump or a bad file made absurd, and keeps the state."""
    assert sanitize(rec, now=NOW, config=CONFIG) == expected


# --- hypothesis: the invariants over arbitrary sequences of events -------------------------

_KINDS: list[CallOutcomeKind] = [
    "success",
    "failure",
    "neutral",
    "auth_failed",
    "quota",
    "throttled",
]
_outcomes = st.builds(
    CallOutcome,
    kind=st.sampled_from(_KINDS),
    retry_after=st.none()
    | st.sampled_from([0.0, 1.0, 45.0, 5000.0])
    | st.floats(min_value=0, max_value=10_000),
)
# Ticks that are often long enough to pass an open period, so probes are claimed often.
_ticks = st.sampled_from([0.0, 1.0, 40.0, 1000.0, 4000.0]) | st.floats(min_value=0, max_value=5000)
_events = st.lists(
    st.one_of(
        st.tuples(st.just("outcome"), _outcomes),
        st.tuples(st.just("claim"), st.none()),
        st.tuples(st.just("claim"), st.none()),
        st.tuples(st.just("tick"), _ticks),
        st.tuples(st.just("reset"), st.none()),
    ),
    max_size=80,
)


@settings(max_examples=500, deadline=None)
@given(events=_events, rand=st.floats(min_value=0, max_value=1))
def test_breaker_invariants(events: list[tuple[str, object]], rand: float) -> None:
    """Never two probes in flight, never CLOSED→HALF_OPEN, open_until monotone while OPEN."""
    rec = BreakerRecord()
    now = 0.0
    probe_live_until: float | None = None  # the model's view of the one probe in flight
    for kind, arg in events:
        before = rec
        if kind == "tick":
            assert isinstance(arg, float)
            now += arg
            continue
        if kind == "claim":
            got = claim(CONFIG, rec, now=now)
            if got is not None:
                assert probe_live_until is None or probe_live_until <= now, "two probes"
                probe_live_until = got.probe_until
                rec = got
        elif kind == "reset":
            rec = reset(now=now)
            probe_live_until = None
        else:
            assert isinstance(arg, CallOutcome)
            if rec.state == HALF_OPEN and probe_live_until is None:
                continue  # only the probe may call in HALF_OPEN
            rec = record(CONFIG, rec, arg, now=now, rand=lambda: rand)
            if before.state == HALF_OPEN:
                probe_live_until = None
        assert not (before.state == CLOSED and rec.state == HALF_OPEN)
        if before.state == OPEN and rec.state == OPEN:
            assert before.open_until is not None
            assert rec.open_until is not None
            assert rec.open_until >= before.open_until
        if rec.state == OPEN:
            assert rec.open_until is not None
            assert rec.open_until <= now + max(CONFIG.open_max, CONFIG.quota_park)
        if rec.state != HALF_OPEN:
            assert rec.probe_until is None


@settings(max_examples=300, deadline=None)
@given(
    state=st.sampled_from([CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, "x"]),
    open_until=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    probe_until=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    opens=st.integers(min_value=-5, max_value=10**6),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_sanitize_never_blind_closed_and_bounded(
    state: str, open_until: float | None, probe_until: float | None, opens: int, now: float
) -> None:
    """Whatever is on disk, sanitize keeps a non-closed state non-closed and open_until bounded."""
    rec = BreakerRecord(
        state=state, open_until=open_until, probe_until=probe_until, consecutive_opens=opens
    )
    clean = sanitize(rec, now=now, config=CONFIG)
    assert (clean.state == CLOSED) == (state == CLOSED)
    assert 0 <= clean.consecutive_opens <= 64
    if clean.state in (OPEN, HALF_OPEN):
        assert clean.open_until is not None
        assert 0 <= clean.open_until <= now + 4320.0
    if clean.probe_until is not None and not math.isnan(clean.probe_until):
        assert clean.probe_until <= now + CONFIG.probe_lease
    assert sanitize(clean, now=now, config=CONFIG) == clean


def test_throttled_is_neutral_and_a_named_quota_reset_parks_exactly() -> None:
    """A rate-limit answer never counts against the breaker; a quota naming its reset time
    parks the provider until exactly then, one without for at least quota_park."""
    assert outcome_of(Throttled("rpm", retry_after=5.0)) == CallOutcome("neutral")
    exact = outcome_of(QuotaExhausted("cap", until=1500.0), now=1000.0)
    assert exact == CallOutcome("quota", 500.0, exact=True)
    config = BreakerConfig()
    parked = record(config, BreakerRecord(), exact, now=1000.0, rand=lambda: 0.5)
    assert (parked.state, parked.open_until, parked.reason) == (OPEN, 1500.0, "quota")
    plain = record(
        config, BreakerRecord(), outcome_of(QuotaExhausted("x")), now=0.0, rand=lambda: 0.5
    )
    assert plain.open_until == config.quota_park

"""The limiter's pure decisions (``providers.pacing``): plain values and ``now`` in, waits out."""

from __future__ import annotations

import pytest

from providers.pacing import Pacer, PacingConfig


def _pacer(concurrency: int = 4, rpm: float | None = None, **kw: float) -> Pacer:
    return Pacer(PacingConfig(concurrency=concurrency, rpm=rpm, margin=0.5, **kw))


def _fill(p: Pacer, n: int, now: float) -> list[float]:
    """Admit and finish ``n`` successful calls at ``now``."""
    sent = []
    for _ in range(n):
        assert p.admit(now) == 0.0
        sent.append(now)
        p.succeeded(now)
    return sent


def test_unlimited_rate_until_configured_or_learned() -> None:
    """With ``rpm`` unset, any number of calls pass (only concurrency limits them)."""
    p = _pacer(concurrency=2)
    _fill(p, 500, 0.0)
    assert (p.rpm, p.concurrency) == (None, 2)
    assert p.admit(0.0) == 0.0
    assert p.admit(0.0) == 0.0
    assert p.admit(0.0) is None  # two in flight: wait for one to finish


def test_configured_rpm_schedules_against_rolling_window() -> None:
    """At the configured RPM the next call waits until the oldest send leaves the 60 s window
    (plus the margin), not a fixed second."""
    p = _pacer(rpm=3)
    _fill(p, 1, 0.0)
    _fill(p, 1, 10.0)
    _fill(p, 1, 20.0)
    assert p.admit(30.0) == pytest.approx(30.5)  # the send at 0 leaves at 60.5
    assert p.admit(60.5) == 0.0
    p.succeeded(60.5)
    assert p.admit(61.0) == pytest.approx(9.5)  # the send at 10 leaves at 70.5


def test_concurrency_waits_for_a_finish() -> None:
    """At the concurrency limit the answer is None: wait until a call finishes."""
    p = _pacer(concurrency=1)
    assert p.admit(0.0) == 0.0
    assert p.admit(0.0) is None
    p.failed(1.0)
    assert p.admit(1.0) == 0.0


def test_throttle_pauses_the_whole_provider_for_its_wait() -> None:
    """A throttle naming a 7 s wait pauses every call for 7 s; none named → default pause."""
    p = _pacer(concurrency=4, default_pause=1.0)
    assert p.admit(0.0) == 0.0
    p.throttled(2.0, sent_at=0.0, scope="rate", retry_after=7.0, limit=None)
    assert p.admit(2.0) == pytest.approx(7.0)
    assert p.admit(8.9) == pytest.approx(0.1)
    _fill(p, 1, 9.0)
    assert p.admit(9.0) == 0.0
    p.throttled(9.0, sent_at=9.0, scope="rate", retry_after=None, limit=None)
    assert p.admit(9.0) == pytest.approx(1.0)


def test_named_rate_limit_becomes_the_ceiling() -> None:
    """Kimi's "max RPM: 120" sets the rate to 120 and caps additive increase there; the short
    "after 1 seconds" does not make the limiter knock every second."""
    p = _pacer(concurrency=4)
    _fill(p, 120, 0.0)
    assert p.admit(1.0) == 0.0
    p.throttled(1.1, sent_at=1.0, scope="rate", retry_after=1.0, limit=120)
    assert (p.rpm, p.rpm_ceiling) == (120, 120)
    assert p.admit(2.1) == pytest.approx(58.4)  # the window frees at 60.5, not at 2.1
    _fill(p, 120, 60.5)
    _fill(p, 120, 200.0)
    assert p.rpm == 120  # the increase never passes the named ceiling


def test_unnamed_rate_limit_learns_the_accepted_count() -> None:
    """GLM 1303 names no limit: the rate becomes the calls the server accepted in the window."""
    p = _pacer(concurrency=4)
    _fill(p, 60, 0.0)
    assert p.admit(5.0) == 0.0
    p.throttled(5.0, sent_at=5.0, scope="rate", retry_after=None, limit=None)
    assert p.rpm == 60
    assert p.rpm_ceiling is None
    assert p.admit(10.0) == pytest.approx(50.5)


def test_rate_throttle_decreases_to_accepted_count_at_most_halving() -> None:
    """A rate throttle sets the rate to the calls the window accepted, but one throttle never
    cuts it below ``beta`` times the rate it had (multiplicative decrease, bounded)."""
    p = _pacer(rpm=10, beta=0.5)
    _fill(p, 9, 0.0)
    assert p.admit(1.0) == 0.0
    p.throttled(1.0, sent_at=1.0, scope="rate", retry_after=0.0, limit=None)
    assert p.rpm == 9
    assert p.admit(2.0) == pytest.approx(58.5)
    q = _pacer(rpm=10, beta=0.5)
    _fill(q, 3, 0.0)
    assert q.admit(0.0) == 0.0
    q.throttled(0.0, sent_at=0.0, scope="rate", retry_after=0.0, limit=None)
    assert q.rpm == 5
    _fill(q, 1, 1.0)
    assert q.admit(1.0) == 0.0
    q.throttled(1.0, sent_at=1.0, scope="rate", retry_after=0.0, limit=None)
    assert q.rpm == 4


def test_concurrency_throttle_learns_from_in_flight_or_named_limit() -> None:
    """GLM 1302: the concurrency becomes what the server admitted at once (the others in
    flight); Kimi's "max concurrency: 2" sets it to 2 directly."""
    p = _pacer(concurrency=4)
    for _ in range(3):
        assert p.admit(0.0) == 0.0
    p.throttled(0.1, sent_at=0.0, scope="concurrency", retry_after=None, limit=None)
    assert p.concurrency == 2
    q = _pacer(concurrency=8)
    assert q.admit(0.0) == 0.0
    q.throttled(0.1, sent_at=0.0, scope="concurrency", retry_after=1.0, limit=2)
    assert (q.concurrency, q.concurrency_ceiling) == (2, 2)


def test_answers_naming_the_limit_never_cut_below_it() -> None:
    """Rate-limit answers that name the account's limit (Kimi "max RPM: 600", "max
    concurrency: 4") while our own use is under it (the server's window or another client
    explains them) pause the provider but leave the named limits in force: a storm of them
    cannot drive the limiter to a crawl."""
    p = _pacer(concurrency=4)
    now = 0.0
    for _ in range(10):
        _fill(p, 2, now)
        assert p.admit(now) == 0.0
        p.throttled(now, sent_at=now, scope="rate", retry_after=1.0, limit=600)
        now = p.paused_until
    assert (p.rpm, p.rpm_ceiling) == (600, 600)
    for _ in range(10):
        assert p.admit(now) == 0.0
        p.throttled(now, sent_at=now, scope="concurrency", retry_after=1.0, limit=4)
        now = p.paused_until
        _fill(p, 1, now)
    assert (p.concurrency, p.concurrency_ceiling) == (4, 4)


def test_concurrency_halves_when_alone_and_still_refused() -> None:
    """A concurrency throttle with nothing else in flight halves the limit, never below 1."""
    p = _pacer(concurrency=4, beta=0.5)
    assert p.admit(0.0) == 0.0
    p.throttled(0.0, sent_at=0.0, scope="concurrency", retry_after=None, limit=None)
    assert p.concurrency == 2
    assert p.admit(5.0) == 0.0
    p.throttled(5.0, sent_at=5.0, scope="concurrency", retry_after=None, limit=None)
    assert p.admit(10.0) == 0.0
    p.throttled(10.0, sent_at=10.0, scope="concurrency", retry_after=None, limit=None)
    assert p.concurrency == 1


def test_additive_increase_only_while_the_limit_binds() -> None:
    """After ``increase_interval`` of successes while a limit held calls back, it grows by 1
    (concurrency up to the configured ceiling); a limit that held nothing back does not grow."""
    p = _pacer(concurrency=2, increase_interval=60.0)
    assert p.admit(0.0) == 0.0
    assert p.admit(0.0) == 0.0
    p.throttled(0.0, sent_at=0.0, scope="concurrency", retry_after=0.0, limit=None)
    assert p.concurrency == 1
    p.succeeded(70.0)  # nothing was held back: no increase
    assert p.concurrency == 1
    assert p.admit(70.0) == 0.0
    assert p.admit(70.0) is None  # the concurrency limit binds
    p.succeeded(71.0)
    assert p.concurrency == 2
    assert p.admit(72.0) == 0.0
    assert p.admit(72.0) == 0.0
    assert p.admit(72.0) is None
    p.succeeded(200.0)
    assert p.concurrency == 2  # the configured ceiling

    r = _pacer(concurrency=4, increase_interval=60.0)
    _fill(r, 2, 0.0)
    assert r.admit(0.0) == 0.0
    r.throttled(0.0, sent_at=0.0, scope="rate", retry_after=None, limit=None)
    assert r.rpm == 2
    assert r.admit(1.0) == pytest.approx(59.5)  # the rate binds
    _fill(r, 1, 60.5)
    assert r.rpm == 3
    idle = _pacer(concurrency=4, increase_interval=60.0)
    _fill(idle, 2, 0.0)
    assert idle.admit(0.0) == 0.0
    idle.throttled(0.0, sent_at=0.0, scope="rate", retry_after=None, limit=None)
    _fill(idle, 1, 100.0)
    assert idle.rpm == 2


def test_no_learning_from_an_empty_window_but_growing_pause() -> None:
    """A rate throttle with nothing accepted in the window (e.g. right after a restart) keeps
    the rate unknown and doubles the pause per throttle in a row, up to the window."""
    p = _pacer(concurrency=4, default_pause=1.0)
    waits = []
    now = 0.0
    for _ in range(8):
        assert p.admit(now) == 0.0
        p.throttled(now, sent_at=now, scope="rate", retry_after=None, limit=None)
        wait = p.admit(now)
        assert wait is not None
        waits.append(wait)
        now += wait
    assert p.rpm is None
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    _fill(p, 1, now)  # a success ends the streak
    assert p.admit(now) == 0.0
    p.throttled(now, sent_at=now, scope="rate", retry_after=None, limit=None)
    assert p.admit(now) == pytest.approx(1.0)
    assert p.rpm == 1


def test_failed_calls_change_no_limit() -> None:
    """A non-throttle failure frees its slot and changes neither limit nor the window."""
    p = _pacer(concurrency=2, rpm=2)
    assert p.admit(0.0) == 0.0
    p.failed(0.5)
    assert (p.concurrency, p.rpm) == (2, 2)
    assert p.admit(0.5) == 0.0
    p.succeeded(0.6)
    assert p.admit(0.7) == pytest.approx(59.8)


def test_config_is_validated() -> None:
    """A concurrency below 1 or a non-positive rpm is refused at construction."""
    with pytest.raises(ValueError, match="concurrency"):
        PacingConfig(concurrency=0)
    with pytest.raises(ValueError, match="rpm"):
        PacingConfig(concurrency=1, rpm=0)


def test_a_named_wait_without_a_limit_teaches_no_rate() -> None:
    """A 429 that names its wait (Retry-After, "after N seconds") but no limit, while the rate
    is unknown, only pauses: a stray 429 must not pin the rate to the few calls just sent."""
    p = _pacer(concurrency=4)
    _fill(p, 5, 0.0)
    assert p.admit(1.0) == 0.0
    p.throttled(1.0, sent_at=1.0, scope="rate", retry_after=2.0, limit=None)
    assert p.rpm is None
    assert p.admit(3.0) == 0.0


def test_a_named_wait_is_honoured_then_grows_in_a_row() -> None:
    """The first throttle pauses exactly the named wait (even 0); throttles in a row without a
    success pause at least the doubling default."""
    p = _pacer(concurrency=4, default_pause=1.0)
    assert p.admit(0.0) == 0.0
    p.throttled(0.0, sent_at=0.0, scope="rate", retry_after=0.0, limit=None)
    assert p.admit(0.0) == 0.0
    p.throttled(0.0, sent_at=0.0, scope="rate", retry_after=0.0, limit=None)
    assert p.admit(0.0) == pytest.approx(2.0)

"""The settle tracker: ready only after size and mtime_ns held still for settle_seconds."""

from __future__ import annotations

import pytest

from handlers.settle import SettleTracker

# (size, mtime_ns, now, expected ready)
Step = tuple[int, int, float, bool]


@pytest.mark.parametrize(
    ("settle", "steps"),
    [
        pytest.param(2.0, [(10, 1, 0.0, False), (10, 1, 2.0, True)], id="still-for-window"),
        pytest.param(2.0, [(10, 1, 0.0, False), (10, 1, 1.9, False)], id="too-soon"),
        pytest.param(
            2.0,
            [(10, 1, 0.0, False), (20, 2, 1.0, False), (20, 2, 2.5, False), (20, 2, 3.0, True)],
            id="growth-restarts-window",
        ),
        pytest.param(
            2.0, [(10, 1, 0.0, False), (10, 5, 2.0, False), (10, 5, 4.0, True)], id="touch-restarts"
        ),
        pytest.param(
            2.0, [(10, 1, 0.0, False), (9, 1, 2.0, False), (9, 1, 4.0, True)], id="shrink-restarts"
        ),
        pytest.param(0.0, [(10, 1, 0.0, True)], id="zero-ready-at-once"),
        pytest.param(
            2.0, [(10, 1, 0.0, False), (10, 1, 2.0, True), (10, 1, 2.1, False)], id="ready-forgets"
        ),
    ],
)
def test_observe_table(settle: float, steps: list[Step]) -> None:
    """Each observation gives exactly the expected readiness."""
    tracker: SettleTracker[str] = SettleTracker(settle)
    got = [tracker.observe("f", size, mtime, now) for size, mtime, now, _ in steps]
    assert got == [ready for *_, ready in steps]


def test_next_wakeup_is_earliest_deadline() -> None:
    """next_wakeup is the earliest moment any tracked file could be ready, None when idle."""
    tracker: SettleTracker[str] = SettleTracker(2.0)
    assert tracker.next_wakeup() is None
    tracker.observe("a", 1, 1, 10.0)
    tracker.observe("b", 1, 1, 5.0)
    assert tracker.next_wakeup() == 7.0
    tracker.observe("b", 2, 2, 9.0)  # b changed: its window restarts
    assert tracker.next_wakeup() == 11.0
    tracker.forget("b")
    assert tracker.next_wakeup() == 12.0
    tracker.forget("a")
    assert tracker.next_wakeup() is None
    assert len(tracker) == 0


def test_due_hands_out_each_key_once_until_observed() -> None:
    """due returns keys whose window passed, once; observing them again decides readiness."""
    tracker: SettleTracker[str] = SettleTracker(2.0)
    tracker.observe("a", 1, 1, 0.0)
    tracker.observe("b", 1, 1, 1.0)
    assert tracker.due(1.5) == []
    assert tracker.due(2.0) == ["a"]
    assert tracker.due(2.5) == []
    assert tracker.next_wakeup() == 3.0
    assert tracker.observe("a", 1, 1, 2.0) is True
    assert "a" not in tracker
    assert tracker.due(3.0) == ["b"]
    assert tracker.observe("b", 5, 5, 3.0) is False  # it grew: a new window
    assert tracker.next_wakeup() == 5.0
    assert tracker.due(5.0) == ["b"]
    assert tracker.observe("b", 5, 5, 5.0) is True
    assert tracker.next_wakeup() is None


def test_repeat_observation_does_not_grow_heap() -> None:
    """Watcher events repeating the same stat do not add records or wake-ups."""
    tracker: SettleTracker[tuple[int, int]] = SettleTracker(2.0)
    for i in range(1000):
        assert tracker.observe((1, 2), 7, 7, i / 1000) is False
    assert len(tracker) == 1
    assert len(tracker._heap) == 1
    assert tracker.next_wakeup() == 2.0


def test_churning_file_keeps_heap_bounded() -> None:
    """A file that changes on every observation leaves a bounded number of stale entries."""
    tracker: SettleTracker[str] = SettleTracker(2.0)
    for i in range(10_000):
        tracker.observe("grow", i, i, float(i))
    assert len(tracker) == 1
    assert len(tracker._heap) <= 2 + 64 + 1
    assert tracker.next_wakeup() == 10_001.0


def test_negative_settle_refused() -> None:
    """A negative window is a programming error, named in the message."""
    with pytest.raises(ValueError, match="settle_seconds must be >= 0, got -1"):
        SettleTracker(-1)

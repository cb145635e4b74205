"""The status line: STATUS= only when it changed, a summary log line every summary interval."""

from __future__ import annotations

import logging

import pytest

from daemon.ops.notify import Notifier
from daemon.runtime.status import STATUS_INTERVAL, StatusLine


class _Recorder(Notifier):
    """A notifier that keeps what it would send."""

    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[str] = []

    def send(self, *fields: str) -> bool:
        self.sent.extend(fields)
        return True


def test_status_is_sent_on_change_and_summary_logged_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a fake clock with a 0.05 s summary interval: STATUS= is sent for the first and a
    changed text only, a summary is logged at 0.05 s and 0.10 s (not at 0 s nor 0.07 s), and
    the pause until the next tick is the time to the next summary, never above 5 s."""
    caplog.set_level(logging.INFO, logger="daemon.runtime.status")
    recorder = _Recorder()
    line = StatusLine(recorder)
    pauses = [
        line.tick({}, 0, now=0.0, every=0.05),
        line.tick({}, 0, now=0.05, every=0.05),
        line.tick({"done": 1}, 0, now=0.07, every=0.05),
        line.tick({"done": 1}, 0, now=0.10, every=0.05),
        StatusLine(_Recorder()).tick({}, 0, now=0.0, every=60.0),
    ]
    assert recorder.sent == [
        "STATUS=done 0, quarantined 0, uploading 0, queued 0",
        "STATUS=done 1, quarantined 0, uploading 0, queued 0",
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "summary: done 0, quarantined 0, uploading 0, queued 0",
        "summary: done 1, quarantined 0, uploading 0, queued 0",
    ]
    assert pauses == pytest.approx([0.05, 0.05, 0.03, 0.05, STATUS_INTERVAL])


def test_a_late_tick_does_not_cause_a_burst_of_summaries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tick 10 intervals late logs one summary, and the next is one interval after it."""
    caplog.set_level(logging.INFO, logger="daemon.runtime.status")
    line = StatusLine(_Recorder())
    line.tick({}, 0, now=0.0, every=1.0)
    late = line.tick({}, 0, now=10.5, every=1.0)
    again = line.tick({}, 0, now=10.6, every=1.0)
    assert (len(caplog.records), late, round(again, 6)) == (1, 1.0, 0.9)

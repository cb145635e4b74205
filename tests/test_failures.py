"""The pure per-file failure bookkeeping: backoff, hold, loud-once logging, readiness."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from daemon.runtime.failures import FileErrors, backoff, daemon_fault, is_fatal
from handlers.stages import stage, stage_of
from providers.errors import MoveError, StateError
from tests.fakes import FakeClock


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(1, 5.0), (2, 10.0), (3, 20.0), (8, 640.0), (9, 900.0), (500, 900.0)],
)
def test_backoff_doubles_from_base_to_cap(failures: int, expected: float) -> None:
    """The wait after the n-th failure in a row is 5 s doubling, capped at 15 min."""
    assert backoff(failures, base=5.0, cap=900.0) == expected


def test_a_failing_file_is_held_loud_once_per_stage_and_released_by_success() -> None:
    """A file is held for its backoff, loud only on its first failure at a stage, and a
    success forgets it."""
    clock = FakeClock(1_000_000.0)
    errors = FileErrors(clock=clock, base=5.0, cap=900.0)
    first = errors.failed("in:a", "in", "archive")
    assert (first.loud, first.failures, first.until) == (True, 1, clock.now + 5.0)
    assert errors.held_until("in:a") == clock.now + 5.0
    clock.now += 5.0
    assert errors.held_until("in:a") is None
    again = errors.failed("in:a", "in", "archive")
    assert (again.loud, again.failures, again.until) == (False, 2, clock.now + 10.0)
    other_stage = errors.failed("in:a", "in", "ledger")
    assert other_stage.loud is True
    errors.passed("in:a", "in", "uploaded")
    assert errors.held_until("in:a") is None
    assert errors.failed("in:a", "in", "archive").loud is True


def test_readiness_names_a_stage_failing_for_three_files_until_one_passes() -> None:
    """Three distinct files failing at one stage of an inbox make a reason; two do not,
    nor does another inbox's success; a file of that inbox passing the stage clears it."""
    clock = FakeClock(1_000_000.0)
    errors = FileErrors(clock=clock, threshold=3)
    errors.failed("in:a", "in", "archive")
    errors.failed("in:a", "in", "archive")
    errors.failed("in:b", "in", "archive")
    assert errors.reasons() == []
    errors.failed("in:c", "in", "archive")
    errors.passed("other:x", "other", "uploaded")
    errors.passed("in:d", "in", "parked")  # never reached archive
    assert errors.reasons() == [
        "inbox in: stage archive failing for every file (3 files since 1970-01-12T13:46:40Z)"
    ]
    assert errors.reasons(inboxes={"other"}) == []  # "in" removed by a reload
    errors.passed("in:d", "in", "finished")
    assert errors.reasons() == []


def test_the_innermost_stage_tags_an_error_and_its_type_is_kept() -> None:
    """An error crossing nested stages carries the innermost one and stays a ValueError."""
    with pytest.raises(ValueError, match="boom") as info, stage("upload"), stage("archive"):
        raise ValueError("boom")
    assert stage_of(info.value) == "archive"
    assert stage_of(ValueError("untagged")) is None


@pytest.mark.parametrize(
    ("exc", "fatal"),
    [
        (StateError("state file gone"), True),
        (sqlite3.OperationalError("disk I/O error"), True),
        (ExceptionGroup("g", [ValueError("x"), StateError("gone")]), True),
        (MoveError("cannot write done/x.upload.json"), False),
        (OSError(errno.ENAMETOOLONG, "File name too long"), False),
        (ValueError("a bug"), False),
    ],
)
def test_only_faults_of_the_daemon_itself_are_fatal(exc: Exception, fatal: bool) -> None:
    """State-file errors stop the daemon; any error of one file (OSError, MoveError, a bug)
    does not."""
    assert is_fatal(exc) is fatal


def test_a_daemon_fault_is_found_inside_nested_task_group_errors() -> None:
    """The StateError that ended the task tree is what ``inboxd run`` reports."""
    gone = StateError("state file gone")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("x"), gone])])
    assert daemon_fault(nested) is gone
    assert daemon_fault(ExceptionGroup("g", [ValueError("x")])) is None

"""Per-file failures: which file waits until when, what is logged loudly, and readiness.

The failure domain is one file (design.md). An unexpected error while handling a file parks
that file with a backoff that doubles per failure (``base`` to ``cap``); the error is logged
loudly once per file and stage, repeats at debug. A stage that failed for the last
``threshold`` distinct files of an inbox, with none passing it since, makes /readyz 503
until a file of that inbox passes it. Plain values in, decisions out: the worker is the shell.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from providers.errors import ConfigError, InboxdError, StateError

__all__ = [
    "FATAL",
    "STAGES",
    "FailingFile",
    "FileErrors",
    "backoff",
    "daemon_fault",
    "is_fatal",
    "passed_stages",
]

# Where a file's handling can fail (handlers.stages tags them); "other" is anything untagged.
STAGES = ("open", "ledger", "hash", "upload", "archive", "quarantine", "recover", "other")
# Errors of the daemon itself (its state file): they stop the process, never a file alone.
FATAL: tuple[type[BaseException], ...] = (StateError, ConfigError, sqlite3.Error)

# The stages an outcome proves a file passed (a "failed" or "busy" file proves nothing); a
# file that ends also proves its inbox's recovery problem gone.
_PASSED: dict[str, frozenset[str]] = {
    "uploaded": frozenset(STAGES) - {"quarantine"},
    "duplicate": frozenset({"open", "ledger", "hash", "archive", "recover", "other"}),
    "finished": frozenset({"open", "ledger", "archive", "recover", "other"}),
    "quarantined": frozenset({"quarantine", "recover", "other"}),
    "parked": frozenset({"open", "ledger"}),
    "changed": frozenset({"open", "ledger"}),
}


def backoff(failures: int, *, base: float, cap: float) -> float:
    """Seconds a file waits after its ``failures``-th failure in a row (``base`` doubling)."""
    return float(min(cap, base * 2 ** min(max(failures - 1, 0), 62)))


def passed_stages(outcome: str) -> frozenset[str]:
    """The stages a file with this outcome went through without failing."""
    return _PASSED.get(outcome, frozenset())


@dataclass(frozen=True)
class FailingFile:
    """One file's run of failures: the stage of the last, how many, when it may go again."""

    stage: str
    failures: int
    until: float
    loud: bool  # this failure is the first at its stage: log it at warning, not debug


@dataclass
class _Failing:
    since: float
    keys: set[str]


class FileErrors:
    """Failing files (by key ``inbox:relpath``) and failing stages (by inbox)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        base: float = 5.0,
        cap: float = 900.0,
        threshold: int = 3,
    ) -> None:
        """``base``/``cap``: the backoff in seconds; ``threshold``: distinct files failing
        at one stage of one inbox (and none passing) before /readyz is 503."""
        self.clock = clock
        self.base = base
        self.cap = cap
        self.threshold = threshold
        self._files: dict[str, FailingFile] = {}
        self._stages: dict[tuple[str, str], _Failing] = {}

    def held_until(self, key: str) -> float | None:
        """When the failing file ``key`` may go again, if that is still ahead."""
        failure = self._files.get(key)
        if failure is None or failure.until <= self.clock():
            return None
        return failure.until

    def failed(self, key: str, inbox: str, stage: str) -> FailingFile:
        """Record a failure of ``key`` at ``stage``; returns when it may go again."""
        now = self.clock()
        previous = self._files.get(key)
        failures = 1 if previous is None else previous.failures + 1
        loud = previous is None or previous.stage != stage
        failure = FailingFile(
            stage, failures, now + backoff(failures, base=self.base, cap=self.cap), loud
        )
        self._files[key] = failure
        failing = self._stages.setdefault((inbox, stage), _Failing(since=now, keys=set()))
        failing.keys.add(key)
        return failure

    def passed(self, key: str, inbox: str, outcome: str) -> None:
        """``key`` ended with ``outcome``: it is no longer failing, nor are the stages it passed."""
        stages = passed_stages(outcome)
        if not stages:
            return
        self._files.pop(key, None)
        for stage in stages:
            self._stages.pop((inbox, stage), None)

    def forget(self, key: str) -> None:
        """``key`` is gone (vanished, its inbox removed): drop its backoff."""
        self._files.pop(key, None)

    def reasons(self, inboxes: Collection[str] | None = None) -> list[str]:
        """Why /readyz is 503 because of failing files (empty when no stage fails for all);
        only of ``inboxes`` when given (an inbox a reload removed no longer counts)."""
        out = []
        for (inbox, stage), failing in sorted(self._stages.items()):
            if inboxes is not None and inbox not in inboxes:
                continue
            if len(failing.keys) >= self.threshold:
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(failing.since))
                out.append(
                    f"inbox {inbox}: stage {stage} failing for every file "
                    f"({len(failing.keys)} files since {since})"
                )
        return out


def daemon_fault(exc: BaseException) -> InboxdError | None:
    """The daemon's own fault (StateError, ...) that ended a task group, if one did."""
    if isinstance(exc, InboxdError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = daemon_fault(inner)
            if found is not None:
                return found
    return None


def is_fatal(exc: BaseException) -> bool:
    """An error of the daemon itself (alone or inside an exception group)?"""
    if isinstance(exc, BaseExceptionGroup):
        return any(is_fatal(inner) for inner in exc.exceptions)
    return isinstance(exc, FATAL)

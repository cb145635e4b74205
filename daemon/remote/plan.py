"""Which remote files a retention pass deletes, and why (pure: plain values in, a list out).

The provider's listing is the truth for usage: every file on the account counts toward the
limits, also the ones inboxd did not upload; only inboxd's own files (the ones its ledger
says it uploaded, and whose row is finished) are ever chosen. The order is the order the
pass deletes in:

1. ``max_age``: own files older than ``max_age_days``;
2. ``orphan``: copies an interrupted or ambiguous attempt of a finished row left without a
   receipt, found exactly as reconciliation finds them (``handlers.reconcile.match_remote``);
   they are waste, so they go before any file a receipt names;
3. ``max_files`` / ``max_bytes``: own files, oldest first, until the whole account is at or
   under both limits (the reason names the limit still exceeded when the file was chosen).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

from handlers.reconcile import match_remote
from providers.types import RemoteFile
from providers.wire import wire_filenames

__all__ = [
    "DAY",
    "DELETION_REASONS",
    "Attempt",
    "Deletion",
    "Owned",
    "RetentionLimits",
    "find_orphans",
    "plan_deletions",
    "short_of",
]

DAY = 86400.0

DeletionReason = Literal["max_age", "orphan", "max_files", "max_bytes", "keep_remote"]
# Every reason a remote deletion is recorded with (the metric's label values).
DELETION_REASONS: tuple[DeletionReason, ...] = (
    "max_files",
    "max_bytes",
    "max_age",
    "keep_remote",
    "orphan",
)


@dataclass(frozen=True)
class RetentionLimits:
    """``[providers.<name>.retention]`` as plain values (None / 0: no such limit)."""

    max_files: int | None = None
    max_bytes: int | None = None
    max_age_days: float = 0.0


@dataclass(frozen=True)
class Owned:
    """What the ledger says of one remote file inboxd uploaded.

    ``settled`` is False while the row that uploaded it is still active (the file is being
    finished, and dedupe may be pointing a duplicate at it right now): such a file is never
    chosen. ``receipt`` is the path of its ``.upload.json`` (None: deleted on success).
    ``uploaded_at`` orders files the provider dates to the same second (its clock is coarse);
    ``sha256`` is the content (the pipeline's content lock is held to record its deletion).
    """

    file_id: str
    ledger_id: int
    inbox: str
    relpath: str
    receipt: str | None
    settled: bool = True
    uploaded_at: float = 0.0
    sha256: str | None = None


@dataclass(frozen=True)
class Attempt:
    """A finished ledger row's last upload attempt, as reconciliation would match it."""

    ledger_id: int
    relpath: str
    size: int
    purpose: str
    intent_at: float
    finished_at: float


@dataclass(frozen=True)
class Deletion:
    """One remote file to delete, with its reason and (for an own file) the ledger's view."""

    file: RemoteFile
    reason: DeletionReason
    owner: Owned | None = None
    ledger_id: int | None = None


def _match(
    files: list[RemoteFile], attempt: Attempt, *, skew: float, taken: Collection[str]
) -> RemoteFile | None:
    return match_remote(
        files,
        filename=PurePath(attempt.relpath).name,
        size=attempt.size,
        purpose=attempt.purpose,
        intent_at=attempt.intent_at,
        skew=skew,
        claimed=taken,
    )


def find_orphans(
    files: Iterable[RemoteFile],
    attempts: Iterable[Attempt],
    *,
    claimed: Collection[str],
    skew: float,
    protect: Iterable[Attempt] = (),
) -> list[Deletion]:
    """The copies finished rows' attempts left that no ledger row records (``orphan``).

    A copy matches as in reconciliation (same wire name, size and purpose, created no earlier
    than the intent minus ``skew``), and also no later than the row finished plus ``skew``:
    a file stored after the row's business was over is not its attempt's. ``protect`` are
    the attempts of rows still active (an upload in flight, or one reconciliation has yet to
    settle): the copies they match are theirs, never orphans.
    """
    # Only a copy of the attempt's size under one of its wire names can match: look those
    # up, not the whole listing for each attempt (a pass weighs thousands of attempts).
    by_name: dict[tuple[str, int], list[RemoteFile]] = {}
    for f in files:
        by_name.setdefault((f.filename, f.bytes), []).append(f)

    def candidates(attempt: Attempt) -> list[RemoteFile]:
        names = wire_filenames(PurePath(attempt.relpath).name)
        return [f for name in names for f in by_name.get((name, attempt.size), [])]

    taken = set(claimed)
    for attempt in protect:
        match = _match(candidates(attempt), attempt, skew=skew, taken=taken)
        if match is not None:
            taken.add(match.id)
    found: list[Deletion] = []
    for attempt in sorted(attempts, key=lambda a: (a.intent_at, a.ledger_id)):
        window = [f for f in candidates(attempt) if f.created_at <= attempt.finished_at + skew]
        match = _match(window, attempt, skew=skew, taken=taken)
        if match is not None:
            taken.add(match.id)
            found.append(Deletion(match, "orphan", ledger_id=attempt.ledger_id))
    return found


def plan_deletions(
    files: Sequence[RemoteFile],
    owned: Mapping[str, Owned],
    limits: RetentionLimits,
    *,
    now: float,
    orphans: Sequence[Deletion] = (),
    room: tuple[int, int] = (0, 0),
    busy: Collection[str] = (),
) -> list[Deletion]:
    """The deletions that bring the account within ``limits``, in the order to make them.

    ``files`` is the whole listing; ``owned`` maps the file ids inboxd uploaded to the
    ledger's view; ``orphans`` come from ``find_orphans``. A file not in ``owned`` (nor an
    orphan) is never chosen; when only such files are left, the account stays over a limit.
    ``room``: (files, bytes) to leave free under the limits for the uploads being sent or
    waiting (``daemon.remote.admission``); ``busy``: contents the pipeline holds now, whose
    copies are not chosen (recording their deletion would wait for it).
    """
    chosen: dict[str, Deletion] = {}
    mine = sorted(
        (
            f
            for f in files
            if f.id in owned and owned[f.id].settled and owned[f.id].sha256 not in busy
        ),
        key=lambda f: (f.created_at, owned[f.id].uploaded_at, f.id),
    )
    max_files, max_bytes = _targets(limits, room)
    if limits.max_age_days > 0:
        cutoff = now - limits.max_age_days * DAY
        for f in mine:
            if f.created_at < cutoff:
                chosen[f.id] = Deletion(f, "max_age", owned[f.id], owned[f.id].ledger_id)
    listed = {f.id for f in files}
    for orphan in orphans:
        if orphan.file.id in listed and orphan.file.id not in owned:
            chosen.setdefault(orphan.file.id, orphan)
    count = sum(1 for f in files if f.id not in chosen)
    nbytes = sum(f.bytes for f in files if f.id not in chosen)
    for f in mine:
        over_files = max_files is not None and count > max_files
        over_bytes = max_bytes is not None and nbytes > max_bytes
        if not (over_files or over_bytes):
            break
        if f.id in chosen:
            continue
        reason: DeletionReason = "max_files" if over_files else "max_bytes"
        chosen[f.id] = Deletion(f, reason, owned[f.id], owned[f.id].ledger_id)
        count -= 1
        nbytes -= f.bytes
    return list(chosen.values())


def _targets(limits: RetentionLimits, room: tuple[int, int]) -> tuple[int | None, int | None]:
    """The most files and bytes a pass leaves, ``room`` (files, bytes) kept free."""
    max_files = None if limits.max_files is None else max(limits.max_files - room[0], 0)
    max_bytes = None if limits.max_bytes is None else max(limits.max_bytes - room[1], 0)
    return max_files, max_bytes


def short_of(files: int, nbytes: int, limits: RetentionLimits, room: tuple[int, int]) -> bool:
    """True when an account of ``files`` files and ``nbytes`` bytes is over ``limits`` less
    ``room``: a pass left it there, so only files it may not delete are left to go."""
    max_files, max_bytes = _targets(limits, room)
    over_files = max_files is not None and files > max_files
    over_bytes = max_bytes is not None and nbytes > max_bytes
    return over_files or over_bytes

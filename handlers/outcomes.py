"""How a file's path ends: archived or deleted with its receipt, quarantined, or parked.

Each ending moves the file first and then commits the row's final transition, so a crash in
between leaves a row that ``Pipeline.recover`` (or the next pass over the file) finishes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import anyio

from handlers.archive import find_archived, finish
from handlers.extract import Extraction
from handlers.identity import Identity
from handlers.ledger import DONE, PENDING, QUARANTINED, Ledger, LedgerRow
from handlers.quarantine import iso_utc, quarantine
from handlers.stages import staged
from providers.errors import FileChanged, FileVanished, Parked, RejectedFile

__all__ = ["InboxPlan", "Outcome", "OutcomeEvents", "Outcomes", "Result", "upload_record"]

logger = logging.getLogger(__name__)

_QUOTA_REASONS = frozenset({"quota", "quota_exhausted"})

Outcome = Literal[
    "uploaded",
    "duplicate",
    "quarantined",
    "vanished",
    "busy",
    "changed",
    "parked",
    "finished",
    "failed",  # an unexpected error: the file waits (daemon.runtime: workers, failures)
]


@dataclass(frozen=True)
class InboxPlan:
    """What the pipeline needs to know of one inbox (built from its settings)."""

    name: str
    path: Path
    providers: tuple[str, ...]
    purposes: Mapping[str, str]
    done_dir: Path
    quarantine_dir: Path
    on_success: Literal["archive", "delete"] = "archive"
    dedupe: bool = True
    on_quota: Literal["wait", "quarantine"] = "wait"
    recursive: bool = False
    extract: bool = False  # fetch the provider's text: <name>.extracted.txt beside the archive
    keep_remote: bool = True  # False: delete the remote copy once the file is done


@dataclass
class Result:
    """What became of one file; ``park_until`` (when to look again) is set for ``parked``
    and for a file that could not be opened for now (``busy``)."""

    outcome: Outcome
    park_until: float | None = None
    row: LedgerRow | None = field(default=None, repr=False)


class OutcomeEvents(Protocol):
    """The endings that are counted (``daemon.ops.metrics.Metrics`` is the real one)."""

    def quarantined(self, reason: str) -> None: ...

    def duplicate(self) -> None: ...


class Outcomes:
    """Archives, deletes, quarantines or parks one file and closes or parks its row."""

    def __init__(
        self, *, ledger: Ledger, events: OutcomeEvents, clock: Callable[[], float]
    ) -> None:
        self.ledger = ledger
        self.events = events
        self.clock = clock

    @staged("archive")
    async def finish(
        self,
        plan: InboxPlan,
        path: Path,
        row: LedgerRow,
        outcome: Outcome = "finished",
        *,
        expect: Identity | None = None,
        extraction: Extraction | None = None,
    ) -> Result:
        """Archive (with the upload's receipt and ``extraction``) or delete the file of an
        ``uploaded`` row.

        Raises ``FileChanged`` (nothing moved, the row unchanged) when ``path`` no longer names
        the ``expect``ed file unchanged: the caller decides what became of the upload.
        """
        record = upload_record(row, row.sha256)
        try:
            final = await _finish_file(plan, path, record, expect, extraction)
        except FileVanished:
            # Moved away after the upload (the upload stands), or archived by a process killed
            # before it could record where: then the receipt is found, and recorded.
            final = await self.archived(plan, path.name, row)
        done = await self.ledger.transition(
            row.id, DONE, final_path=None if final is None else str(final)
        )
        return Result(outcome, row=done)

    async def archived(self, plan: InboxPlan, name: str, row: LedgerRow) -> Path | None:
        """Where ``row``'s file went when a process archived it (its receipt naming the row's
        file id is in done_dir) but was killed before the ledger said so; else None."""
        if plan.on_success != "archive" or row.file_id is None:
            return None
        return await anyio.to_thread.run_sync(find_archived, plan.done_dir, name, row.file_id)

    @staged("archive")
    async def duplicate(
        self,
        plan: InboxPlan,
        path: Path,
        row: LedgerRow,
        original: LedgerRow,
        *,
        provider: str,
        purpose: str,
        sha256: str,
        size: int,
        expect: Identity | None = None,
        extraction: Extraction | None = None,
    ) -> Result:
        """Finish ``row`` as a copy of ``original``'s upload (its receipt names the original;
        ``extraction`` is the text of that copy).

        A file no longer the ``expect``ed one, unchanged, is left to be settled again.
        """
        record = upload_record(original, sha256) | {"dedupe_of": original.id}
        try:
            final = await _finish_file(plan, path, record, expect, extraction)
        except FileChanged as changed:
            logger.info("%s; it will be checked again", changed)
            await self.ledger.transition(row.id, PENDING, sha256=None)
            return Result("changed")
        done = await self.ledger.transition(
            row.id,
            DONE,
            provider=provider,
            purpose=purpose,
            file_id=original.file_id,
            dedupe_of=original.id,
            final_path=None if final is None else str(final),
        )
        self.events.duplicate()
        logger.info(
            "duplicate of an earlier upload, not sent again",
            extra={
                "inbox": plan.name,
                "file": row.relpath,
                "provider": provider,
                "file_id": original.file_id,
                "size": size,
            },
        )
        return Result("duplicate", row=done)

    async def park(
        self, plan: InboxPlan, path: Path, row: LedgerRow, parked: Parked, sha256: str
    ) -> Result:
        """No provider can take the file now (a transient failure, an open breaker, a rate
        limit, an unsettled attempt): it waits in its inbox, ``pending`` until ``parked.until``
        (or, out of quota with ``on_quota = "quarantine"``, is quarantined)."""
        # The breaker parks a quota answer with reason "quota" (providers.breaker).
        if parked.reason in _QUOTA_REASONS and plan.on_quota == "quarantine":
            rejected = RejectedFile("quota_exhausted", str(parked))
            return await self.reject(plan, path, row.relpath, rejected, row=row, sha256=sha256)
        await self.ledger.transition(row.id, PENDING, not_before=parked.until)
        logger.warning(
            "file waits and is tried again at %s (%s)%s",
            "a breaker reset" if math.isinf(parked.until) else iso_utc(parked.until),
            parked.reason,
            f": {parked.detail}" if parked.detail else "",
            extra={"inbox": plan.name, "file": row.relpath, "reason": parked.reason},
        )
        return Result("parked", park_until=parked.until)

    @staged("quarantine")
    async def reject(
        self,
        plan: InboxPlan,
        path: Path,
        relpath: str,
        rejected: RejectedFile,
        *,
        row: LedgerRow | None,
        sha256: str | None,
        expect: Identity | None = None,
    ) -> Result:
        """Quarantine the file with its reason; a row is begun for a file that had none.

        A file no longer the ``expect``ed one (the one the reason was found on), unchanged, is
        not quarantined: it is left to be settled and checked again.
        """
        size = _lsize(path)
        try:
            final = await anyio.to_thread.run_sync(
                lambda: quarantine(
                    path,
                    plan.quarantine_dir,
                    reason=rejected.reason,
                    detail=rejected.detail,
                    inbox=plan.name,
                    size=size,
                    sha256=sha256,
                    now=self.clock(),
                    expect=expect,
                )
            )
        except FileVanished:
            return Result("vanished")
        except FileChanged as changed:
            logger.info("%s; not quarantined, it will be checked again", changed)
            if row is not None:
                await self.ledger.transition(row.id, PENDING)
            return Result("changed")
        # A MoveError (the folder unwritable, the disk full) is this file's failure at stage
        # "quarantine": the worker counts it, logs it once and parks the file with backoff.
        if row is None:
            row = await self.ledger.begin(plan.name, relpath, size=size or 0, mtime_ns=0)
        done = await self.ledger.transition(
            row.id,
            QUARANTINED,
            reason=rejected.reason,
            detail=rejected.detail,
            final_path=str(final),
        )
        self.events.quarantined(rejected.reason)
        logger.warning(
            "quarantined",
            extra={
                "inbox": plan.name,
                "file": relpath,
                "reason": rejected.reason,
                "detail": rejected.detail,
            },
        )
        return Result("quarantined", row=done)


async def _finish_file(
    plan: InboxPlan,
    path: Path,
    record: dict[str, object],
    expect: Identity | None,
    extraction: Extraction | None,
) -> Path | None:
    """Archive (with the receipt and text beside it) or delete, per inbox, in a worker thread."""
    text = None if extraction is None else extraction.text
    if extraction is not None:
        record = record | dict(extraction.receipt)
    return await anyio.to_thread.run_sync(
        lambda: finish(
            path,
            on_success=plan.on_success,
            done_dir=plan.done_dir,
            record=record,
            expect=expect,
            text=text,
        )
    )


def upload_record(row: LedgerRow, sha256: str | None) -> dict[str, object]:
    """The receipt's fields (``handlers.archive.RECORD_FIELDS``) for ``row``'s upload."""
    return {
        "provider": row.provider,
        "purpose": row.purpose,
        "file_id": row.file_id,
        "bytes": row.remote_bytes if row.remote_bytes is not None else row.size,
        "sha256": sha256,
        "uploaded_at": None if row.uploaded_at is None else iso_utc(row.uploaded_at),
        "transport": row.transport,
    }


def _lsize(path: Path) -> int | None:
    try:
        return path.lstat().st_size
    except OSError:
        return None

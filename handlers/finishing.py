"""Ending an ``uploaded`` row: archive or delete the file only if it is still what was uploaded.

Right before the move (or delete), the path must name the inode that was hashed and uploaded,
unchanged (``handlers.identity``). Otherwise the upload is closed without a final path and
what is at the name now is a new version, settled and uploaded on its own (``changed``):

* **replaced** — another inode (an editor's atomic save) or a symlink is at the name: the
  uploaded version was complete; its remote copy stays and the ledger row records it. Its
  bytes are still readable from the open fd: a copy that hashes to the upload's sha256 is
  archived with its receipt (``final_path`` set); if that fails, the row has no final path.
* **changed** — the same inode was written to after the upload (a writer that paused longer
  than ``settle_seconds``): the remote copy is a truncated file, not a version, so it is
  deleted first (a failing delete leaves the row ``uploaded`` and the file waits).

After a crash (``resume``, ``recover``) no inode was kept: the file now at the name is
finished only when its size, mtime and sha256 are the upload's; it "grew" when it starts with
exactly the uploaded bytes, and was replaced otherwise.

With ``extract`` the file's text is fetched first (``handlers.extract``): when it cannot be
now, the row stays ``uploaded`` and the file waits in its inbox. Once the row is ``done``, a
``keep_remote = false`` inbox has the remote copy deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial

import anyio

from handlers.archive import archive_open_file
from handlers.extract import Extraction, ExtractLater, TextAndRelease, remote_of
from handlers.hashing import sha256_fd
from handlers.ledger import DONE, Ledger, LedgerRow
from handlers.outcomes import InboxPlan, Outcome, Outcomes, Result, upload_record
from handlers.validate import OpenedFile, open_for_upload
from providers.errors import (
    FileBusy,
    FileChanged,
    FileVanished,
    MoveError,
    ProviderError,
    RejectedFile,
)
from providers.types import UploadClient

__all__ = ["Finisher"]

logger = logging.getLogger(__name__)


class Finisher:
    """Archives or deletes the file of an ``uploaded`` row, or closes the row when the file at
    its name is no longer the one uploaded."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        outcomes: Outcomes,
        clients: Mapping[str, UploadClient],
        remote: TextAndRelease,
        clock: Callable[[], float],
        relist_delay: float,
    ) -> None:
        self.ledger = ledger
        self.outcomes = outcomes
        self.clients = clients
        self.remote = remote
        self.clock = clock
        self.relist_delay = relist_delay

    async def finish(
        self, plan: InboxPlan, opened: OpenedFile, row: LedgerRow, outcome: Outcome = "finished"
    ) -> Result:
        """Archive or delete ``opened`` (with its text, if the inbox extracts) if its name
        still holds it, unchanged; else close the row (archiving the uploaded bytes from the
        open file when they were replaced). The text not fetchable now: the file waits."""
        extraction = None
        if plan.extract:
            got = await self.remote.text(plan.name, row, remote_of(row), opened.rewind())
            if isinstance(got, ExtractLater):
                return Result("parked", park_until=await self.remote.later(row, got))
            extraction = got
        try:
            result = await self.outcomes.finish(
                plan, opened.path, row, outcome, expect=opened.identity, extraction=extraction
            )
        except FileChanged as changed:
            if changed.kind == "replaced" and plan.on_success == "archive":
                kept = await self._archive_open_file(plan, opened, row, extraction)
                if kept is not None:
                    return kept
            return await self.supersede(plan, row, truncated=changed.kind == "changed")
        await self._release(plan, result)
        return result

    async def _release(self, plan: InboxPlan, result: Result) -> None:
        """The file is done: delete its remote copy if the inbox does not keep it."""
        if result.row is not None:
            await self.remote.release(plan.name, result.row, keep_remote=plan.keep_remote)

    async def _archive_open_file(
        self, plan: InboxPlan, opened: OpenedFile, row: LedgerRow, extraction: Extraction | None
    ) -> Result | None:
        """Archive a copy of the replaced, uploaded file from its open fd with its receipt (the
        copy must hash to the upload's sha256); None when that cannot be done."""
        record = upload_record(row, row.sha256)
        text = None
        if extraction is not None:
            record |= extraction.receipt
            text = extraction.text
        try:
            final = await anyio.to_thread.run_sync(
                lambda: archive_open_file(
                    opened.fd,
                    opened.path.name,
                    done_dir=plan.done_dir,
                    record=record,
                    size=opened.size,
                    text=text,
                )
            )
        except (ValueError, MoveError) as exc:
            logger.info("cannot archive the replaced upload of %s: %s", row.relpath, exc)
            return None
        detail = (
            "replaced after its upload: the uploaded version was archived from the open file; "
            "the new file is uploaded on its own"
        )
        done = await self.ledger.transition(row.id, DONE, final_path=str(final), detail=detail)
        logger.warning(
            "%s", detail, extra={"inbox": plan.name, "file": row.relpath, "provider": row.provider}
        )
        result = Result("changed", row=done)
        await self._release(plan, result)
        return result

    async def resume(self, plan: InboxPlan, opened: OpenedFile, row: LedgerRow) -> Result | None:
        """Finish ``row`` with ``opened`` (the file at its name now) if that holds the uploaded
        bytes; else close the row and return None (``opened`` is a new version: begin it)."""
        uploaded = row.remote_bytes if row.remote_bytes is not None else row.size
        if (row.size, row.mtime_ns) == (opened.size, opened.mtime_ns) and (
            row.sha256 is None or await _digest(opened, None) == row.sha256
        ):
            return await self.finish(plan, opened, row)
        grown = (
            row.sha256 is not None
            and opened.size > uploaded
            and await _digest(opened, uploaded) == row.sha256
        )
        result = await self.supersede(plan, row, truncated=grown)
        return result if result.outcome == "parked" else None

    async def recover(self, plan: InboxPlan, row: LedgerRow) -> None:
        """At start: finish an ``uploaded`` row whose file may still be in the inbox."""
        path = plan.path / row.relpath
        try:
            opened = await anyio.to_thread.run_sync(
                lambda: open_for_upload(path, accept=lambda size, ext: None)
            )
        except FileVanished:  # moved away after the upload (by us before a crash, or by
            # someone else): the upload stands, and its archived path is recorded when found
            final = await self.outcomes.archived(plan, path.name, row)
            done = await self.ledger.transition(
                row.id, DONE, final_path=None if final is None else str(final)
            )
            await self._release(plan, Result("finished", row=done))
            return
        except RejectedFile:  # a symlink or the like is at the name now: not what was sent
            await self.supersede(plan, row, truncated=False)
            return
        except FileBusy:
            return  # cannot look now: processing the file resumes the row later
        with opened:
            await self.resume(plan, opened, row)

    async def supersede(self, plan: InboxPlan, row: LedgerRow, *, truncated: bool) -> Result:
        """Close ``row`` (done, no final path): the file at its name is a new version.

        ``truncated``: the remote copy is an incomplete file; it is deleted first (the row stays
        ``uploaded`` and the file is parked when the provider cannot delete it now).
        """
        file_id = row.file_id
        fields: dict[str, object] = {"final_path": None}
        client = None if row.provider is None else self.clients.get(row.provider)
        if truncated and file_id is not None and client is None:
            fields["detail"] = (
                f"written to after its upload: the truncated copy {file_id} cannot be deleted "
                f"(provider {row.provider} is no longer configured); delete it by hand"
            )
        elif truncated and file_id is not None and client is not None:
            try:
                await client.delete(file_id)
            except ProviderError as exc:
                logger.warning(
                    "%s grew after its upload; cannot delete the truncated copy %s now (%s); "
                    "trying again in %.0f s",
                    row.relpath,
                    file_id,
                    exc,
                    self.relist_delay,
                    extra={"inbox": plan.name, "file": row.relpath, "provider": row.provider},
                )
                return Result("parked", park_until=self.clock() + self.relist_delay)
            fields |= {
                "file_id": None,
                "detail": f"written to after its upload: the truncated copy {file_id} was "
                "deleted; the whole file is uploaded on its own",
            }
        else:
            fields["detail"] = (
                f"replaced after its upload: the copy {file_id} holds the earlier version; "
                "the new file is uploaded on its own"
            )
        done = await self.ledger.transition(row.id, DONE, **fields)
        logger.warning(
            "%s",
            fields["detail"],
            extra={"inbox": plan.name, "file": row.relpath, "provider": row.provider},
        )
        return Result("changed", row=done)


async def _digest(opened: OpenedFile, limit: int | None) -> str:
    """sha256 of the open file (its first ``limit`` bytes only, if given), in a thread."""
    return await anyio.to_thread.run_sync(partial(sha256_fd, opened.fd, limit=limit))

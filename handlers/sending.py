"""The send step of a file's path: the intent, the upload, the check after it.

Each attempt's intent (``uploading``, with the new hash when there is one) is committed before
any byte is sent (the resilience layer calls ``before_attempt``); an attempt of unknown outcome
is looked up in the provider's listing before anything is sent again. A stored copy whose
file changed meanwhile is deleted and the file settles again; otherwise the row is
``uploaded`` and the file is finished (``handlers.finishing``). A file the resilience layer
gave up on is parked (``pending`` with ``not_before``) or quarantined, never while an
ambiguous attempt may have stored it.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable, Mapping

import anyio

from handlers.budget import ByteBudget
from handlers.finishing import Finisher
from handlers.ledger import PENDING, UPLOADED, UPLOADING, Ledger, LedgerRow
from handlers.outcomes import InboxPlan, Outcomes, Result
from handlers.ports import PipelineEvents, Uploader
from handlers.reconcile import Reconciler
from handlers.stages import staged
from handlers.validate import OpenedFile
from providers.errors import Parked, ProviderError, RejectedFile
from providers.types import RemoteFile, UploadClient, UploadResult

__all__ = ["Sender"]

logger = logging.getLogger(__name__)


class Sender:
    """Sends one accepted file and takes it to its next state (the pipeline's upload step)."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        clients: Mapping[str, UploadClient],
        budget: ByteBudget,
        events: PipelineEvents,
        reconciler: Reconciler,
        outcomes: Outcomes,
        finisher: Finisher,
        clock: Callable[[], float],
        relist_delay: float,
    ) -> None:
        self.ledger = ledger
        self.clients = clients
        self.budget = budget
        self.events = events
        self.reconciler = reconciler
        self.outcomes = outcomes
        self.finisher = finisher
        self.clock = clock
        self.relist_delay = relist_delay

    @staged("upload")
    async def send(
        self, uploader: Uploader, plan: InboxPlan, opened: OpenedFile, row: LedgerRow, sha256: str
    ) -> Result:
        """Upload the accepted file (its hash ``sha256``) through ``uploader``, each attempt's
        intent committed first, then finish it, park it, or quarantine it."""
        current = row

        async def before_attempt(provider: str, purpose: str) -> None:
            nonlocal current
            fresh = {} if current.sha256 == sha256 else {"sha256": sha256}
            current = await self.ledger.transition(
                current.id,
                UPLOADING,
                provider=provider,
                purpose=purpose,
                attempts=current.attempts + 1,
                intent_at=self.clock(),
                **fresh,
            )

        # (provider, purpose) whose last ambiguous attempt no listing could settle yet.
        unsure: set[tuple[str, str]] = set()

        async def reconcile(provider: str, purpose: str) -> RemoteFile | None:
            unsure.add((provider, purpose))
            found = await self.reconciler.find_remote(provider, purpose, current)
            unsure.discard((provider, purpose))
            return found

        started = anyio.current_time()
        async with self.budget.hold(opened.size):
            self.events.inflight_bytes(self.budget.in_use)
            try:
                result = await uploader.upload(
                    preference=plan.providers,
                    purposes=plan.purposes,
                    filename=opened.path.name,
                    size=opened.size,
                    content_type=_content_type(opened.path.name),
                    open_file=opened.rewind,
                    before_attempt=before_attempt,
                    reconcile=reconcile,
                    # The file's history: backoff grows with its sends, give_up_after counts
                    # from when inboxd first took it up.
                    first_tried=row.created_at,
                    attempts=row.attempts,
                )
            except (RejectedFile, Parked) as failure:
                current = await self.keep_sha256(current, sha256)  # when no attempt was made
                return await self._not_sent(
                    plan, opened, current, failure, sha256=sha256, unsure=unsure
                )
            finally:
                self.events.inflight_bytes(self.budget.in_use - opened.size)
        elapsed = anyio.current_time() - started
        return await self._uploaded(plan, opened, current, result, elapsed)

    async def keep_sha256(self, row: LedgerRow, sha256: str) -> LedgerRow:
        """``row`` with ``sha256`` recorded (written only when the row lacks it)."""
        if row.sha256 == sha256:
            return row
        return await self.ledger.set_sha256(row.id, sha256)

    async def _not_sent(
        self,
        plan: InboxPlan,
        opened: OpenedFile,
        current: LedgerRow,
        failure: RejectedFile | Parked,
        *,
        sha256: str,
        unsure: set[tuple[str, str]],
    ) -> Result:
        """The dispatcher gave up (quarantine) or parked the file; unless it changed meanwhile,
        or an ambiguous attempt may have stored it after all.

        A parked file (every transient failure, an attempt that no listing settled yet) stays
        in its inbox, ``pending`` with ``not_before``; only a rejection quarantines.
        """
        if not _same_inode(opened) or not opened.unchanged():
            # Changed while being sent (the client's size check fails every attempt, or the
            # name now holds another file): back to settle, never a quarantine.
            await self.ledger.transition(current.id, PENDING)
            return Result("changed")
        # An attempt ended ambiguously (a reset after the body was sent) and no listing settled
        # it: never quarantine, nor send again later, a file the provider may hold. (A failed
        # extraction's copy is no upload: the dispatcher deleted what it could list.)
        if isinstance(failure, RejectedFile) and failure.reason == "extract_failed":
            unsure = set()
        try:
            found = await self.reconciler.find_any(current, unsure)
        except ProviderError as exc:
            return self.relist_later(plan, current, exc)  # the row stays ``uploading``
        if found is not None:
            result = UploadResult(remote=found, transport="reconcile")
            return await self._uploaded(plan, opened, current, result, 0.0)
        if isinstance(failure, Parked):
            return await self.outcomes.park(plan, opened.path, current, failure, sha256)
        return await self.outcomes.reject(
            plan,
            opened.path,
            current.relpath,
            failure,
            row=current,
            sha256=sha256,
            expect=opened.identity,
        )

    async def _uploaded(
        self,
        plan: InboxPlan,
        opened: OpenedFile,
        current: LedgerRow,
        result: UploadResult,
        elapsed: float,
    ) -> Result:
        remote = result.remote
        if not opened.unchanged():
            # Changed while being sent: the remote copy is not what is on disk now.
            await self.clients[remote.provider].delete(remote.id)
            await self.ledger.transition(current.id, PENDING, file_id=None)
            return Result("changed")
        uploaded = await self.ledger.transition(
            current.id,
            UPLOADED,
            provider=remote.provider,
            purpose=remote.purpose,
            file_id=remote.id,
            remote_bytes=remote.bytes,
            transport=result.transport,
        )
        self.events.upload_stored(remote.provider, remote.bytes, elapsed)
        logger.info(
            "uploaded",
            extra={
                "inbox": plan.name,
                "file": uploaded.relpath,
                "provider": remote.provider,
                "file_id": remote.id,
                "size": remote.bytes,
                "duration": round(elapsed, 3),
                "transport": result.transport,
            },
        )
        return await self.finisher.finish(plan, opened, uploaded, "uploaded")

    def relist_later(self, plan: InboxPlan, row: LedgerRow, exc: ProviderError) -> Result:
        """The provider's listing failed: the row stays ``uploading`` until it can be listed."""
        logger.warning(
            "cannot list the provider's files to settle an interrupted upload (%s); "
            "trying again in %.0f s",
            exc,
            self.relist_delay,
            extra={"inbox": plan.name, "file": row.relpath, "provider": row.provider},
        )
        return Result("parked", park_until=self.clock() + self.relist_delay)


def _same_inode(opened: OpenedFile) -> bool:
    """The path still names the file we opened (quarantine moves by path)."""
    try:
        st = opened.path.lstat()
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (opened.dev, opened.ino)


def _content_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"

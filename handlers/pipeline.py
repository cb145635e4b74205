"""The path of one file: validate, hash, dedupe, intent, upload, re-check, finish.

Every ledger transition is committed before the next side effect (design.md, "the path of
one file"): the intent (``uploading``) before any byte is sent, ``uploaded`` before the file
is moved, so a crash at any point leaves a row that ``recover`` can finish without sending a
file twice. How a file ends (archived, deleted, quarantined, parked) is ``handlers.outcomes``.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

import anyio

from handlers.budget import ByteBudget
from handlers.finishing import Finisher
from handlers.hashing import sha256_file
from handlers.ledger import PENDING, UPLOADED, UPLOADING, Ledger, LedgerRow
from handlers.outcomes import InboxPlan, Outcome, Outcomes, Result
from handlers.reconcile import Reconciler
from handlers.stages import stage, staged
from handlers.validate import FileBusy, FileVanished, OpenedFile, Opener, Refused, open_for_upload
from providers.dispatch import Parked
from providers.errors import ProviderError, RejectedFile
from providers.limits import ProviderLimits
from providers.router import route
from providers.types import RemoteFile, UploadClient, UploadResult

__all__ = [
    "InboxPlan",
    "Outcome",
    "Pipeline",
    "PipelineEvents",
    "RecoverErrors",
    "Result",
    "Uploader",
]

logger = logging.getLogger(__name__)


class Uploader(Protocol):
    """The resilience layer as the pipeline sees it (``providers.dispatch.Dispatcher``)."""

    async def upload(
        self,
        *,
        preference: Sequence[str],
        purposes: Mapping[str, str],
        filename: str,
        size: int,
        content_type: str,
        open_file: Callable[[], BinaryIO],
        before_attempt: Callable[[str, str], Awaitable[None]],
        reconcile: Callable[[str, str], Awaitable[RemoteFile | None]],
        first_tried: float | None = None,
        attempts: int = 0,
    ) -> UploadResult: ...


class PipelineEvents(Protocol):
    """What the pipeline reports (``daemon.ops.metrics.Metrics`` is the real one)."""

    def quarantined(self, reason: str) -> None: ...

    def duplicate(self) -> None: ...

    def upload_stored(self, provider: str, nbytes: int, seconds: float) -> None:
        """A file is stored remotely (the dispatcher counts the calls themselves)."""

    def inflight_bytes(self, n: int) -> None: ...


class Pipeline:
    """Takes one settled file all the way; stateless between files."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        uploader: Uploader,
        clients: Mapping[str, UploadClient],
        limits: Mapping[str, ProviderLimits],
        budget: ByteBudget,
        events: PipelineEvents,
        skew: float = 300.0,
        clock: Callable[[], float] = time.time,
        relist_delay: float = 5.0,
        busy_delay: float = 5.0,
        opener: Opener = os.open,
        content_locks: dict[str, tuple[anyio.Lock, int]] | None = None,
    ) -> None:
        """``relist_delay``: seconds before a file whose provider could not be listed is
        tried again; ``busy_delay``: before a file that could not be opened for now (out of
        file descriptors, EAGAIN) is; ``opener`` opens inbox files (tests inject failures);
        ``content_locks``: the per-content lock table, shared by the pipelines of every config
        generation (a reload) so two copies of one file never upload at once."""
        self.ledger = ledger
        self.uploader = uploader
        self.clients = clients
        self.limits = limits
        self.budget = budget
        self.events = events
        self.skew = skew
        self.clock = clock
        self.relist_delay = relist_delay
        self.busy_delay = busy_delay
        self.opener = opener
        self._locks = {} if content_locks is None else content_locks
        self.reconciler = Reconciler(ledger=ledger, clients=clients, skew=skew)
        self.outcomes = Outcomes(ledger=ledger, events=events, clock=clock)
        self.finisher = Finisher(
            ledger=ledger,
            outcomes=self.outcomes,
            clients=clients,
            clock=clock,
            relist_delay=relist_delay,
        )

    def acceptor(self, plan: InboxPlan) -> Callable[[int, str], tuple[str, str] | None]:
        """The router's verdict on size and type, ignoring availability (a file is never
        rejected because a provider is down, only because none could ever take it)."""

        def accept(size: int, extension: str) -> tuple[str, str] | None:
            return route(
                preference=plan.providers,
                size=size,
                extension=extension,
                purposes=plan.purposes,
                limits=self.limits,
                availability=dict.fromkeys(plan.providers),
            ).rejection

        return accept

    async def process(self, plan: InboxPlan, path: Path, relpath: str) -> Result:
        """Bring the file at ``path`` (``relpath`` inside the inbox) as far as it can go now."""
        try:
            with stage("open"):
                opened = await anyio.to_thread.run_sync(
                    lambda: open_for_upload(path, accept=self.acceptor(plan), opener=self.opener)
                )
        except RejectedFile as rejected:
            expect = rejected.identity if isinstance(rejected, Refused) else None
            return await self.outcomes.reject(
                plan, path, relpath, rejected, row=None, sha256=None, expect=expect
            )
        except FileVanished:
            return Result("vanished")
        except FileBusy as busy:
            logger.warning("%s", busy)
            return Result("busy", park_until=self.clock() + self.busy_delay)
        with opened:
            return await self._accepted(plan, opened, relpath)

    @staged("ledger")  # its steps tag their own stages; what is left is ledger work
    async def _accepted(self, plan: InboxPlan, opened: OpenedFile, relpath: str) -> Result:
        row = await self.ledger.begin(
            plan.name, relpath, size=opened.size, mtime_ns=opened.mtime_ns
        )
        if row.state in {UPLOADING, UPLOADED}:
            resumed = await self._resume(plan, opened, row)
            if isinstance(resumed, Result):
                return resumed
            row = resumed
        now = self.clock()
        if row.not_before is not None and row.not_before > now:
            return Result("parked", park_until=row.not_before)
        with stage("hash"):
            sha256 = row.sha256 or await sha256_file(opened.rewind(), size=opened.size)
        if not opened.unchanged():
            return Result("changed")
        # A new hash is written with the upload's intent (one transaction, not two); every
        # path that ends without an intent writes it first (``_keep_sha256``). Until then it
        # is only a cache: dedupe reads the hashes of uploaded/done rows alone.
        async with self._content_lock(sha256):  # same content: one upload, then duplicates
            if plan.dedupe:
                duplicate = await self._dedupe(plan, opened, row, sha256)
                if duplicate is not None:
                    return duplicate
            return await self._upload(plan, opened, row, sha256)

    async def _resume(
        self, plan: InboxPlan, opened: OpenedFile, row: LedgerRow
    ) -> Result | LedgerRow:
        """Finish an ``uploaded`` row; settle an ``uploading`` one (left by a crash) first.

        A row whose upload was of an earlier file at this name (other size, mtime or content)
        is closed, and this file starts a row of its own (``Finisher.resume``).
        """
        if row.state == UPLOADING:  # find the copy the interrupted upload may have stored
            try:
                row = await self.reconciler.settle(row)
            except ProviderError as exc:
                return self._relist_later(plan, row, exc)
        if row.state == UPLOADED:
            ended = await self.finisher.resume(plan, opened, row)
            if ended is not None:
                return ended
        return await self.ledger.begin(
            plan.name, row.relpath, size=opened.size, mtime_ns=opened.mtime_ns
        )

    @asynccontextmanager
    async def _content_lock(self, sha256: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(sha256, (anyio.Lock(), 0))
        self._locks[sha256] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[sha256]
            if users == 1:
                del self._locks[sha256]
            else:
                self._locks[sha256] = (lock, users - 1)

    async def _dedupe(
        self, plan: InboxPlan, opened: OpenedFile, row: LedgerRow, sha256: str
    ) -> Result | None:
        for provider in plan.providers:
            purpose = plan.purposes[provider]
            original = await self.ledger.find_uploaded(sha256, provider, purpose)
            if original is None or original.id == row.id:
                continue
            row = await self._keep_sha256(row, sha256)
            return await self.outcomes.duplicate(
                plan,
                opened.path,
                row,
                original,
                provider=provider,
                purpose=purpose,
                sha256=sha256,
                size=opened.size,
                expect=opened.identity,
            )
        return None

    @staged("upload")
    async def _upload(
        self, plan: InboxPlan, opened: OpenedFile, row: LedgerRow, sha256: str
    ) -> Result:
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
                result = await self.uploader.upload(
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
                current = await self._keep_sha256(current, sha256)  # when no attempt was made
                return await self._not_sent(
                    plan, opened, current, failure, sha256=sha256, unsure=unsure
                )
            finally:
                self.events.inflight_bytes(self.budget.in_use - opened.size)
        elapsed = anyio.current_time() - started
        return await self._uploaded(plan, opened, current, result, elapsed)

    async def _keep_sha256(self, row: LedgerRow, sha256: str) -> LedgerRow:
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
            return self._relist_later(plan, current, exc)  # the row stays ``uploading``
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

    def _relist_later(self, plan: InboxPlan, row: LedgerRow, exc: ProviderError) -> Result:
        """The provider's listing failed: the row stays ``uploading`` until it can be listed."""
        logger.warning(
            "cannot list the provider's files to settle an interrupted upload (%s); "
            "trying again in %.0f s",
            exc,
            self.relist_delay,
            extra={"inbox": plan.name, "file": row.relpath, "provider": row.provider},
        )
        return Result("parked", park_until=self.clock() + self.relist_delay)

    async def recover(
        self, plans: Mapping[str, InboxPlan], *, on_error: RecoverErrors | None = None
    ) -> None:
        """At start: settle rows a crash left ``uploading``; finish rows left ``uploaded``.

        A row whose provider cannot be listed now stays ``uploading``: processing the file
        settles it later (never a second copy, never a crash at start). An unexpected error
        of one row (or of settling the interrupted batch: row None) goes to ``on_error``,
        and recovery goes on with the next; ``on_error`` raises to stop (default: raise).
        """
        settle = []
        for row in await self.ledger.rows_in_state(UPLOADING):
            if row.inbox in plans and row.provider in self.clients:
                settle.append(row)
                continue
            logger.warning(
                "interrupted upload of %s in inbox %s: its inbox or provider is no longer "
                "configured; left as it is",
                row.relpath,
                row.inbox,
            )
        try:
            await self.reconciler.settle_interrupted(settle)
        except Exception as exc:
            _recover_failed(on_error, None, exc)
        for row in await self.ledger.rows_in_state(UPLOADED):
            plan = plans.get(row.inbox)
            if plan is None:
                continue
            try:
                await self.finisher.recover(plan, row)  # the same check as a live finish
            except Exception as exc:
                _recover_failed(on_error, row, exc)


RecoverErrors = Callable[[LedgerRow | None, Exception], None]


def _recover_failed(on_error: RecoverErrors | None, row: LedgerRow | None, exc: Exception) -> None:
    if on_error is None:
        raise exc
    on_error(row, exc)


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

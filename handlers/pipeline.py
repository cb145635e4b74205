"""The path of one file: validate, hash, dedupe, intent, upload, re-check, finish.

Every ledger transition is committed before the next side effect (design.md, "the path of
one file"): the intent (``uploading``) before any byte is sent, ``uploaded`` before the file
is moved, so a crash at any point leaves a row that ``recover`` can finish without sending a
file twice. The upload step is ``handlers.sending``; how a file ends (archived, deleted,
quarantined, parked), ``handlers.outcomes``; its text and remote copy after the upload,
``handlers.extract``; recovery at start, ``handlers.recovery``.

Several hosts may share one inbox and one ledger (a fleet): ``begin`` claims the file's row for
this host. A row another host holds (its lease live) parks the file until the lease ends
(``ClaimedElsewhere``); by then that host archived it (vanished) or died (taken over). A file
that another host archived between our open and our claim is no longer named by its path: it
ends as ``vanished`` (``changed`` when a new file took the name), never sent. A row taken
from us meanwhile (``ClaimLost``: we stalled past our lease) is left to its new owner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio

from handlers.budget import ByteBudget
from handlers.extract import ExtractLater, RemoteDeleter, TextAndRelease, TextSource, remote_of
from handlers.finishing import Finisher
from handlers.hashing import sha256_file
from handlers.ledger import DONE, PENDING, UPLOADED, UPLOADING, Ledger, LedgerRow
from handlers.outcomes import InboxPlan, Outcome, Outcomes, Result
from handlers.ports import ContentClaims, PipelineEvents, Uploader
from handlers.reconcile import Reconciler
from handlers.recovery import RecoverErrors, recover
from handlers.sending import Sender
from handlers.stages import stage, staged
from handlers.validate import OpenedFile, Opener, Refused, open_for_upload
from providers.errors import (
    ClaimedElsewhere,
    ClaimLost,
    FileBusy,
    FileVanished,
    InvalidTransition,
    ProviderError,
    Refusal,
    RejectedFile,
)
from providers.limits import ProviderLimits
from providers.router import route
from providers.types import UploadClient

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

_LEFT = "the file left its inbox before it was uploaded"


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
        extractors: Mapping[str, TextSource] | None = None,
        deleter: RemoteDeleter | None = None,
        extract_delay: float = 60.0,
        content_locks: dict[str, tuple[anyio.Lock, int]] | None = None,
        lost_park: float = 30.0,
        content_claims: ContentClaims | None = None,
    ) -> None:
        """``relist_delay``: seconds before a file whose provider could not be listed is
        tried again; ``busy_delay``: before a file that could not be opened for now (out of
        file descriptors, EAGAIN) is; ``opener`` opens inbox files (tests inject failures).
        ``extractors`` fetch each provider's text (inboxes with ``extract``), ``deleter``
        deletes remote copies (``keep_remote = false``); ``extract_delay``: seconds before a
        text that could not be fetched is tried again (or the provider's longer wait);
        ``content_locks``: the per-content lock table, shared by the pipelines of every config
        generation (a reload) so two copies of one file never upload at once; ``lost_park``:
        seconds a file whose row another host took from us waits before it is looked at again
        (a lease: by then its new owner finished it or died); ``content_claims``: the fleet's
        shared locks on content (None for a host alone): a content another host is uploading
        waits ``busy_delay``, then is looked at again (a duplicate of that upload by then)."""
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
        self.lost_park = lost_park
        self.content_claims = content_claims
        self._locks = {} if content_locks is None else content_locks
        self.reconciler = Reconciler(ledger=ledger, clients=clients, skew=skew)
        self.outcomes = Outcomes(ledger=ledger, events=events, clock=clock)
        self.remote = TextAndRelease(
            ledger=ledger,
            extractors=extractors or {},
            deleter=deleter,
            events=events,
            clock=clock,
            delay=extract_delay,
        )
        self.finisher = Finisher(
            ledger=ledger,
            outcomes=self.outcomes,
            clients=clients,
            remote=self.remote,
            clock=clock,
            relist_delay=relist_delay,
        )
        self.sender = Sender(
            ledger=ledger,
            clients=clients,
            budget=budget,
            events=events,
            reconciler=self.reconciler,
            outcomes=self.outcomes,
            finisher=self.finisher,
            clock=clock,
            relist_delay=relist_delay,
        )

    def acceptor(self, plan: InboxPlan) -> Callable[[int, str], Refusal | None]:
        """The router's verdict on size and type, ignoring availability (a file is never
        rejected because a provider is down, only because none could ever take it)."""

        def accept(size: int, extension: str) -> Refusal | None:
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
            try:
                return await self._accepted(plan, opened, relpath)
            except ClaimLost as lost:  # our lease ran out and another host took the row
                logger.warning(
                    "%s; the file is left to that host", lost, extra=_file(plan, relpath)
                )
                return Result("parked", park_until=self.clock() + self.lost_park)

    @staged("ledger")  # its steps tag their own stages; what is left is ledger work
    async def _accepted(self, plan: InboxPlan, opened: OpenedFile, relpath: str) -> Result:
        row = await self._claim(plan, opened, relpath)
        if isinstance(row, Result):
            return row
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
        # path that ends without an intent writes it first (``Sender.keep_sha256``). Until then it
        # is only a cache: dedupe reads the hashes of uploaded/done rows alone.
        # Same content: one upload (on one host of a fleet), then duplicates.
        async with self._content_lock(sha256), self._fleet_content(sha256) as ours:
            return await self._dedupe_or_send(plan, opened, row, sha256, ours=ours)

    async def _dedupe_or_send(
        self, plan: InboxPlan, opened: OpenedFile, row: LedgerRow, sha256: str, *, ours: bool
    ) -> Result:
        if not ours:  # another host is uploading this content now
            return Result("parked", park_until=self.clock() + self.busy_delay)
        if plan.dedupe:
            duplicate = await self._dedupe(plan, opened, row, sha256)
            if duplicate is not None:
                return duplicate
        return await self.sender.send(self.uploader, plan, opened, row, sha256)

    @asynccontextmanager
    async def _fleet_content(self, sha256: str) -> AsyncIterator[bool]:
        """Hold the fleet's lock on this content (True), or find another host holding it
        (False); a host alone always holds it. Released (shielded) on the way out."""
        claims = self.content_claims
        if claims is None:
            yield True
            return
        name = f"content:{sha256}"
        held = await claims.hold(name, ttl=self.lost_park)
        if not held:
            logger.info("another host is uploading the same content now; looking again soon")
        try:
            yield held
        finally:
            if held:
                with anyio.CancelScope(shield=True):
                    await claims.release(name)

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
                return self.sender.relist_later(plan, row, exc)
        if row.state == UPLOADED:
            ended = await self.finisher.resume(plan, opened, row)
            if ended is not None:
                return ended
        return await self.ledger.begin(
            plan.name, row.relpath, size=opened.size, mtime_ns=opened.mtime_ns
        )

    async def _claim(self, plan: InboxPlan, opened: OpenedFile, relpath: str) -> LedgerRow | Result:
        """The file's row, claimed for this host; or how the file ends now: parked behind
        another host's claim or until its text is due, changed (a new file took its name since
        our open), or vanished (gone since: another host archived it)."""
        try:
            row = await self.ledger.begin(
                plan.name, relpath, size=opened.size, mtime_ns=opened.mtime_ns
            )
        except ClaimedElsewhere as claimed:
            logger.debug("%s; the file waits", claimed, extra=_file(plan, relpath))
            return Result("parked", park_until=claimed.lease_until)
        if row.state == UPLOADED and row.not_before is not None and row.not_before > self.clock():
            return Result("parked", park_until=row.not_before)  # uploaded, its text due then
        if row.state != PENDING:
            return row
        named = await anyio.to_thread.run_sync(opened.named_now)
        if named == "same":
            return row
        if named == "replaced":  # a new file took the name: it is looked at afresh
            return Result("changed")
        # Gone since our open (another host archived it): nothing is sent, the row is closed.
        with contextlib.suppress(InvalidTransition):  # moved on meanwhile: its mover finishes it
            await self.ledger.transition(
                row.id, DONE, reason="vanished", detail=_LEFT, file_id=None, final_path=None
            )
        return Result("vanished")

    def content_lock(self, sha256: str) -> AbstractAsyncContextManager[None]:
        """Held while this content is deduped or uploaded; ``daemon.remote`` holds it to
        record the deletion of its remote copy, so no duplicate is archived pointing at a
        copy deleted behind its back."""
        return self._content_lock(sha256)

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
            row = await self.sender.keep_sha256(row, sha256)
            extraction = None
            if plan.extract:  # the text of the copy this file shares
                got = await self.remote.text(plan.name, row, remote_of(original), opened.rewind())
                if isinstance(got, ExtractLater):
                    return Result("parked", park_until=await self.remote.later(row, got))
                extraction = got
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
                extraction=extraction,
            )
        return None

    async def recover(
        self,
        plans: Mapping[str, InboxPlan],
        *,
        on_error: RecoverErrors | None = None,
        host: str | None = None,
    ) -> None:
        """At start: settle rows a crash left ``uploading``; finish rows left ``uploaded``
        (``handlers.recovery``); ``host`` given, only the rows a dead host of the fleet left
        whose file is gone from its inbox (a takeover pass)."""
        await recover(
            self.ledger,
            self.reconciler,
            self.finisher,
            clients=self.clients,
            plans=plans,
            now=self.clock(),
            on_error=on_error,
            host=host,
        )


def _file(plan: InboxPlan, relpath: str) -> dict[str, str]:
    return {"inbox": plan.name, "file": relpath}

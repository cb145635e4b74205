"""One retention pass over one provider's account: list, settle open intents, plan, delete.

At most one pass per provider runs at a time (a lock per provider). The listing is taken
once per pass; the plan is ``daemon.remote.plan``; each deletion goes through
``daemon.remote.deletions.delete_recorded``. A DELETE that fails (a passing error) ends the
pass: its intent stays open and the next pass settles it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import anyio

from daemon.remote.deletions import (
    Checkpoint,
    DeletionEvents,
    delete_recorded,
    no_checkpoint,
    settle_intents,
)
from daemon.remote.ledger import RemoteLedger
from daemon.remote.plan import (
    Deletion,
    RetentionLimits,
    find_orphans,
    plan_deletions,
    short_of,
)
from daemon.state.store import Store
from providers.errors import ProviderError
from providers.types import RemoteFile, UploadClient

__all__ = ["ContentLock", "PassReport", "Pruner", "Room", "no_room", "nothing_busy"]

ContentLock = Callable[[str], AbstractAsyncContextManager[None]]
# (files, bytes) a pass leaves free under the limits of a provider: the uploads being sent or
# waiting for room (``daemon.remote.admission``).
Room = Callable[[str], tuple[int, int]]


def no_room(provider: str) -> tuple[int, int]:
    """No upload waits for room (``inboxd remote prune``, tests)."""
    return (0, 0)


def nothing_busy() -> Collection[str]:
    """No content is held by a pipeline (no pipeline runs here)."""
    return ()


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassReport:
    """What one pass did (or, ``dry_run``, would do); ``files``/``bytes``: the account after
    it. ``error``: the DELETE that failed and ended the pass early (None: it ran whole).
    ``short``: the account is still over the limits less the room asked for."""

    provider: str
    deletions: tuple[Deletion, ...]
    done: tuple[Deletion, ...]
    files: int
    bytes: int
    dry_run: bool
    error: str | None = None
    short: bool = False


class Pruner:
    """Runs retention passes; one Store, the clients, each provider's retention limits."""

    def __init__(
        self,
        *,
        store: Store,
        clients: Mapping[str, UploadClient],
        limits: Mapping[str, RetentionLimits],  # read at each pass: a reload may change it
        skew: float,
        events: DeletionEvents | None = None,
        clock: Callable[[], float] = time.time,
        checkpoint: Checkpoint = no_checkpoint,
        content_lock: ContentLock | None = None,
        room: Room = no_room,
        busy: Callable[[], Collection[str]] = nothing_busy,
    ) -> None:
        """``content_lock(sha256)``: the pipeline's lock on a content (``delete_recorded``'s
        ``hold``); None where no pipeline runs (``inboxd remote prune``). ``room(provider)``:
        the room a pass leaves for uploads; ``busy()``: the contents the pipeline holds now."""
        self.store = store
        self.clients = clients
        self.limits = limits
        self.skew = skew
        self.events = events
        self.clock = clock
        self.checkpoint = checkpoint
        self.content_lock = content_lock
        self.room = room
        self.busy = busy
        self.ledger = RemoteLedger(store)
        self._locks: dict[str, anyio.Lock] = {}

    def lock(self, provider: str) -> anyio.Lock:
        """The lock that lets one pass at a time run over ``provider``'s account."""
        return self._locks.setdefault(provider, anyio.Lock())

    async def plan(
        self, provider: str, files: list[RemoteFile], *, room: tuple[int, int] = (0, 0)
    ) -> list[Deletion]:
        """The deletions the rules call for over this listing, leaving ``room`` (files,
        bytes) under the limits (nothing is written)."""
        recorded = await self.ledger.deletions(provider)
        live = [f for f in files if f.id not in recorded]
        ids = [f.id for f in live]
        owned = await self.ledger.owners(provider, ids)
        orphans: list[Deletion] = []
        if live:
            since = min(f.created_at for f in live) - self.skew
            orphans = find_orphans(
                live,
                await self.ledger.attempts(provider, since=since),
                claimed=await self.ledger.claimed(provider, ids),
                skew=self.skew,
                protect=await self.ledger.active_attempts(provider),
            )
        limits = self.limits.get(provider, RetentionLimits())
        return plan_deletions(
            live,
            owned,
            limits,
            now=self.clock(),
            orphans=orphans,
            room=room,
            busy=self.busy(),
        )

    async def run(self, provider: str, *, dry_run: bool = False) -> PassReport:
        """One pass over ``provider`` (waits for a running one to end first).

        Raises ProviderError when the account cannot be listed.
        """
        client = self.clients[provider]
        async with self.lock(provider):
            files = await client.list_files()
            if not dry_run:
                await settle_intents(
                    self.store,
                    client,
                    files,
                    now=self.clock(),
                    events=self.events,
                    checkpoint=self.checkpoint,
                )
            recorded = await self.ledger.deletions(provider)
            live = [f for f in files if f.id not in recorded]
            room = self.room(provider)
            deletions = await self.plan(provider, files, room=room)
            done: list[Deletion] = []
            error: str | None = None
            if not dry_run:
                for deletion in deletions:
                    try:
                        await self._delete(client, deletion)
                    except ProviderError as exc:
                        error = f"deleting {deletion.file.id} failed: {exc}"
                        logger.warning(
                            "%s: retention pass stopped early (%s); the next pass goes on",
                            provider,
                            error,
                        )
                        break
                    done.append(deletion)
            gone = {d.file.id for d in (deletions if dry_run else done)}
            kept = [f for f in live if f.id not in gone]
            limits = self.limits.get(provider, RetentionLimits())
            return PassReport(
                provider=provider,
                deletions=tuple(deletions),
                done=tuple(done),
                files=len(kept),
                bytes=sum(f.bytes for f in kept),
                dry_run=dry_run,
                error=error,
                short=short_of(len(kept), sum(f.bytes for f in kept), limits, room),
            )

    async def _delete(self, client: UploadClient, deletion: Deletion) -> None:
        sha256 = None if deletion.owner is None else deletion.owner.sha256
        hold = None
        if self.content_lock is not None and sha256 is not None:
            hold = self.content_lock(sha256)
        await delete_recorded(
            self.store,
            client,
            deletion.file.id,
            deletion.reason,
            self.clock(),
            ledger_id=deletion.ledger_id,
            remote=deletion.file,
            events=self.events,
            checkpoint=self.checkpoint,
            hold=hold,
        )

"""When retention passes run in a daemon: at start, every ``rescan_interval``, before an
upload that would take the account over a limit, and on a quota answer from a provider with
retention set.

Passes are requested, not awaited: ``request(provider)`` starts one in the background,
unless one is already waiting to run (at most one running and one queued per provider, so a
burst of uploads or quota answers costs one extra pass). Requests made before ``start`` run
once it is called. ``gate`` (``daemon.remote.admission``) holds each upload until the
account has room for it: it asks for passes, and each pass makes room for the uploads being
sent or waiting. When any pass deleted something while the provider's breaker is open for
``quota``, ``on_room(provider)`` lets the parked files go again (the daemon closes the
breaker and rescans); a pass that freed nothing leaves them parked, so an account full of
files inboxd did not upload never loops.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup
from prometheus_client import CollectorRegistry

from daemon.config.settings import Settings
from daemon.remote.admission import Admission
from daemon.remote.config import retention_limits
from daemon.remote.deletions import delete_recorded
from daemon.remote.metrics import RemoteMetrics
from daemon.remote.plan import RetentionLimits
from daemon.remote.prune import ContentLock, PassReport, Pruner
from daemon.remote.room import Usage, pass_room
from daemon.state.store import Store
from handlers.ledger import LedgerRow
from providers.errors import ConfigError, ProviderError, StateError
from providers.types import BreakerStore, UploadClient

__all__ = ["RemoteSide", "build_remote_side"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

HOLD_TTL = 60.0
BUSY_WAIT = 5.0


class RemoteSide:
    """The daemon's retention passes: requested from anywhere, run in ``tasks``."""

    def __init__(
        self,
        pruner: Pruner,
        *,
        limits: dict[str, RetentionLimits],
        breakers: BreakerStore,
        on_room: Callable[[str], Awaitable[None]],
        hold_ttl: float = HOLD_TTL,
        busy_wait: float = BUSY_WAIT,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        """``hold_ttl``: seconds the retention lock is held for (renewed every third of it
        while a pass runs); ``busy_wait``: seconds a pass skipped for another host's lasts."""
        self.pruner = pruner
        self.hold_ttl = hold_ttl
        self.busy_wait = busy_wait
        self._sleep = sleep
        self.limits = limits
        self.breakers = breakers
        self.on_room = on_room
        # Room for uploads on each limited account (one count of what inboxd stored).
        self.gate = Admission(limits)
        pruner.room = self._room
        # Bumped after each ``on_room``: a file parked by a read from before it goes again.
        self.rooms = 0
        # Set (and replaced) after each pass: tests and benchmarks wait on it, never on time.
        self.passed = anyio.Event()
        self._queued: set[str] = set()
        self._early: set[str] = set()  # requested before ``start``
        self._tasks: TaskGroup | None = None
        # This host's passes over one account, one at a time around the shared lock: the
        # first one's release must not drop the lock under a second one of ours.
        self._holders: dict[str, anyio.Lock] = {}

    @property
    def usage(self) -> dict[str, Usage]:
        """Each limited account's known usage (the last listing plus what was stored since)."""
        return self.gate.known

    def _room(self, provider: str) -> tuple[int, int]:
        return pass_room(self.gate.wanted(provider), self.limits.get(provider, RetentionLimits()))

    def configure(
        self, settings: Settings, clients: Mapping[str, UploadClient] | None = None
    ) -> None:
        """Take the retention limits of reloaded ``settings`` and its ``clients`` (the next
        pass applies them)."""
        if clients is not None:
            self.pruner.clients = clients
        fresh = retention_limits(settings)
        self.limits.clear()
        self.limits.update(fresh)
        self.gate.wake()  # uploads waiting for room go by the new limits
        if isinstance(self.pruner.events, RemoteMetrics):
            for provider in fresh:
                self.pruner.events.add_provider(provider)

    async def delete(self, provider: str, file_id: str, *, reason: str) -> None:
        """Delete one remote copy through the recorded path (``handlers.extract``'s
        ``RemoteDeleter``: ``keep_remote = false``); ProviderError when it cannot now."""
        await delete_recorded(
            self.pruner.store,
            self.pruner.clients[provider],
            file_id,
            reason,
            self.pruner.clock(),
            events=self.pruner.events,
        )

    def start(self, tasks: TaskGroup) -> None:
        """Run passes in ``tasks`` from now on (the ones requested before run now)."""
        self._tasks = tasks
        for provider in sorted(self._early):
            self.request(provider)
        self._early.clear()

    def passes_here(self) -> None:
        """Passes will run in this process (``start`` is coming): uploads wait for room."""
        self.gate.request = self.request

    @property
    def providers(self) -> list[str]:
        """Providers with retention configured."""
        return [name for name, limits in self.limits.items() if _configured(limits)]

    def request(self, provider: str) -> bool:
        """Queue a pass over ``provider``; False when one was already queued or retention is
        not set for it."""
        if provider not in self.providers:
            return False
        if self._tasks is None:
            self._early.add(provider)
            return True
        if provider in self._queued:
            return False
        self._queued.add(provider)
        self._tasks.start_soon(self._queued_pass, provider)
        return True

    async def after_file(self, outcome: str, row: LedgerRow | None, *, rooms: int) -> bool:
        """Hook for each file's outcome: a parked file whose provider's breaker is open for
        ``quota`` asks for a pass that lets it go once there is room (uploads are counted by
        ``gate``, when they are sent).

        ``rooms``: ``self.rooms`` when the file was taken up. True: the file was parked
        while room was being made (it read its wait from before): offer it again now.
        """
        if outcome == "parked":
            for provider in self.providers:
                if await self._quota_parked(provider):
                    self.request(provider)
            return self.rooms != rooms
        return False

    async def _quota_parked(self, provider: str) -> bool:
        record = await self.breakers.load_breaker(provider)
        return record is not None and record.state != "closed" and record.reason == "quota"

    async def run_all(self) -> None:
        """A pass over every provider with retention (at start and every rescan_interval)."""
        for provider in self.providers:
            await self.run(provider)

    async def run(self, provider: str) -> PassReport | None:
        """One pass now (waiting for a running one); None when the account cannot be listed."""
        seq = self.gate.pass_started(provider)
        report: PassReport | None = None
        skipped = False
        try:
            held = await self._holding(provider, lambda: self.pruner.run(provider))
            skipped = held is None
            if held is None:
                return None
            report = held[0]
        except ProviderError as exc:
            logger.warning("%s: retention pass skipped, cannot list the account: %s", provider, exc)
            return None
        except (StateError, ConfigError, sqlite3.Error):
            raise  # the state file failed: a fault of the daemon itself
        except Exception:  # a bug in a pass must not stop the uploads: the next pass tries again
            logger.exception("%s: retention pass failed; the next one tries again", provider)
            return None
        finally:
            after = None if report is None else Usage(report.files, report.bytes)
            self.gate.pass_ended(
                provider,
                seq,
                after,
                freed=report is not None and bool(report.done),
                short=not skipped and (report is None or report.short),
            )
            self.passed.set()
            self.passed = anyio.Event()
        if report.done and await self._quota_parked(provider):
            await self.on_room(provider)
            self.rooms += 1
        if report.done:
            logger.info(
                "%s: retention pass deleted %d remote file(s); the account holds %d file(s), "
                "%d bytes",
                provider,
                len(report.done),
                report.files,
                report.bytes,
            )
        return report

    async def _holding(self, provider: str, fn: Callable[[], Awaitable[T]]) -> tuple[T] | None:
        """``(fn(),)`` run while this host holds ``retention:<provider>``; None (after
        ``busy_wait``) when another host holds it."""
        async with self._holders.setdefault(provider, anyio.Lock()):
            return await self._held(provider, fn)

    async def _held(self, provider: str, fn: Callable[[], Awaitable[T]]) -> tuple[T] | None:
        store = self.pruner.store
        name = f"retention:{provider}"
        if not await store.hold(name, ttl=self.hold_ttl):
            logger.debug("%s: retention pass skipped: another host holds %s", provider, name)
            await self._sleep(self.busy_wait)
            return None
        done: list[T] = []
        failed: list[Exception] = []
        try:
            async with anyio.create_task_group() as tg:

                async def renew() -> None:
                    while True:
                        await anyio.sleep(self.hold_ttl / 3)
                        await store.hold(name, ttl=self.hold_ttl)

                tg.start_soon(renew)
                try:
                    done.append(await fn())
                except Exception as exc:  # raised below, outside the task group
                    failed.append(exc)
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await store.release(name)
        if failed:
            raise failed[0]
        return (done[0],)

    async def _queued_pass(self, provider: str) -> None:
        async with self.pruner.lock(provider):
            self._queued.discard(provider)  # a request from here on queues another pass
        await self.run(provider)


def _configured(limits: RetentionLimits) -> bool:
    return limits.max_files is not None or limits.max_bytes is not None or limits.max_age_days > 0


def build_remote_side(
    settings: Settings,
    *,
    store: Store,
    clients: Mapping[str, UploadClient],
    registry: CollectorRegistry,
    on_room: Callable[[str], Awaitable[None]],
    content_lock: ContentLock | None = None,
) -> RemoteSide:
    """The daemon's RemoteSide (``clients`` is the daemon's own dict: a reload updates it)."""
    limits = retention_limits(settings)
    pruner = Pruner(
        store=store,
        clients=clients,
        limits=limits,
        skew=settings.reconcile_skew,
        events=RemoteMetrics(registry, providers=settings.providers_in_use()),
        content_lock=content_lock,
    )
    # One dict shared by both: ``configure`` updates it in place on a reload.
    return RemoteSide(pruner, limits=limits, breakers=store, on_room=on_room)

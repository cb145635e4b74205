"""The daemon's periodic and on-demand operations on its current components: retention
passes, room made on an account, remote usage, the oldest waiting file, vanished rows, ledger
pruning, lease renewal (``Operations``, a base of ``daemon.runtime.daemon.Daemon``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from daemon.remote.ledger import RemoteLedger
from daemon.runtime.remote_usage import refresh_remote_usage
from daemon.runtime.vanished import close_vanished
from daemon.runtime.wiring import Components
from daemon.runtime.workers import Workers
from daemon.state.retention import prune_ledger

__all__ = ["Operations"]

logger = logging.getLogger(__name__)


class Operations:
    """What the daemon runs every so often, or when asked, on ``current()``'s components."""

    workers: Workers
    _clock: Callable[[], float]

    def current(self) -> Components:
        raise NotImplementedError

    async def retention_passes(self) -> None:
        """A retention pass over every provider with retention set (``daemon.remote``)."""
        await self.current().remote.run_all()

    async def room_on(self, provider: str) -> None:
        """A retention pass asked for by a quota answer made room on ``provider``: close its
        breaker and let the files parked behind it go now (``daemon.remote.service``)."""
        current = self.current()
        await current.dispatcher.reset_breaker(provider)
        released = await RemoteLedger(current.store).release_parked(provider)
        logger.info("%s: room made on the account; %d parked file(s) go again", provider, released)
        self.workers.wake_at(self._clock())

    async def refresh_remote_usage(self) -> dict[str, tuple[int, int]]:
        """List each provider in use once; a failure is a warning, never a crash."""
        current = self.current()
        return await refresh_remote_usage(
            current.settings.providers_in_use(), current.clients, current.metrics
        )

    async def refresh_oldest_pending(self) -> None:
        """Set ``inboxd_oldest_pending_seconds`` from the ledger (the status loop's tick)."""
        current = self.current()
        current.metrics.oldest_pending(await current.store.oldest_waiting(), now=self._clock())

    async def close_vanished(self) -> int:
        """Close waiting rows whose file left its inbox (``daemon.runtime.vanished``)."""
        current = self.current()
        return await close_vanished(current.store, current.plans, busy=self.workers.intake.busy)

    async def prune_ledger(self) -> int:
        """Prune finished ledger rows past ``ledger_retention_days`` (the current settings)."""
        current = self.current()
        return await prune_ledger(
            current.store, days=current.settings.ledger_retention_days, now=self._clock()
        )

    async def renew_leases(self) -> int:
        """Renew the leases of the rows this host works on (every third of a lease), so no
        other host of a fleet takes them over while this one is alive."""
        return await self.current().store.renew_leases()

"""The per-provider circuit breakers as the dispatcher sees them: load, permit, record, reset.

A thin async shell around the pure ``breaker`` module. Breaker records are read from the
``BreakerStore`` at every decision (so several processes on one state file see each other's
transitions), except that a CLOSED record read or written less than ``closed_ttl`` seconds ago is
reused (a reset from another process is seen within that time; OPEN/HALF_OPEN records are always
re-read). Records are sanitized on load, saved after every outcome that changes more than
``updated_at``, and the half-open probe is claimed only through ``BreakerStore.claim_probe`` (a
conditional UPDATE): two workers or two processes never both probe. All times are wall-clock
seconds from the injected ``clock``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import anyio

from providers.breaker import (
    CLOSED,
    HALF_OPEN,
    BreakerConfig,
    availability,
    claim,
    sanitize,
)
from providers.breaker import record as breaker_record
from providers.breaker import reset as breaker_reset
from providers.call_outcome import CallOutcome
from providers.events import ResilienceEvents
from providers.types import BreakerRecord, BreakerStore

__all__ = ["BreakerGate", "Permit"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Permit:
    """Whether a call to the provider may go now, whether it is the probe, else when to look."""

    allowed: bool
    probe: bool = False
    until: float | None = None


class BreakerGate:
    """Every provider's breaker, persisted in ``store``; a missing config is ``BreakerConfig()``.

    ``rand`` draws the open interval's jitter; ``probe_recheck`` bounds how long a file waits on
    another worker's probe before looking again.
    """

    def __init__(
        self,
        store: BreakerStore,
        configs: Mapping[str, BreakerConfig],
        events: ResilienceEvents,
        *,
        clock: Callable[[], float],
        rand: Callable[[], float],
        probe_recheck: float,
        closed_ttl: float,
    ) -> None:
        self._store = store
        self._configs = configs
        self._events = events
        self._clock = clock
        self._rand = rand
        self._probe_recheck = probe_recheck
        self._closed_ttl = closed_ttl
        self._records: dict[str, BreakerRecord] = {}
        # When each provider's record in ``_records`` was last read from or written to the store.
        self._synced: dict[str, float] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def reset(self, provider: str) -> None:
        """Close ``provider``'s breaker in the store."""
        async with self._lock(provider):
            fresh = breaker_reset(now=self._clock())
            await self._store.save_breaker(provider, fresh)
            self._note(provider, fresh)
            self._synced[provider] = self._clock()
        logger.warning("breaker of %s reset to closed", provider)

    async def states(self, providers: Iterable[str]) -> dict[str, BreakerRecord]:
        """Each of ``providers``' breaker records as it is in the store now (sanitized)."""
        return {provider: await self.load(provider) for provider in providers}

    async def load(self, provider: str, *, cached: bool = False) -> BreakerRecord:
        """The sanitized record from the store (``cached``: a fresh-enough CLOSED one may do)."""
        if cached:
            rec = self._cached(provider, self._clock())
            if rec is not None:
                return rec
        synced = self._clock()
        raw = await self._store.load_breaker(provider)
        if raw is None:
            rec = BreakerRecord()
        else:
            rec = sanitize(raw, now=self._clock(), config=self._config(provider))
            if rec != raw:
                # Persist the clamp so the store's conditional claim sees the same values.
                logger.warning("breaker of %s: clamped an absurd record from the store", provider)
                await self._store.save_breaker(provider, rec)
        self._note(provider, rec)
        self._synced[provider] = synced
        return rec

    async def permit(self, provider: str, now: float) -> Permit:
        """Whether a call may go now; claims the half-open probe when it is due and free."""
        rec = await self.load(provider, cached=True)
        if rec.state == CLOSED:
            return Permit(allowed=True)
        until = self.available(rec, now)
        if until is not None:
            return Permit(allowed=False, until=until)
        lease = now + self._config(provider).probe_lease
        if await self._store.claim_probe(provider, now=now, lease_until=lease):
            probing = claim(self._config(provider), rec, now=now, lease_until=lease)
            self._note(provider, probing or replace(rec, state=HALF_OPEN, probe_until=lease))
            logger.info("breaker of %s: probing", provider)
            return Permit(allowed=True, probe=True)
        rec = await self.load(provider)  # another worker or process won the probe
        if rec.state == CLOSED:
            return Permit(allowed=True)
        return Permit(allowed=False, until=self.available(rec, now) or now)

    def available(self, rec: BreakerRecord, now: float) -> float | None:
        """None when the breaker lets a call through now, else when to look again.

        Another worker's probe holds the half-open slot until its lease ends, but its answer
        may come any moment: a file waiting on it looks again soon, not at the lease's end.
        """
        until = availability(rec, now=now)
        if until is not None and rec.state == HALF_OPEN:
            return min(until, now + self._probe_recheck)
        return until

    async def record(self, provider: str, outcome: CallOutcome, *, probe: bool) -> BreakerRecord:
        """Apply one call's outcome (read-modify-write under the provider's lock)."""
        async with self._lock(provider):
            now = self._clock()
            cached = self._cached(provider, now) if outcome.kind == "success" else None
            if cached is not None:
                # The steady state: a success on a CLOSED breaker whose window is already all
                # successes changes nothing but updated_at — no read, no write. (Only success:
                # anything else is decided on a fresh read, and ``record`` draws no jitter here.)
                new = breaker_record(
                    self._config(provider), cached, outcome, now=now, rand=self._rand
                )
                if replace(new, updated_at=cached.updated_at) == cached:
                    return cached
            rec = await self.load(provider)
            if rec.state == HALF_OPEN and not probe:
                return rec  # only the probe's answer counts while half-open
            new = breaker_record(
                self._config(provider), rec, outcome, now=self._clock(), rand=self._rand
            )
            if replace(new, updated_at=rec.updated_at) != rec:
                synced = self._clock()
                await self._store.save_breaker(provider, new)
                self._note(provider, new)
                self._synced[provider] = synced
            return new

    async def release_probe(self, provider: str) -> None:
        """Free a probe that will never answer (shielded from cancellation)."""
        # Cancelled (shutdown) or crashed mid-probe: free the lease now, not probe_lease later.
        # A probe already answered left HALF_OPEN, so this changes nothing then.
        with anyio.CancelScope(shield=True):
            await self.record(provider, CallOutcome("neutral"), probe=True)

    def reason(self, provider: str) -> str:
        """Why the provider's breaker (as last seen) blocks calls."""
        rec = self._records.get(provider)
        return (rec.reason if rec else "") or "breaker_open"

    def _config(self, provider: str) -> BreakerConfig:
        return self._configs.get(provider) or BreakerConfig()

    def _lock(self, provider: str) -> anyio.Lock:
        return self._locks.setdefault(provider, anyio.Lock())

    def _note(self, provider: str, rec: BreakerRecord) -> None:
        before = self._records.get(provider)
        self._records[provider] = rec
        if before is None or before.state != rec.state:
            if before is not None:
                self._events.breaker_transition(provider, rec.state)
                logger.info(
                    "breaker of %s: %s -> %s (%s)", provider, before.state, rec.state, rec.reason
                )
            self._events.breaker_state(provider, rec.state)

    def _cached(self, provider: str, now: float) -> BreakerRecord | None:
        """The CLOSED record synced with the store less than ``closed_ttl`` ago, else None."""
        rec = self._records.get(provider)
        synced = self._synced.get(provider)
        if rec is None or synced is None or rec.state != CLOSED:
            return None
        # A clock that went back invalidates too.
        return rec if synced <= now < synced + self._closed_ttl else None

"""The dispatcher: one file onto a provider via the router, the breakers and the retry loop.

A thin async shell around the pure ``router``, ``breaker`` and ``retry`` modules. It is the
only place in inboxd that retries. Breaker records are read from the ``BreakerStore`` at every
decision (so several processes on one state file see each other's transitions), except that a
CLOSED record read or written less than ``closed_ttl`` seconds ago is reused (a reset from
another process is seen within that time; OPEN/HALF_OPEN records are always re-read). Records
are sanitized on load, saved after every outcome that changes more than ``updated_at``, and the
half-open probe is claimed only through ``BreakerStore.claim_probe`` (a conditional UPDATE): two
workers or two processes never both probe. All times are wall-clock seconds from the injected
``clock``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO, Literal, Protocol

import anyio

from providers.breaker import (
    CLOSED,
    HALF_OPEN,
    BreakerConfig,
    Outcome,
    availability,
    claim,
    outcome_of,
    record,
    reset,
    sanitize,
)
from providers.errors import InboxdError, Permanent, ProviderError, RejectedFile, Retryable
from providers.limits import ProviderLimits, extension_of
from providers.retry import RetryBudget, RetryPolicy, decide, error_kind
from providers.router import route
from providers.types import BreakerRecord, BreakerStore, RemoteFile, UploadClient, UploadResult

__all__ = ["Dispatcher", "NullEvents", "Parked", "ResilienceEvents"]

logger = logging.getLogger(__name__)

Reconcile = Callable[[str, str], Awaitable[RemoteFile | None]]
BeforeAttempt = Callable[[str, str], Awaitable[None]]


class Parked(InboxdError):
    """Every provider that could take the file is unavailable: try it again at ``until``.

    ``until`` is wall-clock unix seconds (``math.inf``: only a breaker reset helps, e.g. after
    AuthFailed); ``reason`` is the breaker's reason (``quota``, ``auth_failed``, …).
    """

    def __init__(self, until: float, reason: str) -> None:
        self.until = until
        self.reason = reason
        when = "a breaker reset" if math.isinf(until) else f"{until:.0f}"
        super().__init__(f"parked until {when}: {reason}")


class ResilienceEvents(Protocol):
    """Instrumentation hooks (the Prometheus wiring lives in ``daemon.metrics``).

    Every label is low-cardinality: provider names, states, stable reason codes.
    """

    def retry(self, provider: str, reason: str) -> None:
        """A retry of the same provider is about to sleep (reason: ``http_503``, …)."""

    def breaker_transition(self, provider: str, to_state: str) -> None:
        """The provider's breaker changed state (as this process observed it)."""

    def breaker_state(self, provider: str, state: str) -> None:
        """The provider's current breaker state (a gauge: set after every load or change)."""

    def upload_outcome(self, provider: str, transport: str, outcome: str) -> None:
        """One call ended: ``success``, ``reconciled`` or an error kind (transport ``none``)."""

    def give_up(self, provider: str, reason: str) -> None:
        """This file stops calling this provider (``attempts_exhausted``, ``quota``, …)."""


class NullEvents:
    """ResilienceEvents that record nothing."""

    def retry(self, provider: str, reason: str) -> None: ...
    def breaker_transition(self, provider: str, to_state: str) -> None: ...
    def breaker_state(self, provider: str, state: str) -> None: ...
    def upload_outcome(self, provider: str, transport: str, outcome: str) -> None: ...
    def give_up(self, provider: str, reason: str) -> None: ...


@dataclass(frozen=True)
class _Failure:
    """Why one provider gave up on one file."""

    kind: Literal["rejected", "parked", "failed", "deadline"]
    reason: str
    detail: str
    until: float | None = None


@dataclass(frozen=True)
class _Job:
    """One file being dispatched."""

    filename: str
    size: int
    content_type: str
    open_file: Callable[[], BinaryIO]
    reconcile: Reconcile
    before_attempt: BeforeAttempt | None
    started: float


@dataclass(frozen=True)
class _Permit:
    allowed: bool
    probe: bool = False
    until: float | None = None


class Dispatcher:
    """Uploads files with routing, failover, retries and persistent circuit breakers.

    ``policies`` and ``breaker_configs`` default per provider to ``RetryPolicy()`` and
    ``BreakerConfig()``. ``sleep`` and ``rand`` are injected so tests never wait.
    """

    def __init__(  # noqa: PLR0917 -- the positional collaborators are the agreed contract
        self,
        clients: Mapping[str, UploadClient],
        limits: Mapping[str, ProviderLimits],
        store: BreakerStore,
        policies: Mapping[str, RetryPolicy],
        breaker_configs: Mapping[str, BreakerConfig],
        events: ResilienceEvents,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rand: Callable[[], float] = random.random,
        probe_recheck: float = 5.0,
        closed_ttl: float = 1.0,
    ) -> None:
        self._clients = clients
        # A provider without a client cannot be routed to (the router says why).
        self._limits = {name: table for name, table in limits.items() if name in clients}
        self._store = store
        self._policies = policies
        self._configs = breaker_configs
        self._events = events
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._probe_recheck = probe_recheck
        self._closed_ttl = closed_ttl
        self._records: dict[str, BreakerRecord] = {}
        # When each provider's record in ``_records`` was last read from or written to the store.
        self._synced: dict[str, float] = {}
        self._budgets: dict[str, RetryBudget] = {}
        self._locks: dict[str, anyio.Lock] = {}

    # --- public API ---------------------------------------------------------------------

    async def upload(
        self,
        *,
        preference: Sequence[str],
        purposes: Mapping[str, str],
        filename: str,
        size: int,
        content_type: str,
        open_file: Callable[[], BinaryIO],
        reconcile: Reconcile,
        before_attempt: BeforeAttempt | None = None,
    ) -> UploadResult:
        """Upload one file to the first provider in ``preference`` that takes it.

        ``open_file`` returns a fresh, rewound file object per attempt (closed here);
        ``reconcile(provider, purpose)`` finds the remote copy an ambiguous attempt may have
        stored; ``before_attempt(provider, purpose)`` runs before every send (the ledger's
        intent, committed before any byte leaves). Raises ``RejectedFile`` (no provider
        accepts it, a Permanent error, or every attempt failed: ``upload_failed``) or ``Parked``.
        """
        job = _Job(
            filename=filename,
            size=size,
            content_type=content_type,
            open_file=open_file,
            reconcile=reconcile,
            before_attempt=before_attempt,
            started=self._clock(),
        )
        extension = extension_of(filename)
        failures: list[_Failure] = []
        done: set[str] = set()
        blocked: dict[str, float] = {}
        while True:
            now = self._clock()
            remaining = [p for p in dict.fromkeys(preference) if p not in done]
            avail = {p: self._available(await self._load(p, cached=True), now) for p in remaining}
            plan = route(
                preference=remaining,
                size=size,
                extension=extension,
                purposes=purposes,
                limits=self._limits,
                availability=avail,
            )
            if plan.rejection is not None:
                if failures or blocked:
                    raise self._conclude(failures, blocked)
                raise RejectedFile(*plan.rejection)
            if now >= job.started + self._deadline(preference) or not plan.candidates:
                for name in plan.purposes:
                    if avail.get(name) is not None:
                        blocked[name] = avail[name] or now
                raise self._conclude(failures, blocked)
            provider, probe = await self._pick(plan.candidates, now, done=done, blocked=blocked)
            if not provider:
                continue
            done.add(provider)
            try:
                outcome = await self._attempts(
                    provider, job, purpose=plan.purposes[provider], probe=probe
                )
            except BaseException:
                if probe:
                    await self._release_probe(provider)
                raise
            if isinstance(outcome, UploadResult):
                return outcome
            failures.append(outcome)
            if outcome.kind == "deadline":
                raise self._conclude(failures, blocked)

    async def reset_breaker(self, provider: str) -> None:
        """Close ``provider``'s breaker (``inboxd breaker reset``, or a config reload)."""
        async with self._lock(provider):
            fresh = reset(now=self._clock())
            await self._store.save_breaker(provider, fresh)
            self._note(provider, fresh)
            self._synced[provider] = self._clock()
        logger.warning("breaker of %s reset to closed", provider)

    async def breaker_states(self) -> dict[str, BreakerRecord]:
        """Every provider's breaker record as it is in the store now (sanitized)."""
        return {provider: await self._load(provider) for provider in self._clients}

    # --- breakers -----------------------------------------------------------------------

    def _config(self, provider: str) -> BreakerConfig:
        return self._configs.get(provider) or BreakerConfig()

    def _policy(self, provider: str) -> RetryPolicy:
        return self._policies.get(provider) or RetryPolicy()

    def _deadline(self, preference: Sequence[str]) -> float:
        return max((self._policy(p).deadline for p in preference), default=RetryPolicy().deadline)

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

    async def _load(self, provider: str, *, cached: bool = False) -> BreakerRecord:
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

    async def _permit(self, provider: str, now: float) -> _Permit:
        rec = await self._load(provider, cached=True)
        if rec.state == CLOSED:
            return _Permit(allowed=True)
        until = self._available(rec, now)
        if until is not None:
            return _Permit(allowed=False, until=until)
        lease = now + self._config(provider).probe_lease
        if await self._store.claim_probe(provider, now=now, lease_until=lease):
            probing = claim(self._config(provider), rec, now=now, lease_until=lease)
            self._note(provider, probing or replace(rec, state=HALF_OPEN, probe_until=lease))
            logger.info("breaker of %s: probing", provider)
            return _Permit(allowed=True, probe=True)
        rec = await self._load(provider)  # another worker or process won the probe
        if rec.state == CLOSED:
            return _Permit(allowed=True)
        return _Permit(allowed=False, until=self._available(rec, now) or now)

    def _available(self, rec: BreakerRecord, now: float) -> float | None:
        """None when the breaker lets a call through now, else when to look again.

        Another worker's probe holds the half-open slot until its lease ends, but its answer
        may come any moment: a file waiting on it looks again soon, not at the lease's end.
        """
        until = availability(rec, now=now)
        if until is not None and rec.state == HALF_OPEN:
            return min(until, now + self._probe_recheck)
        return until

    async def _record(self, provider: str, outcome: Outcome, *, probe: bool) -> BreakerRecord:
        async with self._lock(provider):
            now = self._clock()
            cached = self._cached(provider, now) if outcome.kind == "success" else None
            if cached is not None:
                # The steady state: a success on a CLOSED breaker whose window is already all
                # successes changes nothing but updated_at — no read, no write. (Only success:
                # anything else is decided on a fresh read, and ``record`` draws no jitter here.)
                new = record(self._config(provider), cached, outcome, now=now, rand=self._rand)
                if replace(new, updated_at=cached.updated_at) == cached:
                    return cached
            rec = await self._load(provider)
            if rec.state == HALF_OPEN and not probe:
                return rec  # only the probe's answer counts while half-open
            new = record(self._config(provider), rec, outcome, now=self._clock(), rand=self._rand)
            if replace(new, updated_at=rec.updated_at) != rec:
                synced = self._clock()
                await self._store.save_breaker(provider, new)
                self._note(provider, new)
                self._synced[provider] = synced
            return new

    async def _pick(
        self, candidates: Sequence[str], now: float, *, done: set[str], blocked: dict[str, float]
    ) -> tuple[str, bool]:
        """The first candidate whose breaker lets a call through now, and whether it probes."""
        for candidate in candidates:
            permit = await self._permit(candidate, now)
            if permit.allowed:
                return candidate, permit.probe
            done.add(candidate)
            blocked[candidate] = permit.until if permit.until is not None else now
        return "", False

    async def _release_probe(self, provider: str) -> None:
        # Cancelled (shutdown) or crashed mid-probe: free the lease now, not probe_lease later.
        # A probe already answered left HALF_OPEN, so this changes nothing then.
        with anyio.CancelScope(shield=True):
            await self._record(provider, Outcome("neutral"), probe=True)

    # --- the one retry loop -------------------------------------------------------------

    def _budget(self, provider: str, now: float) -> RetryBudget:
        budget = self._budgets.get(provider)
        if budget is None:
            budget = RetryBudget.for_policy(self._policy(provider), now=now)
            self._budgets[provider] = budget
        return budget

    async def _call(
        self, provider: str, job: _Job, *, purpose: str, unsure: bool
    ) -> tuple[UploadResult | None, ProviderError | None, bool]:
        """One attempt: ``(result, error, unsure)``; reconciles around ambiguous failures."""
        try:
            if unsure:
                found = await job.reconcile(provider, purpose)
                if found is not None:
                    return UploadResult(remote=found, transport="reconcile"), None, False
            if job.before_attempt is not None:
                await job.before_attempt(provider, purpose)
            with job.open_file() as fileobj:
                sent = await self._clients[provider].upload(
                    filename=job.filename,
                    fileobj=fileobj,
                    size=job.size,
                    purpose=purpose,
                    content_type=job.content_type,
                )
        except ProviderError as exc:
            error = exc
        else:
            return sent, None, False
        if not (isinstance(error, Retryable) and error.ambiguous):
            return None, error, unsure
        try:
            found = await job.reconcile(provider, purpose)
        except ProviderError:
            logger.warning("%s: could not reconcile an ambiguous upload yet", provider)
            return None, error, True
        if found is not None:
            return UploadResult(remote=found, transport="reconcile"), None, False
        return None, error, False

    async def _attempts(
        self, provider: str, job: _Job, *, purpose: str, probe: bool
    ) -> UploadResult | _Failure:
        policy = self._policy(provider)
        budget = self._budget(provider, self._clock())
        budget.record_call(self._clock())
        unsure = False  # an ambiguous attempt could not be reconciled yet: list before resending
        attempt = 0
        while True:
            attempt += 1
            result, error, unsure = await self._call(provider, job, purpose=purpose, unsure=unsure)
            if result is not None:
                label = "reconciled" if result.transport == "reconcile" else "success"
                self._events.upload_outcome(provider, result.transport, label)
                await self._record(provider, outcome_of(None), probe=probe)
                return result
            assert error is not None
            self._events.upload_outcome(provider, "none", error_kind(error))
            now = self._clock()
            decision = decide(
                policy, attempt=attempt, error=error, started=job.started, now=now, rand=self._rand
            )
            if decision.action == "park":
                outcome = Outcome("throttled", error.retry_after)
            else:
                outcome = outcome_of(error)
            rec = await self._record(provider, outcome, probe=probe)
            probe = False
            reason = decision.reason
            if decision.action == "retry":
                if rec.state != CLOSED:
                    reason = "breaker_open"
                elif not budget.try_spend(now):
                    reason = "budget_exhausted"
                else:
                    self._events.retry(provider, decision.reason)
                    logger.info(
                        "%s: %s; retry %d in %.1f s", provider, error, attempt, decision.delay
                    )
                    await self._sleep(decision.delay)
                    continue
            self._events.give_up(provider, reason)
            logger.warning("%s: giving up on %s (%s): %s", provider, job.filename, reason, error)
            return self._failure(error, reason, rec, now=now)

    def _failure(
        self, error: ProviderError, reason: str, rec: BreakerRecord, *, now: float
    ) -> _Failure:
        detail = str(error)
        if isinstance(error, Permanent):
            return _Failure("rejected", error.reason, detail)
        if reason == "deadline":
            return _Failure("deadline", "upload_failed", f"deadline passed: {detail}")
        until = self._available(rec, now)
        if until is not None:
            return _Failure("parked", rec.reason or reason, detail, until=until)
        return _Failure("failed", "upload_failed", f"{reason}: {detail}")

    def _conclude(self, failures: list[_Failure], blocked: Mapping[str, float]) -> InboxdError:
        """The one error for the file once no provider is left to try."""
        parks = [(f.until, f.reason) for f in failures if f.until is not None]
        parks += [(until, self._reason(p)) for p, until in blocked.items()]
        if parks and not any(f.kind == "deadline" for f in failures):
            until, reason = min(parks)
            return Parked(until, reason)
        for kind in ("deadline", "failed", "rejected"):
            for failure in failures:
                if failure.kind == kind:
                    return RejectedFile(failure.reason, failure.detail)
        return RejectedFile("upload_failed", "no provider could be called")

    def _reason(self, provider: str) -> str:
        rec = self._records.get(provider)
        return (rec.reason if rec else "") or "breaker_open"

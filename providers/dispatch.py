"""The dispatcher: one file onto a provider via the router, the breakers and the retry loop.

A thin async shell around the pure ``router`` and ``retry`` modules, asking the
``providers.gate.BreakerGate`` whether each provider may be called and telling it every outcome.
It is the only place in inboxd that retries: it reconciles around ambiguous attempts, fails over
to the next provider and turns what every provider said into the file's one verdict. All times
are wall-clock seconds from the injected ``clock``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

import anyio

from providers.breaker import CLOSED, BreakerConfig, Outcome, outcome_of
from providers.errors import InboxdError, Permanent, ProviderError, RejectedFile, Retryable
from providers.events import NullEvents, ResilienceEvents
from providers.gate import BreakerGate
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
        self._policies = policies
        self._events = events
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._gate = BreakerGate(
            store,
            breaker_configs,
            events,
            clock=clock,
            rand=rand,
            probe_recheck=probe_recheck,
            closed_ttl=closed_ttl,
        )
        self._budgets: dict[str, RetryBudget] = {}

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
            avail = {
                p: self._gate.available(await self._gate.load(p, cached=True), now)
                for p in remaining
            }
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
                    await self._gate.release_probe(provider)
                raise
            if isinstance(outcome, UploadResult):
                return outcome
            failures.append(outcome)
            if outcome.kind == "deadline":
                raise self._conclude(failures, blocked)

    async def reset_breaker(self, provider: str) -> None:
        """Close ``provider``'s breaker (``inboxd breaker reset``, or a config reload)."""
        await self._gate.reset(provider)

    async def breaker_states(self) -> dict[str, BreakerRecord]:
        """Every provider's breaker record as it is in the store now (sanitized)."""
        return await self._gate.states(self._clients)

    # --- routing ------------------------------------------------------------------------

    def _policy(self, provider: str) -> RetryPolicy:
        return self._policies.get(provider) or RetryPolicy()

    def _deadline(self, preference: Sequence[str]) -> float:
        return max((self._policy(p).deadline for p in preference), default=RetryPolicy().deadline)

    async def _pick(
        self, candidates: Sequence[str], now: float, *, done: set[str], blocked: dict[str, float]
    ) -> tuple[str, bool]:
        """The first candidate whose breaker lets a call through now, and whether it probes."""
        for candidate in candidates:
            permit = await self._gate.permit(candidate, now)
            if permit.allowed:
                return candidate, permit.probe
            done.add(candidate)
            blocked[candidate] = permit.until if permit.until is not None else now
        return "", False

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
                await self._gate.record(provider, outcome_of(None), probe=probe)
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
            rec = await self._gate.record(provider, outcome, probe=probe)
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
        until = self._gate.available(rec, now)
        if until is not None:
            return _Failure("parked", rec.reason or reason, detail, until=until)
        return _Failure("failed", "upload_failed", f"{reason}: {detail}")

    def _conclude(self, failures: list[_Failure], blocked: Mapping[str, float]) -> InboxdError:
        """The one error for the file once no provider is left to try."""
        parks = [(f.until, f.reason) for f in failures if f.until is not None]
        parks += [(until, self._gate.reason(p)) for p, until in blocked.items()]
        if parks and not any(f.kind == "deadline" for f in failures):
            until, reason = min(parks)
            return Parked(until, reason)
        for kind in ("deadline", "failed", "rejected"):
            for failure in failures:
                if failure.kind == kind:
                    return RejectedFile(failure.reason, failure.detail)
        return RejectedFile("upload_failed", "no provider could be called")

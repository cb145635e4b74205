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
from typing import BinaryIO

import anyio

from providers.breaker import CLOSED, BreakerConfig
from providers.call_outcome import CallOutcome, outcome_of
from providers.errors import (
    InboxdError,
    Permanent,
    ProviderError,
    QuotaExhausted,
    RejectedFile,
    Retryable,
    Throttled,
)
from providers.events import NullEvents, ResilienceEvents
from providers.gate import BreakerGate
from providers.limits import ProviderLimits, extension_of
from providers.retry import RetryBudget, RetryDecision, RetryPolicy, decide, error_kind, later
from providers.router import route
from providers.types import BreakerRecord, BreakerStore, RemoteFile, UploadClient, UploadResult
from providers.verdict import Failure, Parked, verdict

__all__ = ["Dispatcher", "NullEvents", "Parked", "ResilienceEvents"]

logger = logging.getLogger(__name__)

Reconcile = Callable[[str, str], Awaitable[RemoteFile | None]]
BeforeAttempt = Callable[[str, str], Awaitable[None]]


@dataclass
class _Job:
    """One file being dispatched; ``attempts`` counts its sends, earlier passes included."""

    filename: str
    size: int
    content_type: str
    open_file: Callable[[], BinaryIO]
    reconcile: Reconcile
    before_attempt: BeforeAttempt | None
    started: float
    first_tried: float
    attempts: int = 0


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
        relist_delay: float = 5.0,
    ) -> None:
        """``relist_delay``: seconds before a file whose ambiguous attempt no listing could
        settle yet is looked at again."""
        self._clients = clients
        self._relist_delay = relist_delay
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
        first_tried: float | None = None,
        attempts: int = 0,
    ) -> UploadResult:
        """Upload one file to the first provider in ``preference`` that takes it.

        ``open_file`` returns a fresh, rewound file object per attempt (closed here);
        ``reconcile(provider, purpose)`` finds the remote copy an ambiguous attempt may have
        stored; ``before_attempt(provider, purpose)`` runs before every send (the ledger's
        intent, committed before any byte leaves). ``first_tried`` (wall clock; default now)
        and ``attempts`` are the file's history from earlier passes (its ledger row).

        Raises ``RejectedFile`` when the file can never succeed as sent (no provider accepts
        it, a Permanent error), or when it has failed for longer than ``give_up_after``
        (``upload_failed``); else ``Parked`` — every transient failure leaves the file waiting.
        """
        now = self._clock()
        job = _Job(
            filename=filename,
            size=size,
            content_type=content_type,
            open_file=open_file,
            reconcile=reconcile,
            before_attempt=before_attempt,
            started=now,
            first_tried=now if first_tried is None else first_tried,
            attempts=attempts,
        )
        extension = extension_of(filename)
        failures: list[Failure] = []
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
                    raise self._conclude(job, preference, failures, blocked)
                raise RejectedFile(*plan.rejection)
            if now >= job.started + self._deadline(preference) or not plan.candidates:
                for name in plan.purposes:
                    if avail.get(name) is not None:
                        blocked[name] = avail[name] or now
                raise self._conclude(job, preference, failures, blocked)
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
            # An unsettled ambiguous attempt: sending to another provider could leave two
            # remote copies; the file waits until this one can be listed.
            if outcome.kind in {"deadline", "unsure"}:
                raise self._conclude(job, preference, failures, blocked)

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
            job.attempts += 1
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
    ) -> UploadResult | Failure:
        policy = self._policy(provider)
        budget = self._budget(provider, self._clock())
        budget.record_call(self._clock())
        unsure = False  # an ambiguous attempt could not be reconciled yet: list before resending
        attempt = 0  # attempts spent (a rate-limit answer spends none)
        throttles = 0
        while True:
            sends = job.attempts
            result, error, unsure = await self._call(provider, job, purpose=purpose, unsure=unsure)
            if result is not None:
                label = "reconciled" if result.transport == "reconcile" else "success"
                self._events.upload_outcome(provider, result.transport, label)
                await self._gate.record(provider, outcome_of(None), probe=probe)
                return result
            assert error is not None
            self._events.upload_outcome(provider, "none", error_kind(error))
            # A rate-limit answer to a send (not to a listing) spends no attempt.
            throttled = isinstance(error, Throttled) and job.attempts > sends
            throttles += throttled
            attempt += not throttled
            if isinstance(error, Permanent) and error.reason == "extract_failed":
                await self._discard_copy(provider, job, purpose)
            now = self._clock()
            decision = decide(
                policy,
                attempt=max(attempt, 1),
                error=error,
                started=job.started,
                now=now,
                rand=self._rand,
                throttles=throttles,
            )
            if throttled and decision.action == "retry":
                # Neutral for the breaker (nothing recorded: a probe keeps its lease); the
                # provider's limiter holds the next call until its pause ends anyway.
                await self._wait(provider, decision, f"rate limited ({error})")
                continue
            if decision.action == "park" and not throttled:
                outcome = CallOutcome("throttled", error.retry_after)
            else:
                outcome = outcome_of(error, now=now)
            rec = await self._gate.record(provider, outcome, probe=probe)
            probe = False
            reason = self._blocker(decision, rec, budget, now)
            if reason is None:
                await self._wait(provider, decision, f"{error}; retry {attempt}")
                continue
            self._events.give_up(provider, reason)
            self._log_give_up(provider, job, reason, error, rec, now=now)
            if unsure:
                return Failure("unsure", "unsure", str(error), until=now + self._relist_delay)
            if throttled and decision.until is not None:
                return Failure("parked", "throttled", str(error), until=decision.until)
            return self._failure(error, reason, rec, now=now)

    @staticmethod
    def _blocker(
        decision: RetryDecision, rec: BreakerRecord, budget: RetryBudget, now: float
    ) -> str | None:
        """None when the retry ``decision`` may go now, else why this provider stops."""
        if decision.action != "retry":
            return decision.reason
        if rec.state != CLOSED:
            return "breaker_open"
        # The one more try of a failed extraction is not a retry the budget pays for.
        if decision.reason != "extract_failed" and not budget.try_spend(now):
            return "budget_exhausted"
        return None

    async def _wait(self, provider: str, decision: RetryDecision, why: str) -> None:
        self._events.retry(provider, decision.reason)
        logger.info("%s: %s; same provider again in %.1f s", provider, why, decision.delay)
        await self._sleep(decision.delay)

    async def _discard_copy(self, provider: str, job: _Job, purpose: str) -> None:
        """Delete the copy a failed extraction may have left (no receipt will ever name it)."""
        try:
            found = await job.reconcile(provider, purpose)
            if found is not None:
                await self._clients[provider].delete(found.id)
                logger.warning(
                    "%s: deleted the copy %s that the failed extraction of %s left",
                    provider,
                    found.id,
                    job.filename,
                )
        except ProviderError as exc:
            logger.warning(
                "%s: could not list or delete the copy the failed extraction of %s may have "
                "left (%s); if `inboxd status --remote` shows it, delete it there",
                provider,
                job.filename,
                exc,
            )

    def _log_give_up(
        self,
        provider: str,
        job: _Job,
        reason: str,
        error: ProviderError,
        rec: BreakerRecord,
        *,
        now: float,
    ) -> None:
        if isinstance(error, QuotaExhausted):
            until = self._gate.available(rec, now)
            when = "a reset" if until is None or math.isinf(until) else _iso(until)
            if error.balance:
                logger.error(
                    "%s: the account's balance is exhausted (%s); top up the account at the "
                    "provider (the API key is fine). %s is not called again before %s",
                    provider,
                    error,
                    provider,
                    when,
                )
            else:
                logger.warning(
                    "%s: usage cap reached (%s); %s is parked until %s",
                    provider,
                    error,
                    provider,
                    when,
                )
            return
        logger.warning("%s: giving up on %s (%s): %s", provider, job.filename, reason, error)

    def _failure(
        self, error: ProviderError, reason: str, rec: BreakerRecord, *, now: float
    ) -> Failure:
        detail = str(error)
        if isinstance(error, Permanent):
            return Failure("rejected", error.reason, detail)
        until = self._gate.available(rec, now)
        if until is not None:
            return Failure("parked", rec.reason or reason, detail, until=until)
        if reason == "deadline":
            return Failure("deadline", reason, f"deadline passed: {detail}")
        return Failure("failed", reason, detail)

    def _give_up_after(self, preference: Sequence[str]) -> float:
        """Seconds after which a file failing transiently is quarantined (0: never): only when
        every provider in the inbox's list gives up, after the longest of their settings."""
        settings = [self._policy(p).give_up_after for p in dict.fromkeys(preference)]
        return 0.0 if not settings or min(settings) <= 0 else max(settings)

    def _conclude(
        self,
        job: _Job,
        preference: Sequence[str],
        failures: list[Failure],
        blocked: Mapping[str, float],
    ) -> InboxdError:
        """The one error for the file once no provider is left to try (``verdict``)."""
        policy = self._policy(preference[0]) if preference else RetryPolicy()
        return verdict(
            failures,
            [(until, self._gate.reason(p)) for p, until in blocked.items()],
            now=self._clock(),
            later=later(policy, attempts=job.attempts, rand=self._rand),
            give_up_after=self._give_up_after(preference),
            first_tried=job.first_tried,
        )


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))

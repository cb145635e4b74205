"""The one retry loop: one file's attempts on one provider, until it succeeds or stops.

A thin async shell around the pure ``providers.retry`` decisions: it sends through the
provider's client, reconciles around ambiguous attempts (an upload that may have been stored is
looked for before it is sent again), tells the ``providers.gate.BreakerGate`` every outcome and
waits the decided delay. What it cannot finish it hands back to ``providers.dispatch`` as a
``providers.verdict.Failure`` (that provider's say on the file). All times are wall-clock
seconds from the injected ``clock``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from providers.breaker import CLOSED
from providers.call_outcome import CallOutcome, outcome_of
from providers.errors import Permanent, ProviderError, QuotaExhausted, Retryable, Throttled
from providers.events import ResilienceEvents
from providers.gate import BreakerGate
from providers.retry import RetryBudget, RetryDecision, RetryPolicy, decide, error_kind
from providers.types import BreakerRecord, RemoteFile, UploadClient, UploadResult
from providers.verdict import Failure

__all__ = ["BeforeAttempt", "Job", "Reconcile", "RetryLoop"]

logger = logging.getLogger(__name__)

Reconcile = Callable[[str, str], Awaitable[RemoteFile | None]]
BeforeAttempt = Callable[[str, str], Awaitable[None]]


@dataclass
class Job:
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


class RetryLoop:
    """Retries one file on one provider (``run``); a provider's policy defaults to
    ``RetryPolicy()``. ``sleep`` and ``rand`` are injected so tests never wait."""

    def __init__(
        self,
        clients: Mapping[str, UploadClient],
        policies: Mapping[str, RetryPolicy],
        gate: BreakerGate,
        events: ResilienceEvents,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        rand: Callable[[], float],
        relist_delay: float,
    ) -> None:
        """``relist_delay``: seconds before a file whose ambiguous attempt no listing could
        settle yet is looked at again."""
        self._clients = clients
        self._policies = policies
        self._gate = gate
        self._events = events
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._relist_delay = relist_delay
        self._budgets: dict[str, RetryBudget] = {}

    def policy(self, provider: str) -> RetryPolicy:
        """``provider``'s retry policy."""
        return self._policies.get(provider) or RetryPolicy()

    def _budget(self, provider: str, now: float) -> RetryBudget:
        budget = self._budgets.get(provider)
        if budget is None:
            budget = RetryBudget.for_policy(self.policy(provider), now=now)
            self._budgets[provider] = budget
        return budget

    async def _call(
        self, provider: str, job: Job, *, purpose: str, unsure: bool
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

    async def run(
        self, provider: str, job: Job, *, purpose: str, probe: bool
    ) -> UploadResult | Failure:
        policy = self.policy(provider)
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

    async def _discard_copy(self, provider: str, job: Job, purpose: str) -> None:
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
        job: Job,
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


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))

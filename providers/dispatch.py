"""The dispatcher: one file onto a provider via the router, the breakers and the retry loop.

A thin async shell around the pure ``router`` and ``verdict`` modules, asking the
``providers.gate.BreakerGate`` whether each provider may be called now. It routes the file,
hands it to ``providers.retry_loop.RetryLoop`` (the only place in inboxd that retries, and
reconciles around ambiguous attempts) on one provider at a time, fails over to the next and
turns what every provider said into the file's one verdict. All times are wall-clock seconds
from the injected ``clock``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import BinaryIO

import anyio

from providers.breaker import BreakerConfig
from providers.errors import InboxdError, RejectedFile
from providers.events import NullEvents, ResilienceEvents
from providers.gate import BreakerGate
from providers.limits import ProviderLimits, extension_of
from providers.retry import RetryPolicy, later
from providers.retry_loop import BeforeAttempt, Job, Reconcile, RetryLoop
from providers.router import route
from providers.types import BreakerRecord, BreakerStore, UploadClient, UploadResult
from providers.verdict import Failure, verdict

__all__ = ["Dispatcher", "NullEvents", "ResilienceEvents"]


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
        # A provider without a client cannot be routed to (the router says why).
        self._limits = {name: table for name, table in limits.items() if name in clients}
        self._clock = clock
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
        self._loop = RetryLoop(
            clients,
            policies,
            self._gate,
            events,
            clock=clock,
            sleep=sleep,
            rand=rand,
            relist_delay=relist_delay,
        )

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
        job = Job(
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
                outcome = await self._loop.run(
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

    def _deadline(self, preference: Sequence[str]) -> float:
        return max(
            (self._loop.policy(p).deadline for p in preference), default=RetryPolicy().deadline
        )

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

    def _give_up_after(self, preference: Sequence[str]) -> float:
        """Seconds after which a file failing transiently is quarantined (0: never): only when
        every provider in the inbox's list gives up, after the longest of their settings."""
        settings = [self._loop.policy(p).give_up_after for p in dict.fromkeys(preference)]
        return 0.0 if not settings or min(settings) <= 0 else max(settings)

    def _conclude(
        self,
        job: Job,
        preference: Sequence[str],
        failures: list[Failure],
        blocked: Mapping[str, float],
    ) -> InboxdError:
        """The one error for the file once no provider is left to try (``verdict``)."""
        policy = self._loop.policy(preference[0]) if preference else RetryPolicy()
        return verdict(
            failures,
            [(until, self._gate.reason(p)) for p, until in blocked.items()],
            now=self._clock(),
            later=later(policy, attempts=job.attempts, rand=self._rand),
            give_up_after=self._give_up_after(preference),
            first_tried=job.first_tried,
        )

"""Settings → the real collaborators: inbox plans, provider clients, the dispatcher."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from daemon.config.settings import Settings
from handlers.pipeline import InboxPlan
from providers.breaker import BreakerConfig
from providers.dispatch import Dispatcher, ResilienceEvents
from providers.factory import build_client
from providers.limited import LimitedClient, PacingEvents
from providers.limits import ProviderLimits
from providers.retry import RetryPolicy
from providers.types import BreakerStore, UploadClient

__all__ = ["LimitedClient", "build_clients", "build_dispatcher", "build_plans"]

FallbackCallback = Callable[[str, str, str, str], None]


def build_plans(settings: Settings) -> dict[str, InboxPlan]:
    """One plan per configured inbox, with every default filled in."""
    return {
        inbox.name: InboxPlan(
            name=inbox.name,
            path=inbox.path,
            providers=tuple(inbox.providers),
            purposes={p: inbox.purpose_for(p) for p in inbox.providers},
            done_dir=inbox.done_path,
            quarantine_dir=inbox.quarantine_path,
            on_success=inbox.on_success,
            dedupe=inbox.dedupe,
            on_quota=inbox.on_quota,
            recursive=inbox.recursive,
        )
        for inbox in settings.inbox
    }


def build_clients(
    settings: Settings,
    *,
    on_fallback: FallbackCallback | None = None,
    events: PacingEvents | None = None,
) -> dict[str, LimitedClient]:
    """A client per provider in use, with its transport chain and its one limiter (rate and
    concurrency, starting at ``rpm`` and ``concurrency``), reporting to ``events``."""
    clients: dict[str, LimitedClient] = {}
    for name in settings.providers_in_use():
        section = settings.providers.get(name)
        assert section.api_key is not None  # config_check refuses to start without one
        client = build_client(
            name,
            base_url=section.base_url,
            api_key=section.api_key.get_secret_value(),
            transports=section.transports,
            timeout=section.timeout,
            connect_timeout=section.connect_timeout,
            on_fallback=on_fallback,
            # GLM lists one purpose per call: count and reconcile the purposes in use.
            list_purposes=sorted(
                {i.purpose_for(name) for i in settings.inbox if name in i.providers}
            ),
        )
        clients[name] = LimitedClient(client, section.concurrency, rpm=section.rpm, events=events)
    return clients


def build_dispatcher(
    settings: Settings,
    clients: Mapping[str, UploadClient],
    limits: Mapping[str, ProviderLimits],
    store: BreakerStore,
    events: ResilienceEvents,
) -> Dispatcher:
    """The resilience layer, with each provider's retry and breaker knobs."""
    policies: dict[str, RetryPolicy] = {}
    breakers: dict[str, BreakerConfig] = {}
    for name in clients:
        retry = settings.providers.get(name).retry
        breaker = settings.providers.get(name).breaker
        policies[name] = RetryPolicy(
            attempts=retry.attempts,
            base=retry.base,
            cap=retry.cap,
            deadline=retry.deadline,
            retry_after_cap=retry.retry_after_cap,
            budget_ratio=retry.budget_ratio,
            budget_floor=retry.budget_floor,
            give_up_after=retry.give_up_after,
        )
        breakers[name] = BreakerConfig(
            window=breaker.window,
            min_calls=breaker.min_calls,
            failure_ratio=breaker.failure_ratio,
            consecutive_failures=breaker.consecutive_failures,
            open_base=breaker.open_base,
            open_max=breaker.open_max,
            quota_park=breaker.quota_park,
            # One probe holds the half-open slot at most this long: longer than any upload.
            probe_lease=settings.providers.get(name).timeout * 2 + 60,
        )
    return Dispatcher(clients, limits, store, policies, breakers, events)

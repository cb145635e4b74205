"""Settings → the real collaborators: inbox plans, provider clients, policies, the pipeline.

``build`` is the one composition step: it returns ``Components``, everything a running
daemon uses for one config generation. A reload builds new components (reusing the clients
that did not change and the state that must outlive a config: the store, the metrics, the
byte budget, the per-content locks) and the daemon swaps them in one assignment; files in
flight finish on the components they started with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

import anyio

from daemon.config.settings import BreakerSettings, ProviderSettings, RetrySettings, Settings
from daemon.ops.metrics import Metrics
from daemon.remote.admission import AdmittedClient
from daemon.remote.service import RemoteSide, build_remote_side
from daemon.state.store import Store
from handlers.budget import ByteBudget
from handlers.pipeline import InboxPlan, Pipeline
from providers.breaker import BreakerConfig
from providers.dispatch import Dispatcher, ResilienceEvents
from providers.factory import build_client
from providers.limited import LimitedClient, PacingEvents, SendSlots
from providers.limits import ProviderLimits
from providers.retry import RetryPolicy
from providers.types import BreakerStore, UploadClient

__all__ = [
    "Components",
    "ContentLocks",
    "breaker_config",
    "build",
    "build_clients",
    "build_dispatcher",
    "build_plans",
    "retry_policy",
]

FallbackCallback = Callable[[str, str, str, str], None]
RoomCallback = Callable[[str], Awaitable[None]]
# The pipeline's per-content locks (sha256 -> lock, users): one table for every generation,
# so two copies of one file never upload at once across a reload.
ContentLocks = dict[str, tuple[anyio.Lock, int]]


@dataclass(frozen=True)
class Components:
    """What one config generation runs on: its settings and everything built from them.

    ``store``, ``metrics`` and ``remote`` (the retention passes and recorded deletions of
    the provider accounts) live as long as the process (a reload passes them on);
    ``clients`` are the provider clients in use (a reload keeps those whose settings did
    not change); ``pipeline`` takes each file from its inbox to done or quarantine.
    """

    settings: Settings
    store: Store
    metrics: Metrics
    plans: Mapping[str, InboxPlan]
    clients: Mapping[str, LimitedClient]
    limits: Mapping[str, ProviderLimits]
    dispatcher: Dispatcher
    pipeline: Pipeline
    remote: RemoteSide
    content_locks: ContentLocks = field(default_factory=dict)


def build(
    settings: Settings,
    *,
    store: Store,
    metrics: Metrics,
    on_fallback: FallbackCallback | None = None,
    on_room: RoomCallback | None = None,
    previous: Components | None = None,
    renew: Collection[str] = (),
    rebuild_dispatcher: bool = True,
) -> Components:
    """The components of ``settings``.

    With ``previous`` (a reload): its clients are kept except those named in ``renew``
    (their settings changed), its dispatcher (with its retry budgets) is kept unless
    ``rebuild_dispatcher``, and the knobs that take effect only at a restart
    (``max_inflight_bytes``, ``reconcile_skew``) keep their running values. ``on_room``:
    called when a retention pass made room on an account whose quota had parked files.
    """
    kept = {} if previous is None else previous.clients
    fresh = build_clients(
        settings,
        on_fallback=on_fallback,
        events=metrics,
        only=[p for p in settings.providers_in_use() if p in renew or p not in kept],
        # A fleet shares each account's rate budget through the store; one host needs none.
        send_slots=store.reserve_send if settings.state_url is not None else None,
    )
    clients = {**kept, **fresh}  # clients no longer used stay: a retry in flight may use one
    limits = {p: settings.providers.get(p).effective_limits(p) for p in clients}
    locks: ContentLocks = {} if previous is None else previous.content_locks
    if previous is None:
        remote = build_remote_side(
            settings,
            store=store,
            clients=clients,
            registry=metrics.registry,
            on_room=on_room or _no_room_callback,
        )
        if on_room is not None:  # a daemon: it starts the passes, so uploads wait for room
            remote.passes_here()
    else:
        remote = previous.remote
        remote.configure(settings, clients)
    # Every upload reserves room on its account first (never above max_files / max_bytes).
    admitted = {name: AdmittedClient(client, remote.gate) for name, client in clients.items()}
    dispatcher = (
        build_dispatcher(settings, admitted, limits, store, metrics)
        if previous is None or rebuild_dispatcher
        else previous.dispatcher
    )
    pipeline = Pipeline(
        ledger=store,
        uploader=dispatcher,
        clients=clients,
        limits=limits,
        budget=(
            ByteBudget(settings.max_inflight_bytes)
            if previous is None
            else previous.pipeline.budget
        ),
        events=metrics,
        skew=settings.reconcile_skew if previous is None else previous.pipeline.skew,
        content_locks=locks,
        extractors=clients,
        deleter=remote,
        lost_park=store.lease,
        # A fleet (state_url) shares its locks on content; a host alone needs none.
        content_claims=store if settings.state_url is not None else None,
    )
    # A pass records a deletion under the pipeline's lock on that content (one lock table
    # for every generation): a dedupe in progress finishes first, later ones see it.
    remote.pruner.content_lock = pipeline.content_lock
    remote.pruner.busy = locks.keys
    return Components(
        settings=settings,
        store=store,
        metrics=metrics,
        plans=build_plans(settings),
        clients=clients,
        limits=limits,
        dispatcher=dispatcher,
        pipeline=pipeline,
        remote=remote,
        content_locks=locks,
    )


async def _no_room_callback(provider: str) -> None:
    """Without a daemon (a test's components): nothing is parked to release."""


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
            extract=inbox.extract,
            keep_remote=inbox.keep_remote,
        )
        for inbox in settings.inbox
    }


def build_clients(
    settings: Settings,
    *,
    on_fallback: FallbackCallback | None = None,
    events: PacingEvents | None = None,
    only: Collection[str] | None = None,
    send_slots: SendSlots | None = None,
) -> dict[str, LimitedClient]:
    """A client per provider in use (or in ``only``), with its transport chain and its one
    limiter (rate and concurrency, starting at ``rpm`` and ``concurrency``), reporting to
    ``events``; ``send_slots``: the account's rate window shared with the other hosts of a
    fleet (None: this host alone)."""
    clients: dict[str, LimitedClient] = {}
    for name in settings.providers_in_use():
        if only is not None and name not in only:
            continue
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
        clients[name] = LimitedClient(
            client, section.concurrency, rpm=section.rpm, events=events, send_slots=send_slots
        )
    return clients


def retry_policy(retry: RetrySettings) -> RetryPolicy:
    """The retry policy of a provider's ``retry`` section (every field, by name)."""
    return RetryPolicy(**retry.model_dump())


def breaker_config(breaker: BreakerSettings, section: ProviderSettings) -> BreakerConfig:
    """The breaker of a provider's ``breaker`` section (every field, by name)."""
    # One probe holds the half-open slot at most this long: longer than any upload.
    return BreakerConfig(**breaker.model_dump(), probe_lease=section.timeout * 2 + 60)


def build_dispatcher(
    settings: Settings,
    clients: Mapping[str, UploadClient],
    limits: Mapping[str, ProviderLimits],
    store: BreakerStore,
    events: ResilienceEvents,
) -> Dispatcher:
    """The resilience layer, with each provider's retry and breaker knobs."""
    sections = {name: settings.providers.get(name) for name in clients}
    policies = {name: retry_policy(s.retry) for name, s in sections.items()}
    breakers = {name: breaker_config(s.breaker, s) for name, s in sections.items()}
    return Dispatcher(clients, limits, store, policies, breakers, events)

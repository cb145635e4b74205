"""Applying a reload to a running ``Daemon`` (the pure diff: ``config.reload_plan.plan_reload``).

A refused config changes nothing. An accepted one swaps the settings, the clients that
changed (the replaced ones close once no file of their generation is still in work), the
dispatcher, the inbox plans and the watcher, then closes breakers forced open by a refused
key, so the files parked behind them go again.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from daemon.config.check import check
from daemon.config.reload_plan import ReloadPlan, plan_reload
from daemon.config.settings import Settings
from daemon.runtime.wiring import build_clients, build_dispatcher, build_plans
from daemon.runtime.workers import close_idle_clients, start_watcher, wake_at
from daemon.state.store import Store
from handlers.ledger import PENDING
from handlers.pipeline import InboxPlan
from providers.breaker import FORCED_OPEN
from providers.errors import ConfigError

if TYPE_CHECKING:
    from daemon.runtime.daemon import Daemon

__all__ = ["apply_reload", "unpark_forever"]

logger = logging.getLogger(__name__)


async def unpark_forever(store: Store) -> int:
    """Clear ``not_before`` of files parked until a breaker reset (forced open); how many."""
    rows = [
        row
        for row in await store.rows_in_state(PENDING)
        if row.not_before is not None and math.isinf(row.not_before)
    ]
    for row in rows:
        await store.transition(row.id, PENDING, not_before=None)
    return len(rows)


async def apply_reload(daemon: Daemon) -> bool:
    """Load ``daemon``'s config again and apply it; False when refused (old config kept)."""
    if daemon.loader is None:
        logger.error("reload refused: this daemon was started without a config to re-read")
        return False
    try:
        new = daemon.loader()
        problems = check(new).problems
    except ConfigError as exc:
        problems = list(exc.problems)
    if problems:
        for line in problems:
            logger.error("reload refused, keeping the running config: %s", line)
        return False
    plans = build_plans(new)
    try:
        for inbox in plans.values():
            inbox.done_dir.mkdir(parents=True, exist_ok=True)
            inbox.quarantine_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.error(
            "reload refused, keeping the running config: cannot create %s (%s); make it "
            "writable by the daemon's user",
            exc.filename,
            exc.strerror,
        )
        return False
    plan = plan_reload(daemon.settings, new)
    await _apply(daemon, plan, new, plans)
    daemon.reloads += 1
    logger.info("config reloaded: %s", plan.summary())
    return True


async def _apply(
    daemon: Daemon, plan: ReloadPlan, new: Settings, plans: dict[str, InboxPlan]
) -> None:
    assert daemon.store is not None
    daemon.settings = new
    if plan.logging_changed:
        daemon._setup_logging()
    for key in plan.restart_needed:
        logger.warning("reload: %s changed; it takes effect at the next restart", key)
    await _apply_providers(daemon, plan, new)
    daemon.remote.configure(new)  # retention limits: the next pass applies them
    for name in plan.added_inboxes:
        daemon.metrics.add_inbox(name)
    daemon.plans.clear()
    daemon.plans.update(plans)
    if plan.restart_watcher and daemon.intake is not None:
        await start_watcher(daemon)
    if daemon.intake is not None:
        daemon._add_workers()
    forced = [
        provider
        for provider, record in (await daemon.store.all_breakers()).items()
        if record.state == FORCED_OPEN and provider in daemon.clients
    ]
    for provider in forced:
        await daemon.dispatcher.reset_breaker(provider)
    if forced and await unpark_forever(daemon.store):
        wake_at(daemon, time.time())  # files parked behind it go again now
    close_idle_clients(daemon)


async def _apply_providers(daemon: Daemon, plan: ReloadPlan, new: Settings) -> None:
    assert daemon.store is not None
    daemon.work.generation += 1
    fresh = build_clients(new, on_fallback=daemon._on_fallback, events=daemon.metrics)
    for name, client in fresh.items():
        if name in plan.new_clients:
            old = daemon.clients.get(name)
            daemon.clients[name] = client  # in place: the pipeline and dispatchers share it
            if old is not None:
                daemon.work.retired.append((daemon.work.generation - 1, old))
        else:
            await client.aclose()
    # Clients of providers no longer used stay until shutdown: an upload in flight may
    # still retry on them.
    for name in new.providers_in_use():
        daemon.limits[name] = new.providers.get(name).effective_limits(name)
    if plan.rebuild_dispatcher:
        daemon.dispatcher = build_dispatcher(
            new, daemon.clients, daemon.limits, daemon.store, daemon.metrics
        )
        daemon.pipeline.uploader = daemon.dispatcher  # uploads in flight keep the old one

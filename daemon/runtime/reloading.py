"""The steps of a reload that need no running daemon (``Daemon.reload`` runs them in order).

A refused config changes nothing: ``load_checked`` logs one error line per problem and
returns None. An accepted one becomes new components (``daemon.runtime.wiring.build``),
swapped in by the daemon; then ``release_forced`` closes the breakers a refused key forced
open, so the files parked behind them go again. The pure diff of two configs is
``daemon.config.reload_plan.plan_reload``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection

from daemon.config.check import check
from daemon.config.settings import Settings
from daemon.runtime.wiring import build_plans
from daemon.state.store import Store
from handlers.ledger import PENDING
from providers.breaker import FORCED_OPEN
from providers.dispatch import Dispatcher
from providers.errors import ClaimLost, ConfigError

__all__ = ["load_checked", "release_forced", "unpark_forever"]

logger = logging.getLogger(__name__)


async def unpark_forever(store: Store) -> int:
    """Clear ``not_before`` of files parked until a breaker reset (forced open); how many.

    Rows another live host of a fleet holds are its own to release (``ClaimLost``: skipped).
    """
    rows = [
        row
        for row in await store.rows_in_state(PENDING)
        if row.not_before is not None and math.isinf(row.not_before)
    ]
    released = 0
    for row in rows:
        try:
            await store.transition(row.id, PENDING, not_before=None)
        except ClaimLost:
            continue
        released += 1
    return released


def load_checked(loader: Callable[[], Settings] | None) -> Settings | None:
    """The config ``loader`` reads, checked and with its folders made; None when refused."""
    if loader is None:
        logger.error("reload refused: this daemon was started without a config to re-read")
        return None
    try:
        new = loader()
        problems = check(new).problems
    except ConfigError as exc:
        problems = list(exc.problems)
    if problems:
        for line in problems:
            logger.error("reload refused, keeping the running config: %s", line)
        return None
    try:
        for inbox in build_plans(new).values():
            inbox.done_dir.mkdir(parents=True, exist_ok=True)
            inbox.quarantine_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.error(
            "reload refused, keeping the running config: cannot create %s (%s); make it "
            "writable by the daemon's user",
            exc.filename,
            exc.strerror,
        )
        return None
    return new


async def release_forced(store: Store, dispatcher: Dispatcher, providers: Collection[str]) -> bool:
    """Close the breakers of ``providers`` forced open (a refused key); True when files
    parked behind one were released (they may go now)."""
    forced = [
        provider
        for provider, record in (await store.all_breakers()).items()
        if record.state == FORCED_OPEN and provider in providers
    ]
    for provider in forced:
        await dispatcher.reset_breaker(provider)
    return bool(forced) and bool(await unpark_forever(store))

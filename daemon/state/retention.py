"""Ledger retention: finished rows older than ``ledger_retention_days`` go, at start and daily.

The ledger would otherwise grow by a row (~430 bytes) per file for ever. Only finished rows
(done, quarantined, requeued) are pruned, a chunk at a time so other writes interleave; the
state file does not shrink, its free pages take the next rows. Dedupe only sees what the
ledger still holds: content uploaded before the window is uploaded again.
"""

from __future__ import annotations

import logging
from typing import Protocol

from providers.errors import StateError

__all__ = ["CHUNK", "PRUNE_INTERVAL", "Prunable", "prune_ledger"]

logger = logging.getLogger(__name__)


class Prunable(Protocol):
    """The part of the state store retention uses (``daemon.state.store.Store``)."""

    async def prune(self, *, before: float, limit: int = ...) -> int: ...


DAY = 86400.0
PRUNE_INTERVAL = DAY
CHUNK = 5000


async def prune_ledger(store: Prunable, *, days: float, now: float) -> int:
    """Delete the finished rows older than ``days`` (0: keep every row); the count.

    A state file that cannot be written now is a warning: the next run tries again.
    """
    if days <= 0:
        return 0
    total = 0
    try:
        while True:
            pruned = await store.prune(before=now - days * DAY, limit=CHUNK)
            total += pruned
            if pruned < CHUNK:
                break
    except StateError as exc:
        logger.warning("ledger: pruning rows older than %g days failed: %s", days, exc)
    if total:
        logger.info("ledger: pruned %d finished row(s) older than %g days", total, days)
    return total

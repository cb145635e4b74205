"""Waiting rows whose file left its inbox are closed, so nothing waits for a file that is gone.

A file that waits (``pending``: parked, backing off, rate limited) and that an operator deletes
or moves away leaves a row no rescan will offer again: it would hold
``inboxd_oldest_pending_seconds`` (and the alert on it) up for ever. Every ``rescan_interval``
the daemon closes such rows as ``done`` with reason ``vanished`` and no file id (dedupe never
points at them). A row whose file a worker holds is left alone, and the transition re-checks
the row's state in its own transaction, so a worker that took the row meanwhile wins.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio

from handlers.ledger import DONE, PENDING, Ledger
from handlers.outcomes import InboxPlan
from providers.errors import ClaimLost, InvalidTransition

__all__ = ["close_vanished"]

logger = logging.getLogger(__name__)

_DETAIL = "the file left its inbox before it was uploaded"


async def close_vanished(
    ledger: Ledger,
    plans: Mapping[str, InboxPlan],
    *,
    busy: Callable[[str], bool],
    limit: int = 10_000,
) -> int:
    """Close up to ``limit`` waiting rows whose file is gone; the number closed.

    ``busy(key)`` says whether a worker holds the file ``<inbox>:<relpath>`` now. Rows of
    inboxes not in ``plans`` (removed by a reload) are left as they are.
    """
    rows = [
        row
        for row in await ledger.rows_in_state(PENDING, limit=limit)
        if row.inbox in plans and not busy(f"{row.inbox}:{row.relpath}")
    ]
    paths = [plans[row.inbox].path / row.relpath for row in rows]
    present = await anyio.to_thread.run_sync(lambda: [_exists(p) for p in paths])
    closed = 0
    for row, here in zip(rows, present, strict=True):
        if here:
            continue
        try:
            await ledger.transition(
                row.id, DONE, reason="vanished", detail=_DETAIL, file_id=None, final_path=None
            )
        except (InvalidTransition, ClaimLost):
            continue  # a worker (of this host or, its lease live, another) took it meanwhile
        closed += 1
        logger.info(
            "waiting file left its inbox; its row is closed",
            extra={"inbox": row.inbox, "file": row.relpath},
        )
    return closed


def _exists(path: Path) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell (permissions, I/O): keep the row
    return True

"""At start: finish what a crash (or a stop) left between two steps of a file's path.

Rows left ``uploading`` are settled against the provider's listing (``handlers.reconcile``):
found, they are ``uploaded``; not found, ``pending`` (sent again). Rows left ``uploaded`` are
finished as a live finish would (``handlers.finishing``): archived or deleted, with their text
fetched first when the inbox extracts; one whose text is not due again yet (``not_before``)
is left to wait, and processing the file fetches it later.

Several hosts may share the ledger: only rows this host can ``take`` (its own, or their owner's
lease ran out: that host died) are settled or finished; another live host's are its business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from handlers.finishing import Finisher
from handlers.ledger import UPLOADED, UPLOADING, Ledger, LedgerRow
from handlers.outcomes import InboxPlan
from handlers.reconcile import Reconciler
from providers.types import UploadClient

__all__ = ["RecoverErrors", "recover"]

logger = logging.getLogger(__name__)

RecoverErrors = Callable[[LedgerRow | None, Exception], None]


async def recover(
    ledger: Ledger,
    reconciler: Reconciler,
    finisher: Finisher,
    *,
    clients: Mapping[str, UploadClient],
    plans: Mapping[str, InboxPlan],
    now: float,
    on_error: RecoverErrors | None = None,
) -> None:
    """Settle rows a crash left ``uploading``; finish rows left ``uploaded``.

    A row whose provider cannot be listed now stays ``uploading``: processing the file
    settles it later (never a second copy, never a crash at start). An unexpected error
    of one row (or of settling the interrupted batch: row None) goes to ``on_error``,
    and recovery goes on with the next; ``on_error`` raises to stop (default: raise).
    """
    settle = []
    for row in await ledger.rows_in_state(UPLOADING):
        if row.inbox in plans and row.provider in clients:
            taken = await ledger.take(row.id)
            if taken is not None:  # None: a live host is sending it
                settle.append(taken)
            continue
        logger.warning(
            "interrupted upload of %s in inbox %s: its inbox or provider is no longer "
            "configured; left as it is",
            row.relpath,
            row.inbox,
        )
    try:
        await reconciler.settle_interrupted(settle)
    except Exception as exc:
        _recover_failed(on_error, None, exc)
    for row in await ledger.rows_in_state(UPLOADED):
        plan = plans.get(row.inbox)
        if plan is None or (row.not_before is not None and row.not_before > now):
            continue  # its text is due later: processing the file fetches it then
        taken = await ledger.take(row.id)
        if taken is None:
            continue  # a live host is finishing it
        try:
            await finisher.recover(plan, taken)  # the same check as a live finish
        except Exception as exc:
            _recover_failed(on_error, taken, exc)


def _recover_failed(on_error: RecoverErrors | None, row: LedgerRow | None, exc: Exception) -> None:
    if on_error is None:
        raise exc
    on_error(row, exc)

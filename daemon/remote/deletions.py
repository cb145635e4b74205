"""One recorded remote deletion: intent in the ledger, ``DELETE``, receipts, outcome.

The intent is committed before the request, the outcome after it, so a crash anywhere leaves
an intent without an outcome, which ``settle_intents`` finishes from the provider's listing
(the copy is gone: recorded; still there: deleted again). A 404 means already gone. Every
receipt that names the copy (the original's and its duplicates') gets ``remote_deleted_at``,
rewritten atomically, before the outcome is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Protocol

import anyio

from daemon.remote.ledger import DeletionRow, RemoteLedger
from daemon.state.store import Store
from handlers.archive import mark_receipt
from handlers.quarantine import iso_utc
from providers.errors import MoveError, Permanent
from providers.types import RemoteFile, UploadClient

__all__ = [
    "Checkpoint",
    "DeletionEvents",
    "delete_recorded",
    "no_checkpoint",
    "settle_intents",
]

logger = logging.getLogger(__name__)

Checkpoint = Callable[[str], Awaitable[None]]
"""Called after each durable step (``"intent"``, ``"deleted"``): tests inject a crash there."""


class DeletionEvents(Protocol):
    """What a deletion reports (``daemon.remote.metrics.RemoteMetrics`` is the real one)."""

    def remote_deleted(self, provider: str, reason: str) -> None: ...


async def no_checkpoint(_step: str) -> None:
    """The checkpoint of a real run: nothing happens between the steps."""


async def _conclude(
    ledger: RemoteLedger,
    row: DeletionRow,
    outcome: str,
    *,
    now: float,
    events: DeletionEvents | None,
) -> None:
    for receipt in await ledger.receipts(row.provider, row.file_id):
        try:
            fields = {"remote_deleted_at": iso_utc(now)}
            marked = await anyio.to_thread.run_sync(mark_receipt, receipt, fields)
        except MoveError as exc:  # the deletion stands; the receipt could not say so
            logger.warning("receipt %s not marked remote_deleted_at: %s", receipt, exc)
            continue
        if not marked:
            logger.info("receipt %s is gone; remote deletion recorded in the ledger", receipt)
    await ledger.record_outcome(row.id, outcome, now=now)
    if events is not None:
        events.remote_deleted(row.provider, row.reason)
    logger.info(
        "%s: remote file %s %s (%s)",
        row.provider,
        row.file_id,
        "deleted" if outcome == "deleted" else "was already gone",
        row.reason,
        extra={"provider": row.provider, "file_id": row.file_id, "reason": row.reason},
    )


async def delete_recorded(
    store: Store,
    client: UploadClient,
    file_id: str,
    reason: str,
    now: float,
    *,
    ledger_id: int | None = None,
    remote: RemoteFile | None = None,
    events: DeletionEvents | None = None,
    checkpoint: Checkpoint = no_checkpoint,
    hold: AbstractAsyncContextManager[None] | None = None,
) -> str | None:
    """Delete ``file_id`` from ``client``'s account through the ledger; the outcome
    (``deleted``/``gone``), or None when its deletion was finished before.

    ``hold`` is held while the intent is recorded (the pipeline's lock on the copy's
    content: a dedupe in progress finishes first, and every later one sees the intent).
    Raises ProviderError when the DELETE fails otherwise: the intent stays open and the next
    pass (or start) settles it.
    """
    ledger = RemoteLedger(store)
    async with hold or nullcontext():
        row = await ledger.record_intent(
            client.name, file_id, reason, now=now, ledger_id=ledger_id, remote=remote
        )
    if row.outcome is not None:
        return None
    await checkpoint("intent")
    outcome = "deleted"
    try:
        await client.delete(file_id)
    except Permanent as exc:
        if exc.reason != "not_found":
            raise
        outcome = "gone"
    await checkpoint("deleted")
    await _conclude(ledger, row, outcome, now=now, events=events)
    return outcome


async def settle_intents(
    store: Store,
    client: UploadClient,
    listing: Iterable[RemoteFile],
    *,
    now: float,
    events: DeletionEvents | None = None,
    checkpoint: Checkpoint = no_checkpoint,
) -> int:
    """Finish the deletions a crash left at their intent; how many were settled.

    A copy the listing no longer holds is recorded ``gone``; one still there is deleted
    again (the same file: a second DELETE of it is harmless).
    """
    ledger = RemoteLedger(store)
    listed = {f.id: f for f in listing}
    rows = await ledger.open_intents(client.name)
    for row in rows:
        if row.file_id in listed:
            await delete_recorded(
                store, client, row.file_id, row.reason, now, events=events, checkpoint=checkpoint
            )
        else:
            await _conclude(ledger, row, "gone", now=now, events=events)
    return len(rows)

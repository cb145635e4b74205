"""What happens to one file: settle, validate, quarantine, hash, upload, finish.

The ledger's states and the Protocol the pipeline needs from it are re-exported here; the
steps live in their modules (``handlers.pipeline`` chains them).
"""

from __future__ import annotations

from handlers.ledger import (
    ACTIVE_STATES,
    DONE,
    PENDING,
    QUARANTINED,
    REQUEUED,
    UPLOADED,
    UPLOADING,
    Ledger,
    LedgerRow,
)
from providers.errors import InvalidTransition

__all__ = [
    "ACTIVE_STATES",
    "DONE",
    "PENDING",
    "QUARANTINED",
    "REQUEUED",
    "UPLOADED",
    "UPLOADING",
    "InvalidTransition",
    "Ledger",
    "LedgerRow",
]

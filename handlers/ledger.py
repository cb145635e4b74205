"""The ledger's states, its pure transition table, its row, and the Protocol the pipeline uses.

One row per attempt to bring one file (``inbox``, ``relpath``) through the pipeline::

    pending ──▶ uploading ──▶ uploaded ──▶ done
       │  ▲        │  ▲ │         │
       │  └────────┘  └─┘         └──▶ quarantined ──▶ requeued
       ├──▶ done (duplicate content)      ▲
       └──▶ quarantined ◀─────────────────┘ (also from uploading)

``pending``, ``uploading`` and ``uploaded`` are ACTIVE: at most one active row exists per
(inbox, relpath). ``done``, ``quarantined`` and ``requeued`` are history; a file that shows up
again at the same path starts a new row. ``uploading`` is the durable INTENT: it is committed
before any byte is sent, so a crash leaves a row that recovery must reconcile. An
``uploaded`` row whose extracted text cannot be fetched yet stays ``uploaded`` (uploaded →
uploaded, with ``not_before``): it remembers the upload, so the file is never sent again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from providers.errors import InvalidTransition

__all__ = [
    "ACTIVE_STATES",
    "DONE",
    "FINAL_STATES",
    "MUTABLE_FIELDS",
    "PENDING",
    "QUARANTINED",
    "REQUEUED",
    "STATES",
    "TRANSITIONS",
    "UPLOADED",
    "UPLOADING",
    "Ledger",
    "LedgerRow",
    "check_transition",
    "transition_fields",
]

PENDING = "pending"
UPLOADING = "uploading"
UPLOADED = "uploaded"
DONE = "done"
QUARANTINED = "quarantined"
REQUEUED = "requeued"

STATES: tuple[str, ...] = (PENDING, UPLOADING, UPLOADED, DONE, QUARANTINED, REQUEUED)
ACTIVE_STATES: frozenset[str] = frozenset({PENDING, UPLOADING, UPLOADED})
FINAL_STATES: frozenset[str] = frozenset({DONE, QUARANTINED, REQUEUED})

TRANSITIONS: Mapping[str, frozenset[str]] = {
    # pending → pending: parked (not_before) or the file changed while settling.
    # pending → done: duplicate content, archived without an upload.
    PENDING: frozenset({PENDING, UPLOADING, QUARANTINED, DONE}),
    # uploading → uploading: a new attempt, or failover to the next provider.
    # uploading → pending: retry later, file changed, or reconcile found no remote copy.
    UPLOADING: frozenset({UPLOADING, UPLOADED, PENDING, QUARANTINED}),
    # uploaded → uploaded: its extracted text could not be fetched yet (waits for not_before).
    # uploaded → quarantined: finishing (move/delete) failed for good; the remote copy exists.
    UPLOADED: frozenset({UPLOADED, DONE, QUARANTINED}),
    DONE: frozenset(),
    QUARANTINED: frozenset({REQUEUED}),
    REQUEUED: frozenset(),
}

# Columns a transition may set; identity (id, inbox, relpath) and bookkeeping never change.
MUTABLE_FIELDS: frozenset[str] = frozenset(
    {
        "size",
        "mtime_ns",
        "sha256",
        "provider",
        "purpose",
        "file_id",
        "remote_bytes",
        "transport",
        "intent_at",
        "uploaded_at",
        "finished_at",
        "reason",
        "detail",
        "attempts",
        "not_before",
        "dedupe_of",
        "final_path",
    }
)


# Entering these states stamps this column with ``now`` unless the caller gives a value; a new
# upload attempt (uploading → uploading) gets a fresh intent time, which recovery matches on.
_STAMPS: Mapping[str, str] = {
    UPLOADING: "intent_at",
    UPLOADED: "uploaded_at",
    DONE: "finished_at",
    QUARANTINED: "finished_at",
}


def check_transition(from_state: str, to_state: str) -> None:
    """Raise InvalidTransition unless the table allows ``from_state`` → ``to_state``."""
    if from_state not in TRANSITIONS:
        raise InvalidTransition(from_state, to_state, f"unknown state {from_state!r}")
    if to_state not in TRANSITIONS:
        raise InvalidTransition(from_state, to_state, f"unknown state {to_state!r}")
    if to_state not in TRANSITIONS[from_state]:
        raise InvalidTransition(from_state, to_state)


def transition_fields(
    from_state: str, to_state: str, fields: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """The columns to write for a transition: ``fields`` checked, plus the timestamps it implies.

    Entering ``uploading`` stamps ``intent_at``, ``uploaded`` stamps ``uploaded_at``, and a final
    state stamps ``finished_at`` — each only when the caller did not give one.
    """
    check_transition(from_state, to_state)
    unknown = sorted(set(fields) - MUTABLE_FIELDS)
    if unknown:
        raise InvalidTransition(from_state, to_state, f"unknown field(s) {', '.join(unknown)}")
    out = dict(fields)
    stamp = _STAMPS.get(to_state)
    if stamp is not None and out.get(stamp) is None:
        out[stamp] = now
    out["state"] = to_state
    out["updated_at"] = now
    return out


@dataclass(frozen=True)
class LedgerRow:
    """One row of the ledger as the pipeline sees it. Times are wall-clock unix seconds."""

    id: int
    inbox: str
    relpath: str
    size: int
    mtime_ns: int
    sha256: str | None
    state: str
    provider: str | None
    purpose: str | None
    file_id: str | None
    remote_bytes: int | None
    transport: str | None
    intent_at: float | None
    uploaded_at: float | None
    finished_at: float | None
    reason: str | None
    detail: str | None
    attempts: int
    not_before: float | None
    dedupe_of: int | None
    final_path: str | None
    created_at: float
    updated_at: float
    owner: str | None = None  # the host whose claim this row is (``daemon.state._claims``)
    lease_until: float | None = None  # that claim's end unless renewed (wall-clock seconds)

    @property
    def active(self) -> bool:
        """True while the file is still the pipeline's business (pending/uploading/uploaded)."""
        return self.state in ACTIVE_STATES


class Ledger(Protocol):
    """The durable record of every file (``daemon.state.store.Store`` is the real one, SQLite).

    Every write is committed before the method returns, so it is durable before the caller's
    next side effect. ``KeyError`` means no row has that id.
    """

    async def begin(self, inbox: str, relpath: str, *, size: int, mtime_ns: int) -> LedgerRow:
        """The active row for (inbox, relpath), or a new ``pending`` one.

        A ``pending`` row takes the new size/mtime (and forgets its sha256 when they changed);
        an ``uploading``/``uploaded`` row is returned unchanged.
        """
        ...

    async def get(self, row_id: int) -> LedgerRow: ...

    async def transition(self, row_id: int, to_state: str, **fields: Any) -> LedgerRow:
        """Move a row to ``to_state`` (checked against TRANSITIONS), setting ``fields``.

        Raises InvalidTransition — and changes nothing — when the table does not allow it.
        """
        ...

    async def set_sha256(self, row_id: int, sha256: str) -> LedgerRow: ...

    async def find_uploaded(self, sha256: str, provider: str, purpose: str) -> LedgerRow | None:
        """The oldest original upload of this content to this provider and purpose, if any.

        Only ``uploaded``/``done`` rows with a ``file_id`` that are not themselves duplicates.
        """
        ...

    async def rows_in_state(
        self, state: str, *, inbox: str | None = None, limit: int | None = None
    ) -> list[LedgerRow]:
        """Rows in ``state`` (optionally of one inbox), oldest first."""
        ...

    async def counts_by_state(self) -> dict[str, int]:
        """Every state (present at 0) → number of rows in it."""
        ...

    async def recent_failures(self, limit: int) -> list[LedgerRow]:
        """Quarantined rows, newest first."""
        ...

    async def outcome_counts(self, since: float) -> dict[str, int]:
        """``{"done": n, "quarantined": m}`` for rows finished at or after ``since``.

        A quarantined row an operator has since requeued still counts as quarantined.
        """
        ...

    async def active_for(self, inbox: str, relpath: str) -> LedgerRow | None: ...

    async def claimed_file_ids(self, provider: str, file_ids: Sequence[str]) -> set[str]:
        """Those of ``file_ids`` that some row already records for ``provider`` (reconcile)."""
        ...

    async def take(self, row_id: int) -> LedgerRow | None:
        """Claim the active row ``row_id`` for this host (recovery): the row, or None when it
        is finished, gone, or another host holds a live claim on it."""
        ...

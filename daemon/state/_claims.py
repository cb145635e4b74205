"""Claims, leases, the shared send window and named locks: the state several hosts share.

Each function here is one transaction's work on a connection (run whole by the store), written
in SQL that SQLite and PostgreSQL both speak (``INSERT … ON CONFLICT … RETURNING``), so the
statement itself decides a race between hosts, never a read followed by a write.

A ledger row's claim is its ``owner`` (a host id) and ``lease_until`` (wall-clock seconds). A
host may work on a row it owns, a row nobody owns (written before claims existed), or a row
whose lease has run out (its host died or lost the database): taking that row over is logged.
Leases are renewed while the host lives (``renew``), so a live host's rows are never taken.
"""

from __future__ import annotations

import logging
from typing import Any

from daemon.state._conn import Conn
from handlers.ledger import LedgerRow
from providers.errors import ClaimedElsewhere

__all__ = [
    "claim",
    "claimable",
    "fleet",
    "hold",
    "release",
    "renew",
    "reserve_send",
    "take",
]

logger = logging.getLogger(__name__)

_ACTIVE = "('pending', 'uploading', 'uploaded')"

# The claim condition in SQL, as ``claimable`` says it (parameters: host, now).
_MAY_TAKE = "(owner IS NULL OR owner = ? OR lease_until IS NULL OR lease_until <= ?)"

_TAKE = (
    f"UPDATE ledger SET owner = ?, lease_until = ? WHERE id = ? AND state IN {_ACTIVE}"  # noqa: S608 -- constants only
    f" AND {_MAY_TAKE} RETURNING *"
)

_RENEW = f"UPDATE ledger SET lease_until = ? WHERE owner = ? AND state IN {_ACTIVE}"  # noqa: S608 -- constants only

_GUARD = (
    "INSERT INTO send_guard (provider, touched_at) VALUES (?, ?)"
    " ON CONFLICT (provider) DO UPDATE SET touched_at = excluded.touched_at"
)

_HOLD = (
    "INSERT INTO leases (name, owner, until) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until"
    " WHERE leases.owner = excluded.owner OR leases.until <= ? RETURNING owner"
)


def claimable(owner: str | None, lease_until: float | None, host: str, now: float) -> bool:
    """May ``host`` work on a row owned by ``owner`` with this lease at ``now``?"""
    return owner is None or owner == host or lease_until is None or lease_until <= now


def claim(
    db: Conn, row: LedgerRow, *, host: str, lease: float, now: float, to_row: Any
) -> LedgerRow:
    """Make ``host`` the owner of the active ``row`` for ``lease`` seconds from ``now``.

    Raises ClaimedElsewhere (changing nothing) when another host holds a live lease on it.
    ``to_row`` maps a database row to a LedgerRow.
    """
    if not claimable(row.owner, row.lease_until, host, now):
        raise ClaimedElsewhere(row.owner or "?", row.lease_until or now)
    got = db.rows(_TAKE, (host, now + lease, row.id, host, now))
    if not got:  # another host claimed it between our read and this statement
        raise ClaimedElsewhere(row.owner or "?", now + lease)
    if row.owner is not None and row.owner != host:
        logger.warning(
            "took over %s in inbox %s (ledger row %d, %s) from host %s, whose lease ran out",
            row.relpath,
            row.inbox,
            row.id,
            row.state,
            row.owner,
        )
    taken: LedgerRow = to_row(got[0])
    return taken


def take(
    db: Conn, row: LedgerRow | None, *, host: str, lease: float, now: float, to_row: Any
) -> LedgerRow | None:
    """``claim`` for recovery: the row claimed, or None when it is not active or not ours to
    take (another host holds it)."""
    if row is None or not row.active:
        return None
    try:
        return claim(db, row, host=host, lease=lease, now=now, to_row=to_row)
    except ClaimedElsewhere:
        return None


def renew(db: Conn, *, host: str, lease: float, now: float) -> int:
    """Extend the lease of every active row ``host`` owns, and every named lock it holds to at
    least ``lease`` from now (a lock is held until released or its host dies); the number of
    rows renewed."""
    db.run(
        "UPDATE leases SET until = ? WHERE owner = ? AND until < ?",
        (now + lease, host, now + lease),
    )
    return db.run(_RENEW, (now + lease, host))


def fleet(db: Conn, *, now: float) -> dict[str, tuple[int, bool]]:
    """Owner (``""`` for rows nobody owns) → (active rows, whether any lease is live)."""
    rows = db.rows(
        "SELECT coalesce(owner, ''), count(*), max(lease_until) FROM ledger"  # noqa: S608 -- constants only
        f" WHERE state IN {_ACTIVE} GROUP BY coalesce(owner, '')"
    )
    return {row[0]: (int(row[1]), row[2] is not None and row[2] > now) for row in rows}


def reserve_send(db: Conn, provider: str, *, rpm: float, window: float, now: float) -> float:
    """Take one send from the account's shared window: 0.0 when taken, else the seconds until
    the oldest send in the window leaves it (nothing taken).

    The upsert of the provider's guard row serialises reservations of one provider across
    hosts (a row lock in PostgreSQL; SQLite's write transactions are serial anyway).
    """
    db.run(_GUARD, (provider, now))
    db.run("DELETE FROM send_slots WHERE provider = ? AND at <= ?", (provider, now - window))
    count, oldest = db.rows(
        "SELECT count(*), min(at) FROM send_slots WHERE provider = ?", (provider,)
    )[0][:2]
    if count < rpm:
        db.run("INSERT INTO send_slots (provider, at) VALUES (?, ?)", (provider, now))
        return 0.0
    return max(0.0, float(oldest) + window - now)


def hold(db: Conn, name: str, *, host: str, ttl: float, now: float) -> bool:
    """Take or extend the named lock ``name`` for ``ttl`` seconds: True when ``host`` holds it."""
    return bool(db.rows(_HOLD, (name, host, now + ttl, now)))


def release(db: Conn, name: str, *, host: str) -> None:
    """Give the named lock up (if ``host`` holds it)."""
    db.run("DELETE FROM leases WHERE name = ? AND owner = ?", (name, host))

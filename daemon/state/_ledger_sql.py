"""SQL text and row mapping for the ledger and breaker tables (no I/O here)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from daemon.state._conn import Row, decode_path
from handlers.ledger import LedgerRow
from providers.types import BreakerRecord

__all__ = [
    "ACTIVE_ROW",
    "CLAIM_PROBE",
    "FIND_UPLOADED",
    "INSERT_PENDING",
    "PRUNE_FINISHED",
    "RESET_PENDING",
    "SAVE_BREAKER",
    "breaker_from_row",
    "breaker_params",
    "encode_path",
    "encode_updates",
    "ledger_from_row",
    "update_sql",
]

# Spelled exactly as schema.ACTIVE_STATES_SQL (a test checks) so the partial index is used.
ACTIVE_ROW = (
    "SELECT * FROM ledger WHERE inbox = ? AND relpath = ?"
    " AND state IN ('pending', 'uploading', 'uploaded')"
)

# Claimed by its host as it is made; a row another host inserted first wins (the unique
# partial index ledger_active), and this one returns nothing: the caller reads that row.
INSERT_PENDING = """
    INSERT INTO ledger (inbox, relpath, size, mtime_ns, state, attempts, created_at, updated_at,
                        owner, lease_until)
    VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)
    ON CONFLICT (inbox, relpath) WHERE state IN ('pending', 'uploading', 'uploaded') DO NOTHING
    RETURNING *
"""

# A pending file changed before upload: its cached hash no longer describes it.
RESET_PENDING = (
    "UPDATE ledger SET size = ?, mtime_ns = ?, sha256 = NULL, updated_at = ? WHERE id = ?"
    " RETURNING *"
)

# A copy whose deletion is recorded (even one not yet confirmed) is never pointed at again:
# that content is uploaded anew (daemon.remote).
FIND_UPLOADED = """
    SELECT * FROM ledger
    WHERE sha256 = ? AND provider = ? AND purpose = ?
      AND state IN ('uploaded', 'done') AND file_id IS NOT NULL AND dedupe_of IS NULL
      AND NOT EXISTS (SELECT 1 FROM remote_deletions AS d
                      WHERE d.provider = ledger.provider AND d.file_id = ledger.file_id)
    ORDER BY id LIMIT 1
"""

# Finished rows (done, quarantined, requeued) that finished before a time, oldest first, a
# chunk at a time; an original that a kept row still names as ``dedupe_of`` stays (the
# foreign key), and goes in a later run once its duplicates have gone.
PRUNE_FINISHED = """
    DELETE FROM ledger WHERE id IN (
        SELECT id FROM ledger
        WHERE finished_at < ? AND state IN ('done', 'quarantined', 'requeued')
          AND id NOT IN (SELECT dedupe_of FROM ledger WHERE dedupe_of IS NOT NULL)
        ORDER BY finished_at LIMIT ?
    )
"""

SAVE_BREAKER = """
    INSERT INTO breakers (provider, state, open_until, consecutive_opens, consecutive_failures,
                          window_bits, probe_until, reason, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (provider) DO UPDATE SET
        state = excluded.state,
        open_until = excluded.open_until,
        consecutive_opens = excluded.consecutive_opens,
        consecutive_failures = excluded.consecutive_failures,
        window_bits = excluded.window_bits,
        probe_until = excluded.probe_until,
        reason = excluded.reason,
        updated_at = excluded.updated_at
"""

# One statement, so the check and the claim are atomic across connections and processes. The
# condition is ``providers.breaker.CLAIM_RULE`` in SQL (a NULL open_until is never due);
# tests/contracts/test_breaker_claim.py runs every row of the table against it.
CLAIM_PROBE = """
    UPDATE breakers SET state = 'half_open', probe_until = ?, updated_at = ?
    WHERE provider = ?
      AND ((state = 'open' AND open_until <= ?)
           OR (state = 'half_open' AND (probe_until IS NULL OR probe_until <= ?)))
"""

# Filenames may hold undecodable bytes (surrogate escapes), which SQLite's UTF-8 text cannot:
# those paths are stored as their raw bytes in a BLOB, every other path as TEXT. The mapping is
# deterministic, so the unique index over (inbox, relpath) still means one row per file.
# (PostgreSQL keeps every path as BYTEA: ``daemon.state._postgres.PgConn.path``.)
_PATH_COLUMNS = frozenset({"relpath", "final_path"})
# SQLite's INSERT … RETURNING gives a REAL of integral value as an int; PostgreSQL a float.
_TIME_COLUMNS = frozenset(
    {
        "intent_at",
        "uploaded_at",
        "finished_at",
        "not_before",
        "created_at",
        "updated_at",
        "lease_until",
    }
)
_TEXT_COLUMNS = frozenset({"reason", "detail"})


def encode_path(path: str) -> str | bytes:
    """A path as stored: TEXT when it is valid UTF-8, its raw bytes otherwise."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def _encode_text(value: str) -> str:
    # Human text only: undecodable bytes become visible escapes instead of failing the write.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def encode_updates(
    updates: Mapping[str, Any], path: Callable[[str], Any] = encode_path
) -> dict[str, Any]:
    """Column values ready to bind (paths, as ``path`` stores them, and human text made
    storable)."""
    out: dict[str, Any] = {}
    for column, value in updates.items():
        if isinstance(value, str) and column in _PATH_COLUMNS:
            out[column] = path(value)
        elif isinstance(value, str) and column in _TEXT_COLUMNS:
            out[column] = _encode_text(value)
        else:
            out[column] = value
    return out


def update_sql(columns: list[str]) -> str:
    """``UPDATE ledger SET a = ?, b = ? WHERE id = ? RETURNING *`` for trusted column names.

    RETURNING gives the updated row in the same statement (SQLite >= 3.35), no re-select.
    """
    assignments = ", ".join(f"{column} = ?" for column in columns)
    return f"UPDATE ledger SET {assignments} WHERE id = ? RETURNING *"  # noqa: S608 -- names from MUTABLE_FIELDS


def ledger_from_row(row: Row) -> LedgerRow:
    """A ledger table row as a LedgerRow."""
    values = {key: row[key] for key in row.keys()}  # noqa: SIM118 -- sqlite3.Row has no items()
    values["relpath"] = decode_path(values["relpath"])
    values["final_path"] = decode_path(values["final_path"])
    for column in _TIME_COLUMNS.intersection(values):
        if values[column] is not None:
            values[column] = float(values[column])
    return LedgerRow(**values)


def breaker_params(provider: str, record: BreakerRecord) -> tuple[Any, ...]:
    """SAVE_BREAKER's parameters; the window is stored as a '0101' string (1 = failure)."""
    return (
        provider,
        record.state,
        record.open_until,
        record.consecutive_opens,
        record.consecutive_failures,
        "".join("1" if failed else "0" for failed in record.window),
        record.probe_until,
        record.reason,
        record.updated_at,
    )


def breaker_from_row(row: Row) -> BreakerRecord:
    """A breakers table row as a BreakerRecord."""
    return BreakerRecord(
        state=row["state"],
        open_until=row["open_until"],
        consecutive_opens=row["consecutive_opens"],
        consecutive_failures=row["consecutive_failures"],
        window=tuple(bit == "1" for bit in row["window_bits"]),
        probe_until=row["probe_until"],
        reason=row["reason"],
        updated_at=row["updated_at"],
    )

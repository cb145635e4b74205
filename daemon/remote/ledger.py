"""The ledger's view of the remote side: who uploaded each remote file, and recorded deletions.

Reads the ``ledger`` table and keeps ``remote_deletions`` (schema v4) in the same store,
through ``Store.write``/``Store.fetch`` (portable SQL on the store's ``Conn``, so on SQLite and
PostgreSQL alike): every write is committed before the method returns, so an intent is
durable before its ``DELETE`` is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.remote.plan import Attempt, Owned
from daemon.state._conn import Conn, Row, decode_path
from daemon.state.store import Store
from handlers.archive import receipt_path
from handlers.ledger import ACTIVE_STATES, PENDING
from providers.types import RemoteFile

__all__ = ["DeletionRow", "RemoteLedger"]

_CHUNK = 500

_INSERT_INTENT = """
    INSERT INTO remote_deletions (provider, file_id, reason, ledger_id, filename, bytes,
                                  created_at, intent_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (provider, file_id) DO NOTHING
"""

# The original upload (not a duplicate's row) of each listed id; the oldest row wins.
_OWNERS = """
    SELECT id, file_id, inbox, relpath, state, final_path, uploaded_at, sha256 FROM ledger
    WHERE id IN (
        SELECT min(id) FROM ledger
        WHERE provider = ? AND dedupe_of IS NULL AND file_id IN ({marks})
        GROUP BY file_id
    )
"""


@dataclass(frozen=True)
class DeletionRow:
    """One recorded deletion; ``outcome`` is None while only its intent is recorded."""

    id: int
    provider: str
    file_id: str
    reason: str
    ledger_id: int | None
    filename: str | None
    bytes: int | None
    created_at: float | None
    intent_at: float
    outcome: str | None
    outcome_at: float | None


def _deletion(row: Row) -> DeletionRow:
    return DeletionRow(**{key: row[key] for key in row.keys()})  # noqa: SIM118 -- sqlite3.Row


# Paths are stored as the engine keeps them (daemon.state._conn): back to the filesystem's str.
_path = decode_path


def _attempt(row: Row, finished_at: float) -> Attempt:
    return Attempt(
        ledger_id=row["id"],
        relpath=_path(row["relpath"]) or "",
        size=row["size"],
        purpose=row["purpose"],
        intent_at=row["intent_at"],
        finished_at=finished_at,
    )


class RemoteLedger:
    """``remote_deletions`` and the ledger queries the remote side needs, over one Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record_intent(
        self,
        provider: str,
        file_id: str,
        reason: str,
        *,
        now: float,
        ledger_id: int | None = None,
        remote: RemoteFile | None = None,
    ) -> DeletionRow:
        """The deletion of ``file_id``: a new intent, or the one recorded before (any outcome)."""
        params = (
            provider,
            file_id,
            reason,
            ledger_id,
            None if remote is None else remote.filename,
            None if remote is None else remote.bytes,
            None if remote is None else remote.created_at,
            now,
        )

        def record(db: Conn) -> DeletionRow:
            db.execute(_INSERT_INTENT, params)
            row = db.execute(
                "SELECT * FROM remote_deletions WHERE provider = ? AND file_id = ?",
                (provider, file_id),
            ).fetchone()
            assert row is not None  # inserted above, or there before
            return _deletion(row)

        return await self.store.write(record)

    async def record_outcome(self, deletion_id: int, outcome: str, *, now: float) -> None:
        """The DELETE's outcome: ``deleted`` (by us) or ``gone`` (already not on the account)."""
        await self.store.write(
            lambda db: db.execute(
                "UPDATE remote_deletions SET outcome = ?, outcome_at = ? WHERE id = ?",
                (outcome, now, deletion_id),
            )
        )

    async def open_intents(self, provider: str) -> list[DeletionRow]:
        """Deletions of ``provider`` whose outcome a crash (or a failed DELETE) left unknown."""
        rows = await self.store.fetch(
            "SELECT * FROM remote_deletions WHERE provider = ? AND outcome IS NULL ORDER BY id",
            (provider,),
        )
        return [_deletion(row) for row in rows]

    async def deletions(self, provider: str) -> dict[str, DeletionRow]:
        """Every recorded deletion of ``provider``, by file id."""
        rows = await self.store.fetch(
            "SELECT * FROM remote_deletions WHERE provider = ? ORDER BY id", (provider,)
        )
        return {row["file_id"]: _deletion(row) for row in rows}

    async def owners(self, provider: str, file_ids: Sequence[str]) -> dict[str, Owned]:
        """The ledger's view of each of ``file_ids`` inboxd uploaded (the others are absent)."""
        owned: dict[str, Owned] = {}
        for start in range(0, len(file_ids), _CHUNK):
            chunk = tuple(file_ids[start : start + _CHUNK])
            query = _OWNERS.format(marks=", ".join("?" * len(chunk)))
            # One query per chunk, whole rows: a pass weighs every file of the account.
            for row in await self.store.fetch(query, (provider, *chunk)):
                final_path = _path(row["final_path"])
                receipt = None
                if row["state"] == "done" and final_path is not None:
                    receipt = str(receipt_path(Path(final_path)))
                owned[row["file_id"]] = Owned(
                    row["file_id"],
                    row["id"],
                    row["inbox"],
                    _path(row["relpath"]) or "",
                    receipt,
                    settled=row["state"] not in ACTIVE_STATES,
                    uploaded_at=row["uploaded_at"] or 0.0,
                    sha256=row["sha256"],
                )
        return owned

    async def receipts(self, provider: str, file_id: str) -> list[Path]:
        """The receipt of every archived file whose upload record names this remote copy
        (the original's and its duplicates')."""
        rows = await self.store.fetch(
            "SELECT final_path FROM ledger WHERE provider = ? AND file_id = ? AND state = 'done'"
            " AND final_path IS NOT NULL ORDER BY id",
            (provider, file_id),
        )
        paths = (_path(row["final_path"]) for row in rows)
        return [receipt_path(Path(p)) for p in paths if p is not None]

    async def attempts(self, provider: str, *, since: float) -> list[Attempt]:
        """Finished rows whose last attempt on ``provider`` began at or after ``since``."""
        rows = await self.store.fetch(
            "SELECT id, relpath, size, purpose, intent_at, finished_at FROM ledger"
            " WHERE provider = ? AND state IN ('done', 'quarantined', 'requeued')"
            " AND intent_at IS NOT NULL AND intent_at >= ? AND finished_at IS NOT NULL"
            " AND purpose IS NOT NULL AND dedupe_of IS NULL ORDER BY id",
            (provider, since),
        )
        return [_attempt(row, row["finished_at"]) for row in rows]

    async def active_attempts(self, provider: str) -> list[Attempt]:
        """Active rows' last attempts on ``provider`` (their copies are never orphans)."""
        rows = await self.store.fetch(
            "SELECT id, relpath, size, purpose, intent_at FROM ledger"
            " WHERE provider = ? AND state IN ('pending', 'uploading', 'uploaded')"
            " AND intent_at IS NOT NULL AND purpose IS NOT NULL ORDER BY id",
            (provider,),
        )
        return [_attempt(row, float("inf")) for row in rows]

    async def release_parked(self, provider: str) -> int:
        """Let every file parked after trying ``provider`` go at once; how many."""
        rows = [
            row
            for row in await self.store.rows_in_state(PENDING)
            if row.provider == provider and row.not_before is not None
        ]
        for row in rows:
            await self.store.transition(row.id, PENDING, not_before=None)
        return len(rows)

    async def claimed(self, provider: str, file_ids: Sequence[str]) -> set[str]:
        """Those of ``file_ids`` a ledger row records (reconciliation's own query)."""
        return await self.store.claimed_file_ids(provider, file_ids)

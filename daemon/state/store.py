"""The SQLite state file: the ledger and the circuit breakers, durable before every side effect.

WAL journal, ``synchronous=FULL``, a ``busy_timeout`` (two processes may share one state file:
the daemon and ``inboxd status``/``breaker reset``). Every write is one function run whole on
the connection's thread (``daemon.state._group_commit``): committed before the method returns, in
one ``BEGIN IMMEDIATE`` transaction with the writes queued beside it (group commit: one fsync
for many), shielded from cancellation so it either happens whole or not at all.
At open, ``PRAGMA quick_check`` runs; a corrupt state file (with its -wal/-shm) is renamed
``<name>.corrupt-<UTC time>`` and a fresh one is built: the history is lost, no file is
(``daemon.state._connection``).
sqlite3 errors an operator must act on (disk full, read-only, unopenable, locked too long)
name the state file and the fix: a ConfigError while it is opened (the daemon refuses to
start), a StateError once it is open (a fault of the running daemon, which then stops).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from daemon.state import _ledger_sql as sql
from daemon.state._connection import connect, hint
from daemon.state._group_commit import GroupCommit
from daemon.state.schema import migrations_after
from daemon.state.watch import file_identity
from handlers.ledger import (
    PENDING,
    QUARANTINED,
    STATES,
    LedgerRow,
    transition_fields,
)
from providers.errors import StateError
from providers.types import BreakerRecord

__all__ = ["Store"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Store:
    """The state file. Implements ``handlers.ledger.Ledger`` and ``providers.types.BreakerStore``.

    Build it with ``async with Store.open(path) as store``; one Store is safe to share between
    tasks (its operations are serialised, concurrent writes committed together), and several
    processes may open the same file.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> None:
        self._db = GroupCommit(db)
        self._path = path
        self._clock = clock
        self._identity = file_identity(path)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, path: Path, *, clock: Callable[[], float] = time.time, busy_timeout: float = 10.0
    ) -> AsyncIterator[Store]:
        """Open (creating, checking, migrating, or rebuilding when corrupt) the state file."""
        db = await connect(path, clock=clock, busy_timeout=busy_timeout)
        store = cls(db, path, clock)
        try:
            await store._write(store._migrate)
            yield store
        finally:
            await store._db.close()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def identity(self) -> tuple[int, int]:
        """(st_dev, st_ino) of the file opened (``daemon.state.watch`` compares the path's)."""
        return self._identity

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            fix = hint(exc)
            if fix is None:
                raise
            raise StateError(f"state_dir: {self._path}: {exc}; {fix}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction, committed (with others queued beside it) before
        this returns; shielded, so it happens whole or (cancelled before it starts) not at all."""
        with self._translate():
            return await self._db.write(fn)

    async def _fetch(self, query: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._translate():
            return await self._db.read(lambda db: db.execute(query, params).fetchall())

    def _migrate(self, db: sqlite3.Connection) -> None:
        row = _one(db, "PRAGMA user_version", ())
        version = int(row[0]) if row else 0
        for migration in migrations_after(version, path=str(self._path)):
            for statement in migration.statements:
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_history (version, summary, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.summary, self._clock()),
            )
            # PRAGMA takes no parameters; the version is an int from our own table.
            db.execute(f"PRAGMA user_version = {int(migration.version)}")
            logger.info(
                "state file %s: schema migrated to v%d (%s)",
                self._path,
                migration.version,
                migration.summary,
            )

    async def pragmas(self) -> dict[str, Any]:
        """The connection's journal_mode, synchronous, busy_timeout, foreign_keys, user_version."""
        out: dict[str, Any] = {}
        for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys", "user_version"):
            rows = await self._fetch(f"PRAGMA {name}")
            out[name] = rows[0][0]
        return out

    # -- ledger -----------------------------------------------------------------------------

    async def begin(self, inbox: str, relpath: str, *, size: int, mtime_ns: int) -> LedgerRow:
        """The active row for (inbox, relpath), or a new ``pending`` one (see ``Ledger``)."""
        key = (inbox, sql.encode_path(relpath))

        def begin(db: sqlite3.Connection) -> LedgerRow:
            now = self._clock()
            row = _one(db, sql.ACTIVE_ROW, key)
            if row is None:
                row = _one(db, sql.INSERT_PENDING, (*key, size, mtime_ns, now, now))
            elif row["state"] == PENDING and (row["size"], row["mtime_ns"]) != (size, mtime_ns):
                row = _one(db, sql.RESET_PENDING, (size, mtime_ns, now, row["id"]))
            if row is None:
                raise KeyError(key)
            return sql.ledger_from_row(row)

        return await self._write(begin)

    async def get(self, row_id: int) -> LedgerRow:
        """The row with this id; KeyError when there is none."""
        rows = await self._fetch("SELECT * FROM ledger WHERE id = ?", (row_id,))
        if not rows:
            raise KeyError(row_id)
        return sql.ledger_from_row(rows[0])

    async def transition(self, row_id: int, to_state: str, **fields: Any) -> LedgerRow:
        """Move a row to ``to_state`` with ``fields``; InvalidTransition changes nothing."""

        def transition(db: sqlite3.Connection) -> LedgerRow:
            current = _row_by_id(db, row_id)
            updates = transition_fields(current.state, to_state, fields, self._clock())
            return _update(db, row_id, sql.encode_updates(updates))

        return await self._write(transition)

    async def set_sha256(self, row_id: int, sha256: str) -> LedgerRow:
        """Record the content hash (the state does not change)."""
        return await self._write(
            lambda db: _update(db, row_id, {"sha256": sha256, "updated_at": self._clock()})
        )

    async def find_uploaded(self, sha256: str, provider: str, purpose: str) -> LedgerRow | None:
        """The oldest original upload of this content to this provider and purpose, if any."""
        rows = await self._fetch(sql.FIND_UPLOADED, (sha256, provider, purpose))
        return sql.ledger_from_row(rows[0]) if rows else None

    async def claimed_file_ids(self, provider: str, file_ids: Sequence[str]) -> set[str]:
        """Those of ``file_ids`` that some ledger row already records for ``provider``."""
        claimed: set[str] = set()
        for start in range(0, len(file_ids), 500):
            chunk = tuple(file_ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            rows = await self._fetch(
                f"SELECT DISTINCT file_id FROM ledger WHERE provider = ? AND file_id IN ({marks})",  # noqa: S608 -- only placeholders are interpolated
                (provider, *chunk),
            )
            claimed.update(row[0] for row in rows)
        return claimed

    async def rows_in_state(
        self, state: str, *, inbox: str | None = None, limit: int | None = None
    ) -> list[LedgerRow]:
        """Rows in ``state`` (optionally of one inbox), oldest first."""
        query = "SELECT * FROM ledger WHERE state = ?"
        params: tuple[Any, ...] = (state,)
        if inbox is not None:
            query += " AND inbox = ?"
            params += (inbox,)
        query += " ORDER BY id LIMIT ?"
        params += (-1 if limit is None else limit,)
        return [sql.ledger_from_row(row) for row in await self._fetch(query, params)]

    async def counts_by_state(self) -> dict[str, int]:
        """Every state (present at 0) → number of rows in it."""
        counts = dict.fromkeys(STATES, 0)
        for state, count in await self._fetch("SELECT state, count(*) FROM ledger GROUP BY state"):
            counts[state] = count
        return counts

    async def recent_failures(self, limit: int) -> list[LedgerRow]:
        """Quarantined rows, newest first."""
        rows = await self._fetch(
            "SELECT * FROM ledger WHERE state = ? ORDER BY finished_at DESC, id DESC LIMIT ?",
            (QUARANTINED, limit),
        )
        return [sql.ledger_from_row(row) for row in rows]

    async def outcome_counts(self, since: float) -> dict[str, int]:
        """``{"done": n, "quarantined": m}`` finished at or after ``since`` (requeued included)."""
        rows = await self._fetch(
            "SELECT CASE state WHEN 'done' THEN 'done' ELSE 'quarantined' END, count(*)"
            " FROM ledger WHERE finished_at >= ? AND state IN ('done', 'quarantined', 'requeued')"
            " GROUP BY 1",
            (since,),
        )
        counts = {"done": 0, "quarantined": 0}
        counts.update({row[0]: row[1] for row in rows})
        return counts

    async def oldest_waiting(self) -> dict[str, float]:
        """Inbox → ``created_at`` of its oldest unfinished row (pending, uploading, uploaded);
        inboxes with none are absent (``inboxd_oldest_pending_seconds``)."""
        rows = await self._fetch(
            "SELECT inbox, min(created_at) FROM ledger"
            " WHERE state IN ('pending', 'uploading', 'uploaded') GROUP BY inbox"
        )
        return {row[0]: row[1] for row in rows}

    async def prune(self, *, before: float, limit: int = 5000) -> int:
        """Delete up to ``limit`` finished rows that finished before ``before``; the count.

        Active rows are never touched, nor an original a kept duplicate still points at.
        """
        return await self._write(
            lambda db: db.execute(sql.PRUNE_FINISHED, (before, limit)).rowcount
        )

    async def active_for(self, inbox: str, relpath: str) -> LedgerRow | None:
        """The pending/uploading/uploaded row for this file, if any."""
        rows = await self._fetch(sql.ACTIVE_ROW, (inbox, sql.encode_path(relpath)))
        return sql.ledger_from_row(rows[0]) if rows else None

    # -- tables other packages keep in this file (daemon.remote) ----------------------------

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one committed write transaction (as every method here does)."""
        return await self._write(fn)

    async def fetch(self, query: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """The rows of one read-only query."""
        return await self._fetch(query, params)

    # -- breakers ---------------------------------------------------------------------------

    async def load_breaker(self, provider: str) -> BreakerRecord | None:
        """The persisted breaker of ``provider``, or None when it never left ``closed``."""
        rows = await self._fetch("SELECT * FROM breakers WHERE provider = ?", (provider,))
        return sql.breaker_from_row(rows[0]) if rows else None

    async def save_breaker(self, provider: str, record: BreakerRecord) -> None:
        """Persist ``record`` as the breaker of ``provider`` (committed on return)."""
        params = sql.breaker_params(provider, record)
        await self._write(lambda db: db.execute(sql.SAVE_BREAKER, params).close())

    async def claim_probe(self, provider: str, *, now: float, lease_until: float) -> bool:
        """Atomically claim the one half-open probe (see ``providers.types.BreakerStore``)."""
        params = (lease_until, self._clock(), provider, now, now)
        return await self._write(lambda db: db.execute(sql.CLAIM_PROBE, params).rowcount == 1)

    async def reset_breaker(self, provider: str) -> None:
        """Close ``provider``'s breaker and forget its history (``inboxd breaker reset``)."""
        record = BreakerRecord(reason="reset by operator", updated_at=self._clock())
        await self.save_breaker(provider, record)

    async def all_breakers(self) -> dict[str, BreakerRecord]:
        """Every persisted breaker, by provider name."""
        rows = await self._fetch("SELECT * FROM breakers ORDER BY provider")
        return {row["provider"]: sql.breaker_from_row(row) for row in rows}


def _one(db: sqlite3.Connection, query: str, params: tuple[Any, ...]) -> sqlite3.Row | None:
    rows: list[sqlite3.Row] = db.execute(query, params).fetchall()
    return rows[0] if rows else None


def _row_by_id(db: sqlite3.Connection, row_id: int) -> LedgerRow:
    row = _one(db, "SELECT * FROM ledger WHERE id = ?", (row_id,))
    if row is None:
        raise KeyError(row_id)
    return sql.ledger_from_row(row)


def _update(db: sqlite3.Connection, row_id: int, values: dict[str, Any]) -> LedgerRow:
    columns = sorted(values)
    row = _one(db, sql.update_sql(columns), (*(values[column] for column in columns), row_id))
    if row is None:
        raise KeyError(row_id)
    return sql.ledger_from_row(row)

"""The store: the ledger and the circuit breakers, durable before every side effect, on either
engine.

Every method is written once, as a plain function of a ``Conn`` (``daemon.state._conn``) run
whole in one transaction on a worker thread, and committed before the method returns. The
engine is picked by what ``Store.open`` is given: a state file path → SQLite
(``daemon.state._sqlite``: WAL, ``synchronous=FULL``, group commit, a corrupt file moved aside
and rebuilt, sqlite3 errors an operator must act on raised as StateError naming the file and
the fix); a ``postgresql://`` URL (``state_url``) → PostgreSQL (``daemon.state._postgres``: a
connection pool shared by several hosts; a database that stops answering is waited for, with
backoff, never given up on).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio

from daemon.state import _ledger_sql as sql
from daemon.state._conn import Conn, Engine, Row, Sleep
from daemon.state._postgres import PgEngine
from daemon.state._sqlite import SqliteEngine
from daemon.state.url import is_state_url, pg_password
from daemon.state.watch import file_identity
from handlers.ledger import (
    PENDING,
    QUARANTINED,
    STATES,
    LedgerRow,
    transition_fields,
)
from providers.types import BreakerRecord

__all__ = ["Store"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _ignore(*_: object) -> None:
    return None


class Store:
    """The state store. Implements ``handlers.ledger.Ledger`` and ``providers.types.BreakerStore``.

    Build it with ``async with Store.open(path_or_url) as store``; one Store is safe to share
    between tasks, and several processes (or hosts, on PostgreSQL) may open the same store.
    """

    def __init__(
        self, engine: Engine, clock: Callable[[], float], *, host: str, lease: float
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._host = host
        self._lease = lease
        self._path = engine.path if isinstance(engine, SqliteEngine) else None
        self._identity = file_identity(self._path) if self._path is not None else None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        target: Path | str,
        *,
        host: str | None = None,
        lease: float = 30.0,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 10.0,
        password: str | None = None,
        env: Mapping[str, str] | None = None,
        on_error: Callable[[BaseException], None] = _ignore,
        on_ok: Callable[[], None] = _ignore,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        connect_timeout: float = 10.0,
        sleep: Sleep = anyio.sleep,
    ) -> AsyncIterator[Store]:
        """Open the store: ``target`` is a state file path (SQLite) or a ``postgresql://`` URL.

        SQLite: created, checked, migrated, or rebuilt when corrupt (ConfigError when it cannot
        be). PostgreSQL: connected and migrated (StateUnavailable while the server does not
        answer; ConfigError for a bad URL, a password in it, or a newer schema); the password
        is ``password``, else ``$CREDENTIALS_DIRECTORY/pg_password`` from ``env``, else what
        libpq finds (PGPASSWORD, ~/.pgpass). ``on_error(exc)`` hears every failed attempt of
        an operation while the database does not answer, ``on_ok()`` the first success after.
        """
        engine: Engine
        if is_state_url(target):
            if password is None:
                password = pg_password(os.environ if env is None else env)
            engine = await PgEngine.open(
                str(target),
                password=password,
                clock=clock,
                on_error=on_error,
                on_ok=on_ok,
                retry_initial=retry_initial,
                retry_max=retry_max,
                connect_timeout=connect_timeout,
                sleep=sleep,
            )
        else:
            engine = await SqliteEngine.open(Path(target), clock=clock, busy_timeout=busy_timeout)
        try:
            yield cls(engine, clock, host=host or _hostname(), lease=lease)
        finally:
            await engine.close()

    @property
    def engine(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.name

    @property
    def path(self) -> Path | None:
        """The SQLite state file (None on PostgreSQL)."""
        return self._path

    @property
    def identity(self) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the SQLite file opened (``daemon.state.watch`` compares the
        path's); None on PostgreSQL."""
        return self._identity

    @property
    def host(self) -> str:
        return self._host

    @property
    def lease(self) -> float:
        return self._lease

    def describe(self) -> str:
        """``sqlite /path/to/inboxd.sqlite3`` or ``postgresql host:port/db``."""
        return self._engine.describe()

    async def schema_version(self) -> int:
        """The schema version the store is at (after open: this inboxd's)."""
        return await self._engine.schema_version()

    # -- plumbing ---------------------------------------------------------------------------

    async def _write(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` in one transaction, committed before this returns; it happens whole or
        (cancelled before it starts) not at all."""
        return await self._engine.write(fn)

    async def _fetch(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._engine.read(lambda db: db.execute(query, params).rows)

    async def pragmas(self) -> dict[str, Any]:
        """The SQLite connection's journal_mode, synchronous, busy_timeout, foreign_keys,
        user_version (SQLite only)."""
        if not isinstance(self._engine, SqliteEngine):
            raise TypeError("pragmas: only a SQLite store has them")
        return await self._engine.pragmas()

    # -- ledger -----------------------------------------------------------------------------

    async def begin(self, inbox: str, relpath: str, *, size: int, mtime_ns: int) -> LedgerRow:
        """The active row for (inbox, relpath), or a new ``pending`` one (see ``Ledger``)."""

        def begin(db: Conn) -> LedgerRow:
            key = (inbox, db.path(relpath))
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

        def transition(db: Conn) -> LedgerRow:
            current = _row_by_id(db, row_id)
            updates = transition_fields(current.state, to_state, fields, self._clock())
            return _update(db, row_id, sql.encode_updates(updates, db.path))

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
        query += " ORDER BY id"
        if limit is not None:
            query += " LIMIT ?"
            params += (limit,)
        return [sql.ledger_from_row(row) for row in await self._fetch(query, params)]

    async def counts_by_state(self) -> dict[str, int]:
        """Every state (present at 0) → number of rows in it."""
        counts = dict.fromkeys(STATES, 0)
        for row in await self._fetch("SELECT state, count(*) FROM ledger GROUP BY state"):
            counts[row[0]] = row[1]
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
        rows = await self._engine.read(
            lambda db: db.execute(sql.ACTIVE_ROW, (inbox, db.path(relpath))).rows
        )
        return sql.ledger_from_row(rows[0]) if rows else None

    # -- tables other packages keep in this store (daemon.remote) ---------------------------

    async def write(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` (SQL with ``?`` placeholders on a ``Conn``) in one committed transaction
        (as every method here does), on either engine."""
        return await self._write(fn)

    async def fetch(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
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
        await self._write(lambda db: db.execute(sql.SAVE_BREAKER, params))

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


def _hostname() -> str:
    return socket.gethostname()


def _one(db: Conn, query: str, params: tuple[Any, ...]) -> Row | None:
    return db.execute(query, params).fetchone()


def _row_by_id(db: Conn, row_id: int) -> LedgerRow:
    row = _one(db, "SELECT * FROM ledger WHERE id = ?", (row_id,))
    if row is None:
        raise KeyError(row_id)
    return sql.ledger_from_row(row)


def _update(db: Conn, row_id: int, values: dict[str, Any]) -> LedgerRow:
    columns = sorted(values)
    row = _one(db, sql.update_sql(columns), (*(values[column] for column in columns), row_id))
    if row is None:
        raise KeyError(row_id)
    return sql.ledger_from_row(row)

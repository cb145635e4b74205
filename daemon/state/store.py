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

from daemon.state import _claims as claims
from daemon.state import _ledger_sql as sql
from daemon.state._breakers import BreakerTable
from daemon.state._conn import Conn, Engine, Row, Sleep
from daemon.state._postgres import PgEngine
from daemon.state._rows import one as _one
from daemon.state._rows import row_by_id as _row_by_id
from daemon.state._rows import update as _update
from daemon.state._sqlite import SqliteEngine
from daemon.state.url import is_state_url, pg_password
from daemon.state.watch import file_identity
from handlers.ledger import (
    ACTIVE_STATES,
    PENDING,
    QUARANTINED,
    STATES,
    LedgerRow,
    transition_fields,
)
from providers.errors import ClaimLost

__all__ = ["Store"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _ignore(*_: object) -> None:
    return None


class Store(BreakerTable):
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
        pool_size: int = 8,
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
                pool_size=pool_size,
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

    def on_faults(
        self, on_error: Callable[[BaseException], None], on_ok: Callable[[], None]
    ) -> None:
        """From now on, tell ``on_error(exc)`` of every failed attempt while the database does
        not answer and ``on_ok()`` of the first success after (PostgreSQL; SQLite never
        retries: its faults are StateErrors)."""
        if isinstance(self._engine, PgEngine):
            self._engine.on_error, self._engine.on_ok = on_error, on_ok

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
        """The active row for (inbox, relpath), or a new ``pending`` one, claimed by this host
        (see ``Ledger``); ClaimedElsewhere when another host holds a live claim on it."""

        def begin(db: Conn) -> LedgerRow:
            key = (inbox, db.path(relpath))
            now = self._clock()
            until = now + self._lease
            found = _one(db, sql.ACTIVE_ROW, key)
            if found is None:
                inserted = _one(
                    db, sql.INSERT_PENDING, (*key, size, mtime_ns, now, now, self._host, until)
                )
                if inserted is not None:
                    return sql.ledger_from_row(inserted)
                found = _one(db, sql.ACTIVE_ROW, key)
                if found is None:
                    raise KeyError(key)
            row = claims.claim(
                db,
                sql.ledger_from_row(found),
                host=self._host,
                lease=self._lease,
                now=now,
                to_row=sql.ledger_from_row,
            )
            if row.state == PENDING and (row.size, row.mtime_ns) != (size, mtime_ns):
                reset = _one(db, sql.RESET_PENDING, (size, mtime_ns, now, row.id))
                if reset is None:
                    raise KeyError(key)
                row = sql.ledger_from_row(reset)
            return row

        return await self._write(begin)

    async def take(self, row_id: int) -> LedgerRow | None:
        """Claim the active row ``row_id`` for this host (recovery): the row, or None when it
        is finished, gone, or another host holds a live claim on it."""

        def take(db: Conn) -> LedgerRow | None:
            found = _one(db, "SELECT * FROM ledger WHERE id = ?", (row_id,))
            row = None if found is None else sql.ledger_from_row(found)
            return claims.take(
                db,
                row,
                host=self._host,
                lease=self._lease,
                now=self._clock(),
                to_row=sql.ledger_from_row,
            )

        return await self._write(take)

    async def renew_leases(self) -> int:
        """Extend the claim of every active row this host owns; the number renewed."""
        return await self._write(
            lambda db: claims.renew(db, host=self._host, lease=self._lease, now=self._clock())
        )

    async def fleet(self) -> dict[str, tuple[int, bool]]:
        """Host id (``""``: rows no host owns) → (its active rows, whether its claims are live)."""
        return await self._engine.read(lambda db: claims.fleet(db, now=self._clock()))

    async def reserve_send(
        self, provider: str, *, rpm: float, window: float, now: float | None = None
    ) -> float:
        """Take one send from ``provider``'s account-wide window (every host's sends): 0.0 when
        taken, else the seconds to wait before asking again (``daemon.state._claims``)."""
        at = self._clock() if now is None else now
        return await self._write(
            lambda db: claims.reserve_send(db, provider, rpm=rpm, window=window, now=at)
        )

    async def hold(self, name: str, *, ttl: float) -> bool:
        """Take or extend the named lock ``name`` for ``ttl`` seconds; True when this host
        holds it (another host's live lock: False)."""
        return await self._write(
            lambda db: claims.hold(db, name, host=self._host, ttl=ttl, now=self._clock())
        )

    async def release(self, name: str) -> None:
        """Give up the named lock ``name`` if this host holds it."""
        await self._write(lambda db: claims.release(db, name, host=self._host))

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
            if current.state in ACTIVE_STATES and current.owner not in (None, self._host):
                raise ClaimLost(row_id, current.owner)  # another host took the file over
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


def _hostname() -> str:
    return socket.gethostname()

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
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from daemon.state import _claims as claims
from daemon.state import _ledger_sql as sql
from daemon.state._breakers import BreakerTable
from daemon.state._connection import connect, hint
from daemon.state._group_commit import GroupCommit
from daemon.state._rows import SqliteCursor as _Cursor
from daemon.state._rows import one as _one
from daemon.state._rows import row_by_id as _row_by_id
from daemon.state._rows import update as _update
from daemon.state.schema import migrations_after
from daemon.state.watch import file_identity
from handlers.ledger import (
    ACTIVE_STATES,
    PENDING,
    QUARANTINED,
    STATES,
    LedgerRow,
    transition_fields,
)
from providers.errors import ClaimLost, StateError

__all__ = ["Store"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Store(BreakerTable):
    """The state file. Implements ``handlers.ledger.Ledger`` and ``providers.types.BreakerStore``.

    Build it with ``async with Store.open(path) as store``; one Store is safe to share between
    tasks (its operations are serialised, concurrent writes committed together), and several
    processes may open the same file.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        path: Path,
        clock: Callable[[], float],
        *,
        host: str | None = None,
        lease: float = 30.0,
    ) -> None:
        self._db = GroupCommit(db)
        self._path = path
        self._clock = clock
        self._identity = file_identity(path)
        self._host = host or socket.gethostname()
        self._lease = lease

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 10.0,
        host: str | None = None,
        lease: float = 30.0,
    ) -> AsyncIterator[Store]:
        """Open (creating, checking, migrating, or rebuilding when corrupt) the state file.

        ``host`` is this host's id in the claims it takes (default: the host name), ``lease``
        how long a claim lasts unless renewed (``renew_leases``).
        """
        db = await connect(path, clock=clock, busy_timeout=busy_timeout)
        store = cls(db, path, clock, host=host, lease=lease)
        try:
            await store._write(store._migrate)
            yield store
        finally:
            await store._db.close()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def host(self) -> str:
        """This host's id: the owner of the claims it takes."""
        return self._host

    @property
    def lease(self) -> float:
        """Seconds a claim lasts unless renewed."""
        return self._lease

    def describe(self) -> str:
        """The engine and where its data lives, for humans (``inboxd status``, ``check-config``)."""
        return f"sqlite {self._path}"

    async def schema_version(self) -> int:
        """The schema version of the state file."""
        return int((await self._fetch("PRAGMA user_version"))[0][0])

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
        """The active row for (inbox, relpath), or a new ``pending`` one, claimed by this host
        (see ``Ledger``); ClaimedElsewhere when another host holds a live claim on it."""
        key = (inbox, sql.encode_path(relpath))

        def begin(db: sqlite3.Connection) -> LedgerRow:
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
                _Cursor(db),
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

        def take(db: sqlite3.Connection) -> LedgerRow | None:
            found = _one(db, "SELECT * FROM ledger WHERE id = ?", (row_id,))
            row = None if found is None else sql.ledger_from_row(found)
            return claims.take(
                _Cursor(db),
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
            lambda db: claims.renew(
                _Cursor(db), host=self._host, lease=self._lease, now=self._clock()
            )
        )

    async def fleet(self) -> dict[str, tuple[int, bool]]:
        """Host id (``""``: rows no host owns) → (its active rows, whether its claims are live)."""
        return await self._db.read(lambda db: claims.fleet(_Cursor(db), now=self._clock()))

    async def reserve_send(
        self, provider: str, *, rpm: float, window: float, now: float | None = None
    ) -> float:
        """Take one send from ``provider``'s account-wide window (every host's sends): 0.0 when
        taken, else the seconds to wait before asking again (``daemon.state._claims``)."""
        at = self._clock() if now is None else now
        return await self._write(
            lambda db: claims.reserve_send(_Cursor(db), provider, rpm=rpm, window=window, now=at)
        )

    async def hold(self, name: str, *, ttl: float) -> bool:
        """Take or extend the named lock ``name`` for ``ttl`` seconds; True when this host
        holds it (another host's live lock: False)."""
        return await self._write(
            lambda db: claims.hold(_Cursor(db), name, host=self._host, ttl=ttl, now=self._clock())
        )

    async def release(self, name: str) -> None:
        """Give up the named lock ``name`` if this host holds it."""
        await self._write(lambda db: claims.release(_Cursor(db), name, host=self._host))

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
            if current.state in ACTIVE_STATES and current.owner not in (None, self._host):
                raise ClaimLost(row_id, current.owner)  # another host took the file over
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

"""The SQLite engine: one state file, its group commit, migrations and error translation.

Every operation is a function of a ``Conn`` (``daemon.state._conn``) run whole on the
connection's thread by ``GroupCommit``: reads alone, writes in a ``BEGIN IMMEDIATE``
transaction shared with the writes queued beside it (one fsync for many), shielded from
cancellation. sqlite3 errors an operator must act on become ``StateError`` naming the file and
the fix (``daemon.state._connection.hint``); any other error is a bug and propagates.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from daemon.state._conn import Conn, ConnBase, Rows
from daemon.state._connection import connect, hint
from daemon.state._group_commit import GroupCommit
from daemon.state._ledger_sql import encode_path
from daemon.state.schema import migrations_after
from providers.errors import StateError

__all__ = ["SqliteConn", "SqliteEngine"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SqliteConn(ConnBase):
    """``Conn`` over a sqlite3 connection (already inside the operation's transaction)."""

    engine = "sqlite"

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        cursor = self.db.execute(sql, tuple(params))
        return Rows(cursor.fetchall(), cursor.rowcount)

    def path(self, value: str) -> str | bytes:
        return encode_path(value)


class SqliteEngine:
    """The state file at ``path``, opened with ``SqliteEngine.open``."""

    name = "sqlite"

    def __init__(self, db: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> None:
        self._db = GroupCommit(db)
        self.path = path
        self._clock = clock

    @classmethod
    async def open(
        cls, path: Path, *, clock: Callable[[], float], busy_timeout: float
    ) -> SqliteEngine:
        """Open (creating, checking, migrating, or rebuilding when corrupt) the state file."""
        engine = cls(await connect(path, clock=clock, busy_timeout=busy_timeout), path, clock)
        try:
            await engine.write(engine._migrate)
        except BaseException:
            await engine.close()
            raise
        return engine

    def describe(self) -> str:
        return f"sqlite {self.path}"

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            fix = hint(exc)
            if fix is None:
                raise
            raise StateError(f"state_dir: {self.path}: {exc}; {fix}") from exc

    async def write(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` in a write transaction, committed (with others queued beside it) before
        this returns; shielded, so it happens whole or (cancelled before it starts) not at all."""
        with self._translate():
            return await self._db.write(lambda db: fn(SqliteConn(db)))

    async def read(self, fn: Callable[[Conn], T]) -> T:
        with self._translate():
            return await self._db.read(lambda db: fn(SqliteConn(db)))

    async def schema_version(self) -> int:
        return int(await self.read(lambda db: db.execute("PRAGMA user_version").rows[0][0]))

    async def pragmas(self) -> dict[str, Any]:
        """The connection's journal_mode, synchronous, busy_timeout, foreign_keys, user_version."""
        names = ("journal_mode", "synchronous", "busy_timeout", "foreign_keys", "user_version")
        return await self.read(
            lambda db: {name: db.execute(f"PRAGMA {name}").rows[0][0] for name in names}
        )

    async def close(self) -> None:
        await self._db.close()

    def _migrate(self, db: Conn) -> None:
        version = int(db.execute("PRAGMA user_version").rows[0][0])
        for migration in migrations_after(version, path=str(self.path)):
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
                self.path,
                migration.version,
                migration.summary,
            )

"""The PostgreSQL engine: a psycopg 3 connection pool, one transaction per operation.

Every operation is the same plain function of a ``Conn`` the SQLite engine runs, here run whole
on a worker thread (``anyio.to_thread``) inside one transaction on a pooled connection; our
``?`` placeholders become psycopg's ``%s``. A connection-level failure (server gone or
restarting, pool timeout) is retried with backoff — ``retry_initial`` doubling to
``retry_max`` — until the database answers: each failure goes to ``on_error``, the first
success after to ``on_ok`` (the daemon counts them and marks /readyz). Any other error is a
bug or the operation's own refusal and propagates. The attempt itself is shielded from
cancellation (it happens whole or not at all); the wait between attempts is not.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from daemon.state import pg_schema
from daemon.state._conn import Conn, ConnBase, Row, Rows, Sleep
from daemon.state.url import parse_state_url
from providers.errors import StateUnavailable
from providers.redaction import scrub

__all__ = ["CONNECTION_ERRORS", "PgConn", "PgEngine", "PgRow", "unavailable"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What "the database does not answer" looks like; anything else propagates.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, PoolTimeout)


class PgRow:
    """One row: ``row["col"]``, ``row[0]``, ``keys()``, unpacking (as ``sqlite3.Row``)."""

    __slots__ = ("_index", "_names", "_values")

    def __init__(self, names: list[str], index: dict[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._index = index
        self._values = values

    def __getitem__(self, key: Any, /) -> Any:
        return self._values[self._index[key] if isinstance(key, str) else key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _rows(cursor: psycopg.Cursor[Any]) -> RowMaker[PgRow]:
    names = [column.name for column in cursor.description or ()]
    index = {name: n for n, name in enumerate(names)}
    return functools.partial(PgRow, names, index)


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class PgConn(ConnBase):
    """``Conn`` over a psycopg connection, inside the operation's transaction."""

    engine = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        cursor: psycopg.Cursor[PgRow] = self.conn.cursor(row_factory=_rows)
        with cursor:
            if params:
                cursor.execute(_placeholders(sql), tuple(params))
            else:
                cursor.execute(sql)
            rows: list[Row] = list(cursor.fetchall()) if cursor.description else []
            return Rows(rows, cursor.rowcount)

    def path(self, value: str) -> bytes:
        return value.encode("utf-8", "surrogateescape")


def _transaction(conn: psycopg.Connection[Any], fn: Callable[[Conn], T]) -> T:
    with conn.transaction():
        return fn(PgConn(conn))


class PgEngine:
    """The shared database named by ``state_url``, opened with ``PgEngine.open``."""

    name = "postgresql"

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        where: str,
        *,
        on_error: Callable[[BaseException], None],
        on_ok: Callable[[], None],
        retry_initial: float,
        retry_max: float,
        sleep: Sleep,
    ) -> None:
        self._pool = pool
        self.where = where
        self.on_error = on_error
        self.on_ok = on_ok
        self._initial = retry_initial
        self._max = retry_max
        self._sleep = sleep
        self._failing = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        password: str | None,
        clock: Callable[[], float],
        on_error: Callable[[BaseException], None],
        on_ok: Callable[[], None],
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        connect_timeout: float = 10.0,
        pool_size: int = 8,
        sleep: Sleep = anyio.sleep,
    ) -> PgEngine:
        """Connect, migrate (under the advisory lock) and open the pool.

        Raises StateUnavailable when the server does not answer, ConfigError for a bad URL
        or a database newer than this inboxd.
        """
        conninfo, where = parse_state_url(url)
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, round(connect_timeout)),
        }
        if password:
            kwargs["password"] = password

        def first_connection() -> None:
            with psycopg.connect(conninfo, **kwargs) as conn:
                ran = _transaction(conn, lambda db: pg_schema.migrate(db, now=clock(), where=where))
            for migration in ran:
                logger.info(
                    "state database %s: schema migrated to v%d (%s)",
                    where,
                    migration.version,
                    migration.summary,
                )

        try:
            await anyio.to_thread.run_sync(first_connection)
        except psycopg.OperationalError as exc:
            raise unavailable(where, exc) from None
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            kwargs=kwargs,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=connect_timeout,
            reconnect_timeout=max(retry_max, connect_timeout),
            name="inboxd-state",
        )
        await anyio.to_thread.run_sync(pool.open)
        return cls(
            pool,
            where,
            on_error=on_error,
            on_ok=on_ok,
            retry_initial=retry_initial,
            retry_max=retry_max,
            sleep=sleep,
        )

    def describe(self) -> str:
        return f"postgresql {self.where}"

    async def read(self, fn: Callable[[Conn], T]) -> T:
        return await self._run(fn)

    async def write(self, fn: Callable[[Conn], T]) -> T:
        return await self._run(fn)

    async def schema_version(self) -> int:
        return await self._run(pg_schema.current_version)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._pool.close)

    def _attempt(self, fn: Callable[[Conn], T]) -> T:
        with self._pool.connection() as conn:
            return _transaction(conn, fn)

    async def _run(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` in one transaction, again and again while the database does not answer."""
        await anyio.lowlevel.checkpoint_if_cancelled()  # cancelled before it starts: absent
        delay = self._initial
        while True:
            try:
                with anyio.CancelScope(shield=True):
                    result = await anyio.to_thread.run_sync(self._attempt, fn)
            except CONNECTION_ERRORS as exc:
                self._failing = True
                logger.warning(
                    "state database %s: %s; retrying in %gs", self.where, _one_line(exc), delay
                )
                self.on_error(exc)
                # Drop every idle connection the outage broke, so that the attempts after it
                # do not each trip over one of them once the server answers again.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._pool.check)
                await self._sleep(delay)
                delay = min(delay * 2, self._max)
                continue
            if self._failing:
                self._failing = False
                logger.info("state database %s answers again", self.where)
                self.on_ok()
            return result


def unavailable(where: str, exc: BaseException) -> StateUnavailable:
    """The one-line StateUnavailable for a server at ``where`` that failed with ``exc``."""
    return StateUnavailable(
        f"state_url: PostgreSQL at {where} does not answer ({_one_line(exc)}); start it, "
        "or fix state_url, the network or the password (PGPASSWORD, ~/.pgpass, "
        "$CREDENTIALS_DIRECTORY/pg_password)"
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return scrub(text)

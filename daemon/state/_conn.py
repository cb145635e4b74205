"""The small connection wrapper every store operation is written against, whatever the engine.

An operation is a plain function of a ``Conn``, run whole on a worker thread inside one
transaction (``daemon.state._sqlite`` / ``daemon.state._postgres`` decide how). Its SQL uses
``?`` placeholders; ``execute`` returns a ``Rows`` whose rows answer both ``row["col"]`` and
``row[0]``. The engines differ in how a filename is stored (``Conn.path``): SQLite keeps valid
UTF-8 as TEXT and anything else as its raw bytes; PostgreSQL keeps every path as BYTEA (its
``os.fsencode`` bytes). Either mapping is deterministic, so the unique index over (inbox,
relpath) still means one active row per file, and undecodable names come back exact.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

__all__ = ["Conn", "ConnBase", "Engine", "Row", "Rows", "Sleep", "decode_path"]

T = TypeVar("T")


class Row(Protocol):
    """One result row: by column name or by position (``sqlite3.Row`` is one)."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Rows:
    """The rows of one statement (empty when it returns none) and how many rows it changed."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def fetchall(self) -> list[Row]:
        return self.rows

    def fetchone(self) -> Row | None:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)


class Conn(Protocol):
    """One transaction's connection, as an operation sees it."""

    engine: str  # "sqlite" | "postgresql"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """Run one statement with ``?`` placeholders; its rows (all of them) and row count."""
        ...

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """``execute(sql, params).rows``."""
        ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """``execute(sql, params).rowcount``: the number of rows changed."""
        ...

    def path(self, value: str) -> str | bytes:
        """``value`` (a filename, possibly with surrogate escapes) as this engine stores it."""
        ...


class ConnBase:
    """``rows`` and ``run`` for an engine's ``Conn``, from its ``execute``."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        raise NotImplementedError

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.execute(sql, params).rows

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.execute(sql, params).rowcount


class Engine(Protocol):
    """Where operations run: one transaction each, on a worker thread, committed on return."""

    name: str

    async def read(self, fn: Callable[[Conn], T]) -> T: ...

    async def write(self, fn: Callable[[Conn], T]) -> T: ...

    async def schema_version(self) -> int: ...

    def describe(self) -> str: ...

    async def close(self) -> None: ...


def decode_path(value: str | bytes | memoryview | None) -> str | None:
    """A stored path back as the ``str`` the filesystem gave (surrogate escapes restored)."""
    if isinstance(value, memoryview):
        value = bytes(value)
    return os.fsdecode(value) if isinstance(value, bytes) else value


Sleep = Callable[[float], Awaitable[None]]

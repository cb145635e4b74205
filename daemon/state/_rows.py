"""Statement helpers on a sqlite3 connection, for the store's one-transaction functions."""

from __future__ import annotations

import sqlite3
from typing import Any

from daemon.state import _ledger_sql as sql
from handlers.ledger import LedgerRow

__all__ = ["SqliteCursor", "one", "row_by_id", "update"]


class SqliteCursor:
    """``daemon.state._claims.Cursor`` over a sqlite3 connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return self._db.execute(query, params).fetchall()

    def run(self, query: str, params: tuple[Any, ...] = ()) -> int:
        return self._db.execute(query, params).rowcount


def one(db: sqlite3.Connection, query: str, params: tuple[Any, ...]) -> sqlite3.Row | None:
    rows: list[sqlite3.Row] = db.execute(query, params).fetchall()
    return rows[0] if rows else None


def row_by_id(db: sqlite3.Connection, row_id: int) -> LedgerRow:
    row = one(db, "SELECT * FROM ledger WHERE id = ?", (row_id,))
    if row is None:
        raise KeyError(row_id)
    return sql.ledger_from_row(row)


def update(db: sqlite3.Connection, row_id: int, values: dict[str, Any]) -> LedgerRow:
    columns = sorted(values)
    row = one(db, sql.update_sql(columns), (*(values[column] for column in columns), row_id))
    if row is None:
        raise KeyError(row_id)
    return sql.ledger_from_row(row)

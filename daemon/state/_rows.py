"""Statement helpers on a ``Conn`` (either engine), for the store's one-transaction functions."""

from __future__ import annotations

from typing import Any

from daemon.state import _ledger_sql as sql
from daemon.state._conn import Conn, Row
from handlers.ledger import LedgerRow

__all__ = ["one", "row_by_id", "update"]


def one(db: Conn, query: str, params: tuple[Any, ...]) -> Row | None:
    return db.execute(query, params).fetchone()


def row_by_id(db: Conn, row_id: int) -> LedgerRow:
    row = one(db, "SELECT * FROM ledger WHERE id = ?", (row_id,))
    if row is None:
        raise KeyError(row_id)
    return sql.ledger_from_row(row)


def update(db: Conn, row_id: int, values: dict[str, Any]) -> LedgerRow:
    columns = sorted(values)
    row = one(db, sql.update_sql(columns), (*(values[column] for column in columns), row_id))
    if row is None:
        raise KeyError(row_id)
    return sql.ledger_from_row(row)

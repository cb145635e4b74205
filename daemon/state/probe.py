"""What ``inboxd check-config`` says of the store: its engine, where it is, its schema version.

Read-only: a state file is opened read-only (one not created yet is said so), a PostgreSQL
database is connected to and read, never migrated.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import psycopg

from daemon.state import pg_schema
from daemon.state._postgres import PgConn, unavailable
from daemon.state.schema import SCHEMA_VERSION
from daemon.state.url import is_state_url, parse_state_url, pg_password
from providers.errors import ConfigError

__all__ = ["probe_state"]


async def probe_state(
    target: Path | str, *, env: Mapping[str, str] | None = None, connect_timeout: float = 5.0
) -> str:
    """One line: ``<engine> <where>: schema vN (this inboxd: vM)``.

    Raises StateUnavailable (PostgreSQL does not answer) or ConfigError (a bad URL, an
    unreadable state file).
    """
    if is_state_url(target):
        return await anyio.to_thread.run_sync(
            _postgres, str(target), os.environ if env is None else env, connect_timeout
        )
    return await anyio.to_thread.run_sync(_sqlite, Path(target))


def _line(engine: str, where: str, version: int) -> str:
    return f"{engine} {where}: schema v{version} (this inboxd: v{SCHEMA_VERSION})"


def _postgres(url: str, env: Mapping[str, str], connect_timeout: float) -> str:
    conninfo, where = parse_state_url(url)
    password = pg_password(env)
    options: dict[str, Any] = {"password": password} if password else {}
    try:
        with psycopg.connect(
            conninfo, autocommit=True, connect_timeout=max(2, round(connect_timeout)), **options
        ) as conn:
            version = pg_schema.current_version(PgConn(conn))
    except psycopg.OperationalError as exc:
        raise unavailable(where, exc) from None
    return _line("postgresql", where, version)


def _sqlite(path: Path) -> str:
    if not path.exists():
        return f"sqlite {path}: not created yet (schema v{SCHEMA_VERSION} at the first start)"
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"state_dir: cannot read {path} ({exc})") from exc
    return _line("sqlite", str(path), int(version))

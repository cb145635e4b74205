"""Connecting to the state file: folder, integrity check, pragmas, a corrupt file moved aside.

``connect`` runs ``PRAGMA quick_check`` and refuses a file newer than this inboxd before
anything is written to it; a corrupt state file (with its -wal/-shm) is renamed
``<name>.corrupt-<UTC time>`` and a fresh one is built. ``hint`` names what an operator does
about a sqlite3 error (``daemon.state.store`` puts it in the ``StateError``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from daemon.state.schema import migrations_after
from providers.errors import ConfigError

__all__ = ["connect", "hint"]

logger = logging.getLogger(__name__)

_CORRUPT = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_WRITABLE_HINT = "make state_dir writable by the daemon's user"
# Primary result code → what the operator should do. Anything else is a bug and propagates.
_HINTS = {
    sqlite3.SQLITE_FULL: "free space on the filesystem holding state_dir",
    sqlite3.SQLITE_IOERR: "check the disk holding state_dir",
    sqlite3.SQLITE_READONLY: _WRITABLE_HINT,
    sqlite3.SQLITE_CANTOPEN: _WRITABLE_HINT,
    sqlite3.SQLITE_PERM: _WRITABLE_HINT,
    sqlite3.SQLITE_BUSY: "another process held the state file locked too long; stop it",
    sqlite3.SQLITE_LOCKED: "another process held the state file locked too long; stop it",
    sqlite3.SQLITE_CORRUPT: "restart inboxd: it moves a corrupt state file aside and rebuilds",
    sqlite3.SQLITE_NOTADB: "restart inboxd: it moves a corrupt state file aside and rebuilds",
}


def hint(exc: sqlite3.Error) -> str | None:
    """What the operator should do about ``exc``; None for a bug (it propagates)."""
    return _HINTS.get(_code(exc) or -1)


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


class _CorruptError(Exception):
    """The state file failed its integrity check (internal: handled inside ``connect``).

    Carries the still-open connection: SQLite deletes the -wal/-shm when the last connection
    closes, so the files are moved aside first and the connection closed after.
    """

    def __init__(self, detail: str, db: sqlite3.Connection) -> None:
        super().__init__(detail)
        self.db = db


async def connect(
    path: Path, *, clock: Callable[[], float], busy_timeout: float
) -> sqlite3.Connection:
    """Open (creating its folder, checking, or rebuilding when corrupt) the state file.

    Raises ``ConfigError`` naming the file and the fix when it cannot be opened.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"state_dir: cannot create {path.parent} ({exc.strerror}); {_WRITABLE_HINT}"
        ) from exc
    try:
        db = await anyio.to_thread.run_sync(_connect, path, busy_timeout)
    except _CorruptError as exc:
        try:
            aside = await anyio.to_thread.run_sync(_move_aside, path, clock())
        except OSError as move_exc:
            raise ConfigError(
                f"state_dir: {path} is corrupt ({exc}) and cannot be moved aside "
                f"({move_exc.strerror}); {_WRITABLE_HINT}"
            ) from move_exc
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(exc.db.close)
        logger.error(
            "state file %s is corrupt (%s): moved aside to %s and starting a fresh one; "
            "the ledger's history and breaker states are lost, no file is",
            path,
            exc,
            aside,
        )
        db = await anyio.to_thread.run_sync(_connect, path, busy_timeout)
    return db


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Connect and configure; raise _CorruptError when the file fails its integrity check."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise ConfigError(f"state_dir: cannot open {path} ({exc}); {_WRITABLE_HINT}") from exc
    try:
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        verdict = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
        if verdict != ["ok"]:
            raise _CorruptError("; ".join(str(line) for line in verdict[:5]), db)
        version = db.execute("PRAGMA user_version").fetchone()
        # Refuse a newer file before anything (even the journal mode) is written to it.
        migrations_after(int(version[0]) if version else 0, path=str(path))
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise ConfigError(
                f"state_dir: {path} cannot use the WAL journal (got {mode and mode[0]}); "
                "put state_dir on a local filesystem"
            )
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
    except _CorruptError:
        raise
    except BaseException as exc:
        if isinstance(exc, sqlite3.Error) and _code(exc) in _CORRUPT:
            raise _CorruptError(str(exc), db) from exc
        db.close()
        if isinstance(exc, sqlite3.Error):
            raise ConfigError(f"state_dir: cannot open {path} ({exc}); {_WRITABLE_HINT}") from exc
        raise
    return db


def _move_aside(path: Path, now: float) -> Path:
    """Rename a corrupt state file and its -wal/-shm to ``<name>.corrupt-<UTC time>[-wal|-shm]``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 0
    while any(Path(f"{aside}{suffix}").exists() for suffix in ("", "-wal", "-shm")):
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}.{n}")
    # The -wal goes first: a stale WAL left beside a fresh database would be replayed into it.
    for suffix in ("-wal", "-shm", ""):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.replace(f"{aside}{suffix}")
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return aside

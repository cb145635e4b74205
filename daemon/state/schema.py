"""The state file's schema: every migration, in order, and the version they lead to.

The version lives in ``PRAGMA user_version``; ``schema_history`` records when each migration
ran. Migrations are append-only: a released migration's SQL never changes, a new one is added
at the end. Version 1 was the ledger alone; version 2 added the circuit breakers; version 3
an index for pruning old rows; version 4 the recorded remote deletions; version 5 what
several hosts share (claims on ledger rows, the account's send window, named locks).
"""

from __future__ import annotations

from dataclasses import dataclass

from providers.errors import ConfigError

__all__ = [
    "ACTIVE_STATES_SQL",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "migrations_after",
]

# Spelled out (not bound as parameters) so SQLite can use the partial index ledger_active.
ACTIVE_STATES_SQL = "('pending', 'uploading', 'uploaded')"


@dataclass(frozen=True)
class Migration:
    """One step of the schema: run ``statements`` in one transaction to reach ``version``."""

    version: int
    summary: str
    statements: tuple[str, ...]


_V1 = Migration(
    1,
    "ledger",
    (
        """
        CREATE TABLE schema_history (
            version    INTEGER PRIMARY KEY,
            summary    TEXT NOT NULL,
            applied_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE ledger (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            inbox        TEXT NOT NULL,
            relpath      TEXT NOT NULL,
            size         INTEGER NOT NULL,
            mtime_ns     INTEGER NOT NULL,
            sha256       TEXT,
            state        TEXT NOT NULL CHECK (state IN ('pending', 'uploading', 'uploaded',
                                                        'done', 'quarantined', 'requeued')),
            provider     TEXT,
            purpose      TEXT,
            file_id      TEXT,
            remote_bytes INTEGER,
            transport    TEXT,
            intent_at    REAL,
            uploaded_at  REAL,
            finished_at  REAL,
            reason       TEXT,
            detail       TEXT,
            attempts     INTEGER NOT NULL DEFAULT 0,
            not_before   REAL,
            dedupe_of    INTEGER REFERENCES ledger (id),
            final_path   TEXT,
            created_at   REAL NOT NULL,
            updated_at   REAL NOT NULL
        )
        """,
        # At most one active row per file; also the index the watcher's lookups use.
        f"""
        CREATE UNIQUE INDEX ledger_active ON ledger (inbox, relpath)
        WHERE state IN {ACTIVE_STATES_SQL}
        """,
        "CREATE INDEX ledger_dedupe ON ledger (sha256, provider, purpose)",
        "CREATE INDEX ledger_state ON ledger (state, id)",
        "CREATE INDEX ledger_finished ON ledger (finished_at)",
    ),
)

_V2 = Migration(
    2,
    "circuit breakers",
    (
        """
        CREATE TABLE breakers (
            provider             TEXT PRIMARY KEY,
            state                TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open',
                                                                'forced_open')),
            open_until           REAL,
            consecutive_opens    INTEGER NOT NULL DEFAULT 0,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            window_bits          TEXT NOT NULL DEFAULT '' CHECK (window_bits NOT GLOB '*[^01]*'),
            probe_until          REAL,
            reason               TEXT NOT NULL DEFAULT '',
            updated_at           REAL NOT NULL
        )
        """,
    ),
)

_V3 = Migration(
    3,
    "index of the originals duplicates point at (ledger pruning)",
    ("CREATE INDEX ledger_dedupe_of ON ledger (dedupe_of) WHERE dedupe_of IS NOT NULL",),
)

# One row per remote file inboxd deletes (daemon.remote): the intent is committed before the
# DELETE, the outcome after it; (provider, file_id) is unique, so no file is deleted twice.
# ``ledger_id`` is no foreign key: ledger pruning may delete the row that uploaded the file.
_V4 = Migration(
    4,
    "remote deletions (retention, keep_remote, orphans)",
    (
        """
        CREATE TABLE remote_deletions (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            provider   TEXT NOT NULL,
            file_id    TEXT NOT NULL,
            reason     TEXT NOT NULL CHECK (reason IN ('max_files', 'max_bytes', 'max_age',
                                                       'keep_remote', 'orphan')),
            ledger_id  INTEGER,
            filename   TEXT,
            bytes      INTEGER,
            created_at REAL,
            intent_at  REAL NOT NULL,
            outcome    TEXT CHECK (outcome IN ('deleted', 'gone')),
            outcome_at REAL
        )
        """,
        "CREATE UNIQUE INDEX remote_deletions_file ON remote_deletions (provider, file_id)",
        "CREATE INDEX remote_deletions_open ON remote_deletions (provider) WHERE outcome IS NULL",
    ),
)

# Several hosts on one database (daemon.state._claims): a ledger row's claim (owner host and
# lease), the account's shared send window (a guard row per provider serialises reservations),
# and named locks with an expiry (one retention pass at a time).
_V5 = Migration(
    5,
    "claims, shared send window, named locks (several hosts)",
    (
        "ALTER TABLE ledger ADD COLUMN owner TEXT",
        "ALTER TABLE ledger ADD COLUMN lease_until REAL",
        f"CREATE INDEX ledger_owner ON ledger (owner) WHERE state IN {ACTIVE_STATES_SQL}",
        """
        CREATE TABLE send_guard (
            provider   TEXT PRIMARY KEY,
            touched_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE send_slots (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            provider TEXT NOT NULL,
            at       REAL NOT NULL
        )
        """,
        "CREATE INDEX send_slots_window ON send_slots (provider, at)",
        """
        CREATE TABLE leases (
            name  TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            until REAL NOT NULL
        )
        """,
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5)
SCHEMA_VERSION = MIGRATIONS[-1].version


def migrations_after(version: int, *, path: str) -> tuple[Migration, ...]:
    """The migrations a state file at ``version`` still needs, in order.

    A file newer than this program (written by a later inboxd) is refused, never touched.
    """
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"state_dir: {path} has schema version {version}, newer than this inboxd "
            f"understands ({SCHEMA_VERSION}); upgrade inboxd or point state_dir elsewhere"
        )
    return tuple(m for m in MIGRATIONS if m.version > version)

"""The PostgreSQL schema: the same versions and summaries as the SQLite file's, in PG types.

Version 1 is the ledger, 2 the circuit breakers, 3 the pruning index, 4 the recorded remote
deletions, 5 what several hosts share (claims, the send window, named locks)
(``daemon.state.schema`` holds the summaries; a version's SQL here never changes
once released). The version is the highest ``schema_history`` row (one row per version).
Paths (``relpath``, ``final_path``) are BYTEA: a file name's exact bytes, undecodable ones too
(``daemon.state._conn``). Migrations run in one transaction under a transaction-scoped
advisory lock, so two hosts starting at once migrate once; a database newer than this inboxd
is refused, never touched.
"""

from __future__ import annotations

from daemon.state._conn import Conn
from daemon.state.schema import ACTIVE_STATES_SQL, MIGRATIONS, SCHEMA_VERSION, Migration
from providers.errors import ConfigError

__all__ = ["MIGRATE_LOCK", "PG_MIGRATIONS", "current_version", "migrate", "pg_migrations_after"]

# pg_advisory_xact_lock key of the schema migration ("inboxd" + 1, as a signed bigint).
MIGRATE_LOCK = 0x696E626F78640001

_DDL: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE schema_history (
            version    INTEGER PRIMARY KEY,
            summary    TEXT NOT NULL,
            applied_at DOUBLE PRECISION NOT NULL
        )
        """,
        """
        CREATE TABLE ledger (
            id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            inbox        TEXT NOT NULL,
            relpath      BYTEA NOT NULL,
            size         BIGINT NOT NULL,
            mtime_ns     BIGINT NOT NULL,
            sha256       TEXT,
            state        TEXT NOT NULL CHECK (state IN ('pending', 'uploading', 'uploaded',
                                                        'done', 'quarantined', 'requeued')),
            provider     TEXT,
            purpose      TEXT,
            file_id      TEXT,
            remote_bytes BIGINT,
            transport    TEXT,
            intent_at    DOUBLE PRECISION,
            uploaded_at  DOUBLE PRECISION,
            finished_at  DOUBLE PRECISION,
            reason       TEXT,
            detail       TEXT,
            attempts     INTEGER NOT NULL DEFAULT 0,
            not_before   DOUBLE PRECISION,
            dedupe_of    BIGINT REFERENCES ledger (id),
            final_path   BYTEA,
            created_at   DOUBLE PRECISION NOT NULL,
            updated_at   DOUBLE PRECISION NOT NULL
        )
        """,
        f"""
        CREATE UNIQUE INDEX ledger_active ON ledger (inbox, relpath)
        WHERE state IN {ACTIVE_STATES_SQL}
        """,
        "CREATE INDEX ledger_dedupe ON ledger (sha256, provider, purpose)",
        "CREATE INDEX ledger_state ON ledger (state, id)",
        "CREATE INDEX ledger_finished ON ledger (finished_at)",
    ),
    2: (
        """
        CREATE TABLE breakers (
            provider             TEXT PRIMARY KEY,
            state                TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open',
                                                                'forced_open')),
            open_until           DOUBLE PRECISION,
            consecutive_opens    INTEGER NOT NULL DEFAULT 0,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            window_bits          TEXT NOT NULL DEFAULT '' CHECK (window_bits ~ '^[01]*$'),
            probe_until          DOUBLE PRECISION,
            reason               TEXT NOT NULL DEFAULT '',
            updated_at           DOUBLE PRECISION NOT NULL
        )
        """,
    ),
    3: ("CREATE INDEX ledger_dedupe_of ON ledger (dedupe_of) WHERE dedupe_of IS NOT NULL",),
    4: (
        """
        CREATE TABLE remote_deletions (
            id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            provider   TEXT NOT NULL,
            file_id    TEXT NOT NULL,
            reason     TEXT NOT NULL CHECK (reason IN ('max_files', 'max_bytes', 'max_age',
                                                       'keep_remote', 'orphan')),
            ledger_id  BIGINT,
            filename   TEXT,
            bytes      BIGINT,
            created_at DOUBLE PRECISION,
            intent_at  DOUBLE PRECISION NOT NULL,
            outcome    TEXT CHECK (outcome IN ('deleted', 'gone')),
            outcome_at DOUBLE PRECISION
        )
        """,
        "CREATE UNIQUE INDEX remote_deletions_file ON remote_deletions (provider, file_id)",
        "CREATE INDEX remote_deletions_open ON remote_deletions (provider) WHERE outcome IS NULL",
    ),
    5: (
        "ALTER TABLE ledger ADD COLUMN owner TEXT",
        "ALTER TABLE ledger ADD COLUMN lease_until DOUBLE PRECISION",
        f"CREATE INDEX ledger_owner ON ledger (owner) WHERE state IN {ACTIVE_STATES_SQL}",
        """
        CREATE TABLE send_guard (
            provider   TEXT PRIMARY KEY,
            touched_at DOUBLE PRECISION NOT NULL
        )
        """,
        """
        CREATE TABLE send_slots (
            id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            provider TEXT NOT NULL,
            at       DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX send_slots_window ON send_slots (provider, at)",
        """
        CREATE TABLE leases (
            name  TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            until DOUBLE PRECISION NOT NULL
        )
        """,
    ),
}

PG_MIGRATIONS: tuple[Migration, ...] = tuple(
    Migration(m.version, m.summary, _DDL[m.version]) for m in MIGRATIONS
)


def pg_migrations_after(version: int, *, where: str) -> tuple[Migration, ...]:
    """The migrations a database at ``version`` still needs; a newer one is refused."""
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"state_url: {where} has schema version {version}, newer than this inboxd "
            f"understands ({SCHEMA_VERSION}); upgrade inboxd on this host too"
        )
    return tuple(m for m in PG_MIGRATIONS if m.version > version)


def current_version(db: Conn) -> int:
    """The database's schema version (0: no inboxd table yet)."""
    if db.execute("SELECT to_regclass('schema_history') IS NOT NULL").rows[0][0] is not True:
        return 0
    return int(db.execute("SELECT coalesce(max(version), 0) FROM schema_history").rows[0][0])


def migrate(db: Conn, *, now: float, where: str, upto: int = SCHEMA_VERSION) -> list[Migration]:
    """Bring the database to ``upto`` inside the caller's transaction; the migrations run.

    The advisory lock is held until that transaction ends: a second host waits, then finds
    the work done.
    """
    db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATE_LOCK,))
    ran = []
    for migration in pg_migrations_after(current_version(db), where=where):
        if migration.version > upto:
            break
        for statement in migration.statements:
            db.execute(statement)
        db.execute(
            "INSERT INTO schema_history (version, summary, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.summary, now),
        )
        ran.append(migration)
    return ran

"""The SQLite state file, on real files in tmp_path: pragmas, migrations, corruption, locking
(the engine-independent contract is tests/contracts/test_store_contract.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from daemon.state.schema import SCHEMA_VERSION
from daemon.state.store import Store
from handlers.ledger import STATES
from providers.errors import ConfigError, StateError
from providers.types import BreakerRecord
from tests.fakes import FakeClock

pytestmark = pytest.mark.anyio

# Version 1 as released, spelled out independently of daemon/state/schema.py on purpose.
V1_DDL = """
CREATE TABLE schema_history (version INTEGER PRIMARY KEY, summary TEXT NOT NULL,
                             applied_at REAL NOT NULL);
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT, inbox TEXT NOT NULL, relpath TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'uploading', 'uploaded',
                                         'done', 'quarantined', 'requeued')),
    provider TEXT, purpose TEXT, file_id TEXT, remote_bytes INTEGER, transport TEXT,
    intent_at REAL, uploaded_at REAL, finished_at REAL, reason TEXT, detail TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, not_before REAL,
    dedupe_of INTEGER REFERENCES ledger (id), final_path TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE UNIQUE INDEX ledger_active ON ledger (inbox, relpath)
    WHERE state IN ('pending', 'uploading', 'uploaded');
CREATE INDEX ledger_dedupe ON ledger (sha256, provider, purpose);
CREATE INDEX ledger_state ON ledger (state, id);
CREATE INDEX ledger_finished ON ledger (finished_at);
INSERT INTO schema_history VALUES (1, 'ledger', 1.0);
INSERT INTO ledger (inbox, relpath, size, mtime_ns, sha256, state, provider, purpose, file_id,
                    created_at, updated_at)
    VALUES ('docs', 'old.pdf', 10, 5, 'abc', 'done', 'kimi', 'file-extract', 'f-1', 1.0, 2.0);
PRAGMA user_version = 1;
"""


def _put(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _get(path: Path | str) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


def _drop(path: Path | str) -> None:
    Path(path).unlink(missing_ok=True)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """Where each test's state file lives (its parent does not exist yet)."""
    return tmp_path / "state" / "inboxd.sqlite3"


async def test_open_sets_wal_full_busy_timeout_and_version(state: Path) -> None:
    """A new state file is created with WAL, synchronous=FULL, busy_timeout and the schema."""
    async with Store.open(state, busy_timeout=2.5) as store:
        pragmas = await store.pragmas()
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "busy_timeout": 2500,
        "foreign_keys": 1,
        "user_version": SCHEMA_VERSION,
    }
    with sqlite3.connect(state) as raw:
        history = raw.execute("SELECT version, summary FROM schema_history").fetchall()
    assert history == [
        (1, "ledger"),
        (2, "circuit breakers"),
        (3, "index of the originals duplicates point at (ledger pruning)"),
        (4, "remote deletions (retention, keep_remote, orphans)"),
        (5, "claims, shared send window, named locks (several hosts)"),
    ]


async def test_v1_file_is_migrated_keeping_its_rows(state: Path) -> None:
    """A version-1 file (ledger only) is migrated to the current schema (breakers, pruning
    index, deletions, claims), keeping its ledger rows (which no host owns yet)."""
    state.parent.mkdir()
    with sqlite3.connect(state) as raw:
        raw.executescript(V1_DDL)
    async with Store.open(state, clock=FakeClock(50.0)) as store:
        assert (await store.pragmas())["user_version"] == 5
        old = await store.get(1)
        assert (old.relpath, old.state, old.file_id) == ("old.pdf", "done", "f-1")
        assert (old.owner, old.lease_until) == (None, None)
        assert await store.find_uploaded("abc", "kimi", "file-extract") == old
        await store.save_breaker("kimi", BreakerRecord(state="open", open_until=9.0))
        assert await store.all_breakers() == {"kimi": BreakerRecord(state="open", open_until=9.0)}
    with sqlite3.connect(state) as raw:
        history = raw.execute("SELECT version, applied_at FROM schema_history").fetchall()
    assert history == [(1, 1.0), (2, 50.0), (3, 50.0), (4, 50.0), (5, 50.0)]


async def test_newer_schema_is_refused_untouched(state: Path) -> None:
    """A file from a later inboxd raises ConfigError naming it, and is left as it was."""
    state.parent.mkdir()
    with sqlite3.connect(state) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = _get(state)
    with pytest.raises(ConfigError, match=f"{state} has schema version {SCHEMA_VERSION + 1}"):
        async with Store.open(state):
            pass
    assert _get(state) == before
    assert _get(f"{state}.corrupt") is None


async def test_corrupt_file_is_moved_aside_and_rebuilt(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A garbage state file and its -wal/-shm are renamed .corrupt-<UTC>; a fresh store works."""
    state.parent.mkdir()
    garbage = b"this is not a database, just garbage bytes " * 200
    _put(state, garbage)
    _put(Path(f"{state}-wal"), b"stale wal")
    _put(Path(f"{state}-shm"), b"stale shm")
    clock = FakeClock(1_764_103_500.0)  # 2025-11-25T20:45:00Z
    async with Store.open(state, clock=clock) as store:
        row = await store.begin("docs", "a.pdf", size=3, mtime_ns=1)
        assert (row.id, row.state) == (1, "pending")
    aside = state.parent / "inboxd.sqlite3.corrupt-20251125T204500Z"
    assert _get(aside) == garbage
    assert _get(f"{aside}-wal") == b"stale wal"
    # The -shm is SQLite's rebuildable index of the -wal: moved with it, content not kept.
    assert _get(f"{aside}-shm") is not None
    assert _get(f"{state}-wal") != b"stale wal"
    assert "is corrupt" in caplog.text
    assert str(aside) in caplog.text


def _damage_a_page(path: Path) -> bytes:
    """Fill a valid state file's ledger, overwrite part of its root page; return the bytes."""
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA journal_mode = DELETE")
        raw.executemany(
            "INSERT INTO ledger (inbox, relpath, size, mtime_ns, state, created_at, updated_at)"
            " VALUES ('docs', ?, 1, 1, 'done', 0, 0)",
            [(f"{n:04}" * 20,) for n in range(2000)],
        )
    raw.close()
    data = bytearray(path.read_bytes())
    with sqlite3.connect(path) as raw:
        (root,) = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ledger'").fetchone()
    raw.close()
    start = (root - 1) * 4096  # the ledger table's root page
    data[start + 8 : start + 400] = b"\xff" * 392
    path.write_bytes(bytes(data))
    return bytes(data)


async def test_damaged_page_fails_quick_check_and_is_moved_aside(state: Path) -> None:
    """A valid file with one damaged page fails quick_check and is moved aside byte for byte."""
    async with Store.open(state, clock=FakeClock(1_764_103_500.0)):
        pass
    damaged = _damage_a_page(state)
    async with Store.open(state, clock=FakeClock(1_764_103_500.0)) as store:
        assert await store.counts_by_state() == dict.fromkeys(STATES, 0)
    assert _get(state.parent / "inboxd.sqlite3.corrupt-20251125T204500Z") == damaged


async def test_second_corruption_in_same_second_gets_its_own_name(state: Path) -> None:
    """Moving aside never overwrites an earlier corrupt copy."""
    state.parent.mkdir()
    clock = FakeClock(1_764_103_500.0)
    for content in (b"first garbage " * 100, b"second garbage " * 100):
        _put(state, content)
        _drop(f"{state}-wal")
        _drop(f"{state}-shm")
        async with Store.open(state, clock=clock):
            pass
    base = state.parent / "inboxd.sqlite3.corrupt-20251125T204500Z"
    assert _get(base) == b"first garbage " * 100
    assert _get(f"{base}.1") == b"second garbage " * 100


async def test_unopenable_state_dir_is_a_config_error(tmp_path: Path) -> None:
    """A state_dir that cannot be created raises ConfigError naming it and the fix."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="make state_dir writable") as info:
        async with Store.open(blocker / "inboxd.sqlite3"):
            pass
    assert str(blocker) in str(info.value)


# -- breakers ---------------------------------------------------------------------------------


# -- ledger -----------------------------------------------------------------------------------


async def test_lock_held_too_long_is_a_state_error_naming_the_file(state: Path) -> None:
    """A write blocked past busy_timeout by another process, while running, raises StateError
    (a fault of the state file, not of the config) naming the file and the fix."""
    async with Store.open(state, busy_timeout=0.01) as store:
        other = sqlite3.connect(state, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StateError, match="locked too long") as info:
                await store.save_breaker("kimi", BreakerRecord(state="open"))
            assert str(state) in str(info.value)
            other.execute("ROLLBACK")
        finally:
            other.close()
        await store.save_breaker("kimi", BreakerRecord(state="open"))
        assert await store.load_breaker("kimi") == BreakerRecord(state="open")

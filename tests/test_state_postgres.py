"""The PostgreSQL engine's own behaviour, on a real throwaway server: migrations from an older
database, a newer one refused, the URL and password rules, an unreachable server at open, and
a server stopped under a running store (the call waits, then completes once)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import anyio
import psycopg
import pytest

from daemon.state import pg_schema
from daemon.state._postgres import CONNECTION_ERRORS, PgConn
from daemon.state.schema import MIGRATIONS, SCHEMA_VERSION
from daemon.state.store import Store
from daemon.state.url import parse_state_url, pg_password
from providers.errors import ConfigError, StateUnavailable
from providers.redaction import scrub
from tests._tools import free_port
from tests.fakes import FakeClock
from tests.pg_cluster import Cluster

pytestmark = pytest.mark.anyio

ODD = b"r\xe9sum\xe9.pdf".decode("utf-8", "surrogateescape")


def _build(url: str, password: str, *, upto: int) -> None:
    """A database at schema ``upto`` (an older inboxd's), holding one done row."""
    with psycopg.connect(url, password=password, autocommit=True) as conn, conn.transaction():
        db = PgConn(conn)
        pg_schema.migrate(db, now=1.0, where="test", upto=upto)
        db.execute(
            "INSERT INTO ledger (inbox, relpath, size, mtime_ns, sha256, state, provider,"
            " purpose, file_id, created_at, updated_at)"
            " VALUES ('docs', ?, 10, 5, 'abc', 'done', 'kimi', 'file-extract', 'f-1', 1, 2)",
            (db.path(ODD),),
        )


@pytest.mark.parametrize("upto", sorted({1, SCHEMA_VERSION - 1}))
async def test_older_database_is_migrated_keeping_its_rows(
    pg_url: str, pg_cluster: Cluster, upto: int
) -> None:
    """A database left at an older version gains the later migrations (one history row each,
    stamped now) and keeps its ledger rows, undecodable names exact."""
    _build(pg_url, pg_cluster.password, upto=upto)
    async with Store.open(pg_url, clock=FakeClock(50.0)) as store:
        assert await store.schema_version() == SCHEMA_VERSION
        old = await store.get(1)
        assert (old.relpath, old.state, old.file_id) == (ODD, "done", "f-1")
        assert await store.find_uploaded("abc", "kimi", "file-extract") == old
        history = await store.fetch("SELECT version, summary, applied_at FROM schema_history")
    assert sorted((r[0], r[1], r[2]) for r in history) == [
        (m.version, m.summary, 1.0 if m.version <= upto else 50.0) for m in MIGRATIONS
    ]


async def test_newer_database_is_refused_untouched(pg_url: str, pg_cluster: Cluster) -> None:
    """A database a later inboxd migrated raises ConfigError naming state_url and the
    database, and gains nothing."""
    _build(pg_url, pg_cluster.password, upto=SCHEMA_VERSION)
    newer = SCHEMA_VERSION + 1
    with psycopg.connect(pg_url, password=pg_cluster.password, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_history VALUES (%s, 'from the future', 9)", (newer,))
    _, where = parse_state_url(pg_url)
    with pytest.raises(ConfigError, match=f"state_url: {where} has schema version {newer}"):
        async with Store.open(pg_url):
            pass
    with psycopg.connect(pg_url, password=pg_cluster.password) as conn:
        versions = conn.execute("SELECT version FROM schema_history ORDER BY 1").fetchall()
    assert [v for (v,) in versions] == [m.version for m in MIGRATIONS] + [newer]


async def test_describe_and_schema_version(pg_url: str) -> None:
    """A PostgreSQL store describes itself as ``postgresql host:port/db`` and has no file."""
    async with Store.open(pg_url) as store:
        assert store.describe() == "postgresql " + pg_url.split("@", 1)[1]
        assert (store.engine, store.path, store.identity) == ("postgresql", None, None)


def test_a_password_in_state_url_is_refused_without_repeating_it() -> None:
    """state_url with a password is a ConfigError that names where a password goes instead and
    never quotes it; the value is registered for redaction."""
    with pytest.raises(ConfigError) as info:
        parse_state_url("postgresql://inboxd:s3cr3t-value@db.example:5432/inboxd")
    message = str(info.value)
    assert message.startswith("state_url: contains a password; put the password in PGPASSWORD")
    assert "s3cr3t-value" not in message
    assert scrub("say s3cr3t-value") == "say [redacted]"


def test_url_parsing_names_host_port_and_database() -> None:
    """parse_state_url keeps the URL as the conninfo and describes it as host:port/db
    (libpq's defaults filled in); a URL of another scheme is refused naming state_url."""
    assert parse_state_url("postgresql://u@db.example:6543/state?sslmode=require") == (
        "postgresql://u@db.example:6543/state?sslmode=require",
        "db.example:6543/state",
    )
    assert parse_state_url("postgres://u@db/x")[1] == "db:5432/x"
    with pytest.raises(ConfigError, match="state_url: must be a postgresql://"):
        parse_state_url("mysql://u@db/x")


def test_pg_password_reads_the_credential_and_registers_both(tmp_path: Path) -> None:
    """$CREDENTIALS_DIRECTORY/pg_password is the password (its newline dropped); it and
    PGPASSWORD are added to the redaction registry."""
    (tmp_path / "pg_password").write_text("from-credential-file\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "PGPASSWORD": "from-environment"}
    assert pg_password(env) == "from-credential-file"
    assert scrub("from-credential-file from-environment") == "[redacted] [redacted]"
    assert pg_password({"CREDENTIALS_DIRECTORY": str(tmp_path / "none")}) is None


async def test_unreachable_server_at_open_is_state_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing listening: Store.open raises StateUnavailable, one line naming host:port/db
    and the fix, without the password."""
    monkeypatch.setenv("PGPASSWORD", "never-printed-pw")
    port = free_port()
    url = f"postgresql://inboxd@127.0.0.1:{port}/inboxd"
    with pytest.raises(StateUnavailable) as info:
        async with Store.open(url, connect_timeout=2):
            pass
    message = str(info.value)
    assert message.startswith(f"state_url: PostgreSQL at 127.0.0.1:{port}/inboxd does not answer")
    assert "start it, or fix state_url" in message
    assert "\n" not in message
    assert "never-printed-pw" not in message


async def test_server_stopped_under_a_write_waits_and_writes_once(
    pg_url: str, pg_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """With the server stopped, a write blocks, each failed attempt reaches the on_error hook
    (set with on_faults); once the server is back it completes, on_ok fires once, and its row
    exists exactly once."""
    errors: list[BaseException] = []
    oks: list[None] = []
    failed = anyio.Event()

    def on_error(exc: BaseException) -> None:
        errors.append(exc)
        failed.set()

    caplog.set_level(logging.WARNING, "daemon.state._postgres")
    async with Store.open(pg_url, retry_initial=0.01, retry_max=0.2, connect_timeout=1.0) as store:
        store.on_faults(on_error, lambda: oks.append(None))
        await store.begin("docs", "before.pdf", size=1, mtime_ns=1)
        await anyio.to_thread.run_sync(pg_cluster.stop)
        try:
            written = anyio.Event()

            async def write() -> None:
                await store.begin("docs", "during.pdf", size=2, mtime_ns=2)
                written.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                with anyio.fail_after(60):
                    await failed.wait()
                assert not written.is_set()
                assert oks == []
                await anyio.to_thread.run_sync(pg_cluster.start)
                with anyio.fail_after(120):
                    await written.wait()
        finally:
            if not (pg_cluster.datadir / "postmaster.pid").exists():
                pg_cluster.start()
        rows = await store.fetch("SELECT id FROM ledger WHERE relpath = ?", (b"during.pdf",))
        assert len(rows) == 1
        assert oks == [None]
        assert all(isinstance(e, CONNECTION_ERRORS) for e in errors)
        assert "retrying in" in caplog.text
        assert pg_cluster.password not in caplog.text


async def test_both_engines_have_the_same_tables_columns_and_indexes(
    pg_url: str, pg_cluster: Cluster, tmp_path: Path
) -> None:
    """After migrating, a PostgreSQL database and a state file hold the same tables, each with
    the same columns in the same order, and the same named indexes (one schema, two dialects)."""
    path = tmp_path / "inboxd.sqlite3"
    async with Store.open(path), Store.open(pg_url):
        pass
    with sqlite3.connect(path) as raw:
        tables = [t for (t,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        lite = {
            t: [c[1] for c in raw.execute(f"PRAGMA table_info({t})")]
            for t in tables
            if t != "sqlite_sequence"
        }
        lite_indexes = {
            i for (i,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    raw.close()
    with psycopg.connect(pg_url, password=pg_cluster.password) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ).fetchall()
        pg_indexes = {
            i
            for (i,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
                " AND indexname NOT LIKE '%_pkey'"
            )
        }
    pg: dict[str, list[str]] = {}
    for table, column in columns:
        pg.setdefault(table, []).append(column)
    assert pg == lite
    assert pg_indexes == {i for i in lite_indexes if not i.startswith("sqlite_autoindex")}


async def test_an_error_that_is_not_the_connections_propagates_at_once(pg_url: str) -> None:
    """A statement the database refuses (a bug, not an outage) is raised to the caller, not
    retried, and on_error never hears of it; the store goes on working."""
    errors: list[BaseException] = []
    async with Store.open(pg_url, on_error=errors.append, retry_initial=0.01) as store:
        with pytest.raises(psycopg.errors.UndefinedTable):
            await store.write(lambda db: db.execute("SELECT * FROM no_such_table"))
        assert (await store.begin("docs", "a.pdf", size=1, mtime_ns=1)).id == 1
    assert errors == []

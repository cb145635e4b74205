"""The throwaway PostgreSQL cluster the PostgreSQL store tests run against (tests/pg_cluster.py)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests.pg_cluster import Cluster, find_bindir, reachable_or


def _tables(url: str, password: str) -> list[str]:
    """The user tables of the database at ``url`` (every schema but the catalogs)."""
    with psycopg.connect(url, password=password) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


def test_the_cluster_accepts_the_password_and_refuses_a_connection_without_one(
    pg_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A connection with the cluster's password gets in; one with no password, or a wrong one,
    is refused by the server's password authentication (the cluster does not trust loopback)."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    with psycopg.connect(pg_cluster.url, password=pg_cluster.password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("inboxd",)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(pg_cluster.url)
    with pytest.raises(
        psycopg.OperationalError, match='password authentication failed for user "inboxd"'
    ):
        psycopg.connect(pg_cluster.url, password="wrong")


def test_the_url_names_host_port_user_and_database_but_no_password(pg_cluster: Cluster) -> None:
    """``url`` is ``postgresql://inboxd@127.0.0.1:PORT/DB`` (a config's state_url has no
    password), and ``env()`` hands the password to a subprocess as PGPASSWORD."""
    assert pg_cluster.url == f"postgresql://inboxd@127.0.0.1:{pg_cluster.port}/{pg_cluster.dbname}"
    assert pg_cluster.password not in pg_cluster.url
    assert pg_cluster.env()["PGPASSWORD"] == pg_cluster.password


def test_create_database_gives_an_empty_database(pg_cluster: Cluster) -> None:
    """A database made by ``create_database`` has no table even after another database of the
    same cluster got one."""
    first = pg_cluster.create_database("pgc_first")
    with psycopg.connect(first, password=pg_cluster.password) as conn:
        conn.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY)")
    second = pg_cluster.create_database("pgc_second")
    assert second == f"postgresql://inboxd@127.0.0.1:{pg_cluster.port}/pgc_second"
    assert _tables(first, pg_cluster.password) == ["public.ledger"]
    assert _tables(second, pg_cluster.password) == []


def test_pg_url_is_a_fresh_database_reachable_through_pgpassword(pg_url: str) -> None:
    """The ``pg_url`` fixture's database is empty and a plain connect (PGPASSWORD set for the
    test) reaches it."""
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone() == (0,)


def test_restart_keeps_committed_rows_and_the_port(pg_cluster: Cluster) -> None:
    """After ``restart()`` (a clean stop and start) and after ``kill()`` + ``start()`` (every
    server process SIGKILLed: crash recovery), the cluster answers on the same port with the
    rows committed before."""
    url = pg_cluster.create_database("pgc_restart")
    port = pg_cluster.port
    with psycopg.connect(url, password=pg_cluster.password) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES ('before restart')")
    pg_cluster.restart()
    assert pg_cluster.port == port
    with psycopg.connect(url, password=pg_cluster.password) as conn:
        conn.execute("INSERT INTO t VALUES ('before kill')")
    pg_cluster.kill()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, password=pg_cluster.password, connect_timeout=5)
    pg_cluster.start()
    assert pg_cluster.port == port
    with psycopg.connect(url, password=pg_cluster.password) as conn:
        rows = conn.execute("SELECT v FROM t ORDER BY v").fetchall()
    assert rows == [("before kill",), ("before restart",)]


def _server(bindir: Path) -> Path:
    """``bindir`` holding an (empty) initdb and pg_ctl."""
    bindir.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl"):
        (bindir / tool).touch()
    return bindir


def test_find_bindir_prefers_pg_config_then_the_newest_debian_server(tmp_path: Path) -> None:
    """``pg_config --bindir`` wins when it holds initdb and pg_ctl; otherwise (libpq-dev's
    pg_config naming a version with no server) the newest /usr/lib/postgresql/<version>/bin
    with both, compared as numbers (15 > 9.6), and one with only client tools is passed over."""
    root = tmp_path / "postgresql"
    _server(root / "9.6" / "bin")
    newest = _server(root / "15" / "bin")
    (root / "17" / "bin").mkdir(parents=True)  # client only (psql), no server
    elsewhere = _server(tmp_path / "custom" / "bin")
    pg_config = tmp_path / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho {elsewhere}\n")
    pg_config.chmod(0o755)
    assert find_bindir(str(pg_config), root) == elsewhere
    pg_config.write_text(f"#!/bin/sh\necho {root / '17' / 'bin'}\n")
    assert find_bindir(str(pg_config), root) == newest


def test_a_cluster_folder_goes_where_nobody_can_reach_it() -> None:
    """As root the server runs as ``nobody``, so its folder's parent must let others through
    (o+x) on every step: a folder behind a 0700 one is replaced by the fallback."""
    outer = Path(tempfile.mkdtemp(prefix="pgc-reach-", dir="/tmp"))
    try:
        inner = outer / "inner"
        inner.mkdir()
        outer.chmod(0o755)
        inner.chmod(0o711)
        assert reachable_or(inner, Path("/fallback")) == inner
        outer.chmod(0o700)
        assert reachable_or(inner, Path("/fallback")) == Path("/fallback")
    finally:
        shutil.rmtree(outer)

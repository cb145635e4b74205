"""Shared pytest fixtures."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.ops.logs import RedactingHandler
from daemon.state.store import Store
from providers.redaction import clear_secrets
from tests._tools import missing_tool
from tests._tools import need_tool as _need_tool
from tests.pg_cluster import Cluster, find_bindir


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a test did to logging through ``daemon.ops.logs.setup_logging`` (its handler
    on the root logger, the root's level, quieter library loggers), so a later test's
    ``caplog`` sees records at the levels it expects. The daemon itself leaves logging alone;
    the tests that configure it as ``inboxd run`` does (the CLI in-process, ``logging_to``,
    ``setup_logging``, the demo) are spread over many modules, hence autouse."""
    root = logging.getLogger()
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_level, handlers = root.level, set(root.handlers)
    yield
    for handler in root.handlers[:]:
        if isinstance(handler, RedactingHandler) and handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(root_level)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Keys one test registered for redaction (a test key like "k1") never blank out another
    test's output: the process-wide registry (``providers.redaction``) is emptied after each."""
    yield
    clear_secrets()


@pytest.fixture
def anyio_backend() -> str:
    """Every async test runs on asyncio: the daemon's one supported backend."""
    return "asyncio"


@pytest.fixture
def need_tool() -> Callable[..., str]:
    """A finder for system tools: fails in CI when one is missing, skips elsewhere."""
    return _need_tool


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """An empty inbox folder, ``tmp_path/in`` (the config tests' folder)."""
    path = tmp_path / "in"
    path.mkdir()
    return path


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    """Write a config file's text to ``tmp_path/config.toml``; its path."""

    def _write(text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(text)
        return path

    return _write


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, so a fixture's teardown knows the test failed
    (``pg_url`` then prints the PostgreSQL server's log)."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[call.when] = report
    return report


_REPORTS = pytest.StashKey[dict[str, object]]()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the whole session, started when a test first asks
    for it (tests/pg_cluster.py). Binaries missing: the test fails in CI, skips elsewhere."""
    bindir = find_bindir()
    if bindir is None:
        missing_tool(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        )
    cluster = Cluster.create(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_url(
    pg_cluster: Cluster, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The URL of a fresh, empty database of the session's cluster (no password in it; the
    test's PGPASSWORD carries it). A failed test prints the tail of the server's log."""
    monkeypatch.setenv("PGPASSWORD", pg_cluster.password)
    url = pg_cluster.create_database(f"t_{secrets.token_hex(6)}")
    print(f"PostgreSQL {url}, server log {pg_cluster.log_path}")
    yield url
    reports = request.node.stash.get(_REPORTS, {})
    if any(getattr(report, "failed", False) for report in reports.values()):
        log = pg_cluster.log_path.read_text(errors="replace").splitlines()[-60:]
        print(f"--- last lines of {pg_cluster.log_path} ---", *log, sep="\n")


@dataclass(frozen=True)
class StoreFactory:
    """Opens ``Store``s on one test's store: a SQLite file or a fresh PostgreSQL database.

    Each call opens another Store on the same target (as another process or host would).
    """

    engine: str
    target: Path | str

    def __call__(self, **options: Any) -> AbstractAsyncContextManager[Store]:
        return Store.open(self.target, **options)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """The store of a contract test, once per engine: a state file in ``tmp_path`` (its folder
    not yet made) or a fresh database of the session's PostgreSQL cluster (``pg_url``)."""
    if request.param == "sqlite":
        return StoreFactory("sqlite", tmp_path / "state" / "inboxd.sqlite3")
    return StoreFactory("postgresql", request.getfixturevalue("pg_url"))

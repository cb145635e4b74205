"""``inboxd check-config`` reports the store: its engine, where it is and its schema version,
read without changing anything (SQLite file or PostgreSQL database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli import main
from daemon.state.probe import probe_state
from daemon.state.schema import SCHEMA_VERSION
from daemon.state.store import Store
from providers.errors import StateUnavailable
from tests._tools import free_port

pytestmark = pytest.mark.anyio


def test_check_config_names_a_state_file_not_created_yet(
    tmp_path: Path, inbox: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the first start, check-config says the state file is not created yet, and
    does not create it."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        f'state_dir = "{state}"\n[[inbox]]\nname = "r"\npath = "{inbox}"\nproviders = ["kimi"]\n'
    )
    assert main(["check-config", "-c", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"state: sqlite {state}/inboxd.sqlite3: not created yet "
        f"(schema v{SCHEMA_VERSION} at the first start)"
    )
    assert not (state / "inboxd.sqlite3").exists()


async def test_probe_reads_an_existing_state_file(tmp_path: Path) -> None:
    """An existing state file is reported with its schema version."""
    path = tmp_path / "inboxd.sqlite3"
    async with Store.open(path):
        pass
    assert await probe_state(path) == (
        f"sqlite {path}: schema v{SCHEMA_VERSION} (this inboxd: v{SCHEMA_VERSION})"
    )


async def test_probe_reads_a_database_without_migrating_it(pg_url: str) -> None:
    """A fresh database is reported at v0 (nothing created), a migrated one at its version."""
    where = pg_url.split("@", 1)[1]
    assert (
        await probe_state(pg_url)
        == f"postgresql {where}: schema v0 (this inboxd: v{SCHEMA_VERSION})"
    )
    assert (
        await probe_state(pg_url)
        == f"postgresql {where}: schema v0 (this inboxd: v{SCHEMA_VERSION})"
    )
    async with Store.open(pg_url):
        pass
    assert await probe_state(pg_url) == (
        f"postgresql {where}: schema v{SCHEMA_VERSION} (this inboxd: v{SCHEMA_VERSION})"
    )


async def test_probe_of_an_unreachable_database_is_state_unavailable() -> None:
    """Nothing listening: the probe raises StateUnavailable naming host:port/db."""
    port = free_port()
    with pytest.raises(StateUnavailable, match=f"PostgreSQL at 127.0.0.1:{port}/x does not"):
        await probe_state(f"postgresql://u@127.0.0.1:{port}/x", connect_timeout=2)

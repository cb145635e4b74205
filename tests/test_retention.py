"""Ledger retention: a state file that cannot be written now is a warning, nothing else is."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from daemon.state.retention import DAY, prune_ledger
from daemon.state.store import Store
from providers.errors import ConfigError

pytestmark = pytest.mark.anyio


class _Refusing:
    """A ledger whose prune raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def prune(self, *, before: float, limit: int = 5000) -> int:
        raise self.error


async def test_a_locked_state_file_is_a_warning_and_pruning_waits_for_the_next_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state file held locked by another process makes pruning log one warning (the
    store's StateError) and prune nothing; the daemon goes on."""
    state = tmp_path / "inboxd.sqlite3"
    async with Store.open(state, busy_timeout=0.01) as store:
        other = sqlite3.connect(state, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with caplog.at_level(logging.WARNING, logger="daemon.state.retention"):
                assert await prune_ledger(store, days=1, now=10 * DAY) == 0
        finally:
            other.execute("ROLLBACK")
            other.close()
    [record] = [r for r in caplog.records if r.name == "daemon.state.retention"]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith("ledger: pruning rows older than 1 days failed: ")
    assert f"state_dir: {state}: database is locked;" in record.getMessage()


async def test_a_config_error_is_not_taken_for_a_state_file_fault() -> None:
    """Retention's warning path catches only StateError: a ConfigError goes up unchanged."""
    error = ConfigError("state_dir: not a state-file fault")
    with pytest.raises(ConfigError) as info:
        await prune_ledger(_Refusing(error), days=1, now=10 * DAY)
    assert info.value is error

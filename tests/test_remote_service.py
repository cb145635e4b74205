"""Deletion metrics from start, and a failing pass never stops the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pytest
from prometheus_client import CollectorRegistry

from daemon.remote.metrics import RemoteMetrics
from daemon.remote.plan import DELETION_REASONS, RetentionLimits
from daemon.remote.prune import Pruner
from daemon.remote.service import RemoteSide
from daemon.state.store import Store
from providers.errors import Retryable
from providers.types import RemoteFile, UploadResult


def test_every_deletion_series_exists_at_zero() -> None:
    """Each provider's inboxd_remote_deletions_total series exist at 0 from start."""
    registry = CollectorRegistry()
    RemoteMetrics(registry, providers=["kimi", "glm"])
    for provider in ("kimi", "glm"):
        for reason in DELETION_REASONS:
            labels = {"provider": provider, "reason": reason}
            assert registry.get_sample_value("inboxd_remote_deletions_total", labels) == 0.0


class BrokenListing:
    """A client whose listing fails with ``error``."""

    name = "kimi"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult:
        raise AssertionError("no upload in this test")

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        raise self.error

    async def delete(self, file_id: str) -> None:
        raise AssertionError("nothing may be deleted")

    async def aclose(self) -> None:
        return None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (Retryable("listing timed out", provider="kimi"), "retention pass skipped"),
        (RuntimeError("a bug"), "kimi: retention pass failed; the next one tries again"),
    ],
)
async def test_a_failing_pass_is_logged_and_the_next_one_runs(
    tmp_path: Path, error: Exception, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass that cannot list (or hits a bug) returns None, logs why and tells its waiters;
    it never raises into the daemon."""
    limits = {"kimi": RetentionLimits(max_files=1)}
    async with Store.open(tmp_path / "state.sqlite3") as store:
        pruner = Pruner(store=store, clients={"kimi": BrokenListing(error)}, limits=limits, skew=0)

        async def no_room(_provider: str) -> None:
            raise AssertionError("no room was made")

        side = RemoteSide(pruner, limits=limits, breakers=store, on_room=no_room)
        waiter = side.passed
        assert await side.run("kimi") is None
        assert waiter.is_set()
    [record] = [r for r in caplog.records if r.name == "daemon.remote.service"]
    assert logged in record.getMessage()

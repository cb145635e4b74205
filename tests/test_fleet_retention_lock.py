"""One retention pass per account at a time across a fleet: a pass runs only while its host
holds the named lock ``retention:<provider>`` in the shared store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

import pytest

from daemon.remote.plan import RetentionLimits
from daemon.remote.prune import Pruner
from daemon.remote.service import RemoteSide
from daemon.state.store import Store
from providers.types import RemoteFile, UploadResult


class EmptyAccount:
    """A client whose account holds nothing; counts its listings."""

    name = "kimi"

    def __init__(self) -> None:
        self.listed = 0

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult:
        raise AssertionError("no upload in this test")

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        self.listed += 1
        return []

    async def delete(self, file_id: str) -> None:
        raise AssertionError("nothing may be deleted")

    async def aclose(self) -> None:
        return None


async def _no_room(_provider: str) -> None:
    raise AssertionError("no room was made")


@pytest.mark.anyio
async def test_pass_skipped_while_another_host_holds_the_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Host b holds retention:kimi: host a's pass lists nothing and returns None (logged at
    debug); once b releases it, a's pass runs and gives the lock back when done."""
    caplog.set_level(logging.DEBUG, logger="daemon.remote.service")
    limits = {"kimi": RetentionLimits(max_files=5)}
    client = EmptyAccount()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    path = tmp_path / "inboxd.sqlite3"
    async with (
        Store.open(path, host="host-a") as store_a,
        Store.open(path, host="host-b") as store_b,
    ):
        pruner = Pruner(store=store_a, clients={"kimi": client}, limits=limits, skew=0)
        side = RemoteSide(
            pruner, limits=limits, breakers=store_a, on_room=_no_room, busy_wait=7.0, sleep=sleep
        )
        assert await store_b.hold("retention:kimi", ttl=60.0)
        waiter = side.passed
        assert await side.run("kimi") is None
        assert waiter.is_set()
        assert (client.listed, waits) == (0, [7.0])
        await store_b.release("retention:kimi")
        report = await side.run("kimi")
        assert report is not None
        assert (report.files, client.listed) == (0, 1)
        assert await store_b.hold("retention:kimi", ttl=60.0)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG] == [
        "kimi: retention pass skipped: another host holds retention:kimi"
    ]

"""One retention pass per account at a time across a fleet: a pass runs only while its host
holds the named lock ``retention:<provider>`` in the shared store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

import anyio
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


class GatedAccount(EmptyAccount):
    """An empty account whose listings wait for the test: ``listing`` is set when one starts,
    ``go`` lets it answer."""

    def __init__(self) -> None:
        super().__init__()
        self.listing = anyio.Event()
        self.go = anyio.Event()

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        self.listing.set()
        await self.go.wait()
        self.listing, self.go = anyio.Event(), anyio.Event()
        return await super().list_files(purpose)


def _waiting(side: RemoteSide) -> bool:
    """Is a pass of ``side`` over kimi waiting for another one (the pass lock, or the lock
    this host's passes take around the shared one)?"""
    locks = [side.pruner.lock("kimi"), *side._holders.values()]
    return any(lock.statistics().tasks_waiting for lock in locks)


@pytest.mark.anyio
async def test_two_passes_of_one_host_keep_the_lock_until_the_last_ends(tmp_path: Path) -> None:
    """Host a runs two passes over one account one after the other: when the first ends and
    gives the lock back, the second still holds it while it runs (host b cannot take it),
    and only its end releases it."""
    limits = {"kimi": RetentionLimits(max_files=5)}
    client = GatedAccount()
    path = tmp_path / "inboxd.sqlite3"
    async with (
        Store.open(path, host="host-a") as store_a,
        Store.open(path, host="host-b") as store_b,
    ):
        pruner = Pruner(store=store_a, clients={"kimi": client}, limits=limits, skew=0)
        side = RemoteSide(pruner, limits=limits, breakers=store_a, on_room=_no_room)
        async with anyio.create_task_group() as tg:
            tg.start_soon(side.run, "kimi")
            await client.listing.wait()  # the first pass is listing
            tg.start_soon(side.run, "kimi")
            with anyio.fail_after(30):  # the second pass waits behind the first (on a lock)
                while not _waiting(side):  # noqa: ASYNC110 -- a lock's waiters have no event
                    await anyio.sleep(0.01)
            first_ended = side.passed
            client.go.set()
            await first_ended.wait()  # the first pass has ended and given its lock back
            await client.listing.wait()  # the second pass is listing
            assert not await store_b.hold("retention:kimi", ttl=60.0)
            client.go.set()
        assert await store_b.hold("retention:kimi", ttl=60.0)
    assert client.listed == 2

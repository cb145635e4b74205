"""The in-flight byte budget and the remote-copy matcher used by crash recovery."""

from __future__ import annotations

import anyio
import pytest

from handlers.budget import ByteBudget
from handlers.reconcile import match_remote
from providers.types import RemoteFile


def _remote(fid: str, name: str = "a.txt", size: int = 10, at: float = 100.0) -> RemoteFile:
    return RemoteFile("kimi", fid, name, size, at, "file-extract")


@pytest.mark.parametrize(
    ("files", "claimed", "expected"),
    [
        ([_remote("f1")], (), "f1"),
        ([_remote("f1", name="b.txt")], (), None),
        ([_remote("f1", size=11)], (), None),
        ([_remote("f1", at=10.0)], (), None),  # created long before the intent
        ([_remote("f1", at=95.0)], (), "f1"),  # within the skew
        ([_remote("f2", at=120.0), _remote("f1", at=110.0)], (), "f1"),  # the earliest
        ([_remote("f1", at=110.0), _remote("f2", at=120.0)], ("f1",), "f2"),  # f1 is taken
        ([], (), None),
    ],
)
def test_match_remote(
    files: list[RemoteFile], claimed: tuple[str, ...], expected: str | None
) -> None:
    """A remote copy matches on name, size, purpose and creation time, never one already claimed."""
    found = match_remote(
        files,
        filename="a.txt",
        size=10,
        purpose="file-extract",
        intent_at=100.0,
        skew=10.0,
        claimed=claimed,
    )
    assert (found.id if found else None) == expected


def test_match_remote_other_purpose() -> None:
    """A same-named file stored under another purpose is not this upload."""
    found = match_remote(
        [_remote("f1")], filename="a.txt", size=10, purpose="batch", intent_at=100.0, skew=0.0
    )
    assert found is None


@pytest.mark.anyio
async def test_budget_blocks_until_released() -> None:
    """A file that does not fit waits until enough bytes are released, then proceeds."""
    budget = ByteBudget(100)
    order: list[str] = []
    release = anyio.Event()

    async def big() -> None:
        async with budget.hold(80):
            order.append("big in")
            await release.wait()
        order.append("big out")

    async def second() -> None:
        async with budget.hold(50):
            order.append("second in")

    async with anyio.create_task_group() as tg:
        tg.start_soon(big)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert order == ["big in"]
        assert budget.in_use == 80
        release.set()
    assert order == ["big in", "big out", "second in"]
    assert budget.in_use == 0


@pytest.mark.anyio
async def test_budget_is_fifo_and_admits_oversize_alone() -> None:
    """A waiter is not overtaken by a smaller later one; a file over the limit holds it all."""
    budget = ByteBudget(100)
    order: list[str] = []
    gate = anyio.Event()

    async def hold(name: str, size: int, wait: anyio.Event | None = None) -> None:
        async with budget.hold(size):
            order.append(name)
            if wait is not None:
                await wait.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, "first", 60, gate)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(hold, "huge", 500)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(hold, "small", 10)
        await anyio.wait_all_tasks_blocked()
        assert order == ["first"]  # "small" would fit, but "huge" came first
        gate.set()
    assert order == ["first", "huge", "small"]
    assert budget.in_use == 0


@pytest.mark.anyio
async def test_budget_cancelled_waiter_frees_its_place() -> None:
    """A waiter cancelled while queued leaves the budget as it was."""
    budget = ByteBudget(10)
    async with budget.hold(10):
        with anyio.move_on_after(0):
            async with budget.hold(5):
                pytest.fail("must not be admitted")
        assert budget.in_use == 10
    assert budget.in_use == 0

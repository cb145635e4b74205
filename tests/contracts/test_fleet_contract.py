"""Several hosts on one store, racing for real (concurrent tasks, two Store instances with
different host ids), on both engines: one claim per file, the shared send window never above
its rpm, a named lock held by one host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import pytest

from daemon.state.store import Store
from providers.errors import ClaimedElsewhere
from tests.conftest import StoreFactory
from tests.fakes import FakeClock

pytestmark = pytest.mark.anyio

LEASE = 30.0


@pytest.fixture
async def two_hosts(store_factory: StoreFactory) -> AsyncIterator[tuple[Store, Store, FakeClock]]:
    """Host ``a`` and host ``b`` on one store (file or database), one fake wall clock."""
    clock = FakeClock(now=1000.0)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(store_factory(clock=clock, host="a", lease=LEASE))
        b = await stack.enter_async_context(store_factory(clock=clock, host="b", lease=LEASE))
        yield a, b, clock


async def test_concurrent_begin_of_one_file_claims_it_once(
    two_hosts: tuple[Store, Store, FakeClock],
) -> None:
    """Two hosts beginning the same files at the same moment: for each file exactly one gets
    the row (owned by it), the other ClaimedElsewhere naming the winner; one row per file."""
    a, b, clock = two_hosts
    outcomes: dict[str, list[str]] = {}

    async def begin(store: Store, name: str) -> None:
        try:
            row = await store.begin("in", name, size=1, mtime_ns=1)
        except ClaimedElsewhere as exc:
            outcomes.setdefault(name, []).append(f"refused:{exc.owner}:{exc.lease_until}")
        else:
            outcomes.setdefault(name, []).append(f"claimed:{row.owner}:{row.lease_until}")

    names = [f"f{n}.pdf" for n in range(15)]
    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(begin, a, name)
            tg.start_soon(begin, b, name)
    until = clock.now + LEASE
    for name in names:
        (claimed,) = [o for o in outcomes[name] if o.startswith("claimed:")]
        winner = claimed.split(":")[1]
        assert sorted(outcomes[name]) == [f"claimed:{winner}:{until}", f"refused:{winner}:{until}"]
    counts = await a.fetch("SELECT count(*) FROM ledger GROUP BY inbox, relpath")
    assert [row[0] for row in counts] == [1] * len(names)


async def test_concurrent_reservations_never_exceed_rpm(
    two_hosts: tuple[Store, Store, FakeClock],
) -> None:
    """Twelve concurrent reserve_send calls from two hosts within one window: exactly rpm (5)
    are granted; once the window has passed, rpm more are."""
    a, b, clock = two_hosts

    async def burst() -> list[float]:
        waits: list[float] = []

        async def one(store: Store) -> None:
            waits.append(await store.reserve_send("kimi", rpm=5, window=60.0, now=clock.now))

        async with anyio.create_task_group() as tg:
            for n in range(12):
                tg.start_soon(one, (a, b)[n % 2])
        return sorted(waits)

    assert await burst() == [0.0] * 5 + [60.0] * 7
    clock.now += 60.0
    assert await burst() == [0.0] * 5 + [60.0] * 7


async def test_concurrent_holds_of_one_lock_go_to_one_host(
    two_hosts: tuple[Store, Store, FakeClock],
) -> None:
    """Both hosts asking for the same named lock at once, several times each: only one host
    is ever told it holds it."""
    a, b, _ = two_hosts
    holders: list[str] = []

    async def hold(store: Store) -> None:
        if await store.hold("retention:kimi", ttl=30.0):
            holders.append(store.host)

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(hold, (a, b)[n % 2])
    assert len(set(holders)) == 1
    assert len(holders) == 4  # the holder's every call extends its own lock

"""Claims, leases, the shared send window and named locks (schema v5), on one store (a SQLite
file or a PostgreSQL database) opened by two stores with different host ids: two hosts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import pytest

from daemon.state.store import Store
from handlers.ledger import DONE, PENDING, UPLOADED, UPLOADING
from providers.errors import ClaimedElsewhere, ClaimLost
from tests.conftest import StoreFactory
from tests.fakes import FakeClock

pytestmark = pytest.mark.anyio

LEASE = 30.0


@pytest.fixture
async def hosts(store_factory: StoreFactory) -> AsyncIterator[tuple[Store, Store, FakeClock]]:
    """Host ``a`` and host ``b`` on one store (each engine), one fake wall clock."""
    clock = FakeClock(now=1000.0)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(store_factory(clock=clock, host="a", lease=LEASE))
        b = await stack.enter_async_context(store_factory(clock=clock, host="b", lease=LEASE))
        yield a, b, clock


async def test_begin_claims_a_new_row_for_its_host(hosts: tuple[Store, Store, FakeClock]) -> None:
    """A new row belongs to the host that began it, leased for ``lease`` seconds."""
    a, _, clock = hosts
    row = await a.begin("in", "x.txt", size=3, mtime_ns=1)
    assert (row.state, row.owner, row.lease_until) == (PENDING, "a", clock.now + LEASE)


async def test_another_host_cannot_claim_a_live_claim(
    hosts: tuple[Store, Store, FakeClock],
) -> None:
    """While a's lease is live, b's begin raises ClaimedElsewhere naming a and the lease end."""
    a, b, clock = hosts
    row = await a.begin("in", "x.txt", size=3, mtime_ns=1)
    clock.now += LEASE - 1
    with pytest.raises(ClaimedElsewhere) as info:
        await b.begin("in", "x.txt", size=3, mtime_ns=1)
    assert (info.value.owner, info.value.lease_until) == ("a", row.lease_until)
    assert (await a.get(row.id)).owner == "a"


async def test_renewed_leases_keep_the_claim(hosts: tuple[Store, Store, FakeClock]) -> None:
    """renew_leases extends every active row of its host, and none of the other host's."""
    a, b, clock = hosts
    mine = await a.begin("in", "x.txt", size=3, mtime_ns=1)
    theirs = await b.begin("in", "y.txt", size=3, mtime_ns=1)
    clock.now += 20
    assert await a.renew_leases() == 1
    clock.now += 20  # past the first lease, inside the renewed one
    with pytest.raises(ClaimedElsewhere):
        await b.begin("in", "x.txt", size=3, mtime_ns=1)
    assert (await a.get(mine.id)).lease_until == clock.now - 20 + LEASE
    assert (await a.get(theirs.id)).lease_until == theirs.lease_until


async def test_an_expired_claim_is_taken_over(
    hosts: tuple[Store, Store, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    """Once a's lease ran out, b's begin takes the same row over (its state kept) and logs it."""
    a, b, clock = hosts
    row = await a.begin("in", "x.txt", size=3, mtime_ns=1)
    row = await a.transition(row.id, UPLOADING, provider="kimi", purpose="file-extract")
    clock.now += LEASE
    taken = await b.begin("in", "x.txt", size=3, mtime_ns=1)
    assert (taken.id, taken.state, taken.owner) == (row.id, UPLOADING, "b")
    assert "from host a, whose lease ran out" in caplog.text


async def test_a_host_whose_row_was_taken_over_changes_nothing(
    hosts: tuple[Store, Store, FakeClock],
) -> None:
    """a's transition of a row b took over raises ClaimLost, and the row stays as b has it."""
    a, b, clock = hosts
    row = await a.begin("in", "x.txt", size=3, mtime_ns=1)
    row = await a.transition(row.id, UPLOADING, provider="kimi", purpose="file-extract")
    clock.now += LEASE + 1
    await b.begin("in", "x.txt", size=3, mtime_ns=1)
    with pytest.raises(ClaimLost) as info:
        await a.transition(row.id, UPLOADED, file_id="f1", remote_bytes=3)
    assert info.value.owner == "b"
    assert (await a.get(row.id)).state == UPLOADING


async def test_take_claims_only_what_is_free(hosts: tuple[Store, Store, FakeClock]) -> None:
    """take() returns the row claimed when it is this host's or expired; None for another
    host's live claim, a finished row, or no row."""
    a, b, clock = hosts
    row = await a.begin("in", "x.txt", size=3, mtime_ns=1)
    assert await b.take(row.id) is None
    assert (await a.take(row.id)) is not None
    clock.now += LEASE
    taken = await b.take(row.id)
    assert taken is not None
    assert taken.owner == "b"
    await b.transition(row.id, DONE)
    assert await b.take(row.id) is None
    assert await b.take(row.id + 100) is None


async def test_rows_from_before_claims_are_anyones(store_factory: StoreFactory) -> None:
    """A row with no owner (written before schema v5) is claimed by the first host to begin it."""
    clock = FakeClock(now=1000.0)
    async with store_factory(clock=clock, host="a") as a:
        row = await a.begin("in", "x.txt", size=3, mtime_ns=1)
        await a.write(lambda db: db.execute("UPDATE ledger SET owner = NULL, lease_until = NULL"))
    async with store_factory(clock=clock, host="b") as b:
        taken = await b.begin("in", "x.txt", size=3, mtime_ns=1)
    assert (taken.id, taken.owner) == (row.id, "b")


async def test_fleet_counts_active_rows_by_host(hosts: tuple[Store, Store, FakeClock]) -> None:
    """fleet() maps each host to its active rows and whether its claims are live."""
    a, b, clock = hosts
    await a.begin("in", "1", size=1, mtime_ns=1)
    await a.begin("in", "2", size=1, mtime_ns=1)
    done = await b.begin("in", "3", size=1, mtime_ns=1)
    await b.transition(done.id, DONE)
    await b.begin("in", "4", size=1, mtime_ns=1)
    assert await a.fleet() == {"a": (2, True), "b": (1, True)}
    clock.now += LEASE
    assert await b.fleet() == {"a": (2, False), "b": (1, False)}


async def test_the_send_window_is_shared_by_hosts(hosts: tuple[Store, Store, FakeClock]) -> None:
    """Two hosts together take at most ``rpm`` sends in a window; a refused one learns how long
    until the oldest send leaves it."""
    a, b, clock = hosts
    taken = []
    for i in range(6):
        store = (a, b)[i % 2]
        taken.append(await store.reserve_send("kimi", rpm=4, window=60.0))
        clock.now += 1
    assert taken == [0.0, 0.0, 0.0, 0.0, 56.0, 55.0]  # sent at 1000..1003; now 1004, 1005
    assert await a.reserve_send("glm", rpm=4, window=60.0) == 0.0  # per provider
    clock.now = 1060.0  # the send at 1000 has left the window
    assert await b.reserve_send("kimi", rpm=4, window=60.0) == 0.0
    assert await a.reserve_send("kimi", rpm=4, window=60.0) == 1.0


async def test_a_named_lock_is_held_by_one_host(hosts: tuple[Store, Store, FakeClock]) -> None:
    """hold() is exclusive until released or expired, and extends the holder's own lock."""
    a, b, clock = hosts
    assert await a.hold("retention:kimi", ttl=10)
    assert not await b.hold("retention:kimi", ttl=10)
    assert await b.hold("retention:glm", ttl=10)
    clock.now += 9
    assert await a.hold("retention:kimi", ttl=10)  # renewed to 1019
    clock.now += 9
    assert not await b.hold("retention:kimi", ttl=10)
    clock.now += 1
    assert await b.hold("retention:kimi", ttl=10)  # expired: b's now
    await a.release("retention:kimi")  # not a's any more: nothing happens
    assert not await a.hold("retention:kimi", ttl=10)
    await b.release("retention:kimi")
    assert await a.hold("retention:kimi", ttl=10)


async def test_renewal_keeps_a_hosts_named_locks(hosts: tuple[Store, Store, FakeClock]) -> None:
    """A named lock held by a live host (renewing its leases) outlasts its ttl; its host's
    death (no renewal) lets it expire."""
    a, b, clock = hosts
    assert await a.hold("content:kimi:abc", ttl=5)
    clock.now += 4
    await a.renew_leases()  # extended to now + lease
    clock.now += LEASE - 1
    assert not await b.hold("content:kimi:abc", ttl=5)
    clock.now += 1
    assert await b.hold("content:kimi:abc", ttl=5)


# -- hosts racing for real (concurrent tasks) ----------------------------------------------


async def test_concurrent_begin_of_one_file_claims_it_once(
    hosts: tuple[Store, Store, FakeClock],
) -> None:
    """Two hosts beginning the same files at the same moment: for each file exactly one gets
    the row (owned by it), the other ClaimedElsewhere naming the winner; one row per file."""
    a, b, clock = hosts
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
    hosts: tuple[Store, Store, FakeClock],
) -> None:
    """Twelve concurrent reserve_send calls from two hosts within one window: exactly rpm (5)
    are granted; once the window has passed, rpm more are."""
    a, b, clock = hosts

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
    hosts: tuple[Store, Store, FakeClock],
) -> None:
    """Both hosts asking for the same named lock at once, several times each: only one host
    is ever told it holds it."""
    a, b, _ = hosts
    holders: list[str] = []

    async def hold(store: Store) -> None:
        if await store.hold("retention:kimi", ttl=30.0):
            holders.append(store.host)

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(hold, (a, b)[n % 2])
    assert len(set(holders)) == 1
    assert len(holders) == 4  # the holder's every call extends its own lock

"""Breakers in a real SQLite state file: restarts resume exactly, and only one probe is claimed."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import anyio
import pytest

from daemon.state.store import Store
from providers.breaker import CLOSED, HALF_OPEN, OPEN, BreakerConfig
from providers.dispatch import Dispatcher
from providers.errors import Parked, Retryable
from providers.limits import LIMITS
from providers.retry import RetryPolicy
from providers.types import BreakerRecord, RemoteFile, UploadResult
from tests.conftest import StoreFactory
from tests.fakes import FakeClient, FakeClock, ResilienceLog

T0 = 1_000_000.0


def _dispatcher(
    store: Store, clock: FakeClock, kimi: FakeClient, glm: FakeClient | None = None
) -> Dispatcher:
    clients = {"kimi": kimi, "glm": glm or FakeClient("glm")}
    return Dispatcher(
        clients,
        LIMITS,
        store,
        {name: RetryPolicy() for name in clients},
        {name: BreakerConfig(consecutive_failures=2) for name in clients},
        ResilienceLog(),
        clock=clock,
        sleep=clock.sleep,
        rand=lambda: 0.5,
    )


def _open_file() -> BinaryIO:
    return io.BytesIO(b"pdf")


async def _nothing(provider: str, purpose: str) -> RemoteFile | None:
    return None


async def _upload(dispatcher: Dispatcher, preference: list[str]) -> UploadResult:
    return await dispatcher.upload(
        preference=preference,
        purposes={},
        filename="a.pdf",
        size=3,
        content_type="application/pdf",
        open_file=_open_file,
        reconcile=_nothing,
    )


@pytest.mark.anyio
async def test_restart_resumes_open_exactly(tmp_path: Path) -> None:
    """An OPEN breaker written by one Store reads back identically after a restart, never CLOSED."""
    path = tmp_path / "state.sqlite3"
    clock = FakeClock(now=T0)
    failing = FakeClient("kimi", [Retryable("down", status=503)] * 2)
    async with Store.open(path, clock=clock) as store:
        with pytest.raises(Parked) as info:
            await _upload(_dispatcher(store, clock, failing), ["kimi"])
        before = await store.load_breaker("kimi")
    assert before is not None
    assert (before.state, before.reason, before.consecutive_opens) == (
        OPEN,
        "consecutive_failures",
        1,
    )
    assert info.value.until == before.open_until

    clock.now += 5.0  # restarted five seconds later
    fresh = FakeClient("kimi")
    async with Store.open(path, clock=clock) as store:
        dispatcher = _dispatcher(store, clock, fresh)
        assert (await dispatcher.breaker_states())["kimi"] == before
        with pytest.raises(Parked) as again:
            await _upload(dispatcher, ["kimi"])
    assert again.value.until == before.open_until
    assert fresh.calls == []


@pytest.mark.anyio
async def test_restart_resumes_half_open_with_its_lease(tmp_path: Path) -> None:
    """A HALF_OPEN breaker with a live probe lease survives a restart; nobody else probes."""
    path = tmp_path / "state.sqlite3"
    clock = FakeClock(now=T0)
    opened = BreakerRecord(
        state=OPEN, open_until=T0, consecutive_opens=3, reason="probe_failed", updated_at=T0 - 60
    )
    async with Store.open(path, clock=clock) as store:
        await store.save_breaker("kimi", opened)
        assert await store.claim_probe("kimi", now=T0, lease_until=T0 + 600)
        before = await store.load_breaker("kimi")
    assert before is not None
    assert (before.state, before.probe_until) == (HALF_OPEN, T0 + 600)

    clock.now += 10.0
    fresh = FakeClient("kimi")
    async with Store.open(path, clock=clock) as store:
        dispatcher = _dispatcher(store, clock, fresh)
        assert (await dispatcher.breaker_states())["kimi"] == before
        with pytest.raises(Parked) as info:
            await _upload(dispatcher, ["kimi"])
        assert info.value.until == clock.now + 5.0  # looks again soon; the probe may answer
        assert fresh.calls == []
        # Once the lease has lapsed (the prober died), the next worker may probe, and closes it.
        clock.now = T0 + 601
        assert (await _upload(dispatcher, ["kimi"])).remote.provider == "kimi"
        after = await store.load_breaker("kimi")
    assert after == BreakerRecord(state=CLOSED, consecutive_opens=3, updated_at=T0 + 601)


@pytest.mark.anyio
async def test_clock_jump_is_clamped_on_load_and_written_back(tmp_path: Path) -> None:
    """An open_until a day ahead (the clock jumped back) is clamped on load and persisted."""
    path = tmp_path / "state.sqlite3"
    clock = FakeClock(now=T0)
    async with Store.open(path, clock=clock) as store:
        await store.save_breaker("kimi", BreakerRecord(state=OPEN, open_until=T0 + 86_400))
        states = await _dispatcher(store, clock, FakeClient("kimi")).breaker_states()
        stored = await store.load_breaker("kimi")
    assert states["kimi"].open_until == T0 + 4320.0
    assert stored == states["kimi"]


@pytest.mark.anyio
async def test_two_stores_never_both_claim_the_probe(store_factory: StoreFactory) -> None:
    """Two stores racing claim_probe on one store (file or database) get exactly one True,
    round after round."""
    clock = FakeClock(now=T0)
    async with store_factory(clock=clock) as one, store_factory(clock=clock) as two:
        for round_ in range(20):
            now = T0 + round_ * 1000
            await one.save_breaker("kimi", BreakerRecord(state=OPEN, open_until=now))
            wins: list[bool] = []

            async def race(store: Store, now: float = now, wins: list[bool] = wins) -> None:
                wins.append(await store.claim_probe("kimi", now=now, lease_until=now + 600))

            async with anyio.create_task_group() as tg:
                for store in (one, two, one, two):
                    tg.start_soon(race, store)
            assert sorted(wins) == [False, False, False, True]


@pytest.mark.anyio
async def test_two_dispatchers_on_one_store_probe_once(store_factory: StoreFactory) -> None:
    """Two Dispatchers (two Stores on one file or database) on a due breaker: one probes kimi,
    one uses glm."""
    clock = FakeClock(now=T0)
    gate = anyio.Event()
    kimi_a, kimi_b = FakeClient("kimi", gate=gate), FakeClient("kimi", gate=gate)
    results: list[str] = []
    one_done = anyio.Event()
    async with store_factory(clock=clock) as one, store_factory(clock=clock) as two:
        await one.save_breaker("kimi", BreakerRecord(state=OPEN, open_until=T0))
        first, second = _dispatcher(one, clock, kimi_a), _dispatcher(two, clock, kimi_b)

        async def run(dispatcher: Dispatcher) -> None:
            results.append((await _upload(dispatcher, ["kimi", "glm"])).remote.provider)
            one_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, first)
            tg.start_soon(run, second)
            # Exactly one side reaches kimi; the other finishes on glm while the probe waits.
            with anyio.fail_after(10):
                await one_done.wait()
            assert results == ["glm"]
            gate.set()
        final = await one.load_breaker("kimi")
    assert sorted(results) == ["glm", "kimi"]
    assert len(kimi_a.calls) + len(kimi_b.calls) == 1
    assert final is not None
    assert final.state == CLOSED

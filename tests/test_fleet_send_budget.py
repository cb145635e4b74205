"""One account, one rate budget: each host's ``LimitedClient`` asks the shared store for a send
slot (``Store.reserve_send``) before each upload while an rpm is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.state.store import Store
from providers.errors import Throttled
from providers.limited import LimitedClient
from providers.pacing import PacingConfig
from tests.fakes import FakeClock, FakeProvider
from tests.fakes import send_one as _send


class Asked:
    """A send-slot answerer from a script of waits; records each question."""

    def __init__(self, waits: list[float]) -> None:
        self.waits = waits
        self.questions: list[tuple[str, float, float, float]] = []

    async def __call__(self, provider: str, *, rpm: float, window: float, now: float) -> float:
        self.questions.append((provider, rpm, window, now))
        return self.waits.pop(0)


def _client(
    fake: FakeProvider, clock: FakeClock, slots: Asked | None, rpm: float | None
) -> LimitedClient:
    config = PacingConfig(concurrency=4, rpm=rpm, margin=0.5)
    return LimitedClient(
        fake,
        4,
        config=config,
        clock=clock,
        sleep=clock.sleep,
        send_slots=slots,
        wall_clock=lambda: 1000.0 + clock.now,
    )


@pytest.mark.anyio
async def test_waits_the_seconds_the_shared_budget_names_then_asks_again() -> None:
    """With an rpm configured, an upload waits the answer's seconds and asks again until 0."""
    clock = FakeClock()
    fake = FakeProvider(clock)
    slots = Asked([7.0, 0.0])
    await _send(_client(fake, clock, slots, rpm=30))
    assert slots.questions == [("kimi", 30, 60.5, 1000.0), ("kimi", 30, 60.5, 1007.0)]
    assert fake.times == [7.0]


@pytest.mark.anyio
async def test_no_rpm_known_no_question() -> None:
    """While no rpm is known (none configured, none learned) the store is not asked."""
    clock = FakeClock()
    fake = FakeProvider(clock)
    slots = Asked([])
    await _send(_client(fake, clock, slots, rpm=None))
    assert slots.questions == []
    assert fake.times == [0.0]


@pytest.mark.anyio
async def test_learned_rpm_is_asked_for() -> None:
    """An rpm learned from a 429 naming the limit is the one the shared budget is asked for."""
    clock = FakeClock()
    fake = FakeProvider(clock, [Throttled("slow", status=429, retry_after=1.0, limit=2)])
    slots = Asked([0.0])
    client = _client(fake, clock, slots, rpm=None)
    with pytest.raises(Throttled):
        await _send(client, "a.txt")
    assert slots.questions == []
    await _send(client, "b.txt")
    assert [(p, rpm) for p, rpm, _, _ in slots.questions] == [("kimi", 2)]


@pytest.mark.anyio
async def test_two_hosts_share_one_budget_in_one_store(tmp_path: Path) -> None:
    """Two hosts (two Stores, one SQLite file), rpm 3 between them: the fourth upload, on
    either host, waits until the first send leaves the window."""
    clock = FakeClock()
    fake = FakeProvider(clock)
    path = tmp_path / "inboxd.sqlite3"
    async with (
        Store.open(path, host="a", clock=lambda: 1000.0 + clock.now) as store_a,
        Store.open(path, host="b", clock=lambda: 1000.0 + clock.now) as store_b,
    ):
        config = PacingConfig(concurrency=4, rpm=3, margin=0.5)
        hosts = [
            LimitedClient(
                fake,
                4,
                config=config,
                clock=clock,
                sleep=clock.sleep,
                send_slots=store.reserve_send,
                wall_clock=lambda: 1000.0 + clock.now,
            )
            for store in (store_a, store_b)
        ]
        for index, host in enumerate([0, 1, 0, 1]):
            await _send(hosts[host], f"f{index}.txt")
    assert fake.times == [0.0, 0.0, 0.0, 60.5]

"""``LimitedClient``: the limiter's async shell, shared by every worker of a provider.

A hand-written fake provider and an injected clock and sleep (the sleep advances the clock),
then the real Kimi client against the emulator's real limits.
"""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import pytest

from providers.classify import classify
from providers.emulator.server import Emulator
from providers.errors import Retryable, Throttled
from providers.factory import build_client
from providers.limited import LimitedClient
from providers.pacing import PacingConfig
from tests.fakes import FakeClock, FakeProvider
from tests.fakes import send_one as _send


class Events:
    """Records what the limiter reports."""

    def __init__(self) -> None:
        self.limits: list[tuple[str, float | None, int]] = []
        self.throttles: list[str] = []

    def pacing_limits(self, provider: str, rpm: float | None, concurrency: int) -> None:
        self.limits.append((provider, rpm, concurrency))

    def throttled(self, provider: str) -> None:
        self.throttles.append(provider)


def _limited(
    fake: FakeProvider, clock: FakeClock, concurrency: int = 4, rpm: float | None = None
) -> tuple[LimitedClient, Events]:
    events = Events()
    config = PacingConfig(concurrency=concurrency, rpm=rpm, margin=0.5)
    client = LimitedClient(
        fake, concurrency, config=config, events=events, clock=clock, sleep=clock.sleep
    )
    return client, events


def _throttle(
    retry_after: float | None, scope: str = "rate", limit: int | None = None
) -> Throttled:
    return Throttled("slow down", status=429, retry_after=retry_after, scope=scope, limit=limit)


@pytest.mark.anyio
async def test_throttle_pauses_the_next_call_of_any_file() -> None:
    """After a Throttled naming 5 s (re-raised to the dispatcher), the next upload, of another
    file, reaches the provider only 5 s later."""
    clock = FakeClock()
    fake = FakeProvider(clock, [_throttle(5.0)])
    client, _ = _limited(fake, clock)
    with pytest.raises(Throttled):
        await _send(client, "a.txt")
    await _send(client, "b.txt")
    assert fake.times == [0.0, 5.0]
    assert clock.slept == [5.0]


@pytest.mark.anyio
async def test_named_rpm_waits_for_the_window_not_one_second() -> None:
    """Kimi's "max RPM: 2 ... after 1 seconds": the next call goes when the first send leaves
    the 60 s window (60.5 s with the margin), not after 1 s."""
    clock = FakeClock()
    fake = FakeProvider(clock, [None, None, _throttle(1.0, limit=2)])
    client, events = _limited(fake, clock)
    await _send(client)
    await _send(client)
    with pytest.raises(Throttled):
        await _send(client)
    await _send(client)
    assert fake.times == [0.0, 0.0, 0.0, 60.5]
    assert events.limits == [("kimi", None, 4), ("kimi", 2.0, 4)]
    assert events.throttles == ["kimi"]


@pytest.mark.anyio
async def test_one_concurrency_limit_shared_by_all_workers() -> None:
    """Ten workers through one client with concurrency 3: exactly 3 reach the provider at
    once, and all ten finish."""
    clock = FakeClock()
    fake = FakeProvider(clock)
    fake.hold = anyio.Event()
    client, _ = _limited(fake, clock, concurrency=3)
    done: list[str] = []

    async def worker(i: int) -> None:
        await _send(client, f"{i}.txt")
        done.append(f"{i}.txt")

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(worker, i)
        await anyio.wait_all_tasks_blocked()
        assert fake.in_flight == 3
        fake.hold.set()
    assert (fake.most, len(done), client.pacer.in_flight) == (3, 10, 0)


@pytest.mark.anyio
async def test_cancelled_waiter_takes_no_slot() -> None:
    """A call cancelled while it waits for a slot leaves none taken: later calls still pass."""
    clock = FakeClock()
    fake = FakeProvider(clock)
    fake.hold = anyio.Event()
    client, _ = _limited(fake, clock, concurrency=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_send, client)
        async with anyio.create_task_group() as waiting:
            waiting.start_soon(_send, client)
            await anyio.wait_all_tasks_blocked()
            waiting.cancel_scope.cancel()
        fake.hold.set()
    await _send(client)
    assert (len(fake.times), client.pacer.in_flight) == (2, 0)


@pytest.mark.anyio
async def test_concurrency_throttle_lowers_the_shared_limit() -> None:
    """A concurrency Throttled with 2 others in flight lowers the limit to 2 for everyone."""
    clock = FakeClock()
    fake = FakeProvider(clock, [None, None, _throttle(0.0, scope="concurrency")])
    fake.hold = anyio.Event()
    client, events = _limited(fake, clock, concurrency=4)
    caught: list[BaseException] = []

    async def send(name: str) -> None:
        try:
            await _send(client, name)
        except Throttled as exc:
            caught.append(exc)

    async with anyio.create_task_group() as tg:
        for name in ("a", "b", "c"):
            tg.start_soon(send, name)
        await anyio.wait_all_tasks_blocked()
        fake.hold.set()
    assert len(caught) == 1
    assert client.pacer.concurrency == 2
    assert events.limits[-1] == ("kimi", None, 2)


@pytest.mark.anyio
async def test_other_failures_change_no_limit() -> None:
    """A 503 is re-raised and neither pauses the provider nor changes a limit."""
    clock = FakeClock()
    fake = FakeProvider(clock, [Retryable("busy", status=503)])
    client, events = _limited(fake, clock, concurrency=4, rpm=10)
    with pytest.raises(Retryable):
        await _send(client)
    await _send(client)
    assert fake.times == [0.0, 0.0]
    assert events.limits == [("kimi", 10, 4)]
    assert events.throttles == []


@pytest.mark.anyio
async def test_kimis_real_concurrency_answer_sets_the_limit_and_pause() -> None:
    """Kimi's real 429 body, as the classifier reads it, sets the concurrency limit it names
    and pauses the provider for the wait in its text."""
    clock = FakeClock()
    text = (
        "Your account org-x<ak-y> request reached organization max concurrency: 2, "
        "please try again after 3 seconds"
    )
    body = {"error": {"message": text, "type": "rate_limit_reached_error"}}
    throttle = classify("kimi", 429, body, {}, now=0.0)
    assert isinstance(throttle, Throttled)
    fake = FakeProvider(clock, [throttle])
    client, events = _limited(fake, clock, concurrency=4)
    with pytest.raises(Retryable):
        await _send(client)
    await _send(client)
    assert (client.pacer.concurrency, client.pacer.concurrency_ceiling) == (2, 2)
    assert fake.times == [0.0, 3.0]
    assert events.throttles == ["kimi"]


@pytest.mark.anyio
async def test_real_kimi_client_learns_the_emulators_limits(tmp_path: Path) -> None:
    """Against ``kimi:rpm=5,concurrency=2`` (emulator and limiter on one fake clock), twelve
    workers calling again after each rate-limit answer store each of 20 files exactly once,
    and the limiter takes the ceilings the 429s name."""
    clock = FakeClock()
    async with Emulator(faults="kimi:rpm=5,concurrency=2", clock=clock) as emu:
        inner = build_client(
            "kimi",
            base_url=emu.base_url("kimi"),
            api_key=emu.key("kimi"),
            transports=["openai"],
            timeout=30.0,
            connect_timeout=5.0,
        )
        client = LimitedClient(inner, 4, clock=clock, sleep=clock.sleep)
        names = [f"{i:02d}.txt" for i in range(20)]
        queue = list(names)
        statuses: list[int | None] = []

        async def worker() -> None:
            while queue:
                name = queue.pop()
                while True:
                    try:
                        await client.upload(
                            filename=name,
                            fileobj=io.BytesIO(name.encode()),
                            size=len(name),
                            purpose="file-extract",
                            content_type="text/plain",
                        )
                        break
                    except Retryable as exc:
                        statuses.append(exc.status)

        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(worker)
        await client.aclose()
        stored = sorted(f.filename for f in emu.files())
        counts = emu.counts()["kimi"]
    assert stored == names
    assert counts["upload.200"] == 20
    assert set(statuses) == {429}
    assert counts["upload.429"] == len(statuses)
    assert (client.pacer.rpm_ceiling, client.pacer.concurrency_ceiling) == (5, 2)

"""A file failing transiently waits, pass after pass, with a backoff the ledger row drives.

The real pipeline, Store and emulator; the dispatcher with a fixed clock, rand = 1 (the waits
are each pass's ceiling, exactly) and a breaker that never opens (its park would come first).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from daemon.config.settings import InboxSettings, Settings
from daemon.runtime.wiring import build_clients, build_plans
from daemon.state.store import Store
from handlers.budget import ByteBudget
from handlers.ledger import PENDING
from handlers.pipeline import Pipeline
from providers.breaker import BreakerConfig
from providers.dispatch import Dispatcher, NullEvents
from providers.emulator.server import Emulator
from providers.retry import RetryPolicy
from tests.fakes import PipelineEvents

pytestmark = pytest.mark.anyio

T = 2_000_000_000.0


async def test_each_pass_waits_twice_as_long_and_the_file_stays(tmp_path: Path) -> None:
    """Persistent 503s: after the first pass (3 sends) the file waits 30 s, after the second
    (6 sends) 60 s, after the third 120 s — pending, in its inbox, never quarantined."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with Emulator(faults="kimi:503") as emu, Store.open(tmp_path / "s.sqlite3") as store:
        kimi = Settings().providers.kimi.model_copy(
            update={"base_url": emu.base_url("kimi"), "api_key": emu.key("kimi")}
        )
        settings = Settings(
            state_dir=tmp_path,
            inbox=[InboxSettings(name="in", path=inbox, providers=["kimi"])],
            providers={"kimi": kimi},
        )
        clients = build_clients(settings)
        limits = {"kimi": kimi.effective_limits("kimi")}

        async def no_sleep(delay: float) -> None:
            await anyio.lowlevel.checkpoint()

        dispatcher = Dispatcher(
            clients,
            limits,
            store,
            {"kimi": RetryPolicy(budget_floor=100.0)},
            {"kimi": BreakerConfig(consecutive_failures=10_000, min_calls=10_000)},
            NullEvents(),
            clock=lambda: T,
            sleep=no_sleep,
            rand=lambda: 1.0,
        )
        pipeline = Pipeline(
            ledger=store,
            uploader=dispatcher,
            clients=clients,
            limits=limits,
            budget=ByteBudget(1 << 20),
            events=PipelineEvents(forbid_quarantine=True),
        )
        plan = build_plans(settings)["in"]
        path = inbox / "a.txt"
        path.write_bytes(b"waits")
        try:
            waits = []
            for _ in range(3):
                result = await pipeline.process(plan, path, "a.txt")
                assert result.outcome == "parked"
                [row] = await store.rows_in_state(PENDING)
                assert row.not_before == result.park_until
                waits.append((row.attempts, (row.not_before or 0.0) - T))
                await store.transition(row.id, PENDING, not_before=None)  # its time has come
            assert waits == [(3, 30.0), (6, 60.0), (9, 120.0)]
            assert path.read_bytes() == b"waits"
            assert emu.counts()["kimi"] == {"upload.503": 9}
        finally:
            for client in clients.values():
                await client.aclose()

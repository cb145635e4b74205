"""``Workers``: the park loop's deadlines are read on the injected wall clock."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from daemon.config.settings import InboxSettings, Settings
from daemon.ops.metrics import Metrics
from daemon.runtime.daemon import OUTCOMES
from daemon.runtime.wiring import Components, build
from daemon.runtime.workers import Workers
from daemon.state.store import Store
from providers.errors import REASONS


def _settings(tmp_path: Path) -> Settings:
    inbox = tmp_path / "in"
    inbox.mkdir()
    settings = Settings(
        state_dir=tmp_path / "state",
        rescan_interval=3600.0,
        metrics={"enabled": False},
        inbox=[InboxSettings(name="in", path=inbox, providers=["kimi"])],
    )
    # Never called: no file is dropped, so no upload and no listing.
    kimi = settings.providers.kimi.model_copy(
        update={"api_key": SecretStr("k"), "base_url": "http://127.0.0.1:9/v1"}
    )
    return settings.model_copy(
        update={"providers": settings.providers.model_copy(update={"kimi": kimi})}
    )


@pytest.mark.anyio
async def test_the_park_loop_reads_deadlines_on_the_injected_clock(tmp_path: Path) -> None:
    """A file parked until 2065 is due when the injected clock says 2096: the park loop
    rescans the inboxes at once (on the machine's clock it would wait for decades)."""
    settings = _settings(tmp_path)
    (tmp_path / "state").mkdir()
    metrics = Metrics(
        CollectorRegistry(),
        version="test",
        inboxes=["in"],
        providers=["kimi"],
        transports={"kimi": settings.providers.kimi.transports},
        reasons=REASONS,
        outcomes=OUTCOMES,
    )
    async with Store.open(settings.state_file) as store:
        components = build(settings, store=store, metrics=metrics)

        def current() -> Components:
            return components

        workers = Workers(current, settle_seconds=0.05, clock=lambda: 4e9)
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(30):
                await tg.start(workers.run)
            watcher = workers.watcher
            assert watcher is not None
            with anyio.fail_after(30):
                await watcher.rescan_now()  # the first full scan is over
            scans = watcher.scans_completed
            workers.wake_at(3e9)
            with anyio.fail_after(30):
                while watcher.scans_completed == scans:  # progress: the park loop's rescan
                    await anyio.lowlevel.checkpoint()
            parked, rescans = workers.state.park_until, watcher.scans_completed - scans
            await workers.stop(0.0)
        for client in components.clients.values():
            await client.aclose()
    assert (parked, rescans) == (None, 1)

"""A shared database that does not answer at start: the daemon waits for it (one log line per
attempt, backoff doubling), serving /healthz 200 and /readyz 503 with the reason, and goes on
once the store opens; it never exits for it. While running, /readyz follows the database."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from daemon.ops.notify import Notifier
from daemon.runtime.daemon import Daemon
from daemon.runtime.main import with_emulator
from daemon.runtime.starting import StateHealth, next_delay
from daemon.state.store import Store
from providers.emulator.server import Emulator
from tests.harness import Outcomes, _settings, drop, started
from tests.pg_cluster import Cluster


def _closed_port() -> int:
    """A loopback port nothing listens on (bound once, then closed: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatedSleep:
    """Records each wait; the first one holds until ``go`` is set (the test looks meanwhile)."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.waiting = anyio.Event()
        self.go = anyio.Event()

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.waiting.set()
        await self.go.wait()


def test_backoff_doubles_to_the_cap() -> None:
    """1 s doubling: 1, 2, 4, 8, 16, 30, 30 (capped at 30 s)."""
    delays = [1.0]
    for _ in range(6):
        delays.append(next_delay(delays[-1], 30.0))
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


@asynccontextmanager
async def _daemon(
    tmp_path: Path, emu: Emulator, url: str, failures: int, sleep: GatedSleep
) -> AsyncIterator[tuple[Daemon, list[str], Outcomes]]:
    settings = _settings(
        tmp_path,
        [{"name": "in"}],
        {},
        {"metrics": {"listen": "127.0.0.1:0"}, "state_url": url, "host_id": "host-a"},
    )
    settings = with_emulator(
        settings,
        {p: emu.base_url(p) for p in ("kimi", "glm")},
        {p: emu.key(p) for p in ("kimi", "glm")},
    )
    opened: list[str] = []

    def opener(health: StateHealth) -> AbstractAsyncContextManager[Store]:
        # The first ``failures`` tries reach the refusing address; then the SQLite file.
        target: Path | str = url if len(opened) < failures else settings.state_file
        opened.append(str(target))
        return Store.open(
            target, host="host-a", on_error=health.failed, on_ok=health.answered, connect_timeout=2
        )

    outcomes = Outcomes()
    daemon = Daemon(
        settings, notifier=Notifier(None), observer=outcomes, open_store=opener, sleep=sleep
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        yield daemon, opened, outcomes
        daemon.stop()


@pytest.mark.anyio
async def test_waits_for_the_database_then_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two refused tries: /healthz 200 and /readyz 503 "state: database unreachable: ..."
    meanwhile, one error line each, waits of 1 s then 2 s, two state errors counted; the third
    try opens the store, /readyz turns 200 and a file dropped then is uploaded."""
    caplog.set_level(logging.ERROR, logger="daemon.runtime.starting")
    port = _closed_port()
    url = f"postgresql://inboxd@127.0.0.1:{port}/inboxd"
    sleep = GatedSleep()
    async with Emulator() as emu, _daemon(tmp_path, emu, url, 2, sleep) as run:
        daemon, opened, outcomes = run
        with anyio.fail_after(30):
            await sleep.waiting.wait()
        assert daemon.http_port is not None
        base = f"http://127.0.0.1:{daemon.http_port}"
        async with httpx.AsyncClient() as http:
            healthz = await http.get(f"{base}/healthz")
            readyz = await http.get(f"{base}/readyz")
        assert healthz.status_code == 200
        assert readyz.status_code == 503
        reason, *others = readyz.json()["reasons"]
        assert others == ["watchers not running"]
        assert reason.startswith(
            f"state: database unreachable: state_url: PostgreSQL at 127.0.0.1:{port}/inboxd "
            "does not answer ("
        )
        assert not daemon.ready.is_set()
        sleep.go.set()
        with anyio.fail_after(30):
            await daemon.ready.wait()
        assert opened == [url, url, str(tmp_path / "state" / "inboxd.sqlite3")]
        assert sleep.slept == [1.0, 2.0]
        base = f"http://127.0.0.1:{daemon.http_port}"
        async with httpx.AsyncClient() as http:
            readyz = await http.get(f"{base}/readyz")
            metrics = await http.get(f"{base}/metrics")
        assert (readyz.status_code, readyz.json()) == (200, {"ready": True, "reasons": []})
        assert "inboxd_state_errors_total 2.0" in metrics.text.splitlines()
        drop(tmp_path / "in", "a.txt", b"hello")
        assert (await outcomes.wait("in", "a.txt")).outcome == "uploaded"
    lines = [r.getMessage() for r in caplog.records if r.name == "daemon.runtime.starting"]
    assert [line.rsplit("(attempt ", 1)[1] for line in lines] == [
        "1; next in 1 s)",
        "2; next in 2 s)",
    ]


@pytest.mark.anyio
async def test_stopped_while_waiting_returns(tmp_path: Path) -> None:
    """A stop (SIGTERM) while the database does not answer ends run() quietly, no error."""
    url = f"postgresql://inboxd@127.0.0.1:{_closed_port()}/inboxd"
    sleep = GatedSleep()
    async with Emulator() as emu, _daemon(tmp_path, emu, url, 99, sleep) as run:
        daemon, opened, _ = run
        with anyio.fail_after(30):
            await sleep.waiting.wait()
        daemon.stop()
    assert opened == [url]
    assert not daemon.ready.is_set()


@pytest.mark.anyio
async def test_readyz_follows_the_database_while_running(
    tmp_path: Path, pg_url: str, pg_cluster: Cluster
) -> None:
    """A running daemon on PostgreSQL whose server stops: a store call waits, /readyz turns 503
    with "state: database unreachable: ..." and inboxd_state_errors_total counts; once the
    server is back the call returns and /readyz is 200 again."""
    failed, answered = anyio.Event(), anyio.Event()

    def opener(health: StateHealth) -> AbstractAsyncContextManager[Store]:
        def on_error(exc: BaseException) -> None:
            health.failed(exc)
            failed.set()

        def on_ok() -> None:
            health.answered()
            answered.set()

        return Store.open(
            pg_url,
            host="host-a",
            on_error=on_error,
            on_ok=on_ok,
            retry_initial=0.01,
            retry_max=0.2,
            connect_timeout=1.0,
        )

    async with Emulator() as emu:
        settings = _settings(
            tmp_path,
            [{"name": "in"}],
            {},
            {"metrics": {"listen": "127.0.0.1:0"}, "state_url": pg_url, "host_id": "host-a"},
        )
        settings = with_emulator(
            settings,
            {p: emu.base_url(p) for p in ("kimi", "glm")},
            {p: emu.key(p) for p in ("kimi", "glm")},
        )
        daemon = Daemon(settings, notifier=Notifier(None), open_store=opener)
        async with started(daemon), httpx.AsyncClient() as http:
            base = f"http://127.0.0.1:{daemon.http_port}"
            assert (await http.get(f"{base}/readyz")).status_code == 200
            await anyio.to_thread.run_sync(pg_cluster.stop)
            try:
                done = anyio.Event()

                async def count() -> None:
                    await daemon.current().store.counts_by_state()
                    done.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(count)
                    with anyio.fail_after(60):
                        await failed.wait()
                    readyz = await http.get(f"{base}/readyz")
                    assert readyz.status_code == 503
                    assert any(
                        r.startswith("state: database unreachable: ")
                        for r in readyz.json()["reasons"]
                    )
                    metrics = (await http.get(f"{base}/metrics")).text
                    errors = [
                        line
                        for line in metrics.splitlines()
                        if line.startswith("inboxd_state_errors_total ")
                    ]
                    assert float(errors[0].split()[1]) >= 1
                    assert not done.is_set()
                    await anyio.to_thread.run_sync(pg_cluster.start)
                    with anyio.fail_after(120):
                        await done.wait()
            finally:
                if not (pg_cluster.datadir / "postmaster.pid").exists():
                    pg_cluster.start()
            assert answered.is_set()
            readyz = await http.get(f"{base}/readyz")
            assert (readyz.status_code, readyz.json()) == (200, {"ready": True, "reasons": []})

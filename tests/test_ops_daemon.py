"""The running daemon as operators see it: real scrapes and Prometheus, readiness, notify, secrets.

The daemon runs in-process against the in-process emulator (helpers: ``tests.harness``).
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry

from daemon.ops.metrics import Metrics
from daemon.ops.notify import Notifier
from daemon.runtime.daemon import OUTCOMES, Daemon
from daemon.runtime.wiring import build
from daemon.state.store import Store
from providers.emulator.server import Emulator
from providers.errors import REASONS
from tests._tools import query_until, run_prometheus
from tests.fakes import NotifySocket
from tests.harness import (
    Outcomes,
    drop,
    loader_for,
    logging_daemon,
    started,
    until_in_flight,
    write_config,
)

KEYS = {"kimi": "sk-test-kimi-S3CRETkimi0001", "glm": "glmid0001.S3CRETglmSecret0001"}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """The in-process emulator with test keys."""
    async with Emulator(keys=KEYS) as emulator:
        yield emulator


def _daemon(
    tmp_path: Path, emu: Emulator, outcomes: Outcomes, notifier: Notifier | None = None
) -> Daemon:
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"]), ("more", ["glm"])])
    loader = loader_for(config, emu)
    return Daemon(loader(), notifier=notifier or Notifier(None), observer=outcomes, loader=loader)


async def _get(port: int | None, path: str) -> httpx.Response:
    assert port is not None
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


@pytest.mark.anyio
async def test_promtool_finds_a_scrape_of_the_running_daemon_clean(
    tmp_path: Path, emu: Emulator, need_tool: Callable[[str], str]
) -> None:
    """``promtool check metrics`` reports nothing on a scrape of the daemon after an upload."""
    promtool = need_tool("promtool")
    outcomes = Outcomes()
    async with started(_daemon(tmp_path, emu, outcomes)) as daemon:
        drop(tmp_path / "docs", "a.txt", b"alpha")
        assert (await outcomes.wait("docs", "a.txt")).outcome == "uploaded"
        body = (await _get(daemon.http_port, "/metrics")).text
    result = await anyio.run_process(
        [promtool, "check", "metrics"], input=body.encode(), check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert 'inboxd_uploads_total{outcome="success",provider="kimi",transport="openai"} 1.0' in body


@pytest.mark.anyio
async def test_real_prometheus_scrapes_the_daemons_upload(
    tmp_path: Path, emu: Emulator, need_tool: Callable[[str], str]
) -> None:
    """A real Prometheus scrapes the running daemon; its query API returns our upload."""
    need_tool("prometheus")
    outcomes = Outcomes()
    async with started(_daemon(tmp_path, emu, outcomes)) as daemon:
        drop(tmp_path / "docs", "a.txt", b"alpha")
        assert (await outcomes.wait("docs", "a.txt")).outcome == "uploaded"
        target = f"127.0.0.1:{daemon.http_port}"
        promql = 'inboxd_uploads_total{provider="kimi",transport="openai",outcome="success"}'
        async with run_prometheus(tmp_path, target) as port:
            result = await query_until(port, promql)
    assert len(result) == 1
    assert result[0]["metric"] == {
        "__name__": "inboxd_uploads_total",
        "instance": target,
        "job": "inboxd",
        "provider": "kimi",
        "transport": "openai",
        "outcome": "success",
    }
    assert result[0]["value"][1] == "1"  # type: ignore[index]


@pytest.mark.anyio
async def test_readyz_answers_200_running_and_503_with_reasons_while_stopping(
    tmp_path: Path, emu: Emulator
) -> None:
    """/readyz is 200 while running and 503 ["stopping"] while an upload drains at stop."""
    outcomes = Outcomes()
    emu.set_faults("kimi", "latency=1500")
    async with started(_daemon(tmp_path, emu, outcomes)) as daemon:
        ready = await _get(daemon.http_port, "/readyz")
        drop(tmp_path / "docs", "slow.txt", b"slow")
        await until_in_flight(daemon)
        daemon.stop()
        stopping = await _get(daemon.http_port, "/readyz")
        result = await outcomes.wait("docs", "slow.txt")
    assert (ready.status_code, stopping.status_code) == (200, 503)
    assert json.loads(stopping.text) == {"ready": False, "reasons": ["stopping"]}
    assert result.outcome == "uploaded"  # the stop let the in-flight upload finish


@pytest.mark.anyio
async def test_notify_ready_after_store_watchers_http_then_status_then_stopping(
    tmp_path: Path, emu: Emulator
) -> None:
    """READY=1 comes when /readyz is already 200; STATUS= follows; STOPPING=1 at stop."""
    systemd = NotifySocket(tmp_path / "notify.sock")
    outcomes = Outcomes()
    daemon = _daemon(tmp_path, emu, outcomes, notifier=Notifier(str(systemd.path)))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            first = await systemd.next()
            readyz = await _get(daemon.http_port, "/readyz")
            status = await systemd.next()
            daemon.stop()
            stopping = await systemd.next()
    finally:
        systemd.sock.close()
    assert first == "READY=1"
    assert readyz.status_code == 200
    assert status == "STATUS=done 0, quarantined 0, uploading 0, queued 0"
    assert stopping == "STOPPING=1"


@pytest.mark.anyio
async def test_secrets_never_appear_in_logs_metrics_ledger_or_sidecars(
    tmp_path: Path, emu: Emulator
) -> None:
    """An end-to-end run at DEBUG with JSON logs leaks neither API key anywhere."""
    config = tmp_path / "config.toml"
    write_config(
        config,
        tmp_path,
        [("docs", ["kimi"]), ("more", ["glm"])],
        extra='[log]\nformat = "json"\nlevel = "debug"',
    )
    loader = loader_for(config, emu)
    outcomes = Outcomes()
    stream = io.StringIO()
    daemon = logging_daemon(loader, outcomes, stream)
    async with started(daemon):
        drop(tmp_path / "docs", "a.txt", b"alpha")
        drop(tmp_path / "more", "b.txt", b"beta")
        drop(tmp_path / "docs", "bad.exe", b"MZ")
        kinds = [
            (await outcomes.wait("docs", "a.txt")).outcome,
            (await outcomes.wait("more", "b.txt")).outcome,
            (await outcomes.wait("docs", "bad.exe")).outcome,
        ]
        assert await daemon.reload()
        scrape = (await _get(daemon.http_port, "/metrics")).text
    logs = stream.getvalue()
    with sqlite3.connect(tmp_path / "state" / "inboxd.sqlite3") as db:
        rows = repr(db.execute("SELECT * FROM ledger").fetchall())
        breakers = repr(db.execute("SELECT * FROM breakers").fetchall())
    sidecars = "".join(p.read_text() for p in (tmp_path / "docs.quarantine").glob("*.json"))
    assert kinds == ["uploaded", "uploaded", "quarantined"]
    lines = logs.splitlines()
    assert len(lines) > 10
    assert all(json.loads(line)["level"] for line in lines)  # every line is a JSON record
    assert "bad.exe" in sidecars
    secrets = [*KEYS.values(), "S3CRETkimi", "S3CRETglm"]
    haystacks = {"logs": logs, "scrape": scrape, "ledger": rows + breakers, "sidecars": sidecars}
    leaks = [(where, s) for where, text in haystacks.items() for s in secrets if s in text]
    assert leaks == []


@pytest.mark.anyio
async def test_remote_usage_is_listed_at_start(tmp_path: Path, emu: Emulator) -> None:
    """At start the daemon lists each provider in use: inboxd_remote_files/bytes are set."""
    outcomes = Outcomes()
    async with started(_daemon(tmp_path, emu, outcomes)) as daemon:
        drop(tmp_path / "docs", "a.txt", b"alpha")
        await outcomes.wait("docs", "a.txt")
        usage = await daemon.refresh_remote_usage()
        scrape = (await _get(daemon.http_port, "/metrics")).text
    assert usage == {"kimi": (1, 5), "glm": (0, 0)}
    assert 'inboxd_remote_files{provider="kimi"} 1.0' in scrape
    assert 'inboxd_remote_bytes{provider="kimi"} 5.0' in scrape


@pytest.mark.anyio
async def test_remote_usage_failure_is_a_warning_not_a_crash(
    tmp_path: Path, emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider that refuses the listing leaves a warning; the daemon keeps running."""
    outcomes = Outcomes()
    async with started(_daemon(tmp_path, emu, outcomes)) as daemon:
        emu.set_faults("glm", "401")
        usage = await daemon.refresh_remote_usage()
        healthz = await _get(daemon.http_port, "/healthz")
    assert set(usage) == {"kimi"}
    assert healthz.status_code == 200
    assert any(
        r.levelname == "WARNING" and r.getMessage().startswith("glm: cannot list remote files")
        for r in caplog.records
    )


@pytest.mark.anyio
async def test_summary_line_honours_log_summary_interval(
    tmp_path: Path, emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """With log.summary_interval = 0.05 s, summary lines come well before the 5 s STATUS tick."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])], extra="[log]\nsummary_interval = 0.05")
    loader = loader_for(config, emu)
    seen = anyio.Event()

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("summary: "):
                seen.set()

    caplog.set_level(logging.INFO)  # what `inboxd run` configures (the daemon leaves logging)
    catch = _Catch()
    logging.getLogger("daemon.runtime.status").addHandler(catch)
    try:
        async with started(Daemon(loader(), notifier=Notifier(None), loader=loader)):
            with anyio.fail_after(2):  # far below the 5 s STATUS interval
                await seen.wait()
    finally:
        logging.getLogger("daemon.runtime.status").removeHandler(catch)
    assert any(
        r.getMessage() == "summary: done 0, quarantined 0, uploading 0, queued 0"
        for r in caplog.records
    )


@pytest.mark.anyio
async def test_a_daemon_runs_on_injected_components_and_leaves_their_store_open(
    tmp_path: Path, emu: Emulator
) -> None:
    """``Daemon(settings, components=build(...))`` uploads through the given components
    (their registry is the one scraped) and, stopped, leaves the caller's store open."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])])
    settings = loader_for(config, emu)()
    (tmp_path / "state").mkdir()
    registry = CollectorRegistry()
    metrics = Metrics(
        registry,
        version="test",
        inboxes=["docs"],
        providers=["kimi"],
        transports={"kimi": settings.providers.kimi.transports},
        reasons=REASONS,
        outcomes=OUTCOMES,
    )
    outcomes = Outcomes()
    async with Store.open(settings.state_file) as store:
        components = build(settings, store=store, metrics=metrics)
        daemon = Daemon(settings, components=components, notifier=Notifier(None), observer=outcomes)
        async with started(daemon):
            drop(tmp_path / "docs", "a.txt", b"alpha")
            result = await outcomes.wait("docs", "a.txt")
        done = await store.rows_in_state("done")  # still open: the daemon did not close it
    assert result.outcome == "uploaded"
    assert [row.relpath for row in done] == ["a.txt"]
    assert daemon.registry is registry
    uploads = {"provider": "kimi", "transport": "openai", "outcome": "success"}
    assert registry.get_sample_value("inboxd_uploads_total", uploads) == 1.0

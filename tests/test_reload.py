"""SIGHUP reload: the pure plan (tables), then the running daemon in-process and as a process."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.config.reload_plan import ReloadPlan, plan_reload
from daemon.config.settings import Settings
from daemon.ops.notify import Notifier
from daemon.runtime.daemon import Daemon
from providers.emulator.server import Emulator
from providers.limited import LimitedClient
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

ROOT = Path("/srv/in")


def _settings(**changes: Any) -> Settings:
    """Settings built from plain values (no file, no environment keys needed)."""
    inboxes = changes.pop(
        "inbox",
        [
            {"name": "a", "path": ROOT / "a", "providers": ["kimi"]},
            {"name": "b", "path": ROOT / "b", "providers": ["kimi", "glm"]},
        ],
    )
    return Settings.model_validate({"inbox": inboxes, **changes})


BASE = _settings()
KIMI = {"base_url": "https://api.moonshot.ai/v1", "transports": ["openai", "http"]}


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (BASE, ReloadPlan()),
        (
            _settings(
                inbox=[
                    {"name": "a", "path": ROOT / "a", "providers": ["kimi"]},
                    {"name": "b", "path": ROOT / "b", "providers": ["kimi", "glm"]},
                    {"name": "c", "path": ROOT / "c", "providers": ["kimi"]},
                ]
            ),
            ReloadPlan(added_inboxes=("c",), restart_watcher=True),
        ),
        (
            _settings(inbox=[{"name": "a", "path": ROOT / "a", "providers": ["kimi"]}]),
            ReloadPlan(removed_inboxes=("b",), unused_providers=("glm",), restart_watcher=True),
        ),
        (
            _settings(
                inbox=[
                    {"name": "a", "path": ROOT / "a2", "providers": ["kimi"]},
                    {"name": "b", "path": ROOT / "b", "providers": ["kimi", "glm"]},
                ]
            ),
            ReloadPlan(changed_inboxes=("a",), restart_watcher=True),
        ),
        (
            _settings(providers={"kimi": {**KIMI, "timeout": 30}}),
            ReloadPlan(new_clients=("kimi",), resilience_changed=True),
        ),
        (
            _settings(providers={"kimi": {**KIMI, "concurrency": 8}}),
            ReloadPlan(new_clients=("kimi",)),
        ),
        (
            _settings(providers={"kimi": {**KIMI, "max_files": 10}}),
            ReloadPlan(limits_changed=True),
        ),
        (
            _settings(providers={"kimi": {**KIMI, "retry": {"attempts": 5}}}),
            ReloadPlan(resilience_changed=True),
        ),
        (
            _settings(providers={"kimi": {**KIMI, "breaker": {"open_base": 5}}}),
            ReloadPlan(resilience_changed=True),
        ),
        (_settings(log={"level": "debug"}), ReloadPlan(logging_changed=True)),
        (_settings(rescan_interval=5), ReloadPlan(restart_watcher=True)),
        (
            _settings(state_dir="/elsewhere", metrics={"listen": "127.0.0.1:1"}),
            ReloadPlan(restart_needed=("state_dir", "metrics")),
        ),
    ],
    ids=[
        "same",
        "inbox-added",
        "inbox-removed-and-provider-unused",
        "inbox-changed",
        "timeout",
        "concurrency",
        "quota-limit",
        "retry",
        "breaker",
        "logging",
        "rescan",
        "restart-only",
    ],
)
def test_plan_reload_table(new: Settings, expected: ReloadPlan) -> None:
    """Each kind of config change maps to exactly the reload steps it needs."""
    assert plan_reload(BASE, new) == expected


def test_adding_a_provider_builds_its_client_and_a_new_dispatcher() -> None:
    """An inbox naming a provider not used before needs a client for it."""
    old = _settings(inbox=[{"name": "a", "path": ROOT / "a", "providers": ["kimi"]}])
    plan = plan_reload(old, BASE)
    assert (plan.new_clients, plan.added_inboxes, plan.rebuild_dispatcher) == (
        ("glm",),
        ("b",),
        True,
    )


@pytest.mark.parametrize(
    ("plan", "summary"),
    [
        (ReloadPlan(), "nothing changed"),
        (
            ReloadPlan(added_inboxes=("c", "d"), removed_inboxes=("b",), limits_changed=True),
            "inboxes added: c, d; inboxes removed: b; limits changed",
        ),
        (
            ReloadPlan(new_clients=("kimi",), logging_changed=True, resilience_changed=True),
            "new clients for: kimi; retry/breaker settings changed; logging changed",
        ),
    ],
)
def test_summary_line(plan: ReloadPlan, summary: str) -> None:
    """The reload log line names what changed."""
    assert plan.summary() == summary


# -- the running daemon, in-process ----------------------------------------------------------


@pytest.fixture
async def emu() -> Any:
    """The in-process emulator."""
    async with Emulator() as emulator:
        yield emulator


def _daemon(config: Path, emu: Emulator, outcomes: Outcomes) -> Daemon:
    loader = loader_for(config, emu)
    return Daemon(loader(), notifier=Notifier(None), observer=outcomes, loader=loader)


@pytest.mark.anyio
async def test_reload_adds_an_inbox_that_then_uploads_and_drops_a_removed_one(
    tmp_path: Path, emu: Emulator
) -> None:
    """After reload a new inbox is watched and uploads; a removed inbox is no longer watched."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("old", ["kimi"]), ("gone", ["kimi"])])
    outcomes = Outcomes()
    async with started(_daemon(config, emu, outcomes)) as daemon:
        write_config(config, tmp_path, [("old", ["kimi"]), ("new", ["glm"])])
        assert await daemon.reload()
        drop(tmp_path / "new", "n.txt", b"new inbox")
        drop(tmp_path / "gone", "g.txt", b"removed inbox")
        drop(tmp_path / "old", "o.txt", b"old inbox")
        new = await outcomes.wait("new", "n.txt")
        old = await outcomes.wait("old", "o.txt")
        await daemon.workers.watcher.rescan_now()  # type: ignore[union-attr]
        plans = sorted(daemon.current().plans)
        discovered = daemon.registry.get_sample_value(
            "inboxd_files_discovered_total", {"inbox": "new"}
        )
    assert (new.outcome, new.row.provider if new.row else None) == ("uploaded", "glm")
    assert old.outcome == "uploaded"
    assert plans == ["new", "old"]
    assert discovered == 1.0
    assert (tmp_path / "gone" / "g.txt").read_bytes() == b"removed inbox"  # left alone
    assert [(i, p) for i, p, _ in outcomes.results if i == "gone"] == []
    assert (tmp_path / "new.done").is_dir()
    assert (tmp_path / "new.quarantine").is_dir()


@pytest.mark.anyio
async def test_a_broken_config_is_refused_with_one_line_per_problem_and_the_old_kept(
    tmp_path: Path, emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A new config failing validation logs each problem and the daemon runs on unchanged."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])])
    outcomes = Outcomes()
    async with started(_daemon(config, emu, outcomes)) as daemon:
        before = daemon.settings
        config.write_text(
            config.read_text()
            + f'[[inbox]]\nname = "docs"\npath = "{tmp_path / "missing"}"\nproviders = ["glm"]\n'
        )
        caplog.clear()
        refused = await daemon.reload()
        after = daemon.settings
        drop(tmp_path / "docs", "a.txt", b"still running")
        result = await outcomes.wait("docs", "a.txt")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert refused is False
    assert after is before
    assert result.outcome == "uploaded"
    assert errors == [
        "reload refused, keeping the running config: inbox[1].name: 'docs' is also the name of "
        "inbox[0]; give each inbox its own name",
        f"reload refused, keeping the running config: inbox[1].path: {tmp_path / 'missing'} does "
        f"not exist; create it (mkdir -p {tmp_path / 'missing'}) or fix the path",
    ]


@pytest.mark.anyio
async def test_unparseable_config_is_refused(
    tmp_path: Path, emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A config that is not TOML is refused with its one error line; the daemon keeps going."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])])
    async with started(_daemon(config, emu, Outcomes())) as daemon:
        config.write_text("this is = = not toml\n")
        caplog.clear()
        assert await daemon.reload() is False
        ready = daemon.readiness()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"reload refused, keeping the running config: config: {config} ")
    assert ready == []


@pytest.mark.anyio
async def test_an_upload_in_flight_survives_a_reload_that_replaces_its_client(
    tmp_path: Path, emu: Emulator
) -> None:
    """A slow upload started before a reload swapping kimi's client finishes; the old closes."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])])
    emu.set_faults("kimi", "latency=1500")
    outcomes = Outcomes()
    async with started(_daemon(config, emu, outcomes)) as daemon:
        old_client = daemon.current().clients["kimi"]
        drop(tmp_path / "docs", "slow.txt", b"slow upload")
        await until_in_flight(daemon)
        write_config(
            config,
            tmp_path,
            [("docs", ["kimi"]), ("extra", ["kimi"])],
            extra="[providers.kimi]\ntimeout = 99",
        )
        assert await daemon.reload()
        new_client = daemon.current().clients["kimi"]
        assert isinstance(old_client, LimitedClient)
        busy_during = old_client.pacer.in_flight
        result = await outcomes.wait("docs", "slow.txt")
        retired_after = len(daemon.workers.state.retired)
    assert busy_during == 1
    assert new_client is not old_client
    assert result.outcome == "uploaded"
    assert result.row is not None
    assert result.row.file_id
    assert retired_after == 0  # closed once the upload of its generation finished
    assert [f.filename for f in emu.files()] == ["slow.txt"]


@pytest.mark.anyio
async def test_reload_lifts_a_breaker_forced_open_by_a_refused_key(
    tmp_path: Path, emu: Emulator
) -> None:
    """AuthFailed forces kimi's breaker open; a reload closes it and the parked file uploads."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])])
    emu.set_faults("kimi", "401")
    outcomes = Outcomes()
    async with started(_daemon(config, emu, outcomes)) as daemon:
        drop(tmp_path / "docs", "a.txt", b"alpha")
        parked = await outcomes.wait("docs", "a.txt", final=False)
        forced = (await daemon.current().store.all_breakers())["kimi"].state
        emu.set_faults("kimi", None)  # the operator fixed the key
        assert await daemon.reload()
        after = (await daemon.current().store.all_breakers())["kimi"].state
        done = await outcomes.wait("docs", "a.txt")
    assert (parked.outcome, forced, after, done.outcome) == (
        "parked",
        "forced_open",
        "closed",
        "uploaded",
    )


# -- a real process receiving SIGHUP --------------------------------------------------------


@pytest.mark.anyio
async def test_sighup_to_a_real_process_picks_up_a_new_inbox(tmp_path: Path) -> None:
    """``inboxd run --emulator`` on SIGHUP: RELOADING=1, MONOTONIC_USEC, READY=1; new inbox used."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])])
    systemd = NotifySocket(tmp_path / "notify.sock", limit=60)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    argv = [sys.executable, "-m", "daemon", "run", "--emulator", "--config", str(config)]
    try:
        async with await anyio.open_process(argv, env=env) as process:
            try:
                await systemd.until("READY=1")
                write_config(config, tmp_path, [("docs", ["kimi"]), ("later", ["glm"])])
                process.send_signal(signal.SIGHUP)
                reloading = await systemd.until("RELOADING=1")
                ready = await systemd.until("READY=1")
                drop(tmp_path / "later", "x.txt", b"after sighup")
                with anyio.fail_after(60):
                    # ASYNC110: the file is moved by another process; no event reaches us.
                    while not (tmp_path / "later.done" / "x.txt").exists():  # noqa: ASYNC110
                        await anyio.sleep(0.05)
            finally:
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    await process.wait()
    finally:
        systemd.sock.close()
    fields = reloading[-1].split("\n")
    assert fields[0] == "RELOADING=1"
    assert fields[1].startswith("MONOTONIC_USEC=")
    assert fields[1][15:].isdigit()
    assert ready[-1] == "READY=1"
    assert process.returncode == 0
    assert (tmp_path / "later.done" / "x.txt").read_bytes() == b"after sighup"


@pytest.mark.anyio
async def test_a_folder_that_cannot_be_created_refuses_the_reload(
    tmp_path: Path, emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A new inbox whose done_dir cannot be made is refused before anything changes."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])])
    async with started(_daemon(config, emu, Outcomes())) as daemon:
        write_config(config, tmp_path, [("docs", ["kimi"]), ("new", ["kimi"])])
        config.write_text(config.read_text() + 'done_dir = "/proc/inboxd-no/done"\n')
        caplog.clear()
        refused = await daemon.reload()
        plans = sorted(daemon.current().plans)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert refused is False
    assert plans == ["docs"]
    assert len(errors) == 1
    assert errors[0].startswith(
        "reload refused, keeping the running config: cannot create /proc/inboxd-no"
    )


@pytest.mark.anyio
async def test_reload_applies_new_limits_and_logging(tmp_path: Path, emu: Emulator) -> None:
    """A lowered size limit quarantines the next file; the log format switches to JSON lines."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])])
    loader = loader_for(config, emu)
    outcomes = Outcomes()
    stream = io.StringIO()
    daemon = logging_daemon(loader, outcomes, stream)
    async with started(daemon):
        drop(tmp_path / "docs", "before.txt", b"x" * 100)
        before = await outcomes.wait("docs", "before.txt")
        write_config(
            config,
            tmp_path,
            [("docs", ["kimi"])],
            extra='[log]\nformat = "json"\n[providers.kimi.limits.file-extract]\nmax_bytes = 10',
        )
        assert await daemon.reload()
        mark = len(stream.getvalue())
        drop(tmp_path / "docs", "after.txt", b"x" * 100)
        after = await outcomes.wait("docs", "after.txt")
    assert before.outcome == "uploaded"
    assert after.outcome == "quarantined"
    assert after.row is not None
    assert after.row.reason == "too_large"
    lines = stream.getvalue()[mark:].splitlines()
    assert lines
    assert all(json.loads(line)["logger"] for line in lines)

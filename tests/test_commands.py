"""inboxd status, requeue, breaker reset and demo, on real state files, folders and emulator."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import anyio
import pytest

from daemon.cli import main
from daemon.commands import run_breaker_reset, run_requeue, run_status
from daemon.config.settings import Settings
from daemon.demo import run_demo
from daemon.ops.notify import Notifier
from daemon.runtime.daemon import Daemon
from daemon.runtime.wiring import build_clients
from daemon.state.store import Store
from handlers.quarantine import quarantine
from providers.emulator.server import Emulator
from providers.errors import ConfigError, Reason
from providers.types import BreakerRecord
from tests.harness import Outcomes, drop, loader_for, started, write_config

T = 1_764_000_000.0  # 2025-11-24T16:00:00Z


def _settings(tmp_path: Path) -> Settings:
    for name in ("docs", "mail"):
        (tmp_path / name).mkdir(exist_ok=True)
    return Settings.model_validate(
        {
            "state_dir": tmp_path / "state",
            "inbox": [
                {"name": "docs", "path": tmp_path / "docs", "providers": ["kimi"]},
                {"name": "mail", "path": tmp_path / "mail", "providers": ["glm"]},
            ],
        }
    )


async def _quarantined(
    store: Store, settings: Settings, inbox: str, name: str, *, data: bytes, reason: Reason
) -> Path:
    """A file quarantined the way the pipeline does it: sidecar, move, ledger row."""
    plan = next(i for i in settings.inbox if i.name == inbox)
    src = plan.path / name
    src.write_bytes(data)
    row = await store.begin(inbox, name, size=len(data), mtime_ns=1)
    final = quarantine(
        src,
        plan.quarantine_path,
        reason=reason,
        detail=f"{reason} detail",
        inbox=inbox,
        size=len(data),
        sha256=None,
        now=T,
    )
    await store.transition(
        row.id, "quarantined", reason=reason, detail=f"{reason} detail", final_path=str(final)
    )
    return final


@pytest.fixture
async def populated(tmp_path: Path) -> tuple[Settings, dict[str, Path]]:
    """A state file with one done, one old done, two quarantined rows and a kimi breaker open."""
    settings = _settings(tmp_path)
    now = [T - 30]
    async with Store.open(settings.state_file, clock=lambda: now[0]) as store:
        row = await store.begin("docs", "ok.txt", size=3, mtime_ns=1)
        await store.transition(row.id, "done", provider="kimi", file_id="f1")
        now[0] = T - 7200  # two hours ago: counts for the day only
        row = await store.begin("docs", "old.txt", size=3, mtime_ns=1)
        await store.transition(row.id, "done", provider="kimi", file_id="f0")
        now[0] = T - 20
        big = await _quarantined(
            store, settings, "docs", "big.pdf", data=b"B" * 10, reason="too_large"
        )
        now[0] = T - 10
        exe = await _quarantined(
            store, settings, "mail", "x.exe", data=b"MZ", reason="type_not_allowed"
        )
        await store.save_breaker(
            "kimi",
            BreakerRecord(state="open", open_until=T + 60, reason="server_error", updated_at=T),
        )
    return settings, {"big": big, "exe": exe}


@pytest.mark.anyio
async def test_status_json_has_exact_keys_and_values(
    populated: tuple[Settings, dict[str, Path]],
) -> None:
    """status --json reports counts, rates per hour/day, breakers with ISO open_until, failures."""
    settings, files = populated
    out = io.StringIO()
    assert await run_status(settings, as_json=True, remote=False, out=out, now=T) == 0
    assert json.loads(out.getvalue()) == {
        "state_file": str(settings.state_file),
        "host": settings.host_id,
        "store": f"sqlite {settings.state_file}",
        "schema_version": 5,
        "fleet": {},
        "ledger": {
            "pending": 0,
            "uploading": 0,
            "uploaded": 0,
            "done": 2,
            "quarantined": 2,
            "requeued": 0,
        },
        "success_rate": {
            "hour": {"done": 1, "quarantined": 2, "rate": 0.3333},
            "day": {"done": 2, "quarantined": 2, "rate": 0.5},
        },
        "breakers": {
            "glm": {
                "state": "closed",
                "open_until": None,
                "reason": "",
                "consecutive_failures": 0,
            },
            "kimi": {
                "state": "open",
                "open_until": "2025-11-24T16:01:00.000Z",
                "reason": "server_error",
                "consecutive_failures": 0,
            },
        },
        "failures": [
            {
                "id": 4,
                "inbox": "mail",
                "relpath": "x.exe",
                "reason": "type_not_allowed",
                "detail": "type_not_allowed detail",
                "at": "2025-11-24T15:59:50.000Z",
                "path": str(files["exe"]),
            },
            {
                "id": 3,
                "inbox": "docs",
                "relpath": "big.pdf",
                "reason": "too_large",
                "detail": "too_large detail",
                "at": "2025-11-24T15:59:40.000Z",
                "path": str(files["big"]),
            },
        ],
        "remote": None,
    }


@pytest.mark.anyio
async def test_status_text_is_exact(populated: tuple[Settings, dict[str, Path]]) -> None:
    """The human status lists the same facts one per line."""
    settings, _ = populated
    out = io.StringIO()
    await run_status(settings, as_json=False, remote=False, out=out, now=T)
    assert out.getvalue() == (
        f"state file: {settings.state_file}\n"
        f"host: {settings.host_id}\n"
        f"store: sqlite {settings.state_file} (schema v5)\n"
        "files in progress by host: none\n"
        "ledger: pending 0, uploading 0, uploaded 0, done 2, quarantined 2, requeued 0\n"
        "success rate: last hour 33.3% (1 of 3); last day 50.0% (2 of 4)\n"
        "breakers:\n"
        "  glm: closed\n"
        "  kimi: open until 2025-11-24T16:01:00.000Z (server_error)\n"
        "last failures:\n"
        "  2025-11-24T15:59:50.000Z mail/x.exe: type_not_allowed: type_not_allowed detail\n"
        "  2025-11-24T15:59:40.000Z docs/big.pdf: too_large: too_large detail\n"
        "remote usage: not listed (--remote lists it; needs API keys and network)\n"
    )


@pytest.mark.anyio
async def test_status_remote_lists_each_provider_against_its_quota(tmp_path: Path) -> None:
    """--remote lists the files each provider stores, against its documented quota."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"]), ("mail", ["glm"])])
    async with Emulator() as emu:
        settings = loader_for(config, emu)()
        clients = build_clients(settings)
        await clients["kimi"].upload(
            filename="a.txt",
            fileobj=io.BytesIO(b"x" * 2048),
            size=2048,
            purpose="file-extract",
            content_type="text/plain",
        )
        for client in clients.values():
            await client.aclose()
        async with Store.open(settings.state_file):
            pass
        out = io.StringIO()
        await run_status(settings, as_json=False, remote=True, out=out, now=T)
    assert out.getvalue().splitlines()[-3:] == [
        "remote usage:",
        "  glm: 0 files of no limit, 0 B of no limit",
        "  kimi: 1 files of 1000, 2.0 KiB of 10.0 GiB",
    ]


@pytest.mark.anyio
async def test_status_without_a_state_file_names_the_fix(tmp_path: Path) -> None:
    """No state file yet: a ConfigError naming the path (status never creates one)."""
    settings = _settings(tmp_path)
    with pytest.raises(ConfigError) as info:
        await run_status(settings, as_json=True, remote=False, out=io.StringIO(), now=T)
    assert info.value.problems == [
        f"state_dir: no state file at {settings.state_file}; start inboxd once, or pass the "
        "--config/--state-dir the daemon runs with"
    ]
    assert not settings.state_file.exists()


@pytest.mark.anyio
async def test_requeue_moves_a_file_back_byte_identical_and_marks_its_row(
    populated: tuple[Settings, dict[str, Path]],
) -> None:
    """requeue PATH: the file is back in its inbox unchanged, sidecar gone, row requeued."""
    settings, files = populated
    out = io.StringIO()
    assert await run_requeue(settings, [files["big"]], reason=None, out=out) == 0
    back = settings.inbox[0].path / "big.pdf"
    async with Store.open(settings.state_file) as store:
        row = await store.get(3)
        other = await store.get(4)
    assert back.read_bytes() == b"B" * 10
    assert not files["big"].exists()
    assert not files["big"].with_name("big.pdf.reason.json").exists()
    assert (row.state, other.state) == ("requeued", "quarantined")
    assert out.getvalue() == (
        f"requeued {files['big']} -> {back} (ledger row 3 requeued)\n1 file(s) requeued\n"
    )


@pytest.mark.anyio
async def test_requeue_without_paths_filters_by_reason(
    populated: tuple[Settings, dict[str, Path]],
) -> None:
    """requeue --reason type_not_allowed takes only those, from every inbox's quarantine."""
    settings, files = populated
    out = io.StringIO()
    await run_requeue(settings, [], reason="type_not_allowed", out=out)
    assert (settings.inbox[1].path / "x.exe").read_bytes() == b"MZ"
    assert files["big"].exists()
    assert out.getvalue().endswith("1 file(s) requeued\n")


@pytest.mark.anyio
async def test_requeue_refuses_a_path_outside_every_quarantine(
    populated: tuple[Settings, dict[str, Path]], tmp_path: Path
) -> None:
    """A path that is not in a quarantine folder is a usage error that names the folders."""
    settings, _ = populated
    stray = tmp_path / "stray.txt"
    stray.write_bytes(b"s")
    with pytest.raises(ConfigError) as info:
        await run_requeue(settings, [stray], reason=None, out=io.StringIO())
    assert info.value.problems == [
        f"{stray}: not in any inbox's quarantine folder; pass a file from one of "
        f"{tmp_path / 'docs.quarantine'}, {tmp_path / 'mail.quarantine'}"
    ]
    assert stray.exists()


@pytest.mark.anyio
async def test_breaker_reset_closes_the_breaker_in_the_state_file(
    populated: tuple[Settings, dict[str, Path]],
) -> None:
    """breaker reset kimi: the open breaker is closed on disk."""
    settings, _ = populated
    out = io.StringIO()
    assert await run_breaker_reset(settings, "kimi", out=out) == 0
    async with Store.open(settings.state_file) as store:
        record = await store.load_breaker("kimi")
    assert record is not None
    assert (record.state, record.open_until, record.reason) == ("closed", None, "reset by operator")
    assert out.getvalue() == "breaker of kimi reset to closed (was open)\n"


@pytest.mark.anyio
async def test_a_running_daemon_sees_a_breaker_reset_made_by_the_cli(tmp_path: Path) -> None:
    """kimi forced open by a refused key; ``breaker reset`` from another connection; the
    running daemon's next file uploads and the parked one goes at the next rescan."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])])
    outcomes = Outcomes()
    async with Emulator() as emu:
        loader = loader_for(config, emu)
        settings = loader()
        emu.set_faults("kimi", "401")
        daemon = Daemon(settings, notifier=Notifier(None), observer=outcomes, loader=loader)
        async with started(daemon):
            drop(tmp_path / "docs", "a.txt", b"alpha")
            parked = await outcomes.wait("docs", "a.txt", final=False)
            emu.set_faults("kimi", None)
            out = io.StringIO()
            await run_breaker_reset(settings, "kimi", out=out)
            drop(tmp_path / "docs", "b.txt", b"beta")
            fresh = await outcomes.wait("docs", "b.txt")
            assert daemon.workers.watcher is not None
            await daemon.workers.watcher.rescan_now()  # what rescan_interval does
            released = await outcomes.wait("docs", "a.txt")
    assert (parked.outcome, fresh.outcome, released.outcome) == ("parked", "uploaded", "uploaded")
    assert out.getvalue() == (
        "breaker of kimi reset to closed (was forced_open)\n"
        "1 file(s) waiting for this reset go again at the next rescan\n"
    )


DEMO_LINES = [
    r"demo workspace /\S+; provider emulator on http://127\.0\.0\.1:\d+/v1",
    r"dropped: hello\.txt, huge\.pdf, setup\.exe",
    r"hello\.txt: uploaded to kimi as file id \S+ \(28 bytes\)",
    r"huge\.pdf: quarantined, reason too_large: kimi \(file-extract\): 105906176 bytes > "
    r"104857600 bytes; glm \(agent\): 105906176 bytes > 20971520 bytes",
    r"setup\.exe: quarantined, reason type_not_allowed: kimi \(file-extract\): \.exe not in .*",
]


def test_demo_command_exits_0_and_prints_the_three_outcomes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``inboxd demo``: a valid file uploaded, an oversize sparse one and an .exe quarantined."""
    code = main(["demo"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(lines) == len(DEMO_LINES)
    for line, pattern in zip(lines, DEMO_LINES, strict=True):
        assert re.fullmatch(pattern, line), line


@pytest.mark.anyio
async def test_demo_reports_a_missing_outcome_as_an_error() -> None:
    """With no time to wait, the demo says which files had no outcome and fails."""
    out = io.StringIO()
    with pytest.raises(Exception, match="not every file had an outcome within 0 s"):
        await run_demo(out=out, wait=0)
    assert "no outcome within 0 s" in out.getvalue()


def test_help_lists_every_operator_command(capsys: pytest.CaptureFixture[str]) -> None:
    """``inboxd --help`` names status, requeue, breaker and demo."""
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    text = capsys.readouterr().out
    assert info.value.code == 0
    for command in ("status", "requeue", "breaker", "demo"):
        assert re.search(rf"^    {command} +\S", text, re.MULTILINE), command


def test_cli_status_json_through_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``inboxd status --json --config F`` prints the JSON report for that config's state."""
    config = tmp_path / "config.toml"
    write_config(config, tmp_path, [("docs", ["kimi"])])

    async def make_state() -> None:
        async with Store.open(tmp_path / "state" / "inboxd.sqlite3"):
            pass

    anyio.run(make_state)
    code = main(["status", "--json", "--config", str(config)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["ledger"]["done"] == 0
    assert report["breakers"] == {
        "kimi": {"state": "closed", "open_until": None, "reason": "", "consecutive_failures": 0}
    }

"""``inboxd remote prune/list``, ``status --remote`` with retention, and the fill-up warning."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.commands import run_status
from daemon.config.settings import RetentionSettings, Settings, load_settings
from daemon.remote.commands import NOT_OURS, run_remote_list, run_remote_prune
from handlers.archive import receipt_path
from providers.emulator.server import Emulator
from providers.errors import ConfigError
from tests.harness import read_sidecar, running

T = 1_800_000_000.0


def _with_retention(settings: Settings, **keys: object) -> Settings:
    kimi = settings.providers.kimi.model_copy(update={"retention": RetentionSettings(**keys)})
    providers = settings.providers.model_copy(update={"kimi": kimi})
    return settings.model_copy(update={"providers": providers})


def test_check_config_warns_once_per_provider_without_retention(
    inbox: Path,
    write: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without retention, check-config warns once that the Kimi account fills up, naming its
    cap and the keys; with retention set, it does not."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    body = f'[[inbox]]\nname = "a"\npath = "{inbox}"\nproviders = ["kimi"]\n'
    assert main(["check-config", "-c", str(write(body))]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if ".retention" in line]
    assert warned == [
        "warning: providers.kimi.retention: not set; the kimi account holds at most 1,000 "
        "files / 10 GB and inboxd only adds files, so it will fill up and uploads will stop; "
        "set [providers.kimi.retention] max_files, max_bytes or max_age_days"
    ]
    kept = body + "[providers.kimi.retention]\nmax_files = 900\n"
    assert main(["check-config", "-c", str(write(kept))]) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if "warning" in line] == []


def test_check_config_warns_when_max_files_is_not_below_the_cap(
    inbox: Path,
    write: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A retention max_files at the account's cap is a warning that names a lower value."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    body = (
        f'[[inbox]]\nname = "a"\npath = "{inbox}"\nproviders = ["kimi"]\n'
        "[providers.kimi.retention]\nmax_files = 1000\n"
    )
    assert main(["check-config", "-c", str(write(body))]) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if "warning" in line] == [
        "warning: providers.kimi.retention.max_files: 1000 is not below the account's cap of "
        "1,000 files; uploads hit the cap first (files wait until a pass makes room); set it "
        "lower, e.g. 900"
    ]


@asynccontextmanager
async def three_uploaded(tmp_path: Path) -> AsyncIterator[tuple[Emulator, Settings, Path]]:
    """A foreign file, then f0..f2 uploaded by inboxd one by one; the daemon stopped."""
    async with Emulator() as emu:
        async with running(tmp_path, emulator=emu) as run:
            await (
                run.daemon.current()
                .clients["kimi"]
                .upload(
                    filename="theirs.txt",
                    fileobj=io.BytesIO(b"foreign"),
                    size=7,
                    purpose="file-extract",
                    content_type="text/plain",
                )
            )
            for n in range(3):
                (run.inbox() / f"f{n}.txt").write_bytes(f"file {n}".encode())
                [seen] = await run.wait_for(1)
                assert seen.result.outcome == "uploaded"
            settings, done = run.settings, run.done()
        yield emu, settings, done


@pytest.mark.anyio
async def test_remote_prune_dry_run_then_for_real(tmp_path: Path) -> None:
    """--dry-run prints the would-be deletions and deletes none; prune then deletes exactly
    those, each printed with its reason, and the receipt says remote_deleted_at."""
    async with three_uploaded(tmp_path) as (emu, base, done):
        settings = _with_retention(base, max_files=3)
        dry = io.StringIO()
        assert await run_remote_prune(settings, "kimi", dry_run=True, out=dry) == 0
        lines = dry.getvalue().splitlines()
        assert len(lines) == 2
        assert lines[0].startswith("would delete ")
        assert "'f0.txt'" in lines[0]
        assert lines[0].endswith(
            f": max_files (inbox in: f0.txt; receipt {receipt_path(done / 'f0.txt')})"
        )
        assert (
            lines[1]
            == "kimi: 1 file(s) would be deleted; the account would hold 3 file(s), 19 bytes"
        )
        assert len(emu.files()) == 4
        real = io.StringIO()
        assert await run_remote_prune(settings, "kimi", dry_run=False, out=real) == 0
        assert real.getvalue().splitlines() == [
            lines[0].replace("would delete ", "deleted ", 1),
            "kimi: 1 file(s) deleted; the account holds 3 file(s), 19 bytes",
        ]
        assert {f.filename for f in emu.files()} == {"theirs.txt", "f1.txt", "f2.txt"}
        assert "remote_deleted_at" in read_sidecar(receipt_path(done / "f0.txt"))


@pytest.mark.anyio
async def test_remote_list_shows_the_ledgers_view_of_each_file(tmp_path: Path) -> None:
    """remote list names each file's inbox, local name and receipt, or that inboxd did not
    upload it, and sums the account."""
    async with three_uploaded(tmp_path) as (_emu, settings, done):
        out = io.StringIO()
        assert await run_remote_list(settings, "kimi", out=out) == 0
    lines = out.getvalue().splitlines()
    views = sorted(line.split(": ", 1)[1] for line in lines[:-1])
    assert views == sorted(
        [NOT_OURS]
        + [f"inbox in: f{n}.txt; receipt {receipt_path(done / f'f{n}.txt')}" for n in range(3)]
    )
    assert lines[-1] == "kimi: 4 file(s), 25 bytes; 3 uploaded by inboxd, 1 not"


@pytest.mark.anyio
async def test_status_remote_shows_the_retention_limits(tmp_path: Path) -> None:
    """status --remote shows each account's use against its caps and its retention."""
    async with three_uploaded(tmp_path) as (_emu, base, _done):
        settings = _with_retention(base, max_files=900, max_age_days=30)
        out = io.StringIO()
        await run_status(settings, as_json=False, remote=True, out=out, now=T)
    assert out.getvalue().splitlines()[-3:] == [
        "remote usage:",
        "  kimi: 4 files of 1000, 25 B of 10.0 GiB",
        "    retention: at most 900 files, any size, none older than 30 days",
    ]


def test_retention_extract_and_keep_remote_keys_parse_and_validate(
    inbox: Path, write: Callable[[str], Path]
) -> None:
    """The retention keys and the per-inbox extract/keep_remote keys load with their values;
    a negative limit is refused naming the key."""
    body = (
        f'[[inbox]]\nname = "a"\npath = "{inbox}"\nproviders = ["kimi"]\n'
        "extract = true\nkeep_remote = false\n"
        "[providers.kimi.retention]\nmax_files = 900\nmax_bytes = 9000000000\n"
        "max_age_days = 30\n"
    )
    settings = load_settings(write(body), environ={})
    assert (settings.inbox[0].extract, settings.inbox[0].keep_remote) == (True, False)
    assert settings.providers.kimi.retention == RetentionSettings(
        max_files=900, max_bytes=9_000_000_000, max_age_days=30
    )
    assert (Settings().inbox, Settings().providers.glm.retention.configured) == ([], False)
    with pytest.raises(ConfigError) as info:
        load_settings(write(body.replace("max_files = 900", "max_files = -1")), environ={})
    assert info.value.problems == [
        "providers.kimi.retention.max_files: Input should be greater than 0 (got -1); fix its value"
    ]

"""Config that cannot hurt itself: state, done and quarantine folders apart, folders writable,
metrics on loopback, and ``inboxd requeue`` never taking files out of a done folder."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.commands import run_requeue
from daemon.config.folders import folder_verdict
from daemon.config.settings import Settings
from daemon.state.store import Store
from providers.errors import ConfigError

KEYS = ("MOONSHOT_API_KEY", "ZHIPUAI_API_KEY", "ZAI_API_KEY", "CREDENTIALS_DIRECTORY")
SEPARATE = (
    "give each its own folder (the defaults <path>.done and <path>.quarantine sit beside the inbox)"
)

WriteConfig = Callable[[str], Path]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No inboxd variables from the environment; a Kimi key so only folders are judged."""
    for name in list(os.environ):
        if name.startswith("INBOXD_") or name in KEYS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")


def _inbox_toml(path: Path, name: str = "reports", extra: str = "") -> str:
    return f'[[inbox]]\nname = "{name}"\npath = "{path}"\nproviders = ["kimi"]\n{extra}'


def _check(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, list[str], list[str]]:
    """``inboxd check-config``: exit code, error lines, warning lines."""
    code = main(["check-config", "-c", str(config)])
    err = capsys.readouterr().err.splitlines()
    return (
        code,
        [line for line in err if line.startswith("config error: ")],
        # The account-fills-up warning (no retention set) has tests of its own.
        [line for line in err if line.startswith("warning: ") and ".retention" not in line],
    )


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Mount a read-only tmpfs on a folder (real EROFS, also for root); unmounted at the end."""
    mounted: list[Path] = []

    def mount(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            if os.geteuid() == 0:
                pytest.skip(
                    f"mounting is not permitted here ({done.stderr.strip()}) and chmod does "
                    "not stop root"
                )
            folder.chmod(0o555)  # not root: permissions make it read-only for us
            return
        mounted.append(folder)

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


# -- folders apart --------------------------------------------------------------------------


def test_state_dir_inside_an_inbox_is_refused(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """state_dir inside an inbox: exit 2, one line naming state_dir and the inbox."""
    state = inbox / "state"
    config = write(f'state_dir = "{state}"\n' + _inbox_toml(inbox))
    assert _check(capsys, config) == (
        2,
        [
            f"config error: state_dir: {state} is inside inbox[0].path {inbox}; the daemon "
            "would take its own state file for a file to upload: keep state_dir out of every "
            "inbox, done and quarantine folder (the default is /var/lib/inboxd)"
        ],
        [],
    )


def test_state_dir_equal_to_a_quarantine_folder_is_refused(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """state_dir equal to a quarantine folder (requeue would move the state file): refused."""
    quarantine = inbox.with_name("in.quarantine")
    config = write(f'state_dir = "{quarantine}"\n' + _inbox_toml(inbox))
    code, errors, _ = _check(capsys, config)
    assert (code, errors) == (
        2,
        [
            f"config error: state_dir: {quarantine} is the same folder as "
            f"inbox[0].quarantine_dir {quarantine}; the daemon would take its own state file "
            "for a file to upload: keep state_dir out of every inbox, done and quarantine "
            "folder (the default is /var/lib/inboxd)"
        ],
    )


def test_run_refuses_state_dir_equal_to_the_inbox(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``inboxd run`` refuses the same config as check-config (exit 2), before creating anything."""
    config = write(f'state_dir = "{inbox}"\n' + _inbox_toml(inbox))
    assert main(["run", "-c", str(config)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"config error: state_dir: {inbox} is the same folder as inbox[0].path {inbox}; the "
        "daemon would take its own state file for a file to upload: keep state_dir out of "
        "every inbox, done and quarantine folder (the default is /var/lib/inboxd)"
    ]
    assert list(inbox.iterdir()) == []
    assert not inbox.with_name("in.done").exists()


def test_done_dir_equal_to_quarantine_dir_is_refused(
    write: WriteConfig, inbox: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """done_dir == quarantine_dir: exit 2, one line naming both keys and the fix."""
    both = tmp_path / "out"
    config = write(_inbox_toml(inbox, extra=f'done_dir = "{both}"\nquarantine_dir = "{both}"\n'))
    assert _check(capsys, config) == (
        2,
        [
            f"config error: inbox[0].done_dir: {both} is the same folder as "
            f"inbox[0].quarantine_dir {both}; uploaded and quarantined files must not mix "
            f"(inboxd requeue would send uploaded files and receipts again): {SEPARATE}"
        ],
        [],
    )


def test_quarantine_dir_inside_another_inboxs_done_dir_is_refused(
    write: WriteConfig, inbox: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A quarantine folder nested in any inbox's done folder is refused, across inboxes too."""
    other = tmp_path / "other"
    other.mkdir()
    done = inbox.with_name("in.done")
    nested = done / "q"
    config = write(
        _inbox_toml(inbox)
        + _inbox_toml(other, name="other", extra=f'quarantine_dir = "{nested}"\n')
    )
    code, errors, _ = _check(capsys, config)
    assert (code, errors) == (
        2,
        [
            f"config error: inbox[0].done_dir: {done} contains inbox[1].quarantine_dir "
            f"{nested}; uploaded and quarantined files must not mix (inboxd requeue would send "
            f"uploaded files and receipts again): {SEPARATE}"
        ],
    )


def test_done_dir_inside_a_recursive_inbox_is_refused(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A done folder inside its own (recursive) inbox is refused: archived files would return."""
    done = inbox / "done"
    config = write(_inbox_toml(inbox, extra=f'recursive = true\ndone_dir = "{done}"\n'))
    code, errors, _ = _check(capsys, config)
    assert (code, errors) == (
        2,
        [
            f"config error: inbox[0].path: {inbox} is nested with inbox[0].done_dir {done}; "
            "inboxes must not overlap each other or any done/quarantine folder: " + SEPARATE
        ],
    )


def test_default_folders_beside_the_inbox_pass(
    write: WriteConfig, inbox: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The defaults (<inbox>.done, <inbox>.quarantine beside it, state elsewhere) pass cleanly."""
    config = write(f'state_dir = "{tmp_path / "state"}"\n' + _inbox_toml(inbox))
    assert _check(capsys, config) == (0, [], [])


def test_paths_are_compared_resolved(
    write: WriteConfig, inbox: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state_dir reaching the inbox through a symlink is caught (paths compared resolved)."""
    link = tmp_path / "link"
    link.symlink_to(inbox)
    config = write(f'state_dir = "{link}/state"\n' + _inbox_toml(inbox))
    code, errors, _ = _check(capsys, config)
    assert code == 2
    assert errors == [
        f"config error: state_dir: {link}/state is inside inbox[0].path {inbox}; the daemon "
        "would take its own state file for a file to upload: keep state_dir out of every "
        "inbox, done and quarantine folder (the default is /var/lib/inboxd)"
    ]


# -- writable folders -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exists", "writable", "read_only_fs", "expected"),
    [
        (True, True, False, None),
        (True, False, False, "not writable by the daemon's user (uid 7)"),
        (True, True, True, "on a read-only filesystem"),
        (True, False, True, "on a read-only filesystem"),
        (False, True, False, None),
    ],
)
def test_folder_verdict_table(
    exists: bool, writable: bool, read_only_fs: bool, expected: str | None
) -> None:
    """The pure verdict: a read-only filesystem wins over permissions; writable is fine."""
    assert (
        folder_verdict(exists=exists, writable=writable, read_only_fs=read_only_fs, uid=7)
        == expected
    )


def test_done_dir_on_a_read_only_filesystem_is_refused(
    write: WriteConfig,
    inbox: Path,
    tmp_path: Path,
    read_only_mount: Callable[[Path], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An existing done_dir on a read-only mount is refused (os.access alone misses it for root)."""
    done = tmp_path / "done"
    read_only_mount(done)
    config = write(_inbox_toml(inbox, extra=f'done_dir = "{done}"\n'))
    code, errors, _ = _check(capsys, config)
    why = "on a read-only filesystem" if os.geteuid() == 0 else "not writable"
    assert code == 2
    assert len(errors) == 1
    assert errors[0].startswith(f"config error: inbox[0].done_dir: {done} is {why}")
    assert errors[0].endswith(
        "; make it writable by the daemon's user, or point done_dir elsewhere"
    )


def test_quarantine_dir_under_a_read_only_folder_is_refused(
    write: WriteConfig,
    inbox: Path,
    tmp_path: Path,
    read_only_mount: Callable[[Path], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A quarantine_dir that does not exist and cannot be created (read-only parent) is refused."""
    parent = tmp_path / "ro"
    read_only_mount(parent)
    quarantine = parent / "q"
    config = write(_inbox_toml(inbox, extra=f'quarantine_dir = "{quarantine}"\n'))
    code, errors, _ = _check(capsys, config)
    assert code == 2
    assert len(errors) == 1
    assert errors[0].startswith(
        f"config error: inbox[0].quarantine_dir: {quarantine} does not exist and cannot be "
        f"created: {parent} is "
    )


def test_read_only_inbox_is_a_warning_when_archiving(
    write: WriteConfig,
    tmp_path: Path,
    read_only_mount: Callable[[Path], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An inbox the daemon may only read is accepted with a warning naming the consequence."""
    inbox = tmp_path / "in"
    read_only_mount(inbox)
    config = write(_inbox_toml(inbox))
    code, errors, all_warnings = _check(capsys, config)
    warnings = [w for w in all_warnings if w.startswith("warning: inbox[0].path:")]
    assert (code, errors) == (0, [])
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: inbox[0].path: {inbox} is ")
    assert warnings[0].endswith(
        "; its files can be uploaded but not moved out of it (archived or deleted): make it "
        "writable by the daemon's user"
    )


def test_read_only_inbox_with_on_success_delete_is_refused(
    write: WriteConfig,
    tmp_path: Path,
    read_only_mount: Callable[[Path], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """on_success = "delete" on an inbox the daemon may only read is refused."""
    inbox = tmp_path / "in"
    read_only_mount(inbox)
    config = write(_inbox_toml(inbox, extra='on_success = "delete"\n'))
    code, errors, _ = _check(capsys, config)
    assert code == 2
    assert len(errors) == 1
    assert errors[0].startswith(f'config error: inbox[0].on_success: "delete" but {inbox} is ')
    assert errors[0].endswith(
        "; the daemon could not delete its files: make it writable by the daemon's user, or "
        'use on_success = "archive"'
    )


# -- metrics --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "warned"),
    [
        ("127.0.0.1:9464", False),
        ("[::1]:9464", False),
        ("localhost:9464", False),
        ("0.0.0.0:9464", True),
        ("[::]:9464", True),
        ("192.0.2.7:9464", True),
    ],
)
def test_metrics_on_a_non_loopback_address_is_a_warning(
    write: WriteConfig,
    inbox: Path,
    capsys: pytest.CaptureFixture[str],
    listen: str,
    warned: bool,
) -> None:
    """metrics.listen off loopback is accepted with a warning naming the address."""
    config = write(
        f'state_dir = "{inbox.parent / "state"}"\n[metrics]\nlisten = "{listen}"\n'
        + _inbox_toml(inbox)
    )
    expected = (
        [
            f"warning: metrics.listen: {listen} is not a loopback address; /metrics, /healthz "
            "and /readyz are reachable from the network there: use 127.0.0.1:PORT, or "
            "firewall the port"
        ]
        if warned
        else []
    )
    assert _check(capsys, config) == (0, [], expected)


# -- requeue --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_requeue_never_moves_files_from_a_done_folder(tmp_path: Path) -> None:
    """With done_dir == quarantine_dir, requeue refuses (naming both keys) and moves nothing."""
    inbox, both = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    both.mkdir()
    (both / "paid.pdf").write_bytes(b"%PDF-1 uploaded")
    (both / "paid.pdf.upload.json").write_text(json.dumps({"file_id": "f1"}))
    settings = Settings.model_validate(
        {
            "state_dir": tmp_path / "state",
            "inbox": [
                {
                    "name": "docs",
                    "path": inbox,
                    "providers": ["kimi"],
                    "done_dir": both,
                    "quarantine_dir": both,
                }
            ],
        }
    )
    async with Store.open(settings.state_file):
        pass
    with pytest.raises(ConfigError) as info:
        await run_requeue(settings, [], reason=None, out=io.StringIO())
    assert info.value.problems == [
        f"inbox[0].done_dir: {both} is the same folder as inbox[0].quarantine_dir {both}; "
        "uploaded and quarantined files must not mix (inboxd requeue would send uploaded "
        f"files and receipts again): {SEPARATE}"
    ]
    assert sorted(p.name for p in both.iterdir()) == ["paid.pdf", "paid.pdf.upload.json"]
    assert list(inbox.iterdir()) == []


@pytest.mark.anyio
async def test_requeue_skips_receipts_and_files_that_have_one(tmp_path: Path) -> None:
    """An uploaded file (receipt beside it) found in a quarantine folder is never requeued."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    settings = Settings.model_validate(
        {
            "state_dir": tmp_path / "state",
            "inbox": [{"name": "d", "path": inbox, "providers": ["kimi"]}],
        }
    )
    quarantine = inbox.with_name("in.quarantine")
    quarantine.mkdir()
    (quarantine / "paid.pdf").write_bytes(b"%PDF-1 uploaded")
    (quarantine / "paid.pdf.upload.json").write_text("{}")
    (quarantine / "bad.exe").write_bytes(b"MZ")
    async with Store.open(settings.state_file):
        pass
    out = io.StringIO()
    assert await run_requeue(settings, [], reason=None, out=out) == 0
    assert [p.name for p in inbox.iterdir()] == ["bad.exe"]
    assert sorted(p.name for p in quarantine.iterdir()) == ["paid.pdf", "paid.pdf.upload.json"]
    assert out.getvalue().endswith("1 file(s) requeued\n")

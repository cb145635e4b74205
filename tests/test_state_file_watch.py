"""The state file cannot vanish silently: a real ``inboxd run`` whose state file is deleted or
replaced under it logs an error naming the file and exits non-zero (systemd restarts it)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from daemon.state.watch import identity_problem

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


def _config(tmp: Path) -> Path:
    (tmp / "in").mkdir()
    path = tmp / "cfg.toml"
    path.write_text(
        f'state_dir = "{tmp / "state"}"\n'
        "[metrics]\nenabled = false\n"
        f'[[inbox]]\nname = "in"\npath = "{tmp / "in"}"\nproviders = ["kimi"]\n',
        encoding="utf-8",
    )
    return path


def _delete(state: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)


def _replace(state: Path) -> None:
    copy = state.with_name("copy.sqlite3")
    shutil.copyfile(state, copy)
    copy.replace(state)


@pytest.mark.parametrize(("fault", "says"), [(_delete, "was deleted"), (_replace, "was replaced")])
async def test_a_state_file_deleted_or_replaced_under_the_daemon_stops_it_non_zero(
    tmp_path: Path, fault: Callable[[Path], None], says: str
) -> None:
    """Deleting or replacing inboxd.sqlite3 under a running daemon makes it log an error
    naming the file and exit 1 on its own (within its 2 s check, bounded here by 60 s)."""
    cfg = _config(tmp_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(str(tmp_path / "notify"))
    env = {
        **os.environ,
        "MOONSHOT_API_KEY": "sk-test-not-used",
        "NOTIFY_SOCKET": str(tmp_path / "notify"),
    }
    log = tmp_path / "daemon.log"
    with log.open("wb") as err:
        proc = await anyio.open_process(
            [sys.executable, "-m", "daemon", "run", "-c", str(cfg)],
            env=env,
            cwd=ROOT,
            stdout=err,
            stderr=err,
        )
    try:
        with anyio.fail_after(120):
            while True:
                await anyio.wait_readable(sock)
                if b"READY=1" in sock.recv(4096).split(b"\n"):
                    break
        state = tmp_path / "state" / "inboxd.sqlite3"
        fault(state)
        with anyio.fail_after(60):
            code = await proc.wait()
    finally:
        sock.close()
        if proc.returncode is None:
            proc.kill()
            with anyio.move_on_after(10, shield=True):
                await proc.wait()
    text = log.read_text(encoding="utf-8", errors="replace")
    assert code == 1, text
    assert f"state file {state} {says}" in text
    assert "ERROR" in text.split(f"state file {state} {says}")[0].splitlines()[-1]


@pytest.mark.parametrize(
    ("now", "expected"),
    [((5, 7), None), (None, "was deleted"), ((5, 8), "was replaced"), ((6, 7), "was replaced")],
)
def test_identity_problem_compares_device_and_inode(
    now: tuple[int, int] | None, expected: str | None
) -> None:
    """The state file opened as (dev 5, ino 7) is fine only while the path still names it."""
    assert identity_problem((5, 7), now) == expected

"""The command line: version, help, and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import main, package_version


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`inboxd version` prints the installed version."""
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"inboxd {package_version()}\n"


@pytest.mark.parametrize("command", [[], ["run"], ["check-config"], ["version"]])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Every command answers --help with its usage and exits 0."""
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: inboxd")


# Far longer than any stop of an idle daemon takes, even on a slow, busy machine: a stop that
# waited for the grace period (as if a file were in flight) times out below instead.
_GRACE = 600


def _start(tmp_path: Path) -> subprocess.Popen[bytes]:
    """Start `inboxd run` as a real process and wait for its READY=1 on a real notify socket."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nshutdown_grace = {_GRACE}\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'
        f'[[inbox]]\nname = "a"\npath = "{inbox}"\nproviders = ["kimi"]\n'
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXD_")}
    env |= {"MOONSHOT_API_KEY": "sk-test", "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "-c", str(config)],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    with notify:
        try:
            while b"READY=1" not in notify.recv(4096).split(b"\n"):
                pass
        except TimeoutError:
            proc.kill()
            proc.wait()
            pytest.fail("inboxd never sent READY=1")
    return proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_cleanly_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    """`inboxd run` exits 0 on SIGTERM or SIGINT without waiting for the shutdown grace (no
    file is in flight)."""
    proc = _start(tmp_path)
    try:
        proc.send_signal(signum)
        proc.wait(timeout=90)  # well inside pytest-timeout, far short of the grace
    finally:
        if proc.poll() is None:  # never leave a daemon behind, whatever failed
            proc.kill()
            proc.wait()
    assert proc.returncode == 0

"""Config keys of a fleet: ``state_url`` (PostgreSQL, never with a password) and ``host_id``."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config.settings import load_settings

WriteConfig = Callable[[str], Path]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no inboxd variables in the environment; a kimi key is set."""
    for name in list(os.environ):
        if name.startswith("INBOXD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test-fleet-config-0001")


def _inbox_toml(path: Path) -> str:
    return f'[[inbox]]\nname = "reports"\npath = "{path}"\nproviders = ["kimi"]\n'


def _errors(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, list[str], str]:
    code = main(["check-config", "-c", str(config)])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("config error: ")]
    return code, lines, captured.out + captured.err


def test_defaults_sqlite_and_the_hostname(write: WriteConfig, inbox: Path) -> None:
    """Without the keys the store is SQLite (no state_url) and host_id is the host's name."""
    settings = load_settings(write(_inbox_toml(inbox)), environ={})
    assert settings.state_url is None
    assert settings.host_id == socket.gethostname()


def test_state_url_and_host_id_read(write: WriteConfig, inbox: Path) -> None:
    """A postgres:// URL without a password and a valid host_id are taken as written."""
    text = 'state_url = "postgres://inboxd@db.example:5432/inboxd"\nhost_id = "node-1.a_b"\n'
    settings = load_settings(write(text + _inbox_toml(inbox)), environ={})
    assert settings.state_url == "postgres://inboxd@db.example:5432/inboxd"
    assert settings.host_id == "node-1.a_b"


def test_state_url_with_password_refused_and_not_echoed(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A password inside state_url is refused with the three places it may come from, and the
    password is printed nowhere."""
    text = 'state_url = "postgresql://inboxd:hunter2-secret@db.example/inboxd"\n'
    code, lines, everything = _errors(capsys, write(text + _inbox_toml(inbox)))
    assert code == 2
    assert lines == [
        "config error: state_url: holds a password; passwords never go in the config file: "
        "remove it from the URL and set PGPASSWORD, or put it in ~/.pgpass, or in "
        "$CREDENTIALS_DIRECTORY/pg_password (systemd LoadCredential=pg_password)"
    ]
    assert "hunter2-secret" not in everything


def test_state_url_other_scheme_refused(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state_url that is not postgresql:// or postgres:// names the schemes allowed."""
    text = 'state_url = "mysql://inboxd@db.example/inboxd"\n'
    code, lines, _ = _errors(capsys, write(text + _inbox_toml(inbox)))
    assert code == 2
    assert lines == [
        "config error: state_url: expected a postgresql://user@host:port/database URL "
        "(scheme postgresql:// or postgres://); remove the key to keep the SQLite state "
        "file in state_dir (got 'mysql://inboxd@db.example/inboxd'); fix its value"
    ]


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "host/1", "höst"])
def test_host_id_refused(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    """A host_id outside [A-Za-z0-9._-]{1,64} is refused, naming the key and the rule."""
    code, lines, _ = _errors(capsys, write(f'host_id = "{bad}"\n' + _inbox_toml(inbox)))
    assert code == 2
    assert lines == [
        "config error: host_id: use 1 to 64 of A-Z a-z 0-9 . _ - (each host of a fleet "
        f"needs its own) (got {bad!r}); fix its value"
    ]


def test_reload_keeps_state_url_and_host_id_until_restart(tmp_path: Path) -> None:
    """A reload that changes state_url or host_id says they take effect at the next restart."""
    from daemon.config.reload_plan import plan_reload
    from daemon.config.settings import Settings

    old = Settings(state_dir=tmp_path, host_id="a")
    new = Settings(state_dir=tmp_path, host_id="b", state_url="postgresql://u@127.0.0.1/db")
    assert plan_reload(old, new).restart_needed == ("state_url", "host_id")

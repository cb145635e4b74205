"""Temp files left by a killed sidecar write are removed at start; nothing else is touched."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from handlers.leftovers import is_temp_leftover, remove_temp_leftovers
from handlers.moves import host_id, write_json_atomic
from tests.harness import running


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing in write_json_atomic catches it."""


def _killed_write(monkeypatch: pytest.MonkeyPatch, path: Path) -> Path:
    """Run write_json_atomic on ``path`` until its fsync, then "kill" it; the temp file left."""

    def fsync(fd: int) -> None:
        raise _Killed

    before = set(path.parent.iterdir())
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync)
        with pytest.raises(_Killed):
            write_json_atomic(path, {"reason": "empty"})
    [leftover] = set(path.parent.iterdir()) - before
    return leftover


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (".a.txt.upload.json.inboxd-0a1b2c3d.tmp", True),
        (".a.txt.inboxd-deadbeef.tmp", True),
        (".with space.pdf.inboxd-00000000.tmp", True),
        ("a.txt", False),
        ("a.txt.upload.json", False),
        (".hidden", False),
        ("a.txt.inboxd-0a1b2c3d.tmp", False),  # not hidden: a user's file
        (".a.txt.inboxd-0A1B2C3D.tmp", False),  # token_hex is lower case
        (".a.txt.inboxd-0a1b2c3.tmp", False),
        (".a.txt.inboxd-0a1b2c3d.tmp.bak", False),
    ],
)
def test_is_temp_leftover(name: str, expected: bool) -> None:
    """Only the exact (legacy, unscoped) temp-name pattern of handlers.moves counts."""
    assert is_temp_leftover(name, host="h", legacy=True) is expected


def test_removes_a_real_leftover_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file of a write killed before its rename goes; files, sidecars, folders stay."""
    done, quarantine = tmp_path / "done", tmp_path / "quarantine"
    done.mkdir()
    quarantine.mkdir()
    (done / "a.txt").write_bytes(b"a")
    write_json_atomic(done / "a.txt.upload.json", {"file_id": "f1"})
    (done / ".hidden").write_bytes(b"h")
    (done / ".dir.inboxd-0a1b2c3d.tmp").mkdir()  # a folder is never removed
    leftover = _killed_write(monkeypatch, done / "b.txt.upload.json")
    (quarantine / "c.txt").write_bytes(b"c")
    qleftover = _killed_write(monkeypatch, quarantine / "c.txt.reason.json")
    assert is_temp_leftover(leftover.name, host=host_id(), legacy=False)
    assert is_temp_leftover(qleftover.name, host=host_id(), legacy=False)

    folders = [done, quarantine, done, tmp_path / "missing"]
    assert remove_temp_leftovers(folders, host=host_id(), legacy=True) == 2

    assert sorted(p.name for p in done.iterdir()) == [
        ".dir.inboxd-0a1b2c3d.tmp",
        ".hidden",
        "a.txt",
        "a.txt.upload.json",
    ]
    assert sorted(p.name for p in quarantine.iterdir()) == ["c.txt"]
    assert (done / "a.txt.upload.json").read_text() == '{\n  "file_id": "f1"\n}\n'


@pytest.mark.anyio
async def test_daemon_removes_leftovers_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At start, leftovers in every inbox's done and quarantine folder go before intake."""
    folders = [tmp_path / f"{box}.{kind}" for box in ("a", "b") for kind in ("done", "quarantine")]
    for folder in folders:
        folder.mkdir()
        (folder / "kept.txt").write_bytes(b"kept")
        (folder / "kept.txt.reason.json").write_bytes(b"{}")
        _killed_write(monkeypatch, folder / "kept.txt.upload.json")
    caplog.set_level(logging.INFO, logger="daemon.runtime.starting")
    async with running(tmp_path, inboxes=[{"name": "a"}, {"name": "b"}]):
        for folder in folders:
            assert sorted(p.name for p in folder.iterdir()) == ["kept.txt", "kept.txt.reason.json"]
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed ")] == [
        "removed 4 temp file(s) left in done/quarantine folders by an interrupted write"
    ]

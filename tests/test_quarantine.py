"""Quarantine keeps bytes exactly, never overwrites, writes the reason; requeue undoes it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from handlers.quarantine import iso_utc, quarantine, requeue
from providers.errors import FileVanished, MoveError

NOW = 1_795_000_000.25


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_iso_utc() -> None:
    """Timestamps are ISO-8601 UTC with a Z and milliseconds."""
    assert iso_utc(NOW) == "2026-11-18T11:06:40.250Z"


def test_quarantine_moves_bytes_and_writes_reason(tmp_path: Path) -> None:
    """The file lands in quarantine byte-for-byte with the exact reason sidecar beside it."""
    inbox, qdir = tmp_path / "inbox", tmp_path / "inbox.quarantine"
    inbox.mkdir()
    src = inbox / "fake.pdf"
    src.write_bytes(os.urandom(70_000))
    digest = _sha(src)
    dst = quarantine(
        src,
        qdir,
        reason="type_not_allowed",
        detail="fake.pdf: content does not match .pdf",
        inbox="docs",
        size=70_000,
        sha256=digest,
        now=NOW,
    )
    assert dst == qdir / "fake.pdf"
    assert (_sha(dst), src.exists()) == (digest, False)
    assert json.loads((qdir / "fake.pdf.reason.json").read_text(encoding="utf-8")) == {
        "reason": "type_not_allowed",
        "detail": "fake.pdf: content does not match .pdf",
        "inbox": "docs",
        "name": "fake.pdf",
        "size": 70_000,
        "sha256": digest,
        "at": "2026-11-18T11:06:40.250Z",
    }


def test_quarantine_without_sha_omits_it(tmp_path: Path) -> None:
    """sha256 is left out when unknown; size may be null."""
    src = tmp_path / "x.txt"
    src.write_bytes(b"data")
    quarantine(
        src,
        tmp_path / "q",
        reason="unreadable",
        detail="d",
        inbox="i",
        size=None,
        sha256=None,
        now=0,
    )
    sidecar = json.loads((tmp_path / "q" / "x.txt.reason.json").read_text(encoding="utf-8"))
    assert sidecar == {
        "reason": "unreadable",
        "detail": "d",
        "inbox": "i",
        "name": "x.txt",
        "size": None,
        "at": "1970-01-01T00:00:00.000Z",
    }


def test_quarantine_never_overwrites(tmp_path: Path) -> None:
    """Two files with the same name both survive, each with its own sidecar."""
    qdir = tmp_path / "q"
    finals = []
    for i in range(3):
        folder = tmp_path / f"in{i}"
        folder.mkdir()
        src = folder / "same.txt"
        src.write_bytes(f"copy {i}".encode())
        finals.append(
            quarantine(
                src, qdir, reason="empty", detail=str(i), inbox="i", size=6, sha256=None, now=0
            )
        )
    assert [p.name for p in finals] == ["same.txt", "same~1.txt", "same~2.txt"]
    assert [p.read_bytes() for p in finals] == [b"copy 0", b"copy 1", b"copy 2"]
    details = [
        json.loads(p.with_name(p.name + ".reason.json").read_text(encoding="utf-8"))["detail"]
        for p in finals
    ]
    assert details == ["0", "1", "2"]


def test_quarantine_vanished_leaves_no_sidecar(tmp_path: Path) -> None:
    """A source gone before the move raises FileVanished and leaves no orphan sidecar."""
    qdir = tmp_path / "q"
    with pytest.raises(FileVanished):
        quarantine(
            tmp_path / "ghost.txt",
            qdir,
            reason="empty",
            detail="",
            inbox="i",
            size=0,
            sha256=None,
            now=0,
        )
    assert list(qdir.iterdir()) == []


def test_undecodable_name_round_trips_through_requeue(tmp_path: Path) -> None:
    """A name_invalid file (byte 0xff) gets valid JSON and is requeued under its exact name."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    raw = os.fsencode(inbox) + b"/bad\xffname.txt"
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"payload")
    os.close(fd)
    (src,) = inbox.iterdir()
    dst = quarantine(
        src,
        tmp_path / "q",
        reason="name_invalid",
        detail="x",
        inbox="i",
        size=7,
        sha256=None,
        now=0,
    )
    sidecar_bytes = dst.with_name(dst.name + ".reason.json").read_bytes()
    assert b'"name": "bad\\udcffname.txt"' in sidecar_bytes
    back = requeue(dst, inbox)
    assert os.fsencode(back) == raw
    assert back.read_bytes() == b"payload"
    assert list((tmp_path / "q").iterdir()) == []


def test_requeue_restores_original_name_and_drops_sidecar(tmp_path: Path) -> None:
    """A file quarantined as name~1 goes back under its original name, without a sidecar."""
    inbox, qdir = tmp_path / "inbox", tmp_path / "q"
    inbox.mkdir()
    qdir.mkdir()
    (qdir / "a.txt").write_bytes(b"first")
    src = inbox / "a.txt"
    src.write_bytes(b"second")
    dst = quarantine(src, qdir, reason="empty", detail="", inbox="i", size=6, sha256=None, now=0)
    assert dst.name == "a~1.txt"
    back = requeue(dst, inbox)
    assert (back, back.read_bytes()) == (inbox / "a.txt", b"second")
    assert sorted(p.name for p in qdir.iterdir()) == ["a.txt"]


def test_requeue_collision_in_inbox(tmp_path: Path) -> None:
    """Requeue never overwrites a file of the same name already in the inbox."""
    inbox, qdir = tmp_path / "inbox", tmp_path / "q"
    inbox.mkdir()
    src = inbox / "r.pdf"
    src.write_bytes(b"old")
    dst = quarantine(src, qdir, reason="empty", detail="", inbox="i", size=3, sha256=None, now=0)
    src.write_bytes(b"new arrival")
    back = requeue(dst, inbox)
    assert back == inbox / "r~1.pdf"
    assert (src.read_bytes(), back.read_bytes()) == (b"new arrival", b"old")


def test_requeue_refuses_sidecar(tmp_path: Path) -> None:
    """Requeueing a sidecar itself is refused with a message saying what to do."""
    side = tmp_path / "a.txt.reason.json"
    side.write_text("{}", encoding="utf-8")
    with pytest.raises(MoveError, match="requeue the file it describes instead"):
        requeue(side, tmp_path)


def test_quarantine_symlink_moves_link_only(tmp_path: Path) -> None:
    """A symlink is quarantined as a link; the file it points to stays where it was."""
    target = tmp_path / "outside.txt"
    target.write_bytes(b"keep me")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "l.txt").symlink_to(target)
    dst = quarantine(
        inbox / "l.txt",
        tmp_path / "q",
        reason="symlink",
        detail="",
        inbox="i",
        size=None,
        sha256=None,
        now=0,
    )
    assert (dst.is_symlink(), dst.readlink(), target.read_bytes()) == (True, target, b"keep me")


def test_quarantine_fifo_never_blocks(tmp_path: Path) -> None:
    """A fifo is quarantined without being opened (pytest-timeout guards a hang)."""
    fifo = tmp_path / "p.txt"
    os.mkfifo(fifo)
    dst = quarantine(
        fifo,
        tmp_path / "q",
        reason="not_regular_file",
        detail="",
        inbox="i",
        size=None,
        sha256=None,
        now=0,
    )
    assert (dst.is_fifo(), fifo.exists()) == (True, False)

"""Moves never overwrite, keep bytes exactly, and work across filesystems for real."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.moves import move_file, move_unique, unique_destination, write_json_atomic
from providers.errors import DestinationExists, MoveError

SHM = Path("/dev/shm")


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on a different filesystem than tmp_path (a tmpfs), removed afterwards."""
    folder = SHM / f"inboxd-test-{os.getpid()}-{tmp_path.name}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize(
    ("existing", "name", "expected"),
    [
        ([], "report.pdf", "report.pdf"),
        (["report.pdf"], "report.pdf", "report~1.pdf"),
        (["report.pdf", "report~1.pdf"], "report.pdf", "report~2.pdf"),
        (["report.pdf.reason.json"], "report.pdf", "report~1.pdf"),
        (["report.pdf", "report~1.pdf.upload.json"], "report.pdf", "report~2.pdf"),
        (["README"], "README", "README~1"),
        (["archive.tar.gz"], "archive.tar.gz", "archive.tar~1.gz"),
        (["report.PDF"], "report.pdf", "report.pdf"),
    ],
)
def test_unique_destination(tmp_path: Path, existing: list[str], name: str, expected: str) -> None:
    """The first name with neither a file nor a sidecar is chosen, keeping the extension."""
    for other in existing:
        (tmp_path / other).write_bytes(b"x")
    assert unique_destination(tmp_path, name) == tmp_path / expected


def test_unique_destination_counts_dangling_symlink(tmp_path: Path) -> None:
    """A dangling symlink occupies its name too."""
    (tmp_path / "a.txt").symlink_to(tmp_path / "nowhere")
    assert unique_destination(tmp_path, "a.txt") == tmp_path / "a~1.txt"


def test_move_same_fs_is_a_rename(tmp_path: Path) -> None:
    """On one filesystem the inode moves: same bytes, same inode, source gone."""
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(4096))
    ino, data = src.stat().st_ino, src.read_bytes()
    (tmp_path / "q").mkdir()
    dst = move_file(src, tmp_path / "q" / "a.bin")
    assert (dst.read_bytes(), dst.stat().st_ino, src.exists()) == (data, ino, False)


def test_move_never_overwrites(tmp_path: Path) -> None:
    """An existing destination raises DestinationExists and both files are untouched."""
    src, dst = tmp_path / "new.txt", tmp_path / "old.txt"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    with pytest.raises(DestinationExists, match=r"old\.txt already exists; not overwriting it"):
        move_file(src, dst)
    assert (src.read_bytes(), dst.read_bytes()) == (b"new", b"old")


def test_move_missing_source(tmp_path: Path) -> None:
    """A vanished source raises FileNotFoundError so callers can tell 'gone' from 'broken'."""
    with pytest.raises(FileNotFoundError):
        move_file(tmp_path / "ghost", tmp_path / "dst")


def test_move_unique_two_same_names(tmp_path: Path) -> None:
    """Two files of the same name both land, the second as stem~1.ext, bytes intact."""
    out = tmp_path / "out"
    out.mkdir()
    paths = []
    for i, folder in enumerate(("in1", "in2")):
        (tmp_path / folder).mkdir()
        src = tmp_path / folder / "same.pdf"
        src.write_bytes(f"content {i}".encode())
        paths.append(move_unique(src, out))
    assert paths == [out / "same.pdf", out / "same~1.pdf"]
    assert [p.read_bytes() for p in paths] == [b"content 0", b"content 1"]


def test_cross_device_move(tmp_path: Path, other_fs: Path) -> None:
    """EXDEV for real (tmp_path vs /dev/shm): copy+fsync+rename, bytes/mode/mtime kept, no temp."""
    assert tmp_path.stat().st_dev != other_fs.stat().st_dev, "need two filesystems"
    src = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    src.write_bytes(data)
    src.chmod(0o640)
    os.utime(src, ns=(1_000_000_000, 1_234_567_891_000))
    dst = move_file(src, other_fs / "big.bin")
    st = dst.stat()
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o640, 1_234_567_891_000)
    assert src.exists() is False
    assert sorted(p.name for p in other_fs.iterdir()) == ["big.bin"]


def test_cross_device_never_overwrites(tmp_path: Path, other_fs: Path) -> None:
    """Across filesystems an existing destination is kept, the source too, no temp left."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"new")
    (other_fs / "a.txt").write_bytes(b"old")
    with pytest.raises(DestinationExists):
        move_file(src, other_fs / "a.txt")
    assert (src.read_bytes(), (other_fs / "a.txt").read_bytes()) == (b"new", b"old")
    assert sorted(p.name for p in other_fs.iterdir()) == ["a.txt"]


def test_cross_device_move_unique(tmp_path: Path, other_fs: Path) -> None:
    """move_unique across filesystems picks the next free name."""
    (other_fs / "a.txt").write_bytes(b"old")
    src = tmp_path / "a.txt"
    src.write_bytes(b"new")
    assert move_unique(src, other_fs) == other_fs / "a~1.txt"
    assert (other_fs / "a~1.txt").read_bytes() == b"new"


def test_write_json_atomic_exact_text(tmp_path: Path) -> None:
    """The sidecar is indented UTF-8 JSON in insertion order, replaced whole, no temp left."""
    path = tmp_path / "x.reason.json"
    write_json_atomic(path, {"b": 1, "a": "é"})
    write_json_atomic(path, {"reason": "empty", "name": "отчёт"})
    assert path.read_text(encoding="utf-8") == '{\n  "reason": "empty",\n  "name": "отчёт"\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["x.reason.json"]


def test_cross_device_symlink_moves_link_not_target(tmp_path: Path, other_fs: Path) -> None:
    """A symlink crossing filesystems is re-created as a link; its target is never read or moved."""
    target = tmp_path / "secret.txt"
    target.write_bytes(b"secret")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    dst = move_file(link, other_fs / "link.txt")
    assert (dst.is_symlink(), dst.readlink(), link.is_symlink()) == (True, target, False)
    assert target.read_bytes() == b"secret"


def test_cross_device_fifo_never_blocks(tmp_path: Path, other_fs: Path) -> None:
    """A fifo crossing filesystems is re-created, never opened (pytest-timeout guards a hang)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o640)
    dst = move_file(fifo, other_fs / "pipe")
    assert (stat.S_ISFIFO(dst.lstat().st_mode), fifo.exists()) == (True, False)


def test_cross_device_directory_refused(tmp_path: Path, other_fs: Path) -> None:
    """A directory cannot cross filesystems: MoveError names the fix and nothing moves."""
    folder = tmp_path / "sub"
    folder.mkdir()
    with pytest.raises(MoveError, match="put that folder on the inbox's filesystem"):
        move_file(folder, other_fs / "sub")
    assert (folder.is_dir(), list(other_fs.iterdir())) == (True, [])


def test_same_fs_directory_moves(tmp_path: Path) -> None:
    """On one filesystem a directory (a not_regular_file reject) moves whole."""
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "inner.txt").write_bytes(b"x")
    (tmp_path / "q").mkdir()
    dst = move_file(folder, tmp_path / "q" / "sub")
    assert (dst / "inner.txt").read_bytes() == b"x"

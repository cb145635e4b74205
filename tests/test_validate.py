"""open_for_upload on real files: every rejection reason, decided on the open fd."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from handlers.validate import OpenedFile, open_for_upload, sniff, verdict
from providers.errors import FileBusy, FileVanished, Refusal, RejectedFile
from providers.limits import KIMI_LIMITS, MIB

_EXTRACT = KIMI_LIMITS.purposes["file-extract"]


def _accept(size: int, extension: str) -> Refusal | None:
    return _EXTRACT.refusal(size, extension)


def _accept_all(size: int, extension: str) -> Refusal | None:
    return None


def _rejected(path: Path, accept: Callable[[int, str], Refusal | None] = _accept) -> RejectedFile:
    with pytest.raises(RejectedFile) as info:
        open_for_upload(path, accept=accept)
    return info.value


def test_accepts_regular_file_and_reports_fstat(tmp_path: Path) -> None:
    """A good file opens; size, mtime_ns, ino and dev come from the fd's fstat."""
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7\n" + b"x" * 100)
    st = path.stat()
    with open_for_upload(path, accept=_accept) as opened:
        assert (opened.size, opened.mtime_ns, opened.ino, opened.dev) == (
            109,
            st.st_mtime_ns,
            st.st_ino,
            st.st_dev,
        )
        assert (opened.name, opened.extension) == ("report.pdf", "pdf")
        assert opened.file.read() == path.read_bytes()
        assert opened.unchanged() is True
    assert opened.fd == -1


def test_rewind_survives_client_closing_file(tmp_path: Path) -> None:
    """A client closing the file object does not close the fd; rewind gives offset 0 again."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"hello world")
    with open_for_upload(path, accept=_accept) as opened:
        assert opened.file.read(5) == b"hello"
        opened.file.close()
        again = opened.rewind()
        assert again.read() == b"hello world"


def test_changed_after_open_is_detected(tmp_path: Path) -> None:
    """A write after validation makes unchanged() False (the pipeline re-settles it)."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"one")
    with open_for_upload(path, accept=_accept) as opened:
        with path.open("ab") as fh:
            fh.write(b" two")
        assert opened.unchanged() is False
        assert opened.same_as(path.stat()) is False


def test_renamed_file_is_same_inode(tmp_path: Path) -> None:
    """same_as compares the inode, so a renamed-but-untouched file still matches."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"one")
    with open_for_upload(path, accept=_accept) as opened:
        moved = path.rename(tmp_path / "b.txt")
        assert opened.same_as(moved.stat()) is True
        assert opened.unchanged() is True


def test_sparse_huge_file_too_large(tmp_path: Path) -> None:
    """A 101 MiB sparse file (no disk used) is refused by accept as too_large, naming the limit."""
    path = tmp_path / "huge.pdf"
    path.write_bytes(b"%PDF-1.7\n")
    os.truncate(path, 101 * MIB)
    assert path.stat().st_blocks * 512 < MIB
    err = _rejected(path)
    assert (err.reason, err.detail) == ("too_large", f"{101 * MIB} bytes > {100 * MIB} bytes")


def test_fifo_rejected_without_blocking(tmp_path: Path) -> None:
    """A fifo with no writer is refused at once as not_regular_file (pytest-timeout guards)."""
    path = tmp_path / "pipe.txt"
    os.mkfifo(path)
    err = _rejected(path)
    assert (err.reason, err.detail) == (
        "not_regular_file",
        "pipe.txt is a fifo; only regular files are uploaded",
    )


def test_socket_rejected(tmp_path: Path) -> None:
    """A unix socket is refused as not_regular_file."""
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        err = _rejected(path)
    assert (err.reason, err.detail) == (
        "not_regular_file",
        "s.sock is a socket; only regular files are uploaded",
    )


def test_device_rejected_without_opening_it(tmp_path: Path) -> None:
    """A character device node is refused; only an O_PATH handle ever touches it."""
    path = tmp_path / "null.txt"
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    seen: list[int] = []

    def opener(p: Path, flags: int) -> int:
        seen.append(flags)
        return os.open(p, flags)

    with pytest.raises(RejectedFile) as info:
        open_for_upload(path, accept=_accept, opener=opener)
    assert info.value.reason == "not_regular_file"
    assert info.value.detail == "null.txt is a character device; only regular files are uploaded"
    assert len(seen) == 1
    assert seen[0] & os.O_PATH


def test_directory_rejected(tmp_path: Path) -> None:
    """A directory is refused as not_regular_file."""
    (tmp_path / "sub.pdf").mkdir()
    err = _rejected(tmp_path / "sub.pdf")
    assert (err.reason, err.detail) == (
        "not_regular_file",
        "sub.pdf is a directory; only regular files are uploaded",
    )


def test_symlink_to_outside_rejected_target_untouched(tmp_path: Path) -> None:
    """A symlink to a file outside the inbox is refused as symlink; the target is unchanged."""
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"top secret")
    before = outside.stat()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    link = inbox / "innocent.txt"
    link.symlink_to(outside)
    err = _rejected(link)
    assert (err.reason, err.detail) == (
        "symlink",
        "innocent.txt is a symbolic link; only regular files are uploaded",
    )
    after = outside.stat()
    assert outside.read_bytes() == b"top secret"
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def test_dangling_symlink_rejected(tmp_path: Path) -> None:
    """A dangling symlink is a symlink, not a vanished file."""
    link = tmp_path / "gone.txt"
    link.symlink_to(tmp_path / "nowhere")
    assert _rejected(link).reason == "symlink"


def test_empty_rejected(tmp_path: Path) -> None:
    """A zero-byte file is refused as empty."""
    path = tmp_path / "nothing.txt"
    path.touch()
    err = _rejected(path)
    assert (err.reason, err.detail) == ("empty", "nothing.txt is empty (0 bytes)")


def test_undecodable_name_rejected(tmp_path: Path) -> None:
    """A name with a byte that is not UTF-8 is refused as name_invalid, shown escaped."""
    raw = os.fsencode(tmp_path) + b"/bad\xffname.txt"
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"data")
    os.close(fd)
    (entry,) = tmp_path.iterdir()
    err = _rejected(entry)
    assert (err.reason, err.detail) == (
        "name_invalid",
        "bad\\xffname.txt: name is not valid UTF-8 (byte 0xff at character 3); rename the file",
    )


def test_control_character_name_rejected(tmp_path: Path) -> None:
    """A name holding a newline is refused as name_invalid."""
    path = tmp_path / "two\nlines.txt"
    path.write_bytes(b"data")
    err = _rejected(path)
    assert err.reason == "name_invalid"
    assert err.detail == (
        "two\\x0alines.txt: name holds control character U+000A at character 3; rename the file"
    )


def test_type_not_allowed_by_accept(tmp_path: Path) -> None:
    """accept's type_not_allowed verdict comes through unchanged."""
    path = tmp_path / "tool.exe"
    path.write_bytes(b"MZ")
    err = _rejected(path)
    assert err.reason == "type_not_allowed"
    assert err.detail.startswith(".exe not in ")


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EIO])
def test_unreadable_on_open(tmp_path: Path, code: int) -> None:
    """EACCES/EPERM/EIO opening for read is unreadable (injected: root ignores chmod 000)."""
    path = tmp_path / "locked.txt"
    path.write_bytes(b"data")

    def opener(p: Path, flags: int) -> int:
        if flags & os.O_PATH:
            return os.open(p, flags)
        raise OSError(code, os.strerror(code), str(p))

    with pytest.raises(RejectedFile) as info:
        open_for_upload(path, accept=_accept, opener=opener)
    assert info.value.reason == "unreadable"
    assert info.value.detail == (
        f"cannot open locked.txt: {os.strerror(code)}; "
        "give the inboxd user read access and requeue it"
    )


def test_unreadable_on_first_read(tmp_path: Path) -> None:
    """A read error on the first bytes is unreadable (a write-only fd makes pread fail for real)."""
    path = tmp_path / "wo.txt"
    path.write_bytes(b"data")

    def opener(p: Path, flags: int) -> int:
        if flags & os.O_PATH:
            return os.open(p, flags)
        return os.open(p, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)

    with pytest.raises(RejectedFile) as info:
        open_for_upload(path, accept=_accept, opener=opener)
    assert info.value.reason == "unreadable"
    assert info.value.detail.startswith(f"cannot read wo.txt: {os.strerror(errno.EBADF)}")


def test_missing_file_vanished(tmp_path: Path) -> None:
    """A file gone before open raises FileVanished, not a rejection."""
    with pytest.raises(FileVanished, match=r"ghost\.txt vanished"):
        open_for_upload(tmp_path / "ghost.txt", accept=_accept)


def test_busy_is_not_a_rejection(tmp_path: Path) -> None:
    """EMFILE (too many open files) raises FileBusy: retry later, never quarantine."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"data")

    def opener(p: Path, flags: int) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    with pytest.raises(FileBusy, match=r"cannot open a.txt now \(Too many open files\)"):
        open_for_upload(path, accept=_accept, opener=opener)


def test_swapped_to_dir_between_handles(tmp_path: Path) -> None:
    """Checks use the read fd's own fstat: a swap after the O_PATH look is still caught."""
    path = tmp_path / "swap.txt"
    path.write_bytes(b"data")

    def opener(p: Path, flags: int) -> int:
        if flags & os.O_PATH:
            fd = os.open(p, flags)
            p.unlink()
            p.mkdir()
            return fd
        return os.open(p, flags)

    with pytest.raises(RejectedFile) as info:
        open_for_upload(path, accept=_accept, opener=opener)
    assert info.value.reason == "not_regular_file"


def test_pdf_sniff_rejects_fake_pdf(tmp_path: Path) -> None:
    """A .pdf without a %PDF- header is refused as type_not_allowed with the mismatch named."""
    path = tmp_path / "fake.pdf"
    path.write_bytes(b"<html>not a pdf</html>")
    err = _rejected(path)
    assert (err.reason, err.detail) == (
        "type_not_allowed",
        "fake.pdf: content does not match .pdf: no %PDF- header in the first 1 KiB",
    )


def test_opened_file_closes_fd(tmp_path: Path) -> None:
    """close() releases the fd and is safe twice."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"x")
    opened: OpenedFile = open_for_upload(path, accept=_accept_all)
    fd = opened.fd
    opened.close()
    opened.close()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


@pytest.mark.parametrize(
    ("extension", "head", "expected"),
    [
        ("pdf", b"%PDF-1.4", None),
        ("pdf", b"\xef\xbb\xbf junk %PDF-1.4", None),
        ("pdf", b"PK\x03\x04", "content does not match .pdf: no %PDF- header in the first 1 KiB"),
        ("png", b"\x89PNG\r\n\x1a\n....", None),
        ("png", b"GIF89a", "content does not match .png: it does not start with its magic bytes"),
        ("jpg", b"\xff\xd8\xff\xe0", None),
        ("docx", b"PK\x03\x04", None),
        (
            "docx",
            b"\xd0\xcf\x11\xe0",
            "content does not match .docx: it does not start with its magic bytes",
        ),
        ("txt", b"plain text", None),
        (
            "csv",
            b"a,b\n\x00",
            "content does not match .csv: a NUL byte in the first 8 KiB (binary)",
        ),
        ("txt", b"\xff\xfeh\x00i\x00", None),
        ("bin", b"\x00\x00", None),
        ("doc", b"anything", None),
    ],
)
def test_sniff_table(extension: str, head: bytes, expected: str | None) -> None:
    """The cheap sniff refuses only clear contradictions between bytes and extension."""
    assert sniff(extension, head) == expected


@pytest.mark.parametrize(
    ("name", "mode", "size", "head", "expected"),
    [
        ("a.txt", stat.S_IFLNK | 0o777, 5, b"", "symlink"),
        ("a.txt", stat.S_IFDIR | 0o755, 4096, b"", "not_regular_file"),
        ("a.txt", stat.S_IFREG | 0o644, 0, b"", "empty"),
        ("a\tb.txt", stat.S_IFREG | 0o644, 0, b"", "empty"),
        ("a\tb.txt", stat.S_IFREG | 0o644, 5, b"hello", "name_invalid"),
        ("a.exe", stat.S_IFREG | 0o644, 5, b"hello", "type_not_allowed"),
        ("a.txt", stat.S_IFREG | 0o644, 101 * MIB, b"hello", "too_large"),
        ("a.pdf", stat.S_IFREG | 0o644, 5, b"hello", "type_not_allowed"),
        ("a.txt", stat.S_IFREG | 0o644, 5, b"hello", None),
    ],
)
def test_verdict_order(name: str, mode: int, size: int, head: bytes, expected: str | None) -> None:
    """The pure verdict applies the checks in the documented order."""
    got = verdict(name=name, mode=mode, size=size, head=head, accept=_accept)
    assert (None if got is None else got[0]) == expected

"""Open an inbox file once and decide, on that open fd, whether it may be uploaded.

``open_for_upload`` first takes an ``O_PATH | O_NOFOLLOW`` handle (opens nothing: a fifo,
socket or device is never really opened, so it cannot block or trigger a driver), ``fstat``s
it, then opens the same name ``O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`` and runs every
check on THAT fd's ``fstat`` — never on the path again. ``verdict`` is the pure part.

Content sniff (cheap, first 8 KiB only): ``.pdf`` must hold ``%PDF-`` in its first 1 KiB;
``.png``, ``.jpg``/``.jpeg``, ``.gif`` and the zip-based office/epub types must start with
their magic bytes; text types (``.txt .csv .md .json .jsonl .log .yaml .yml``) must hold no
NUL byte unless they start with a UTF-16 byte-order mark. Anything else is not sniffed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

from handlers.identity import Identity
from handlers.names import display_name, name_problem
from providers.errors import FileBusy, FileVanished, InboxdError, Reason, Refusal, RejectedFile
from providers.limits import extension_of

__all__ = [
    "HEAD_BYTES",
    "OpenedFile",
    "Opener",
    "Refused",
    "open_for_upload",
    "sniff",
    "verdict",
]

HEAD_BYTES = 8192

Accept = Callable[[int, str], "Refusal | None"]
Opener = Callable[[Path, int], int]
"""``os.open``-shaped: ``(path, flags) -> fd``. Tests pass one that raises EACCES."""

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR})
# Resource shortage or a lease held by another process: may pass, so never quarantine.
_BUSY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR})

_MAGIC: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    **dict.fromkeys(("docx", "xlsx", "pptx", "epub"), (b"PK\x03\x04",)),
}
_TEXT = frozenset({"txt", "csv", "md", "json", "jsonl", "log", "yaml", "yml"})
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class Refused(RejectedFile):
    """A rejection at validation, with the ``identity`` of the file it was made on (None when
    it could not be stat'ed): only that file, unchanged, is quarantined under it."""

    def __init__(self, reason: Reason, detail: str, identity: Identity | None) -> None:
        super().__init__(reason, detail)
        self.identity = identity


def sniff(extension: str, head: bytes) -> str | None:
    """Why the first bytes contradict the extension (a ``type_not_allowed`` detail), or None."""
    if extension == "pdf":
        if b"%PDF-" not in head[:1024]:
            return "content does not match .pdf: no %PDF- header in the first 1 KiB"
        return None
    magic = _MAGIC.get(extension)
    if magic is not None and not head.startswith(magic):
        return f"content does not match .{extension}: it does not start with its magic bytes"
    if extension in _TEXT and b"\0" in head and not head.startswith(_UTF16_BOMS):
        return f"content does not match .{extension}: a NUL byte in the first 8 KiB (binary)"
    return None


def verdict(*, name: str, mode: int, size: int, head: bytes, accept: Accept) -> Refusal | None:
    """The rejection ``(reason, detail)`` for what ``fstat`` and the first bytes say, or None.

    Order: symlink, not_regular_file, empty, name_invalid, the router's ``accept``
    (too_large / type_not_allowed), then the content sniff.
    """
    refused = _shape(name, mode, size)
    if refused is not None:
        return refused
    extension = extension_of(name)
    refused = accept(size, extension)
    if refused is not None:
        return refused
    mismatch = sniff(extension, head)
    if mismatch is not None:
        return "type_not_allowed", f"{display_name(name)}: {mismatch}"
    return None


def _shape(name: str, mode: int, size: int) -> Refusal | None:
    shown = display_name(name)
    if stat.S_ISLNK(mode):
        return "symlink", f"{shown} is a symbolic link; only regular files are uploaded"
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        return "not_regular_file", f"{shown} is a {kind}; only regular files are uploaded"
    if size == 0:
        return "empty", f"{shown} is empty (0 bytes)"
    problem = name_problem(name)
    if problem is not None:
        return "name_invalid", f"{shown}: {problem}; rename the file"
    return None


_KINDS = {
    stat.S_IFDIR: "directory",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


class OpenedFile:
    """An accepted file, open for reading; close it (or use ``with``) when done.

    ``size``, ``mtime_ns``, ``ctime_ns``, ``ino`` and ``dev`` are from the fstat the checks
    ran on (together: ``identity``).
    ``file`` never closes the fd (``closefd=False``): a client that closes it does no harm,
    and ``rewind()`` hands out a fresh object at offset 0 for the next attempt.
    """

    def __init__(self, path: Path, name: str, fd: int, st: os.stat_result) -> None:
        self.path = path
        self.name = name
        self.extension = extension_of(name)
        self.fd = fd
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.ctime_ns = st.st_ctime_ns
        self.ino = st.st_ino
        self.dev = st.st_dev
        self.identity = Identity.of(st)
        self._file: BinaryIO = open(fd, "rb", closefd=False)  # noqa: SIM115 -- lives as long as self

    @property
    def file(self) -> BinaryIO:
        """The binary file object on the fd (its offset is wherever the last reader left it)."""
        return self._file

    def rewind(self) -> BinaryIO:
        """The file object at offset 0, re-made from the fd if a client closed it."""
        if self._file.closed:
            self._file = open(self.fd, "rb", closefd=False)  # noqa: SIM115 -- as in __init__
        self._file.seek(0)
        return self._file

    def fstat(self) -> os.stat_result:
        """A fresh ``fstat`` of the open fd (the name may have moved; the inode is what counts)."""
        return os.fstat(self.fd)

    def same_as(self, st: os.stat_result) -> bool:
        """True when ``st`` shows the same inode with the same size and mtime_ns."""
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
            self.dev,
            self.ino,
            self.size,
            self.mtime_ns,
        )

    def named_now(self) -> Literal["same", "replaced", "gone"]:
        """What ``path`` names now: the open file (same device and inode), another file, or
        nothing (another host of a fleet may have archived it meanwhile)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return "gone"
        except OSError:
            return "same"  # cannot tell (permissions, I/O): the later checks decide
        return "same" if (st.st_dev, st.st_ino) == (self.dev, self.ino) else "replaced"

    def unchanged(self) -> bool:
        """True when the open file still has the size and mtime_ns it was validated with."""
        return self.same_as(self.fstat())

    def close(self) -> None:
        """Close the file object and the fd; safe to call twice."""
        if self.fd >= 0:
            self._file.close()
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_for_upload(path: Path, *, accept: Accept, opener: Opener = os.open) -> OpenedFile:
    """Open ``path`` once and validate it on the fd.

    Raises ``Refused(reason, detail, identity)`` (a ``RejectedFile``: quarantine it, if the
    name still holds that file), ``FileVanished`` (forget it) or ``FileBusy`` (try again
    later). ``accept(size, extension)`` is the router's verdict.
    """
    shown = display_name(path.name)
    handle = _open(opener, path, _PATH_FLAGS, shown)
    try:
        first = os.fstat(handle)
    finally:
        os.close(handle)
    try:
        return _open_checked(path, first, accept, opener)
    except Refused:
        raise
    except RejectedFile as exc:  # could not be opened for reading: the O_PATH fstat names it
        raise Refused(exc.reason, exc.detail, Identity.of(first)) from exc


def _open_checked(path: Path, first: os.stat_result, accept: Accept, opener: Opener) -> OpenedFile:
    name = path.name
    shown = display_name(name)
    if not stat.S_ISREG(first.st_mode):
        # Never open a fifo, socket or device for reading (it may block or act).
        refused = verdict(
            name=name, mode=first.st_mode, size=first.st_size, head=b"", accept=accept
        )
        assert refused is not None
        raise Refused(*refused, Identity.of(first))
    fd = _open(opener, path, _READ_FLAGS, shown)
    try:
        st = os.fstat(fd)
        head = b""
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            try:
                head = os.pread(fd, min(HEAD_BYTES, st.st_size), 0)
            except OSError as exc:
                translated = _translate(exc, shown, "read")
                if isinstance(translated, RejectedFile):
                    raise Refused(translated.reason, translated.detail, Identity.of(st)) from exc
                raise translated from exc
        refused = verdict(name=name, mode=st.st_mode, size=st.st_size, head=head, accept=accept)
        if refused is not None:
            raise Refused(*refused, Identity.of(st))
        return OpenedFile(path, name, fd, st)
    except BaseException:
        os.close(fd)
        raise


def _open(opener: Opener, path: Path, flags: int, shown: str) -> int:
    try:
        return opener(path, flags)
    except OSError as exc:
        raise _translate(exc, shown, "open") from exc


def _translate(exc: OSError, shown: str, action: str) -> InboxdError:
    code = exc.errno
    if code in _GONE:
        return FileVanished(f"{shown} vanished before it could be opened")
    if code == errno.ELOOP:
        return RejectedFile(
            "symlink", f"{shown} is a symbolic link; only regular files are uploaded"
        )
    if code == errno.ENXIO:
        return RejectedFile(
            "not_regular_file", f"{shown} is a socket; only regular files are uploaded"
        )
    if code in _BUSY:
        return FileBusy(f"cannot {action} {shown} now ({os.strerror(code)}); will retry")
    why = os.strerror(code) if code is not None else str(exc)
    return RejectedFile(
        "unreadable",
        f"cannot {action} {shown}: {why}; give the inboxd user read access and requeue it",
    )

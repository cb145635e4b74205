"""Moving files out of the inbox without ever overwriting, and writing sidecars atomically.

Same filesystem: ``renameat2(RENAME_NOREPLACE)`` (atomic, refuses to overwrite); where the
filesystem lacks it, ``link`` + ``unlink`` (also refuses to overwrite). Across filesystems
(EXDEV): copy to a dot-named temp file in the target folder, fsync it, rename it into place
without overwriting, fsync the folder, and only then remove the source (a symlink or fifo is
re-created, never opened; a directory, socket or device cannot cross filesystems). Folders
are fsynced after every change so a crash cannot undo a move the ledger already recorded.

Every name made here (``~N`` collision names, sidecar and temp names) fits NAME_MAX: see
``handlers.names.fit_name`` for how a longer one is shortened. Temp names carry this
process's host id (``use_host_id``, set once at start from the config's ``host_id``): hosts
of a fleet share done and quarantine folders, and each cleans up only its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from handlers.names import fit_name, sidecar_name, temp_name
from providers.errors import DestinationExists, MoveError

__all__ = [
    "SIDECAR_SUFFIXES",
    "candidate_names",
    "copy_fd_noreplace",
    "fsync_dir",
    "host_id",
    "move_file",
    "move_unique",
    "unique_destination",
    "use_host_id",
    "write_bytes_atomic",
    "write_json_atomic",
]

SIDECAR_SUFFIXES = (".reason.json", ".upload.json")
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_MAX_TRIES = 10_000

# One process is one host: the id is set once at start (``use_host_id``), before any write.
_host = [socket.gethostname()]


def use_host_id(host: str) -> None:
    """Name this process's temp files with ``host`` from now on (the config's ``host_id``)."""
    _host[0] = host


def host_id() -> str:
    """The host id temp files are named with now."""
    return _host[0]


def _temp_path(dst: Path) -> Path:
    return dst.with_name(temp_name(dst.name, secrets.token_hex(4), host=_host[0]))


def _libc_renameat2() -> ctypes._NamedFuncPointer | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2 = _libc_renameat2()


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename without overwriting; raises FileExistsError, or OSError(EXDEV) across devices."""
    if _renameat2 is not None:
        if (
            _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
            == 0
        ):
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    # No renameat2 here: a hard link refuses to overwrite just the same.
    os.link(src, dst, follow_symlinks=False)
    src.unlink()


def fsync_dir(path: Path) -> None:
    """fsync a folder so renames, links and unlinks in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _taken(folder: Path, name: str) -> bool:
    return os.path.lexists(folder / name) or any(
        os.path.lexists(folder / sidecar_name(name, s)) for s in SIDECAR_SUFFIXES
    )


def candidate_names(name: str) -> Iterator[str]:
    """``name``, then ``stem~1.ext``, ``stem~2.ext`` … (the collision scheme, in order).

    A name without an extension (or with a leading dot only) gets the suffix at its end; a
    candidate over 255 bytes is shortened (``handlers.names.fit_name``).
    """
    yield fit_name(name)
    for n in range(1, _MAX_TRIES):
        yield fit_name(name, tag=f"~{n}")


def unique_destination(folder: Path, name: str) -> Path:
    """``folder/name``, or ``stem~N.ext``: the first name with no file and no sidecar beside it.

    ``report.pdf`` → ``report~1.pdf`` → ``report~2.pdf``; the extension is kept.
    A check only: ``move_unique`` retries when a racing writer takes the name first.
    """
    for candidate in candidate_names(name):
        if not _taken(folder, candidate):
            return folder / candidate
    raise MoveError(f"no free name for {name!r} in {folder} after {_MAX_TRIES} tries; clean it up")


def move_file(src: Path, dst: Path) -> Path:
    """Move ``src`` to ``dst`` (never overwriting), durably; returns ``dst``.

    Raises FileNotFoundError when ``src`` is gone, ``DestinationExists`` when ``dst`` exists,
    ``MoveError`` for anything else.
    """
    try:
        try:
            _rename_noreplace(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_across(src, dst)
        fsync_dir(dst.parent)
        if src.parent != dst.parent:
            fsync_dir(src.parent)
    except FileExistsError as exc:
        raise DestinationExists(f"{dst} already exists; not overwriting it") from exc
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise MoveError(f"cannot move {src} to {dst}: {exc.strerror or exc}") from exc
    return dst


def move_unique(src: Path, folder: Path, name: str | None = None) -> Path:
    """Move ``src`` into ``folder`` under ``name`` (default: its own) or a free variant of it."""
    name = src.name if name is None else name
    for _ in range(_MAX_TRIES):
        try:
            return move_file(src, unique_destination(folder, name))
        except DestinationExists:
            continue  # a racing writer took the name between the check and the move
    raise MoveError(f"no free name for {name!r} in {folder}; clean it up")


def _copy_across(src: Path, dst: Path) -> None:
    st = os.lstat(src)
    tmp = _temp_path(dst)
    try:
        if stat.S_ISREG(st.st_mode):
            _copy_regular(src, tmp)
        elif stat.S_ISLNK(st.st_mode):
            tmp.symlink_to(src.readlink())  # the link itself moves; its target is untouched
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(tmp, st.st_mode & 0o7777)  # never open a fifo: it would block
        else:
            raise MoveError(
                f"cannot move {src} (not a file, link or fifo) across filesystems to "
                f"{dst.parent}; put that folder on the inbox's filesystem"
            )
        _rename_noreplace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(dst.parent)
    src.unlink()


def _copy_regular(src: Path, tmp: Path) -> None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    with os.fdopen(os.open(src, flags), "rb") as fin:
        st = os.fstat(fin.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise MoveError(f"{src} was replaced while being moved; it is left in place")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fchmod(fd, st.st_mode & 0o7777)
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.fsync(fd)


def copy_fd_noreplace(fd: int, dst: Path, *, size: int, sha256: str) -> Path:
    """Copy the first ``size`` bytes of the open file ``fd`` to ``dst`` (never overwriting),
    durably, if they hash to ``sha256``; returns ``dst``.

    For a file whose name now holds another file: its bytes are still readable from the fd.
    Raises ``ValueError`` when the bytes are not those (nothing is left), ``DestinationExists``
    when ``dst`` exists, ``MoveError`` for anything else.
    """
    tmp = _temp_path(dst)
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            digest = hashlib.sha256()
            offset = 0
            while offset < size and (block := os.pread(fd, min(1 << 20, size - offset), offset)):
                digest.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(out, view) :]
                offset += len(block)
            if (offset, digest.hexdigest()) != (size, sha256):
                raise ValueError(f"the open file no longer holds the bytes meant for {dst}")
            os.fsync(out)
        finally:
            os.close(out)
        _rename_noreplace(tmp, dst)
        fsync_dir(dst.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, FileExistsError):
            raise DestinationExists(f"{dst} already exists; not overwriting it") from exc
        if isinstance(exc, OSError):
            raise MoveError(f"cannot copy into {dst}: {exc.strerror or exc}") from exc
        raise
    return dst


def write_json_atomic(path: Path, obj: object) -> None:
    """Write ``obj`` as indented UTF-8 JSON atomically (``write_bytes_atomic``).

    Raises ``MoveError`` naming the path when it cannot be written.
    """
    try:
        data = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
    except UnicodeEncodeError:
        # An undecodable file name (lone surrogates): \u escapes keep the JSON valid UTF-8
        # and json.loads gives the exact name back.
        data = (json.dumps(obj, indent=2) + "\n").encode()
    write_bytes_atomic(path, data)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: temp file, fsync, rename, folder fsync.

    Raises ``MoveError`` naming the path when it cannot be written.
    """
    tmp = _temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise MoveError(
            f"cannot write {path}: {exc.strerror or exc}; check space and permissions"
        ) from exc

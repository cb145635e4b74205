"""Finish an uploaded file: archive it to ``done_dir`` with its upload record, or delete it.

The ``<final name>.upload.json`` sidecar is written BEFORE the move, so an archived file
never lacks its record. A crash between the two leaves the file in the inbox and an orphan
sidecar; the next ``finish`` with the same record adopts that name instead of making a
second one. A receipt name that would pass 255 bytes is shortened
(``handlers.names.sidecar_name``); the receipt's ``name`` holds the file's name in the inbox.

The provider's extracted text, when there is one, is written (atomically, UTF-8) as
``<final name>.extracted.txt`` before the receipt; with ``on_success = "delete"`` it is still
written to ``done_dir``, under the name the file would have had there. A text file already at
that name is adopted only when it holds the same text or belongs to this very upload (an
orphan of a crash mid-finish); otherwise the next free name is taken.
"""

from __future__ import annotations

import contextlib
import glob
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from handlers.identity import Identity, ensure_same
from handlers.moves import (
    candidate_names,
    copy_fd_noreplace,
    fsync_dir,
    move_file,
    write_bytes_atomic,
    write_json_atomic,
)
from handlers.names import sidecar_name, split_extension
from providers.errors import DestinationExists, FileChanged, FileVanished, MoveError

__all__ = [
    "EXTRACTED_SUFFIX",
    "RECORD_FIELDS",
    "UPLOAD_SUFFIX",
    "archive_open_file",
    "find_archived",
    "finish",
    "mark_receipt",
    "receipt_path",
    "text_path",
]

UPLOAD_SUFFIX = ".upload.json"
EXTRACTED_SUFFIX = ".extracted.txt"
RECORD_FIELDS = ("provider", "purpose", "file_id", "bytes", "sha256", "uploaded_at", "transport")
_MAX_RACES = 100


def finish(
    src: Path,
    *,
    on_success: Literal["archive", "delete"],
    done_dir: Path,
    record: Mapping[str, object],
    expect: Identity | None = None,
    text: str | None = None,
) -> Path | None:
    """Archive ``src`` into ``done_dir`` (returns the final path) or delete it (returns None).

    ``expect``: the identity of the file the record describes; right before the move (or
    the delete) ``src`` must still name it, unchanged, or ``FileChanged`` is raised and
    nothing is moved, deleted or left behind.

    ``record`` must hold RECORD_FIELDS (plus ``dedupe_of`` for a duplicate, or any extra
    key); the sidecar lists RECORD_FIELDS first, in that order, then the extras, then
    ``name`` (the name the file had in the inbox) unless ``record`` gives one. Archiving
    raises ``FileVanished`` when ``src`` is gone; deleting an already-gone file is a no-op.
    ``text``: the extracted text, written to ``done_dir`` beside the file's final name.
    """
    missing = [key for key in RECORD_FIELDS if key not in record]
    if missing:
        raise ValueError(f"upload record lacks {', '.join(missing)}")
    data = None if text is None else text.encode("utf-8")
    if on_success == "delete":
        _delete(src, done_dir=done_dir, expect=expect, data=data)
        return None
    if on_success != "archive":
        raise ValueError(f"on_success must be 'archive' or 'delete', not {on_success!r}")

    def place(dst: Path) -> Path:
        try:
            ensure_same(src, expect)  # as late as can be: the receipt names these bytes
            return move_file(src, dst)
        except FileNotFoundError as exc:
            raise FileVanished(f"{src} vanished before it could be archived") from exc

    return _archive(src.name, done_dir, _receipt(record, src.name), data, place)


def _delete(src: Path, *, done_dir: Path, expect: Identity | None, data: bytes | None) -> None:
    """Delete ``src`` (its text, if any, first written to ``done_dir``)."""
    written: list[Path] = []
    if data is not None:
        done_dir.mkdir(parents=True, exist_ok=True)
        dst = _destination(done_dir, src.name, None, data)
        written = _write_text(text_path(dst), data)
    try:
        ensure_same(src, expect)
        src.unlink()
    except FileNotFoundError:
        return  # gone already: the upload stands, and so does its text
    except FileChanged:
        _remove(written)
        raise
    except OSError as exc:
        _remove(written)
        raise MoveError(f"cannot delete {src}: {exc.strerror}; check permissions") from exc
    fsync_dir(src.parent)


def _archive(
    name: str,
    done_dir: Path,
    sidecar: Mapping[str, object],
    data: bytes | None,
    place: Callable[[Path], Path],
) -> Path:
    """Write the text (if any) and the receipt for a free name in ``done_dir``, then ``place``
    the file there; everything written is removed again when placing fails."""
    done_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(_MAX_RACES):
        dst = _destination(done_dir, name, sidecar, data)
        written = [] if data is None else _write_text(text_path(dst), data)
        record_path = receipt_path(dst)
        write_json_atomic(record_path, sidecar)
        written.append(record_path)
        try:
            return place(dst)
        except DestinationExists:
            _remove(written)  # a racing writer took the name: try the next one
        except BaseException:
            _remove(written)
            raise
    raise MoveError(f"cannot find a free name for {name!r} in {done_dir}; clean it up")


def archive_open_file(
    fd: int,
    name: str,
    *,
    done_dir: Path,
    record: Mapping[str, object],
    size: int,
    text: str | None = None,
) -> Path:
    """Archive a copy of the open file ``fd`` (its inbox name, ``name``, now holds another
    file) into ``done_dir`` with its receipt (and ``text``, as ``finish``); the final path.

    Only bytes that hash to ``record["sha256"]`` are archived: ``ValueError`` otherwise
    (nothing left behind); ``MoveError`` when the copy cannot be written.
    """
    sha256 = record["sha256"]
    if not isinstance(sha256, str):
        raise ValueError("the upload record has no sha256 to check the open file against")
    data = None if text is None else text.encode("utf-8")

    def place(dst: Path) -> Path:
        return copy_fd_noreplace(fd, dst, size=size, sha256=sha256)

    return _archive(name, done_dir, _receipt(record, name), data, place)


def mark_receipt(receipt: Path, fields: Mapping[str, object]) -> bool:
    """Add to the receipt at ``receipt`` each of ``fields`` it lacks (atomically; an earlier
    value is kept); False when the receipt is gone or unreadable (moved away by hand: nothing
    to mark). Raises ``MoveError`` when it cannot be written.
    """
    try:
        data = json.loads(receipt.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    missing = {key: value for key, value in fields.items() if key not in data}
    if missing:
        write_json_atomic(receipt, data | missing)
    return True


def _write_text(path: Path, data: bytes) -> list[Path]:
    """Write ``data`` at ``path`` unless it holds exactly that already; [path] when written."""
    if _holds(path, data):
        return []
    write_bytes_atomic(path, data)
    return [path]


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def _remove(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _receipt(record: Mapping[str, object], name: str) -> dict[str, object]:
    """RECORD_FIELDS in order, then the extras, then ``name`` unless the record has one."""
    sidecar = {key: record[key] for key in RECORD_FIELDS}
    sidecar.update((key, value) for key, value in record.items() if key not in sidecar)
    sidecar.setdefault("name", name)
    return sidecar


def find_archived(done_dir: Path, name: str, file_id: str) -> Path | None:
    """The file archived in ``done_dir`` from inbox name ``name`` for the upload ``file_id``
    (its receipt names both), or None.

    For a row whose file left its inbox before the ledger recorded where it went (a process
    killed between the move and the ledger write): its receipt must stay findable, so that a
    later deletion of the remote copy marks it. Looks only at names that begin as ``name``
    does (collision and shortened names keep the start of the stem).
    """
    stem, _ = split_extension(name)
    pattern = glob.escape(stem[:16]) + "*"
    for candidate in sorted(done_dir.glob(pattern)):
        if candidate.name.endswith((UPLOAD_SUFFIX, EXTRACTED_SUFFIX)):
            continue
        try:
            receipt = json.loads(receipt_path(candidate).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (
            isinstance(receipt, dict)
            and receipt.get("file_id") == file_id
            and receipt.get("name") == name
        ):
            return candidate
    return None


def receipt_path(archived: Path) -> Path:
    """Where the receipt of the file archived at ``archived`` is (beside it)."""
    return archived.with_name(sidecar_name(archived.name, UPLOAD_SUFFIX))


def text_path(archived: Path) -> Path:
    """Where the extracted text of the file archived at ``archived`` is (beside it)."""
    return archived.with_name(sidecar_name(archived.name, EXTRACTED_SUFFIX))


def _destination(
    done_dir: Path, name: str, sidecar: Mapping[str, object] | None, data: bytes | None
) -> Path:
    """The first candidate name free for this file, its receipt (an orphan of this very
    upload may be adopted; with ``sidecar`` None any receipt takes the name) and its text."""
    for candidate in candidate_names(name):
        path = done_dir / candidate
        record_path = receipt_path(path)
        reason_path = done_dir / sidecar_name(candidate, ".reason.json")
        if path.is_symlink() or path.exists() or reason_path.exists():
            continue
        ours = sidecar is not None and _same_upload(record_path, sidecar)
        if record_path.exists() and not ours:
            continue
        text = text_path(path)
        if ours or not text.exists() or (data is not None and _holds(text, data)):
            return path
    raise MoveError(f"no free name for {name!r} in {done_dir}; clean it up")


def _same_upload(record_path: Path, sidecar: Mapping[str, object]) -> bool:
    """True for an orphan sidecar of this very upload (left by a crash mid-finish)."""
    try:
        old = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    keys = ("provider", "file_id", "sha256")
    return isinstance(old, dict) and all(old.get(k) == sidecar[k] for k in keys)

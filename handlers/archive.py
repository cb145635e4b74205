"""Finish an uploaded file: archive it to ``done_dir`` with its upload record, or delete it.

The ``<final name>.upload.json`` sidecar is written BEFORE the move, so an archived file
never lacks its record. A crash between the two leaves the file in the inbox and an orphan
sidecar; the next ``finish`` with the same record adopts that name instead of making a
second one. A receipt name that would pass 255 bytes is shortened
(``handlers.names.sidecar_name``); the receipt's ``name`` holds the file's name in the inbox.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from handlers.identity import Identity, ensure_same
from handlers.moves import (
    candidate_names,
    copy_fd_noreplace,
    fsync_dir,
    move_file,
    write_json_atomic,
)
from handlers.names import sidecar_name
from providers.errors import DestinationExists, FileChanged, FileVanished, MoveError

__all__ = ["RECORD_FIELDS", "UPLOAD_SUFFIX", "archive_open_file", "finish", "receipt_path"]

UPLOAD_SUFFIX = ".upload.json"
RECORD_FIELDS = ("provider", "purpose", "file_id", "bytes", "sha256", "uploaded_at", "transport")
_MAX_RACES = 100


def finish(
    src: Path,
    *,
    on_success: Literal["archive", "delete"],
    done_dir: Path,
    record: Mapping[str, object],
    expect: Identity | None = None,
) -> Path | None:
    """Archive ``src`` into ``done_dir`` (returns the final path) or delete it (returns None).

    ``expect``: the identity of the file the record describes; right before the move (or
    the delete) ``src`` must still name it, unchanged, or ``FileChanged`` is raised and
    nothing is moved, deleted or left behind.

    ``record`` must hold RECORD_FIELDS (plus ``dedupe_of`` for a duplicate, or any extra
    key); the sidecar lists RECORD_FIELDS first, in that order, then the extras, then
    ``name`` (the name the file had in the inbox) unless ``record`` gives one. Archiving
    raises ``FileVanished`` when ``src`` is gone; deleting an already-gone file is a no-op.
    """
    missing = [key for key in RECORD_FIELDS if key not in record]
    if missing:
        raise ValueError(f"upload record lacks {', '.join(missing)}")
    if on_success == "delete":
        try:
            ensure_same(src, expect)
            src.unlink()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MoveError(f"cannot delete {src}: {exc.strerror}; check permissions") from exc
        fsync_dir(src.parent)
        return None
    if on_success != "archive":
        raise ValueError(f"on_success must be 'archive' or 'delete', not {on_success!r}")
    sidecar = _receipt(record, src.name)
    done_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(_MAX_RACES):
        dst = _destination(done_dir, src.name, sidecar)
        record_path = receipt_path(dst)
        write_json_atomic(record_path, sidecar)
        try:
            ensure_same(src, expect)  # as late as can be: the receipt names these bytes
            return move_file(src, dst)
        except DestinationExists:
            record_path.unlink()  # a racing writer took the name: try the next one
        except FileNotFoundError as exc:
            record_path.unlink()
            raise FileVanished(f"{src} vanished before it could be archived") from exc
        except FileChanged:
            record_path.unlink()
            raise
    raise MoveError(f"cannot find a free name for {src.name!r} in {done_dir}; clean it up")


def archive_open_file(
    fd: int, name: str, *, done_dir: Path, record: Mapping[str, object], size: int
) -> Path:
    """Archive a copy of the open file ``fd`` (its inbox name, ``name``, now holds another
    file) into ``done_dir`` with its receipt; returns the final path.

    Only bytes that hash to ``record["sha256"]`` are archived: ``ValueError`` otherwise
    (nothing left behind); ``MoveError`` when the copy cannot be written.
    """
    sha256 = record["sha256"]
    if not isinstance(sha256, str):
        raise ValueError("the upload record has no sha256 to check the open file against")
    sidecar = _receipt(record, name)
    done_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(_MAX_RACES):
        dst = _destination(done_dir, name, sidecar)
        record_path = receipt_path(dst)
        write_json_atomic(record_path, sidecar)
        try:
            return copy_fd_noreplace(fd, dst, size=size, sha256=sha256)
        except DestinationExists:
            record_path.unlink()  # a racing writer took the name: try the next one
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                record_path.unlink()
            raise
    raise MoveError(f"cannot find a free name for {name!r} in {done_dir}; clean it up")


def _receipt(record: Mapping[str, object], name: str) -> dict[str, object]:
    """RECORD_FIELDS in order, then the extras, then ``name`` unless the record has one."""
    sidecar = {key: record[key] for key in RECORD_FIELDS}
    sidecar.update((key, value) for key, value in record.items() if key not in sidecar)
    sidecar.setdefault("name", name)
    return sidecar


def receipt_path(archived: Path) -> Path:
    """Where the receipt of the file archived at ``archived`` is (beside it)."""
    return archived.with_name(sidecar_name(archived.name, UPLOAD_SUFFIX))


def _destination(done_dir: Path, name: str, sidecar: Mapping[str, object]) -> Path:
    for candidate in candidate_names(name):
        path = done_dir / candidate
        record_path = receipt_path(path)
        reason_path = done_dir / sidecar_name(candidate, ".reason.json")
        if path.is_symlink() or path.exists() or reason_path.exists():
            continue
        if not record_path.exists() or _same_upload(record_path, sidecar):
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

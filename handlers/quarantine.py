"""Quarantine: move a refused file aside with its reason beside it; requeue it back later.

The sidecar ``<final name>.reason.json`` is written BEFORE the move, so a quarantined file
never lacks its reason; a crash between the two leaves only an orphan sidecar (and the file
still in the inbox, where it is processed again). The bytes are moved, never rewritten.
A sidecar name that would pass 255 bytes is shortened (``handlers.names.sidecar_name``);
the sidecar's ``name`` holds the file's name in the inbox, which ``requeue`` restores.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

from handlers.identity import Identity, ensure_same
from handlers.moves import move_file, move_unique, unique_destination, write_json_atomic
from handlers.names import sidecar_name
from providers.errors import DestinationExists, FileVanished, MoveError, Reason

__all__ = ["REASON_SUFFIX", "iso_utc", "quarantine", "reason_sidecar", "requeue"]

REASON_SUFFIX = ".reason.json"
_MAX_RACES = 100


def iso_utc(now: float) -> str:
    """Unix seconds as ISO-8601 UTC with milliseconds, e.g. ``2026-11-25T20:43:25.120Z``."""
    return (
        datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def reason_sidecar(qfile: Path) -> Path:
    """Where the ``.reason.json`` of the quarantined file ``qfile`` is (beside it)."""
    return qfile.with_name(sidecar_name(qfile.name, REASON_SUFFIX))


def quarantine(
    src: Path,
    qdir: Path,
    *,
    reason: Reason,
    detail: str,
    inbox: str,
    size: int | None,
    sha256: str | None,
    now: float,
    expect: Identity | None = None,
) -> Path:
    """Move ``src`` into ``qdir`` (never overwriting) and write its ``.reason.json``.

    ``expect``: the identity of the file the reason was found on; right before the move
    ``src`` must still name it, unchanged, or ``FileChanged`` is raised and nothing is moved.

    Sidecar: ``{reason, detail, inbox, name, size, sha256?, at}`` — ``name`` is the name
    the file had in the inbox (``requeue`` restores it), ``sha256`` only when known.
    Raises ``FileVanished`` when ``src`` is gone, ``MoveError`` when it cannot be moved.
    """
    qdir.mkdir(parents=True, exist_ok=True)
    sidecar: dict[str, object] = {
        "reason": reason,
        "detail": detail,
        "inbox": inbox,
        "name": src.name,
        "size": size,
    }
    if sha256 is not None:
        sidecar["sha256"] = sha256
    sidecar["at"] = iso_utc(now)
    for _ in range(_MAX_RACES):
        dst = unique_destination(qdir, src.name)
        reason_path = reason_sidecar(dst)
        write_json_atomic(reason_path, sidecar)
        try:
            ensure_same(src, expect)
            return move_file(src, dst)
        except DestinationExists:
            reason_path.unlink()  # someone took the name meanwhile: try the next one
        except FileNotFoundError as exc:
            reason_path.unlink()
            raise FileVanished(f"{src} vanished before it could be quarantined") from exc
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                reason_path.unlink()
            raise
    raise MoveError(f"cannot find a free name for {src.name!r} in {qdir}; clean it up")


def requeue(qfile: Path, inbox_dir: Path) -> Path:
    """Move a quarantined file back into ``inbox_dir`` under its original name; drop its sidecar.

    The original name comes from the sidecar (the file may carry a ``~N`` suffix); a name
    already taken in the inbox gets a ``~N`` suffix. Returns the file's new path.
    """
    if qfile.name.endswith(REASON_SUFFIX):
        raise MoveError(f"{qfile} is a reason sidecar; requeue the file it describes instead")
    reason_path = reason_sidecar(qfile)
    name = qfile.name
    try:
        recorded = json.loads(reason_path.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        recorded = None  # no or damaged sidecar: keep the quarantine name
    if (
        isinstance(recorded, str)
        and recorded
        and "/" not in recorded
        and recorded not in {".", ".."}
    ):
        name = recorded
    try:
        moved = move_unique(qfile, inbox_dir, name)
    except FileNotFoundError as exc:
        raise MoveError(f"{qfile} does not exist; list the quarantine folder for its name") from exc
    with contextlib.suppress(FileNotFoundError):
        reason_path.unlink()
    return moved

"""Start-up cleanup of the temp files a killed sidecar write or cross-filesystem move leaves.

``handlers.moves`` writes a sidecar (``write_json_atomic``) and copies a file across
filesystems (``move_file``) to ``.<name>.inboxd-<host id>-<8 hex digits>.tmp`` in the target
folder, then renames it into place (a temp name over 255 bytes has its middle shortened by
``handlers.names.temp_name``, keeping the leading dot and the ``.inboxd-<host>-<hex>.tmp`` end
this pattern matches); a SIGKILL in between leaves that temp file behind. Its source is
still whole (a sidecar is written again, a moved file is still in the inbox), so it is garbage.
Only this host's are removed: another host of a fleet may be writing its own in the same
shared folder right now. Before host ids, temp names were ``.<name>.inboxd-<8 hex>.tmp``
(``legacy``): a single host (no shared store) removes those too.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["is_temp_leftover", "remove_temp_leftovers"]

logger = logging.getLogger(__name__)

_LEGACY_NAME = re.compile(r"\..+\.inboxd-[0-9a-f]{8}\.tmp", re.DOTALL)


def _host_pattern(host: str) -> re.Pattern[str]:
    return re.compile(rf"\..+\.inboxd-{re.escape(host)}-[0-9a-f]{{8}}\.tmp", re.DOTALL)


def is_temp_leftover(name: str, *, host: str, legacy: bool) -> bool:
    """True for a name ``handlers.moves`` gives its temp files on ``host`` (with ``legacy``:
    also the unscoped names of the versions before host ids)."""
    if _host_pattern(host).fullmatch(name) is not None:
        return True
    return legacy and _LEGACY_NAME.fullmatch(name) is not None


def remove_temp_leftovers(folders: Iterable[Path], *, host: str, legacy: bool) -> int:
    """Remove ``host``'s temp leftovers (``legacy``: the unscoped ones too) directly inside
    each folder (never a folder); how many.

    A folder that is missing is skipped; one that cannot be listed, or a leftover that cannot
    be removed, is a warning (it is harmless, only untidy).
    """
    removed = 0
    for folder in dict.fromkeys(folders):  # two inboxes may share a folder
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("cannot list %s for leftover temp files: %s", folder, exc.strerror)
            continue
        for entry in entries:
            ours = is_temp_leftover(entry.name, host=host, legacy=legacy)
            if not ours or entry.is_dir(follow_symlinks=False):
                continue
            try:
                Path(entry.path).unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("cannot remove leftover temp file %s: %s", entry.path, exc.strerror)
                continue
            removed += 1
    return removed

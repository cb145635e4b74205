"""Start-up cleanup of the temp files a killed sidecar write or cross-filesystem move leaves.

``handlers.moves`` writes a sidecar (``write_json_atomic``) and copies a file across
filesystems (``move_file``) to ``.<name>.inboxd-<8 hex digits>.tmp`` in the target folder,
then renames it into place (a temp name over 255 bytes has its middle shortened by
``handlers.names.temp_name``, keeping the leading dot and the ``.inboxd-<hex>.tmp`` end this
pattern matches); a SIGKILL in between leaves that temp file behind. Its source is
still whole (a sidecar is written again, a moved file is still in the inbox), so it is garbage.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["is_temp_leftover", "remove_temp_leftovers"]

logger = logging.getLogger(__name__)

_TEMP_NAME = re.compile(r"\..+\.inboxd-[0-9a-f]{8}\.tmp", re.DOTALL)


def is_temp_leftover(name: str) -> bool:
    """True for a name ``handlers.moves`` gives its temp files."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_temp_leftovers(folders: Iterable[Path]) -> int:
    """Remove the temp leftovers directly inside each folder (never a folder); how many.

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
            if not is_temp_leftover(entry.name) or entry.is_dir(follow_symlinks=False):
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

"""The state file must stay the file the daemon opened (design.md: a fault of the daemon itself).

A daemon writing on to a deleted or replaced ``inboxd.sqlite3`` would lose its dedupe history
at the next start and upload content twice. Every ``interval`` seconds the path's device and
inode are compared with those of the file opened; a difference is a StateError that stops
the process (non-zero exit) so that systemd restarts it on the file now at that path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import anyio

from providers.errors import StateError

__all__ = ["file_identity", "identity_problem", "verify_state_file", "watch_state_file"]

logger = logging.getLogger(__name__)

Identity = tuple[int, int]


def file_identity(path: Path) -> Identity:
    """(st_dev, st_ino) of what ``path`` names now (OSError when nothing)."""
    st = path.stat()
    return st.st_dev, st.st_ino


def identity_problem(opened: Identity, now: Identity | None) -> str | None:
    """What happened to the state file opened as ``opened`` (dev, ino), if anything."""
    if now is None:
        return "was deleted"
    if now != opened:
        return "was replaced"
    return None


def verify_state_file(path: Path, opened: Identity) -> None:
    """Raise StateError when ``path`` no longer names the file opened as ``opened``."""
    try:
        now: Identity | None = file_identity(path)
    except FileNotFoundError:
        now = None
    except OSError as exc:
        raise StateError(
            f"state file {path} cannot be checked ({exc.strerror}); exiting: "
            "check the disk holding state_dir"
        ) from exc
    problem = identity_problem(opened, now)
    if problem is not None:
        raise StateError(
            f"state file {path} {problem} while inboxd ran; exiting so that it restarts on "
            "the file now at that path (a deleted file's history is lost)"
        )


async def watch_state_file(
    path: Path, opened: Identity, *, interval: float, on_lost: Callable[[str], None]
) -> None:
    """Check every ``interval`` s; on a loss, tell ``on_lost``, log an error and raise it."""
    while True:
        await anyio.sleep(interval)
        try:
            verify_state_file(path, opened)
        except StateError as exc:
            on_lost(str(exc))
            logger.error("%s", exc)
            raise

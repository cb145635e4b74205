"""Is the file at a path still the one that was validated, hashed and uploaded?

A snapshot (``Identity``) is taken by ``fstat`` on the open fd at validation. Before a file is
archived, deleted or quarantined, ``lstat`` of its path is compared with it: the same
(st_dev, st_ino) with the same size, mtime_ns and ctime_ns is the same, unchanged file.
Otherwise the file was replaced (another inode, or a symlink, at the name: an editor's atomic
save) or changed (the same inode written to, grown, or its metadata changed since), and what
the path names now must not go out under the old file's receipt or reason. ``judge`` is pure.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, NamedTuple

from providers.errors import FileChanged

__all__ = ["Identity", "Verdict", "ensure_same", "judge"]

Verdict = Literal["same", "gone", "replaced", "changed"]


class Identity(NamedTuple):
    """What ``fstat`` said of a file when it was checked."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        """The identity in a stat result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def judge(expected: Identity, now: Identity | None) -> Verdict:
    """``now`` (an lstat of the path, None when nothing is there) against ``expected``."""
    if now is None:
        return "gone"
    if (now.dev, now.ino) != (expected.dev, expected.ino):
        return "replaced"
    return "same" if now == expected else "changed"


def ensure_same(path: Path, expected: Identity | None) -> None:
    """Raise unless ``path`` still names the ``expected`` file, unchanged (None: no check).

    ``FileNotFoundError`` when nothing is at the path, ``FileChanged`` when something else is.
    """
    if expected is None:
        return
    try:
        now: Identity | None = Identity.of(path.lstat())
    except FileNotFoundError:
        now = None
    verdict = judge(expected, now)
    if verdict == "gone":
        raise FileNotFoundError(2, "No such file or directory", str(path))
    if verdict == "replaced":
        raise FileChanged(verdict, f"{path} was replaced by another file since it was checked")
    if verdict == "changed":
        raise FileChanged(verdict, f"{path} was written to since it was checked")

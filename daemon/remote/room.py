"""Room on an account for the next upload (pure: plain values in, a verdict out).

With ``max_files`` or ``max_bytes`` set, an upload is sent only when the account's known
usage, the uploads being sent and the upload itself stay within both limits, so the account
never holds more than the limits, not even for a moment. Otherwise the upload waits for a
retention pass that makes room. When a pass that started after the upload began waiting
could not bring the account down to the limits less the room it was asked for (``short``:
files inboxd did not upload, or may not delete yet, fill it), the upload waits for one in
flight to end (the next pass may delete that one once it is done); with none in flight it
goes: the provider's quota answer then parks the file, as without retention. A pass that
reached its target but freed nothing (the room was taken meanwhile, or the known usage
counted a copy twice) is followed by another once an upload in flight ends, or at once when
none is. So nothing waits forever, and nothing waits on a timer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from daemon.remote.plan import RetentionLimits

__all__ = ["SLACK", "PassOutcome", "Usage", "Verdict", "admit", "limited", "pass_room"]

Verdict = Literal["send", "pass", "settle", "send_anyway"]

# A pass that makes room for uploads frees at least this share of each limit, so a busy
# account at its limit is listed once per ~5 % of max_files uploads, not once per upload.
SLACK = 0.05


@dataclass(frozen=True)
class PassOutcome:
    """What a pass did for the uploads waiting: ``freed`` some room, fell ``short`` of its
    target (the limits less the room asked for)."""

    freed: bool
    short: bool


@dataclass(frozen=True)
class Usage:
    """A count of files and their bytes on one account (or reserved, or waiting)."""

    files: int = 0
    bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.files + other.files, self.bytes + other.bytes)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.files - other.files, self.bytes - other.bytes)


def limited(limits: RetentionLimits) -> bool:
    """True when a count or size limit is set (an age limit alone needs no room)."""
    return limits.max_files is not None or limits.max_bytes is not None


def admit(
    known: Usage | None,
    sending: Usage,
    wanted: Usage,
    limits: RetentionLimits,
    *,
    passes: bool,
    fresh: PassOutcome | None,
) -> Verdict:
    """Whether an upload of ``wanted`` may be sent now: ``send``; ``pass``: wait for a pass
    that makes room; ``settle``: wait for an upload in flight to end, then for a pass;
    ``send_anyway``: no pass can make room.

    ``known``: the account as the last pass listed it plus what was stored since (None: no
    pass has counted it yet); ``sending``: uploads admitted and not finished; ``passes``:
    retention passes run in this process; ``fresh``: None until a pass that started after
    the upload began waiting (or last saw an upload end) has ended, then what it did.
    """
    if not limited(limits):
        return "send"
    if known is not None:
        total = known + sending + wanted
        files_ok = limits.max_files is None or total.files <= limits.max_files
        bytes_ok = limits.max_bytes is None or total.bytes <= limits.max_bytes
        if files_ok and bytes_ok:
            return "send"
    if not passes:
        return "send_anyway"
    if fresh is None or fresh.freed:
        return "pass"
    if sending.files > 0:
        return "settle"
    return "send_anyway" if fresh.short else "pass"


def pass_room(wanted: Usage, limits: RetentionLimits) -> tuple[int, int]:
    """The room (files, bytes) a pass leaves under the limits: none when no upload wants
    any, else what the uploads being sent or waiting need, and at least ``SLACK`` of each
    limit (the account then fills again for a while before the next pass)."""
    if wanted.files <= 0 and wanted.bytes <= 0:
        return (0, 0)
    files = wanted.files
    nbytes = wanted.bytes
    if limits.max_files is not None:
        files = max(files, math.ceil(limits.max_files * SLACK))
    if limits.max_bytes is not None:
        nbytes = max(nbytes, math.ceil(limits.max_bytes * SLACK))
    return (files, nbytes)

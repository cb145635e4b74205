"""When a file has stopped changing: the settle rule, as a small pure tracker.

A file is ready when two observations ``settle_seconds`` apart (or more) saw the same size and
mtime_ns. With ``settle_seconds == 0`` the first observation is enough: a writer that uses
write-then-rename is picked up at once. Pure: the caller passes ``now`` (any monotonic clock)
and does the ``stat`` itself; one small record and one heap entry per tracked file.

The loop that drives it::

    if tracker.observe(key, st.st_size, st.st_mtime_ns, now):   # watcher event or rescan
        hand_over(key)                                          # tracker forgot it
    ...
    sleep until tracker.next_wakeup()
    for key in tracker.due(now):          # each must be observed again, or forgotten
        stat it; observe(...) or forget(key) when it vanished
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

__all__ = ["SettleTracker"]

K = TypeVar("K", bound=Hashable)


class _Seen(NamedTuple):
    size: int
    mtime_ns: int
    since: float
    seq: int


class SettleTracker(Generic[K]):
    """Tracks files still settling; ``observe`` says when one is ready and then forgets it."""

    def __init__(self, settle_seconds: float) -> None:
        if settle_seconds < 0:
            raise ValueError(f"settle_seconds must be >= 0, got {settle_seconds}")
        self.settle_seconds = settle_seconds
        self._seen: dict[K, _Seen] = {}
        # (deadline, seq, key); an entry is stale when the record's seq no longer matches.
        # seq is unique, so keys are never compared and need not be orderable.
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def observe(self, key: K, size: int, mtime_ns: int, now: float) -> bool:
        """Record what ``stat`` saw; True (and the key is forgotten) when the file is ready."""
        if self.settle_seconds == 0:
            self._seen.pop(key, None)
            return True
        seen = self._seen.get(key)
        if seen is not None and seen.size == size and seen.mtime_ns == mtime_ns:
            if now - seen.since >= self.settle_seconds:
                del self._seen[key]
                return True
            if seen.seq >= 0:
                return False
            # It was handed out by due() too early (a clock step): schedule it again.
            since = seen.since
        else:
            since = now
        self._seq += 1
        self._seen[key] = _Seen(size, mtime_ns, since, self._seq)
        heapq.heappush(self._heap, (since + self.settle_seconds, self._seq, key))
        self._compact()
        return False

    def forget(self, key: K) -> None:
        """Stop tracking ``key`` (it vanished, or was taken some other way)."""
        self._seen.pop(key, None)
        self._compact()

    def next_wakeup(self) -> float | None:
        """The earliest ``now`` at which some tracked file could be ready; None when idle."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[K]:
        """Keys whose window has passed: ``stat`` each again, then ``observe`` or ``forget`` it."""
        keys: list[K] = []
        while self._heap and self._heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._heap)
            seen = self._seen.get(key)
            if seen is not None and seen.seq == seq:
                # seq -1: no heap entry left; a later observe() re-schedules if needed.
                self._seen[key] = seen._replace(seq=-1)
                keys.append(key)
        return keys

    def _drop_stale(self) -> None:
        while self._heap:
            _, seq, key = self._heap[0]
            seen = self._seen.get(key)
            if seen is not None and seen.seq == seq:
                return
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        # Files that keep changing leave stale heap entries; rebuild when they dominate.
        if len(self._heap) > 2 * len(self._seen) + 64:
            self._heap = [
                (seen.since + self.settle_seconds, seen.seq, key)
                for key, seen in self._seen.items()
                if seen.seq >= 0
            ]
            heapq.heapify(self._heap)

"""Intake: settle the watcher's candidates and hand ready ones out through a bounded stream.

One small record per path whatever the number of sightings (the watcher may offer the same
file many times). A tracked file is ``lstat``-ed again exactly when its settle window ends
(the loop sleeps until the tracker's next wake-up, never polls); a vanished file is forgotten.
Ready files go to ``receive``, a memory object stream of ``capacity`` items: when it is full
they wait here as one record each, so 100,000 waiting files cost 100,000 small records and
nothing more.

A key handed out is *in flight*: further sightings are ignored until the consumer calls
``done(key)``. Handed-out candidates carry the size and mtime seen at settle time (possibly a
little stale: the file may change at any moment); the consumer compares them with ``fstat`` of
its own fd and, when they differ, calls ``done(key)`` then ``offer()`` to settle it again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from daemon.runtime.watcher import Candidate
from handlers.settle import SettleTracker

__all__ = ["Intake", "StatLike"]

logger = logging.getLogger(__name__)

# An lstat costs a microsecond or two: a few dozen in the event loop cost less than one hop to a
# worker thread, so only bigger batches (a burst settling together) go to a thread.
_INLINE_STATS = 64


class StatLike(Protocol):
    """The two fields of ``os.stat_result`` the settle rule reads."""

    @property
    def st_size(self) -> int: ...

    @property
    def st_mtime_ns(self) -> int: ...


def _lstat(path: Path) -> StatLike:
    return path.lstat()


class Intake:
    """Settles candidates and hands ready ones out, at most ``capacity`` queued at a time."""

    def __init__(
        self,
        *,
        settle_seconds: float,
        capacity: int = 1000,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        stat: Callable[[Path], StatLike] = _lstat,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._tracker: SettleTracker[str] = SettleTracker(settle_seconds)
        self._clock = clock
        self._sleep = sleep
        self._stat = stat
        self._capacity = capacity
        # The latest sighting of each tracked key (the tracker keeps only size/mtime/time).
        self._pending: dict[str, Candidate] = {}
        # Settled, waiting for room in the stream; insertion order = hand-out order.
        self._ready: dict[str, Candidate] = {}
        self._inflight: set[str] = set()
        self._ready_event = anyio.Event()
        self._nap: anyio.CancelScope | None = None
        self._nap_until = math.inf
        send, receive = anyio.create_memory_object_stream[Candidate](capacity)
        self._send = send
        #: Ready candidates, in the order they settled; at most ``capacity`` buffered.
        self.receive: MemoryObjectReceiveStream[Candidate] = receive

    @property
    def queue_depth(self) -> int:
        """Files seen but not handed out yet: settling plus settled-and-waiting."""
        return len(self._tracker) + len(self._ready)

    @property
    def in_flight(self) -> int:
        """Files handed out whose ``done`` has not been called yet."""
        return len(self._inflight)

    @property
    def capacity(self) -> int:
        return self._capacity

    async def offer(self, candidate: Candidate) -> None:
        """Take one sighting (the watcher's sink); never blocks."""
        self.offer_nowait(candidate)

    def offer_nowait(self, candidate: Candidate) -> None:
        """Take one sighting: track it, or mark it ready when it has settled."""
        key = candidate.key
        if key in self._inflight:
            return
        queued = self._ready.get(key)
        if queued is not None:
            if (queued.size, queued.mtime_ns) == (candidate.size, candidate.mtime_ns):
                return
            del self._ready[key]  # changed after it settled: settle it again
        self._observe(candidate, self._clock())

    def busy(self, key: str) -> bool:
        """Whether ``key`` is handed out now (a worker holds the file)."""
        return key in self._inflight

    def done(self, key: str) -> None:
        """The consumer has finished with ``key``: later sightings are tracked again."""
        self._inflight.discard(key)

    def close(self) -> None:
        """Close both ends of the stream (idempotent): an intake that never ran leaks nothing."""
        self._send.close()
        self.receive.close()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Settle and hand out until cancelled; closes ``receive``'s sending side on exit."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._hand_out)
                task_status.started()
                while True:
                    await self._nap_until_due()
                    await self._check_due()
        finally:
            self._send.close()

    async def _nap_until_due(self) -> None:
        wake = self._tracker.next_wakeup()
        delay = math.inf if wake is None else wake - self._clock()
        if delay <= 0:
            return
        # offer_nowait cancels this nap when a file needs checking sooner.
        self._nap_until = math.inf if wake is None else wake
        with anyio.CancelScope() as self._nap:
            if wake is None:
                await anyio.sleep_forever()
            else:
                await self._sleep(delay)
        self._nap = None
        self._nap_until = math.inf

    async def _check_due(self) -> None:
        due = self._tracker.due(self._clock())
        if not due:
            return
        paths = [self._pending[key].path for key in due]
        if len(paths) <= _INLINE_STATS:
            stats = _stat_all(self._stat, paths)
        else:
            stats = await anyio.to_thread.run_sync(_stat_all, self._stat, paths)
        now = self._clock()
        for key, st in zip(due, stats, strict=True):
            seen = self._pending.get(key)
            if seen is None or key not in self._tracker:
                continue  # handled by an offer while we were stat-ing
            if st is None:
                self._tracker.forget(key)
                del self._pending[key]
                continue
            fresh = Candidate(seen.inbox, seen.path, seen.relpath, st.st_size, st.st_mtime_ns)
            self._observe(fresh, now)

    def _observe(self, candidate: Candidate, now: float) -> None:
        key = candidate.key
        if self._tracker.observe(key, candidate.size, candidate.mtime_ns, now):
            self._pending.pop(key, None)
            self._ready[key] = candidate
            self._ready_event.set()
            return
        self._pending[key] = candidate
        if self._nap is not None:
            wake = self._tracker.next_wakeup()
            if wake is not None and wake < self._nap_until:
                self._nap.cancel()

    async def _hand_out(self) -> None:
        while True:
            while not self._ready:
                self._ready_event = anyio.Event()
                await self._ready_event.wait()
            key = next(iter(self._ready))
            # Left in _ready while send() waits for room, so it is counted and can be
            # superseded; once sent, the consumer owns the path and every other record goes.
            await self._send.send(self._ready[key])
            self._ready.pop(key, None)
            self._tracker.forget(key)
            self._pending.pop(key, None)
            self._inflight.add(key)


def _stat_all(stat: Callable[[Path], StatLike], paths: Sequence[Path]) -> list[StatLike | None]:
    """``stat`` each path in a worker thread; None for one that vanished or cannot be seen."""
    out: list[StatLike | None] = []
    for path in paths:
        try:
            out.append(stat(path))
        except OSError:
            out.append(None)
    return out

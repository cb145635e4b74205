"""The in-flight bytes budget: the total size of files being uploaded at once is bounded."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["ByteBudget"]


class ByteBudget:
    """First come, first served: a waiter is never overtaken by a smaller, later one.

    A file larger than the whole budget is admitted alone (it holds the whole budget).
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("the byte budget must be positive")
        self.limit = limit
        self.in_use = 0
        self._waiters: deque[tuple[int, anyio.Event]] = deque()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes of the budget for the duration of the block."""
        need = min(max(size, 0), self.limit)
        if self._waiters or self.in_use + need > self.limit:
            event = anyio.Event()
            entry = (need, event)
            self._waiters.append(entry)
            try:
                await event.wait()
            except BaseException:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                else:  # granted while being cancelled: give it back
                    self._release(need)
                raise
        else:
            self.in_use += need
        try:
            yield
        finally:
            self._release(need)

    def _release(self, need: int) -> None:
        self.in_use -= need
        while self._waiters and self.in_use + self._waiters[0][0] <= self.limit:
            granted, event = self._waiters.popleft()
            self.in_use += granted
            event.set()

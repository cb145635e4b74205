"""Run a coroutine function at start and then every so often, until cancelled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

__all__ = ["every"]


async def every(interval: float, fn: Callable[[], Awaitable[object]]) -> None:
    """``fn()`` now, then ``interval`` seconds after each call ends (so calls never overlap)."""
    while True:
        await fn()
        await anyio.sleep(interval)

"""Which stage of a file's path an unexpected error came from.

An error that escapes a tagged block or method is annotated with the innermost stage it
crossed (an attribute, read back with ``stage_of``); the exception itself is re-raised
unchanged, so every ``except`` on the way up still sees its own type. The daemon's worker
reads the stage to count and report the failure (``inboxd_file_errors_total{stage}``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

__all__ = ["stage", "stage_of", "staged"]

P = ParamSpec("P")
T = TypeVar("T")

_ATTR = "inboxd_stage"


def stage_of(exc: BaseException) -> str | None:
    """The stage ``exc`` was raised in, if it crossed a tagged block."""
    value = getattr(exc, _ATTR, None)
    return value if isinstance(value, str) else None


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Tag an ``Exception`` leaving this block with ``name`` (unless an inner stage did)."""
    try:
        yield
    except Exception as exc:
        if stage_of(exc) is None:
            setattr(exc, _ATTR, name)
        raise


def staged(name: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorate an async function: errors leaving it are tagged with stage ``name``."""

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            with stage(name):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate

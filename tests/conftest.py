"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests._tools import need_tool as _need_tool


@pytest.fixture
def anyio_backend() -> str:
    """Every async test runs on asyncio: the daemon's one supported backend."""
    return "asyncio"


@pytest.fixture
def need_tool() -> Callable[..., str]:
    """A finder for system tools: fails in CI when one is missing, skips elsewhere."""
    return _need_tool

"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Every async test runs on asyncio: the daemon's one supported backend."""
    return "asyncio"

"""Shared pytest fixtures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.ops.logs import RedactingHandler
from providers.redaction import clear_secrets
from tests._tools import need_tool as _need_tool


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a test did to logging through ``daemon.ops.logs.setup_logging`` (its handler
    on the root logger, the root's level, quieter library loggers), so a later test's
    ``caplog`` sees records at the levels it expects. The daemon itself leaves logging alone;
    the tests that configure it as ``inboxd run`` does (the CLI in-process, ``logging_to``,
    ``setup_logging``, the demo) are spread over many modules, hence autouse."""
    root = logging.getLogger()
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_level, handlers = root.level, set(root.handlers)
    yield
    for handler in root.handlers[:]:
        if isinstance(handler, RedactingHandler) and handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(root_level)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Keys one test registered for redaction (a test key like "k1") never blank out another
    test's output: the process-wide registry (``providers.redaction``) is emptied after each."""
    yield
    clear_secrets()


@pytest.fixture
def anyio_backend() -> str:
    """Every async test runs on asyncio: the daemon's one supported backend."""
    return "asyncio"


@pytest.fixture
def need_tool() -> Callable[..., str]:
    """A finder for system tools: fails in CI when one is missing, skips elsewhere."""
    return _need_tool


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """An empty inbox folder, ``tmp_path/in`` (the config tests' folder)."""
    path = tmp_path / "in"
    path.mkdir()
    return path


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    """Write a config file's text to ``tmp_path/config.toml``; its path."""

    def _write(text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(text)
        return path

    return _write

"""The inboxd process: CLI, settings, composition root, watcher, state file, operations."""

from __future__ import annotations

from daemon.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]

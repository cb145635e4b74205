"""The inboxd process: CLI, settings, composition root, watcher, state file, operations."""

from __future__ import annotations

from daemon.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]

"""The inboxd process: CLI, settings, composition root, watcher, state file, operations.

Subpackages: ``config`` (settings, keys, checks, reload plan), ``state`` (the SQLite store),
``runtime`` (the running daemon: wiring, workers, intake, watcher, reload), ``ops`` (HTTP,
metrics, notify, logs); ``cli``, ``commands`` and ``demo`` are the command line. This ``__init__``
imports nothing, so importing any submodule does not import the others.
"""

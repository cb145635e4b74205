"""The running daemon: the ``Daemon`` (``daemon``), its workers and work state (``workers``), the
watcher and intake, reloads, the wiring of clients and dispatchers, and the periodic chores.

May import ``daemon.config``, ``daemon.state``, ``daemon.ops``, ``handlers`` and ``providers``.
"""

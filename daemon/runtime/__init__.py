"""The running daemon: ``wiring.build`` makes one config generation's ``Components`` (clients,
dispatcher, pipeline, ...); the ``Daemon`` (``daemon``) runs on them and swaps them whole on a
reload (``reloading``); ``Workers`` (``workers``) own the intake, the watcher and the workers;
``main`` is ``inboxd run``'s event loop; ``status``, ``periodic``, ``remote_usage``,
``vanished`` are the chores.

May import ``daemon.config``, ``daemon.state``, ``daemon.ops``, ``handlers`` and ``providers``;
never ``daemon.cli``, ``daemon.commands`` or ``daemon.demo``.
"""

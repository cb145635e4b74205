"""The state file: the SQLite store (``store``), its group commit, SQL and schema migrations, the
ledger's retention, and the watch that notices the file being deleted or replaced (``watch``).

Imports ``handlers``/``providers`` types only; never ``daemon.runtime``.
"""

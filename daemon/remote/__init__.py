"""The remote side of uploaded files: retention passes and recorded deletions.

``plan`` decides (pure: which remote files go, and why); ``deletions`` makes one deletion
through the ledger (intent, DELETE, receipts, outcome) and settles the ones a crash left
open; ``prune`` runs one pass over one account; ``service`` says when passes run in the
daemon; ``ledger`` holds the queries and the ``remote_deletions`` table's writes;
``config`` turns settings into limits and warnings; ``commands`` are ``inboxd remote``.
Imports ``daemon.state`` and ``daemon.config``; ``daemon.runtime`` only in ``commands``.
"""

"""Match an interrupted upload with the copy the provider may have stored (pure).

An upload whose outcome is unknown — the daemon died after committing the intent, or the
connection broke after the body was sent — may or may not have reached the provider. Before
sending the file again, the provider's listing is searched for it: the same file name as the
transport put it on the wire (``providers.wire``: ``say "hi".txt`` is stored as
``say %22hi%22.txt``; every form a server may keep is tried), same byte count, created no
earlier than the intent time minus the allowed clock skew, and not already recorded for
another ledger row. Found: it is the upload (no second copy). Not found: upload.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Container, Iterable, Mapping
from pathlib import PurePath

from handlers.ledger import PENDING, UPLOADED, Ledger, LedgerRow
from providers.errors import ProviderError
from providers.types import RemoteFile, UploadClient
from providers.wire import wire_filenames

__all__ = ["Reconciler", "match_remote"]

logger = logging.getLogger(__name__)


def match_remote(
    files: Iterable[RemoteFile],
    *,
    filename: str,
    size: int,
    purpose: str,
    intent_at: float,
    skew: float,
    claimed: Container[str] = (),
) -> RemoteFile | None:
    """The earliest remote file that can be this upload, or None.

    ``claimed`` holds file ids other ledger rows already own: two local files with the same
    name and size must never both adopt one remote copy. ``filename`` is the local name; the
    remote one is compared in every form the transports' encoding may have stored it under.
    """
    names = wire_filenames(filename)
    matches = [
        f
        for f in files
        if f.filename in names
        and f.bytes == size
        and f.purpose == purpose
        and f.created_at >= intent_at - skew
        and f.id not in claimed
    ]
    return min(matches, key=lambda f: (f.created_at, f.id), default=None)


class Reconciler:
    """Settles uploads of unknown outcome against the providers' listings."""

    def __init__(self, *, ledger: Ledger, clients: Mapping[str, UploadClient], skew: float) -> None:
        self.ledger = ledger
        self.clients = clients
        self.skew = skew

    async def find_remote(self, provider: str, purpose: str, row: LedgerRow) -> RemoteFile | None:
        """The copy ``row``'s latest attempt (intent at ``row.intent_at``) left, if any."""
        files = await self.clients[provider].list_files(purpose)
        claimed = await self.ledger.claimed_file_ids(provider, [f.id for f in files])
        return match_remote(
            files,
            filename=PurePath(row.relpath).name,
            size=row.size,
            purpose=purpose,
            intent_at=row.intent_at or 0.0,
            skew=self.skew,
            claimed=claimed,
        )

    async def settle(self, row: LedgerRow) -> LedgerRow:
        """An ``uploading`` row → ``uploaded`` if the provider has the file, else ``pending``
        (so it is sent again)."""
        assert row.provider is not None
        assert row.purpose is not None
        where = {"inbox": row.inbox, "file": row.relpath, "provider": row.provider}
        remote = await self.find_remote(row.provider, row.purpose, row)
        if remote is None:
            logger.info("interrupted upload not on the provider; sending it again", extra=where)
            return await self.ledger.transition(row.id, PENDING)
        logger.info(
            "interrupted upload found on the provider; not sending it again",
            extra=where | {"file_id": remote.id},
        )
        return await self.ledger.transition(
            row.id, UPLOADED, file_id=remote.id, remote_bytes=remote.bytes, transport="reconciled"
        )

    async def find_any(
        self, row: LedgerRow, targets: Collection[tuple[str, str]]
    ) -> RemoteFile | None:
        """The copy ``row``'s attempts left on any of ``targets`` (provider, purpose), if any.

        Raises ProviderError when a listing fails (the outcome is still unknown then).
        """
        for provider, purpose in sorted(targets):
            found = await self.find_remote(provider, purpose, row)
            if found is not None:
                return found
        return None

    async def settle_interrupted(self, rows: Iterable[LedgerRow]) -> None:
        """Settle each ``uploading`` row (at start); a row whose provider cannot be listed now
        stays ``uploading`` and is settled when its file is processed (never a crash)."""
        for row in rows:
            try:
                await self.settle(row)
            except ProviderError as exc:
                logger.warning(
                    "cannot settle the interrupted upload of %s in inbox %s now (%s); "
                    "it is settled when the file is processed",
                    row.relpath,
                    row.inbox,
                    exc,
                )

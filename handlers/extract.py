"""The remote side of a finished file: its extracted text, then (``keep_remote = false``) the
deletion of its remote copy.

**Text** (inbox ``extract = true``). Before an uploaded file is archived, the provider's text
of it is fetched (for a duplicate: the text of the copy it shares) and written beside it as
``<name>.extracted.txt`` (``handlers.archive``); the receipt gets ``extracted: {chars, sha256,
at}``. A transient failure (any ``ProviderError`` but ``Permanent``) leaves the file in its
inbox and its row where it was (``uploaded``, or ``pending`` for a duplicate) with
``not_before``: it is tried again then and never uploaded again, also after a restart. A
permanent one (the provider cannot extract this file) archives the file all the same, with
``extract_error`` in the receipt. ``inboxd_extractions_total{provider,outcome}`` counts each
try as ``ok``, ``retry`` or ``failed``.

**keep_remote = false.** Once the file is done (its receipt written, its row ``done``), the
remote copy is deleted through the injected ``RemoteDeleter`` (the recorded deletion path),
which gives every receipt naming the copy its ``remote_deleted_at`` (the one writer of it; this
module never writes it). A duplicate never deletes the copy it shares (another row's upload
owns it). A delete that fails is logged and left to the retention pass; the file is not held
back for it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import BinaryIO, Literal, Protocol

from handlers.ledger import Ledger, LedgerRow
from handlers.quarantine import iso_utc
from providers.errors import Permanent, ProviderError
from providers.types import RemoteFile

__all__ = [
    "EXTRACT_OUTCOMES",
    "ExtractLater",
    "ExtractedText",
    "Extraction",
    "ExtractionEvents",
    "RemoteDeleter",
    "TextAndRelease",
    "TextSource",
    "extract_error",
    "extracted_receipt",
    "remote_of",
    "retry_at",
]

logger = logging.getLogger(__name__)

ExtractOutcome = Literal["ok", "retry", "failed"]
EXTRACT_OUTCOMES: tuple[ExtractOutcome, ...] = ("ok", "retry", "failed")

_ERROR_MAX = 300  # characters of a provider's message kept in the receipt


class ExtractedText(Protocol):
    """What an extraction gives back (``providers.types.Extracted`` is the real one)."""

    @property
    def text(self) -> str: ...


class TextSource(Protocol):
    """One provider's text extraction (the provider client's ``extract``).

    ``fileobj`` is the local file at offset 0 when it is at hand (a provider whose parser
    takes the bytes again reads it). Raises ``Permanent`` when the provider cannot extract
    this file, another ``ProviderError`` when it cannot now.
    """

    async def extract(self, remote: RemoteFile, fileobj: BinaryIO | None) -> ExtractedText: ...


class RemoteDeleter(Protocol):
    """Deletes a remote copy through the recorded path (intent, ``DELETE``, outcome in the
    ledger; a 404 is already gone) and marks ``remote_deleted_at`` in every receipt that names
    the copy (the original's and its duplicates'). Raises ``ProviderError`` when it cannot
    now."""

    async def delete(self, provider: str, file_id: str, *, reason: str) -> None: ...


class ExtractionEvents(Protocol):
    """What the extraction step reports (``daemon.ops.metrics.Metrics`` is the real one)."""

    def extraction(self, provider: str, outcome: str) -> None:
        """One try to fetch a file's text: ``outcome`` is one of EXTRACT_OUTCOMES."""


@dataclass(frozen=True)
class Extraction:
    """The text to write beside the file (None when there is none) and the receipt's fields."""

    text: str | None
    receipt: Mapping[str, object]


@dataclass(frozen=True)
class ExtractLater:
    """The text could not be fetched now: try again at ``until`` (wall clock)."""

    until: float
    error: str


def extracted_receipt(text: str, *, at: float) -> dict[str, object]:
    """The receipt's ``extracted`` field: characters, sha256 of the UTF-8 text, when."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return {"extracted": {"chars": len(text), "sha256": digest, "at": iso_utc(at)}}


def extract_error(exc: BaseException) -> str:
    """The receipt's ``extract_error``: the error's own text, cut short."""
    text = str(exc)
    return text if len(text) <= _ERROR_MAX else text[: _ERROR_MAX - 1] + "…"


def retry_at(exc: ProviderError, *, now: float, delay: float) -> float:
    """When a transient failure is tried again: after ``delay``, or the provider's longer wait."""
    return now + max(delay, exc.retry_after or 0.0)


def remote_of(row: LedgerRow) -> RemoteFile:
    """The remote copy an ``uploaded``/``done`` row records, as the provider lists it."""
    if row.provider is None or row.file_id is None or row.purpose is None:
        raise ValueError(f"ledger row {row.id} records no remote copy")
    return RemoteFile(
        provider=row.provider,
        id=row.file_id,
        filename=PurePath(row.relpath).name,
        bytes=row.remote_bytes if row.remote_bytes is not None else row.size,
        created_at=row.uploaded_at or 0.0,
        purpose=row.purpose,
    )


class TextAndRelease:
    """Fetches a file's text, and releases (deletes) its remote copy once the file is done: the
    pipeline's steps on the remote copy (not ``daemon.remote.service.RemoteSide``, the
    daemon's retention passes)."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        extractors: Mapping[str, TextSource],
        deleter: RemoteDeleter | None,
        events: ExtractionEvents,
        clock: Callable[[], float],
        delay: float,
    ) -> None:
        """``delay``: seconds before a transient failure is tried again (at least)."""
        self.ledger = ledger
        self.extractors = extractors
        self.deleter = deleter
        self.events = events
        self.clock = clock
        self.delay = delay

    async def text(
        self, inbox: str, row: LedgerRow, remote: RemoteFile, fileobj: BinaryIO | None
    ) -> Extraction | ExtractLater:
        """The text of ``remote`` for ``row``'s file, or when to try again."""
        where = {"inbox": inbox, "file": row.relpath, "provider": remote.provider}
        extractor = self.extractors.get(remote.provider)
        try:
            if extractor is None:
                raise Permanent(
                    "this inboxd cannot fetch extracted text from this provider",
                    reason="extract_failed",
                    provider=remote.provider,
                )
            extracted = await extractor.extract(remote, fileobj)
        except Permanent as exc:
            self.events.extraction(remote.provider, "failed")
            logger.warning(
                "the provider cannot extract the text of this file (%s); it is archived "
                "without it, extract_error in its receipt",
                exc,
                extra=where,
            )
            return Extraction(text=None, receipt={"extract_error": extract_error(exc)})
        except ProviderError as exc:
            self.events.extraction(remote.provider, "retry")
            until = retry_at(exc, now=self.clock(), delay=self.delay)
            logger.warning(
                "cannot fetch the extracted text now (%s); the uploaded file waits in its "
                "inbox and its text is fetched again at %s (it is not uploaded again)",
                exc,
                iso_utc(until),
                extra=where,
            )
            return ExtractLater(until=until, error=extract_error(exc))
        self.events.extraction(remote.provider, "ok")
        text = extracted.text
        return Extraction(text=text, receipt=extracted_receipt(text, at=self.clock()))

    async def later(self, row: LedgerRow, later: ExtractLater) -> float:
        """Record in ``row`` (its state unchanged) that its text is due at ``later.until``."""
        await self.ledger.transition(row.id, row.state, not_before=later.until)
        return later.until

    async def release(self, inbox: str, row: LedgerRow, *, keep_remote: bool) -> None:
        """Delete the remote copy of the ``done`` row ``row`` unless the inbox keeps it (the
        deleter marks the receipts). Never raises for a delete that fails now (the retention
        pass retries)."""
        if keep_remote or row.dedupe_of is not None or row.file_id is None:
            return
        assert row.provider is not None
        where = {"inbox": inbox, "file": row.relpath, "provider": row.provider}
        if self.deleter is None:
            logger.warning(
                "keep_remote = false, but this inboxd has no remote deletion wired; the copy "
                "%s stays on the provider",
                row.file_id,
                extra=where,
            )
            return
        try:
            await self.deleter.delete(row.provider, row.file_id, reason="keep_remote")
        except ProviderError as exc:
            logger.warning(
                "keep_remote = false: cannot delete the remote copy %s now (%s); the file is "
                "done, and the retention pass deletes the copy later",
                row.file_id,
                exc,
                extra=where,
            )
            return

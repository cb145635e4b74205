"""Match an interrupted upload with the copy the provider may have stored (pure).

An upload whose outcome is unknown — the daemon died after committing the intent, or the
connection broke after the body was sent — may or may not have reached the provider. Before
sending the file again, the provider's listing is searched for it: same file name, same byte
count, created no earlier than the intent time minus the allowed clock skew, and not already
recorded for another ledger row. Found: it is the upload (no second copy). Not found: upload.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from providers.types import RemoteFile

__all__ = ["match_remote"]


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
    name and size must never both adopt one remote copy.
    """
    matches = [
        f
        for f in files
        if f.filename == filename
        and f.bytes == size
        and f.purpose == purpose
        and f.created_at >= intent_at - skew
        and f.id not in claimed
    ]
    return min(matches, key=lambda f: (f.created_at, f.id), default=None)

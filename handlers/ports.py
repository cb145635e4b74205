"""What the pipeline needs from outside it: the resilience layer that uploads, and the events
it reports. (The provider's text and the recorded deletion: ``handlers.extract``.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import BinaryIO, Protocol

from providers.types import RemoteFile, UploadResult

__all__ = ["ContentClaims", "PipelineEvents", "Uploader"]


class Uploader(Protocol):
    """The resilience layer as the pipeline sees it (``providers.dispatch.Dispatcher``)."""

    async def upload(
        self,
        *,
        preference: Sequence[str],
        purposes: Mapping[str, str],
        filename: str,
        size: int,
        content_type: str,
        open_file: Callable[[], BinaryIO],
        before_attempt: Callable[[str, str], Awaitable[None]],
        reconcile: Callable[[str, str], Awaitable[RemoteFile | None]],
        first_tried: float | None = None,
        attempts: int = 0,
    ) -> UploadResult: ...


class PipelineEvents(Protocol):
    """What the pipeline reports (``daemon.ops.metrics.Metrics`` is the real one)."""

    def extraction(self, provider: str, outcome: str) -> None:
        """One try to fetch a file's text (``handlers.extract.EXTRACT_OUTCOMES``)."""

    def quarantined(self, reason: str) -> None: ...

    def duplicate(self) -> None: ...

    def upload_stored(self, provider: str, nbytes: int, seconds: float) -> None:
        """A file is stored remotely (the dispatcher counts the calls themselves)."""

    def inflight_bytes(self, n: int) -> None: ...


class ContentClaims(Protocol):
    """Named locks the hosts of a fleet share (``daemon.state.store.Store``): the pipeline holds
    ``content:<sha256>`` while it dedupes and uploads that content, so two hosts never upload
    one content at once (the second then finds the first's upload and archives a duplicate)."""

    async def hold(self, name: str, *, ttl: float) -> bool: ...

    async def release(self, name: str) -> None: ...

"""One provider behind one face: its ordered transport chain (``providers.types.UploadClient``).

The chain moves down ONLY on ``TransportUnavailable`` (the request certainly never reached the
server; see ``providers.transports`` for exactly when). A server answer or an ambiguous failure
is re-raised as is: another client would get the same answer, or might store a second copy.
Nothing here retries: the resilience layer owns that.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import BinaryIO, NoReturn, Protocol, TypeVar, runtime_checkable

from providers.errors import Permanent, ProviderError, Retryable, TransportUnavailable
from providers.types import RemoteFile, Transport, UploadResult

__all__ = ["FallbackCallback", "Preparable", "ProviderClient", "UsageSource", "usage_of"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

FallbackCallback = Callable[[str, str, str, str], None]
"""Called as ``(provider, from_transport, to_transport, reason)`` on each move down the chain."""


@runtime_checkable
class Preparable(Protocol):
    """A transport that can import and build its client ahead of its first call."""

    def prepare(self) -> None: ...


@runtime_checkable
class UsageSource(Protocol):
    """Anything that counts a provider's stored files without holding its listing."""

    name: str

    async def usage(self) -> tuple[int, int]:
        """(file count, total bytes) of every stored file."""
        ...


class _Listing(Protocol):
    """What every Transport and UploadClient has: the whole listing."""

    name: str

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]: ...


async def usage_of(source: _Listing) -> tuple[int, int]:
    """(file count, total bytes): ``source.usage()`` if it has one, else its listing counted.

    ``usage`` is not part of the shared Transport/UploadClient Protocols, so an object
    without it (a test fake, a third-party transport) still works, holding its listing.
    """
    if isinstance(source, UsageSource):
        return await source.usage()
    files = await source.list_files()
    return len(files), sum(f.bytes for f in files)


class ProviderClient:
    """``providers.types.UploadClient`` over an ordered chain of ``Transport`` objects.

    Every call starts at the head of the chain, so a transport that was unusable once (a
    request it could not build) gets its chance again; an SDK that failed to import fails
    fast on later calls. ``delete`` is idempotent: a file the provider does not know is gone.
    """

    def __init__(
        self,
        name: str,
        transports: Sequence[Transport],
        *,
        on_fallback: FallbackCallback | None = None,
    ) -> None:
        if not transports:
            raise ValueError(f"provider {name!r} needs at least one transport")
        self.name = name
        self._transports = tuple(transports)
        self._on_fallback = on_fallback

    def prepare(self) -> None:
        """Import and build every transport that can be (blocking: a worker thread at start)."""
        for transport in self._transports:
            if isinstance(transport, Preparable):
                transport.prepare()

    @property
    def transport_names(self) -> tuple[str, ...]:
        """The chain, head first."""
        return tuple(t.name for t in self._transports)

    async def _walk(
        self,
        call: Callable[[Transport], Awaitable[_T]],
        before_each: Callable[[], None] | None = None,
    ) -> tuple[_T, str]:
        """``call`` on the first transport that can be used; (result, transport name)."""
        last: TransportUnavailable | None = None
        for index, transport in enumerate(self._transports):
            if before_each is not None:
                before_each()
            try:
                return await call(transport), transport.name
            except TransportUnavailable as exc:
                last = exc
                if index + 1 < len(self._transports):
                    self._fell_back(transport.name, self._transports[index + 1].name, exc)
        assert last is not None
        raise TransportUnavailable(
            f"no transport could send the request ({', '.join(self.transport_names)}); "
            f"last: {last.message}. Check that the SDKs are installed and base_url is right",
            provider=self.name,
        ) from last

    def _fell_back(self, source: str, target: str, exc: TransportUnavailable) -> None:
        logger.warning(
            "%s: %s transport unusable (%s); falling back to %s",
            self.name,
            source,
            exc.message,
            target,
        )
        if self._on_fallback is not None:
            self._on_fallback(self.name, source, target, exc.message)

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult:
        """Upload through the chain; the provider must report exactly ``size`` bytes.

        A mismatch deletes the remote copy and raises ``Retryable`` (not ambiguous).
        """
        try:
            start: int | None = fileobj.tell() if fileobj.seekable() else None
        except (OSError, ValueError):
            start = None

        def rewind() -> None:
            # A transport that failed before sending may still have moved the file position.
            if start is not None:
                fileobj.seek(start)

        remote, used = await self._walk(
            lambda t: t.upload(
                filename=filename, fileobj=fileobj, purpose=purpose, content_type=content_type
            ),
            rewind,
        )
        if remote.bytes != size:
            await self._discard(remote, filename, size)
        return UploadResult(remote=remote, transport=used)

    async def _discard(self, remote: RemoteFile, filename: str, size: int) -> NoReturn:
        """Delete a copy whose size is wrong and raise the Retryable that says so."""
        detail = f"{self.name} stored {remote.bytes} bytes for {filename}, we sent {size}"
        try:
            await self.delete(remote.id)
        except ProviderError as exc:
            logger.warning(
                "%s: could not delete mis-sized remote file %s (%s): %s",
                self.name,
                remote.id,
                filename,
                exc,
            )
            raise Retryable(
                f"{detail}; deleting remote copy {remote.id} failed ({exc}): delete it by hand",
                provider=self.name,
            ) from exc
        raise Retryable(f"{detail}; remote copy {remote.id} deleted", provider=self.name)

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        """Every stored file (GLM pagination followed), normalised."""
        files, _ = await self._walk(lambda t: t.list_files(purpose))
        return files

    async def usage(self) -> tuple[int, int]:
        """(file count, total bytes) of every stored file, without holding the listing."""
        counted, _ = await self._walk(usage_of)
        return counted

    async def retrieve(self, file_id: str) -> RemoteFile:
        """One stored file (GLM: found in the listing)."""
        remote, _ = await self._walk(lambda t: t.retrieve(file_id))
        return remote

    async def content(self, file_id: str) -> bytes:
        """A stored file's content as the provider serves it."""
        data, _ = await self._walk(lambda t: t.content(file_id))
        return data

    async def delete(self, file_id: str) -> None:
        """Delete a stored file; one the provider does not know counts as deleted."""
        try:
            await self._walk(lambda t: t.delete(file_id))
        except Permanent as exc:
            if exc.reason != "not_found":
                raise
            logger.info("%s: file %s was already gone", self.name, file_id)

    async def aclose(self) -> None:
        """Close every transport."""
        for transport in self._transports:
            await transport.aclose()

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

import anyio

from providers.errors import Permanent, ProviderError, Retryable, TransportUnavailable
from providers.extract import (
    ExtractPolicy,
    content_text,
    parser_file_type,
    poll_parser,
)
from providers.limits import extract_method
from providers.types import (
    Extracted,
    ParserAnswer,
    ParserTransport,
    RemoteFile,
    Transport,
    UploadResult,
)

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


def _parser(transport: Transport) -> ParserTransport:
    """``transport`` as a ParserTransport; one without the parser calls is unusable here."""
    if isinstance(transport, ParserTransport):
        return transport
    raise TransportUnavailable(
        f"{transport.name} transport has no file-parser calls, nothing was sent"
    )


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
    ``extract_policy`` paces GLM's parser polling and ``sleep`` waits between polls (both
    injected by tests).
    """

    def __init__(
        self,
        name: str,
        transports: Sequence[Transport],
        *,
        on_fallback: FallbackCallback | None = None,
        extract_policy: ExtractPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if not transports:
            raise ValueError(f"provider {name!r} needs at least one transport")
        self.name = name
        self._transports = tuple(transports)
        self._on_fallback = on_fallback
        self._extract_policy = extract_policy or ExtractPolicy()
        self._sleep = sleep

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

    async def extract(self, remote: RemoteFile, fileobj: BinaryIO | None) -> Extracted:
        """The extracted text of the stored file ``remote`` (``providers.limits.extract_method``).

        Kimi (``file-extract``) and GLM ``batch``/``file-extract``: ``GET /files/{id}/content``
        (Kimi's JSON envelope unwrapped). GLM ``code-interpreter``/``agent``: the file-parser
        API, sent ``fileobj`` (an open binary file of the same bytes, read from its current
        position; required there, else ValueError), polled per ``extract_policy``.

        Raises ``Permanent(reason="extract_failed")`` when the provider has no text for this
        file (its purpose or type, or the provider failed to extract it), ``Retryable`` for a
        passing failure (5xx, network, 429, a parser task still processing past the bound);
        ``not_found`` when the stored file is gone. Nothing here retries.
        """
        method = extract_method(self.name, remote.purpose)
        if method == "content":
            data, used = await self._walk(lambda t: t.content(remote.id))
            return Extracted(content_text(self.name, data), "content", used)
        if method is None:
            raise Permanent(
                f"{self.name} serves no extracted text for purpose {remote.purpose!r} "
                f"({remote.filename}): set extract = false on this inbox, or use a purpose "
                "that has text",
                reason="extract_failed",
                provider=self.name,
            )
        if fileobj is None:
            raise ValueError(f"{self.name} parses {remote.purpose} files from their bytes")
        return await self._parse(remote, fileobj)

    async def _parse(self, remote: RemoteFile, fileobj: BinaryIO) -> Extracted:
        """GLM's file parser: create a task with the file's bytes, then poll for its text."""
        file_type = parser_file_type(self.name, remote.filename)
        policy = self._extract_policy
        start = fileobj.tell() if fileobj.seekable() else None

        def rewind() -> None:
            if start is not None:
                fileobj.seek(start)

        task_id, used = await self._walk(
            lambda t: _parser(t).parser_create(
                filename=remote.filename,
                fileobj=fileobj,
                file_type=file_type,
                tool_type=policy.tool_type,
                content_type="application/octet-stream",
            ),
            rewind,
        )

        async def result() -> ParserAnswer:
            answer, _ = await self._walk(lambda t: _parser(t).parser_result(task_id))
            return answer

        text = await poll_parser(self.name, task_id, result, policy, self._sleep)
        return Extracted(text, "parser", used)

    async def aclose(self) -> None:
        """Close every transport."""
        for transport in self._transports:
            await transport.aclose()

"""Plain values and Protocols shared by the providers, the resilience layer and the daemon."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

__all__ = [
    "BreakerRecord",
    "BreakerStore",
    "Extracted",
    "Extractor",
    "ParserAnswer",
    "ParserTransport",
    "RemoteFile",
    "Transport",
    "UploadClient",
    "UploadResult",
]


@dataclass(frozen=True)
class RemoteFile:
    """A file as a provider lists it, normalised across providers.

    ``created_at`` is unix seconds (both APIs send an integer); ``status`` is opaque.
    """

    provider: str
    id: str
    filename: str
    bytes: int
    created_at: float
    purpose: str
    status: str | None = None


@dataclass(frozen=True)
class UploadResult:
    """A finished upload: what the provider stored and which transport sent it."""

    remote: RemoteFile
    transport: str


class Transport(Protocol):
    """One way of talking to one provider's files API (an SDK, or raw httpx).

    Every method raises only ``providers.errors.ProviderError`` subclasses; foreign
    exceptions are translated inside the transport. ``TransportUnavailable`` means the
    request certainly never reached the server; anything else came from (or may have
    reached) the server and is the same whichever transport sent it.
    """

    name: str

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, purpose: str, content_type: str
    ) -> RemoteFile: ...

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]: ...

    async def retrieve(self, file_id: str) -> RemoteFile: ...

    async def delete(self, file_id: str) -> None: ...

    async def content(self, file_id: str) -> bytes: ...

    async def aclose(self) -> None: ...


class UploadClient(Protocol):
    """One provider as the resilience layer sees it: its transport chain behind one face.

    ``providers.client.ProviderClient`` is the real one. ``upload`` walks the transport chain
    (down only on TransportUnavailable), checks that the provider reports ``size`` bytes
    (a mismatch deletes the remote copy and raises Retryable), and never retries by itself.
    """

    name: str

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult: ...

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        """Every stored file (GLM pagination followed), normalised."""
        ...

    async def delete(self, file_id: str) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Extracted:
    """A stored file's extracted text, as the provider serves it.

    ``method`` is ``"content"`` (``GET /files/{id}/content``) or ``"parser"`` (GLM's
    file-parser API); ``transport`` names the client that fetched the text.
    """

    text: str
    method: str
    transport: str


@dataclass(frozen=True)
class ParserAnswer:
    """One answer of GLM's ``GET /files/parser/result/{task_id}/text``.

    ``status`` is ``processing``, ``succeeded`` or ``failed`` (docs.bigmodel.cn, 解析结果);
    ``text`` is the parsed text once succeeded; ``message`` the provider's own words.
    """

    status: str
    text: str = ""
    message: str = ""


@runtime_checkable
class ParserTransport(Protocol):
    """A Transport that can also drive GLM's file-parser API (every built-in one can).

    Not part of ``Transport``, so a transport without it still serves uploads: the client
    treats it as unusable for parsing (``TransportUnavailable``) and walks the chain down.
    """

    async def parser_create(
        self, *, filename: str, fileobj: BinaryIO, file_type: str, tool_type: str, content_type: str
    ) -> str:
        """``POST /files/parser/create`` (multipart ``file``, ``tool_type``, ``file_type``):
        the new task's id."""
        ...

    async def parser_result(self, task_id: str) -> ParserAnswer:
        """``GET /files/parser/result/{task_id}/text``, normalised."""
        ...


@runtime_checkable
class Extractor(Protocol):
    """An UploadClient that can also fetch a stored file's extracted text.

    ``providers.client.ProviderClient`` and ``providers.limited.LimitedClient`` are. Kept
    apart from ``UploadClient`` so clients (and test fakes) that never extract need not.
    """

    async def extract(self, remote: RemoteFile, fileobj: BinaryIO | None) -> Extracted:
        """The text of ``remote``; see ``ProviderClient.extract``."""
        ...


@dataclass(frozen=True)
class BreakerRecord:
    """A provider's circuit breaker as persisted in the state file.

    ``state`` is one of ``closed``, ``open``, ``half_open``, ``forced_open``.
    ``open_until`` and ``probe_until`` are WALL-clock unix seconds on disk (None when unset);
    ``window`` the most recent call outcomes, oldest first (True = failure);
    ``consecutive_opens`` drives the growing open duration and resets after a clean close.
    """

    state: str = "closed"
    open_until: float | None = None
    consecutive_opens: int = 0
    consecutive_failures: int = 0
    window: tuple[bool, ...] = ()
    probe_until: float | None = None
    reason: str = ""
    updated_at: float = 0.0


class BreakerStore(Protocol):
    """Where breaker records live (``daemon.state.store.Store`` is the real one, SQLite)."""

    async def load_breaker(self, provider: str) -> BreakerRecord | None: ...

    async def save_breaker(self, provider: str, record: BreakerRecord) -> None: ...

    async def claim_probe(self, provider: str, *, now: float, lease_until: float) -> bool:
        """Atomically claim the one half-open probe (a conditional UPDATE).

        Succeeds, and moves the row to ``half_open`` with ``probe_until = lease_until``,
        only when the row is ``open`` with ``open_until <= now`` or ``half_open`` with no
        live lease (``probe_until`` NULL or ``<= now``). Two workers or two processes on one
        state file can never both get True for the same lease period.
        """
        ...

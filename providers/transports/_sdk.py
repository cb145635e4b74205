"""What the two SDK transports share: the client built once on first use, and the files calls.

Each SDK transport supplies only how to build its client (``_build``), how to run one call on
it (``_call``) and where its ``APIStatusError`` keeps the status and body (``_answer``).
"""

from __future__ import annotations

import contextlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, BinaryIO

from providers.errors import ProviderError, Retryable, TransportUnavailable
from providers.transports._common import (
    Clock,
    answer_file,
    attempt,
    collect_listing,
    find_listed,
    from_status,
    listing_purposes,
    now_clock,
    page_params,
    remote_file,
    scrub,
    sum_listing,
    translate,
    unavailable,
)
from providers.types import RemoteFile

__all__ = ["Importer", "SdkTransport"]

Importer = Callable[[str], ModuleType]


class SdkTransport(ABC):
    """``providers.types.Transport`` over an SDK client; ``name`` is the SDK's module.

    The SDK is imported (through ``importer``) and built on first use, so a missing or
    incompatible SDK surfaces as TransportUnavailable on the call, and the chain moves on.
    """

    name: str

    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        api_key: str,
        timeout: float,
        connect_timeout: float,
        importer: Importer = importlib.import_module,
        clock: Clock = now_clock,
        list_purposes: Sequence[str] = (),
    ) -> None:
        self._provider = provider
        self._base_url = base_url
        self._api_key = api_key
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._importer = importer
        self._clock = clock
        self._list_purposes = tuple(list_purposes)
        self._sdk: ModuleType | None = None
        self._client: Any = None
        self._broken: str | None = None

    @abstractmethod
    def _build(self, sdk: ModuleType) -> Any:
        """The SDK's client (``max_retries=0``, our timeouts, the send probe installed)."""

    @abstractmethod
    async def _call(self, call: Callable[[Any], Any], client: Any) -> Any:
        """``call(client)``'s result (awaited, or run in a worker thread)."""

    @abstractmethod
    def _answer(self, exc: Any) -> tuple[int, object]:
        """The status code and body of the SDK's ``APIStatusError``."""

    def _glm(self) -> bool:
        """Whether this transport speaks GLM's API (paginated listing, no retrieve)."""
        return self._provider == "glm"

    def _ensure(self) -> Any:
        """The SDK's client, built once; TransportUnavailable if the SDK is unusable."""
        if self._client is not None:
            return self._client
        if self._broken is not None:
            raise unavailable(self._provider, self.name, self._broken)
        try:
            sdk = self._importer(self.name)
            self._client = self._build(sdk)
        except Exception as exc:  # ImportError, or an SDK whose API we do not fit
            self._broken = (
                f"{self.name} SDK unusable: {type(exc).__name__}: {scrub(str(exc), self._api_key)}"
            )
            raise unavailable(self._provider, self.name, self._broken) from exc
        self._sdk = sdk
        return self._client

    def prepare(self) -> None:
        """Import the SDK and build its client now (blocking: run it in a worker thread at
        start-up), so the first call imports nothing; an unusable SDK is remembered and
        raises TransportUnavailable on its first call, as when built on first use."""
        try:
            client = self._ensure()
        except TransportUnavailable:
            return  # remembered: its first call raises it and the chain moves on
        # The SDKs import their resource modules lazily, at first access.
        with contextlib.suppress(Exception):  # an SDK without it fails at its first call
            getattr(client, "files", None)

    async def _run(self, call: Callable[[Any], Any]) -> Any:
        """Run one SDK call; translate whatever it raises (see the package docstring)."""
        client = self._ensure()
        with attempt() as probe:
            try:
                return await self._call(call, client)
            except Exception as exc:  # foreign errors are translated here, once
                raise self._translate(exc, sent=probe.sent) from exc

    def _translate(self, exc: Exception, *, sent: bool) -> ProviderError:
        assert self._sdk is not None
        if isinstance(exc, self._sdk.APIStatusError):
            status, body = self._answer(exc)
            return from_status(self._provider, status, body, exc.response.headers, self._clock)
        return translate(self._provider, self.name, exc, sent=sent, secret=self._api_key)

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, purpose: str, content_type: str
    ) -> RemoteFile:
        """``files.create`` with an open-file tuple; the provider's file object, normalised."""
        obj = await self._run(
            lambda c: c.files.create(file=(filename, fileobj, content_type), purpose=purpose)
        )
        try:
            return remote_file(self._provider, obj)
        except ValueError as exc:
            raise Retryable(
                f"upload answer without a file id/bytes: {exc}",
                ambiguous=True,
                provider=self._provider,
                status=200,
            ) from exc

    async def _page(self, purpose: str | None, after: str | None) -> tuple[list[RemoteFile], bool]:
        params = page_params(purpose, after, glm=self._glm())
        # We drive the cursor ourselves (collect_pages); awaiting openai's paginator fetches
        # exactly one page, so a server that ignores ``after`` cannot loop us.
        page = await self._run(lambda c: c.files.list(**params))
        files = [answer_file(self._provider, item) for item in page.data]
        return files, bool(getattr(page, "has_more", False))

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        """Every file (all GLM pages; every purpose in use), optionally of one purpose."""
        purposes = listing_purposes(purpose, self._list_purposes, glm=self._glm())
        return await collect_listing(self._page, purposes, purpose)

    async def usage(self) -> tuple[int, int]:
        """(file count, total bytes) of every stored file, counted page by page."""
        purposes = listing_purposes(None, self._list_purposes, glm=self._glm())
        return await sum_listing(self._page, purposes)

    async def retrieve(self, file_id: str) -> RemoteFile:
        """``files.retrieve``; GLM (no retrieve endpoint documented): the file as listed."""
        if self._glm():
            return await find_listed(self._provider, file_id, self.list_files)
        return answer_file(self._provider, await self._run(lambda c: c.files.retrieve(file_id)))

    async def delete(self, file_id: str) -> None:
        """``files.delete``."""
        await self._run(lambda c: c.files.delete(file_id))

    async def content(self, file_id: str) -> bytes:
        """``files.content``: the bytes the provider serves (Kimi: extracted text).

        GLM serves ``batch`` and ``file-extract`` files only.
        """
        response = await self._run(lambda c: c.files.content(file_id))
        return bytes(response.content)

    @abstractmethod
    async def aclose(self) -> None:
        """Close the HTTP client under the SDK (if it was ever built)."""

"""The ``zhipuai`` SDK transport: GLM's first link.

The SDK is synchronous, so every call runs in a worker thread (``anyio.to_thread.run_sync``;
cancellation waits for the thread, bounded by the timeout, so the caller never closes the file
under a running upload). It is built with ``max_retries=0`` (it would otherwise retry any send
error 3 times and ignore Retry-After), an explicit ``httpx.Timeout`` and our own
``httpx.Client`` carrying the send probe as a ``request`` event hook. The raw key is sent as
Bearer (``disable_token_cache=True``), as with every other transport.

zhipuai 2.1.5 has no ``files.retrieve`` (it is commented out in the SDK) and GLM documents no
``GET /files/{id}``: ``retrieve`` finds the file in the (paginated) listing instead, raising
``Permanent(reason="not_found")`` when it is not there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, BinaryIO, TypeVar

import anyio.to_thread

from providers.errors import ProviderError, Retryable
from providers.transports._common import (
    GLM_PAGE_LIMIT,
    Clock,
    attempt,
    collect_pages,
    find_listed,
    from_status,
    mark_sent,
    now_clock,
    remote_file,
    scrub,
    translate,
    unavailable,
)
from providers.types import RemoteFile

__all__ = ["ZhipuAITransport"]

_T = TypeVar("_T")
Importer = Callable[[str], ModuleType]


class ZhipuAITransport:
    """``providers.types.Transport`` over the synchronous ``zhipuai.ZhipuAI`` client (GLM only).

    The SDK is imported (through ``importer``) and built on first use, so a missing or
    incompatible SDK surfaces as TransportUnavailable on the call, and the chain moves on.
    """

    name = "zhipuai"

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
    ) -> None:
        self._provider = provider
        self._base_url = base_url
        self._api_key = api_key
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._importer = importer
        self._clock = clock
        self._sdk: ModuleType | None = None
        self._client: Any = None
        self._http: Any = None
        self._broken: str | None = None

    def _ensure(self) -> Any:
        """The ZhipuAI client, built once; TransportUnavailable if the SDK is unusable."""
        if self._client is not None:
            return self._client
        if self._broken is not None:
            raise unavailable(self._provider, self.name, self._broken)
        try:
            sdk = self._importer("zhipuai")
            httpx = self._importer("httpx")
            timeouts = httpx.Timeout(self._timeout, connect=self._connect_timeout)
            self._http = httpx.Client(timeout=timeouts, event_hooks={"request": [mark_sent]})
            self._client = sdk.ZhipuAI(
                api_key=self._api_key,
                base_url=self._base_url,
                timeout=timeouts,
                max_retries=0,
                http_client=self._http,
                disable_token_cache=True,
            )
        except Exception as exc:  # ImportError, or an SDK whose API we do not fit
            self._broken = (
                f"zhipuai SDK unusable: {type(exc).__name__}: {scrub(str(exc), self._api_key)}"
            )
            raise unavailable(self._provider, self.name, self._broken) from exc
        self._sdk = sdk
        return self._client

    async def _run(self, call: Callable[[Any], _T]) -> _T:
        """Run one SDK call in a worker thread; translate whatever it raises."""
        client = self._ensure()
        with attempt() as probe:
            try:
                return await anyio.to_thread.run_sync(call, client)
            except Exception as exc:  # foreign errors are translated here, once
                raise self._translate(exc, sent=probe.sent) from exc

    def _translate(self, exc: Exception, *, sent: bool) -> ProviderError:
        assert self._sdk is not None
        if isinstance(exc, self._sdk.APIStatusError):
            response: Any = exc.response
            try:
                body: object = response.json()
            except ValueError:
                body = response.text
            return from_status(
                self._provider, response.status_code, body, response.headers, self._clock
            )
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
        params: dict[str, Any] = {"limit": GLM_PAGE_LIMIT}
        if purpose is not None:
            params["purpose"] = purpose
        if after is not None:
            params["after"] = after
        page = await self._run(lambda c: c.files.list(**params))
        try:
            files = [remote_file(self._provider, item) for item in page.data]
        except ValueError as exc:
            raise Retryable(str(exc), provider=self._provider, status=200) from exc
        return files, bool(getattr(page, "has_more", False))

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        """Every file (all pages), optionally of one purpose."""
        return await collect_pages(lambda after: self._page(purpose, after), purpose)

    async def retrieve(self, file_id: str) -> RemoteFile:
        """The file as listed: the SDK has no retrieve and GLM documents no endpoint for it."""
        return await find_listed(self._provider, file_id, self.list_files)

    async def delete(self, file_id: str) -> None:
        """``files.delete``."""
        await self._run(lambda c: c.files.delete(file_id))

    async def content(self, file_id: str) -> bytes:
        """``files.content``: the bytes GLM serves (batch and file-extract files only)."""
        response = await self._run(lambda c: c.files.content(file_id))
        return bytes(response.content)

    async def aclose(self) -> None:
        """Close our HTTP client (the SDK does not own it)."""
        if self._http is not None:
            await anyio.to_thread.run_sync(self._http.close)

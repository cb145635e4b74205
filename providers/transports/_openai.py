"""The ``openai`` SDK transport (``AsyncOpenAI``): Kimi's first link, GLM's second.

Kimi is the SDK's documented client (``base_url=https://api.moonshot.*/v1``). For GLM the same
SDK is pointed at ``.../api/paas/v4``: ``files.create`` POSTs ``{base_url}/files`` with the
same multipart fields and the raw key as Bearer (never zhipuai's optional JWT). How the GLM use
differs from Kimi's:

- purposes: any string reaches the wire (``purpose`` is a Literal hint only): Kimi takes
  ``file-extract``/``image``/``video``/``batch``, GLM ``batch``/``code-interpreter``/``agent``/…;
- listing: Kimi documents one unpaginated page and no filter, so ``files.list()`` is called
  bare and the purpose is filtered here; GLM is paginated, so ``files.list(limit=100,
  purpose=..., after=<last id>)`` is called page by page while ``has_more`` (we drive the
  cursor ourselves instead of the SDK's auto-paginator, so a server that ignores ``after``
  cannot loop us);
- retrieve: Kimi has ``GET /files/{id}`` (``files.retrieve``); GLM documents none, so the
  file is found in the listing;
- content: Kimi serves extracted text for ``file-extract`` files; GLM serves ``batch`` and
  ``file-extract`` files only.

openai 3.x sends through the ``httpx2`` package, 1.x through ``httpx``: the HTTP client is made
with the SDK's own ``DefaultAsyncHttpxClient`` so either works; the send probe is installed
on it as a ``request`` event hook.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, BinaryIO, TypeVar

from providers.errors import ProviderError, Retryable
from providers.transports._common import (
    GLM_PAGE_LIMIT,
    Clock,
    attempt,
    collect_pages,
    find_listed,
    from_status,
    mark_sent_async,
    now_clock,
    remote_file,
    scrub,
    translate,
    unavailable,
)
from providers.types import RemoteFile

__all__ = ["OpenAITransport"]

_T = TypeVar("_T")
Importer = Callable[[str], ModuleType]


class OpenAITransport:
    """``providers.types.Transport`` over ``openai.AsyncOpenAI`` (``max_retries=0``).

    The SDK is imported (through ``importer``) and built on first use, so a missing or
    incompatible SDK surfaces as TransportUnavailable on the call, and the chain moves on.
    """

    name = "openai"

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
        self._broken: str | None = None

    def _ensure(self) -> Any:
        """The AsyncOpenAI client, built once; TransportUnavailable if the SDK is unusable."""
        if self._client is not None:
            return self._client
        if self._broken is not None:
            raise unavailable(self._provider, self.name, self._broken)
        try:
            sdk = self._importer("openai")
            http_client = sdk.DefaultAsyncHttpxClient(event_hooks={"request": [mark_sent_async]})
            self._client = sdk.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self._base_url,
                max_retries=0,
                timeout=sdk.Timeout(self._timeout, connect=self._connect_timeout),
                http_client=http_client,
            )
        except Exception as exc:  # ImportError, or an SDK whose API we do not fit
            self._broken = (
                f"openai SDK unusable: {type(exc).__name__}: {scrub(str(exc), self._api_key)}"
            )
            raise unavailable(self._provider, self.name, self._broken) from exc
        self._sdk = sdk
        return self._client

    async def _run(self, call: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run one SDK call; translate whatever it raises (see the package docstring)."""
        client = self._ensure()
        with attempt() as probe:
            try:
                return await call(client)
            except Exception as exc:  # foreign errors are translated here, once
                raise self._translate(exc, sent=probe.sent) from exc

    def _translate(self, exc: Exception, *, sent: bool) -> ProviderError:
        assert self._sdk is not None
        if isinstance(exc, self._sdk.APIStatusError):
            response: Any = exc.response
            try:
                body: object = response.json()
            except Exception:  # a non-JSON error page: classify the SDK's parsed body
                body = exc.body
            return from_status(self._provider, exc.status_code, body, response.headers, self._clock)
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
        params: dict[str, Any] = {}
        if self._provider == "glm":
            params["limit"] = GLM_PAGE_LIMIT
            if purpose is not None:
                params["purpose"] = purpose
        if after is not None:
            params["after"] = after

        async def call(c: Any) -> Any:
            # Awaiting the paginator fetches exactly one page.
            return await c.files.list(**params)

        page = await self._run(call)
        try:
            files = [remote_file(self._provider, item) for item in page.data]
        except ValueError as exc:
            raise Retryable(str(exc), provider=self._provider, status=200) from exc
        return files, bool(getattr(page, "has_more", False))

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        """Every file (all GLM pages), optionally of one purpose."""
        return await collect_pages(lambda after: self._page(purpose, after), purpose)

    async def retrieve(self, file_id: str) -> RemoteFile:
        """``files.retrieve`` for Kimi; GLM (no retrieve endpoint documented): the listing."""
        if self._provider == "glm":
            return await find_listed(self._provider, file_id, self.list_files)
        obj = await self._run(lambda c: c.files.retrieve(file_id))
        try:
            return remote_file(self._provider, obj)
        except ValueError as exc:
            raise Retryable(str(exc), provider=self._provider, status=200) from exc

    async def delete(self, file_id: str) -> None:
        """``files.delete``."""
        await self._run(lambda c: c.files.delete(file_id))

    async def content(self, file_id: str) -> bytes:
        """``files.content``: the bytes the provider serves (Kimi: extracted text)."""
        response = await self._run(lambda c: c.files.content(file_id))
        data = response.content
        return bytes(data)

    async def aclose(self) -> None:
        """Close the SDK's HTTP client (if it was ever built)."""
        if self._client is not None:
            await self._client.close()

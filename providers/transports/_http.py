"""The raw httpx transport: the last link of every chain, for Kimi and GLM alike.

Both APIs take the same multipart ``POST {base}/files`` (fields ``file``, ``purpose``) with a
Bearer key. Content-Type is never set by hand on the upload: httpx writes
``multipart/form-data; boundary=...`` itself, and a hand-set header would win without the
boundary (provider-facts.md). The file object is streamed by httpx in 64 KiB chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO

import httpx

from providers.errors import ProviderError, Retryable
from providers.transports._common import (
    Clock,
    answer_file,
    collect_listing,
    find_listed,
    from_status,
    listing_purposes,
    now_clock,
    page_params,
    parser_answer,
    parser_task,
    remote_file,
    sum_listing,
    translate,
)
from providers.types import ParserAnswer, RemoteFile

__all__ = ["HttpTransport"]


class HttpTransport:
    """``providers.types.Transport`` over a plain ``httpx.AsyncClient``.

    ``transport`` is handed to the AsyncClient (tests may pass an ``httpx.MockTransport``).
    GLM documents no ``GET /files/{id}``, so ``retrieve`` scans the listing for GLM.
    """

    name = "http"

    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        api_key: str,
        timeout: float,
        connect_timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = now_clock,
        list_purposes: Sequence[str] = (),
    ) -> None:
        self._provider = provider
        self._api_key = api_key
        self._clock = clock
        self._list_purposes = tuple(list_purposes)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )

    async def _send(self, make: Callable[[], httpx.Request]) -> httpx.Response:
        """Build and send one request; raise the translated error for anything but a 2xx."""
        try:
            request = make()
        except Exception as exc:  # raised while building: certainly never sent
            raise translate(
                self._provider, self.name, exc, sent=False, secret=self._api_key
            ) from exc
        try:
            response = await self._client.send(request)
        except Exception as exc:  # foreign errors are translated here, once
            raise translate(
                self._provider, self.name, exc, sent=True, secret=self._api_key
            ) from exc
        if response.status_code >= 400:
            raise self._status_error(response)
        return response

    def _status_error(self, response: httpx.Response) -> ProviderError:
        try:
            body: object = response.json()
        except ValueError:
            body = response.text
        headers: Mapping[str, str] = response.headers
        return from_status(self._provider, response.status_code, body, headers, self._clock)

    def _json(self, response: httpx.Response, *, ambiguous: bool) -> object:
        try:
            return response.json()
        except ValueError as exc:
            raise Retryable(
                f"unreadable {response.status_code} answer from {response.request.url.path}",
                ambiguous=ambiguous,
                provider=self._provider,
                status=response.status_code,
            ) from exc

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, purpose: str, content_type: str
    ) -> RemoteFile:
        """POST the file as multipart; the provider's file object, normalised."""
        response = await self._send(
            lambda: self._client.build_request(
                "POST",
                "files",
                data={"purpose": purpose},
                files={"file": (filename, fileobj, content_type)},
            )
        )
        data = self._json(response, ambiguous=True)
        try:
            return remote_file(self._provider, data)
        except ValueError as exc:
            raise Retryable(
                f"upload answer without a file id/bytes: {exc}",
                ambiguous=True,
                provider=self._provider,
                status=response.status_code,
            ) from exc

    async def _page(self, purpose: str | None, after: str | None) -> tuple[list[RemoteFile], bool]:
        params = page_params(purpose, after, glm=self._provider == "glm")
        response = await self._send(
            lambda: self._client.build_request("GET", "files", params=params)
        )
        data = self._json(response, ambiguous=False)
        items = data.get("data") if isinstance(data, Mapping) else None
        if not isinstance(items, list):
            raise Retryable("list answer without a data array", provider=self._provider, status=200)
        files = [answer_file(self._provider, item) for item in items]
        return files, bool(isinstance(data, Mapping) and data.get("has_more"))

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        """Every file (all GLM pages; every purpose in use), optionally of one purpose."""
        purposes = listing_purposes(purpose, self._list_purposes, glm=self._provider == "glm")
        return await collect_listing(self._page, purposes, purpose)

    async def usage(self) -> tuple[int, int]:
        """(file count, total bytes) of every stored file, counted page by page."""
        purposes = listing_purposes(None, self._list_purposes, glm=self._provider == "glm")
        return await sum_listing(self._page, purposes)

    async def retrieve(self, file_id: str) -> RemoteFile:
        """One file's object (GLM: found in the listing)."""
        if self._provider == "glm":
            return await find_listed(self._provider, file_id, self.list_files)
        response = await self._send(lambda: self._client.build_request("GET", f"files/{file_id}"))
        return answer_file(self._provider, self._json(response, ambiguous=False))

    async def delete(self, file_id: str) -> None:
        """DELETE the file."""
        await self._send(lambda: self._client.build_request("DELETE", f"files/{file_id}"))

    async def content(self, file_id: str) -> bytes:
        """The file's content as the provider serves it (Kimi: extracted text)."""
        response = await self._send(
            lambda: self._client.build_request("GET", f"files/{file_id}/content")
        )
        return response.content

    async def parser_create(
        self, *, filename: str, fileobj: BinaryIO, file_type: str, tool_type: str, content_type: str
    ) -> str:
        """POST the file to GLM's file parser as multipart; the task id."""
        response = await self._send(
            lambda: self._client.build_request(
                "POST",
                "files/parser/create",
                data={"tool_type": tool_type, "file_type": file_type},
                files={"file": (filename, fileobj, content_type)},
            )
        )
        return parser_task(self._provider, self._json(response, ambiguous=False))

    async def parser_result(self, task_id: str) -> ParserAnswer:
        """GET the parser task's text result."""
        response = await self._send(
            lambda: self._client.build_request("GET", f"files/parser/result/{task_id}/text")
        )
        return parser_answer(self._provider, response.content)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

"""The ``openai`` SDK transport (``AsyncOpenAI``): Kimi's first link, GLM's second.

Kimi is the SDK's documented client (``base_url=https://api.moonshot.*/v1``). For GLM the same
SDK is pointed at ``.../api/paas/v4``: ``files.create`` POSTs ``{base_url}/files`` with the
same multipart fields and the raw key as Bearer (never zhipuai's optional JWT). How the GLM use
differs from Kimi's:

- purposes: any string reaches the wire (``purpose`` is a Literal hint only): Kimi takes
  ``file-extract``/``image``/``video``/``batch``, GLM ``batch``/``code-interpreter``/``agent``/…;
- listing: Kimi documents one unpaginated page and no filter, so ``files.list()`` is called
  bare and the purpose is filtered here; GLM is paginated and requires ``purpose``, so
  ``files.list(limit=100, purpose=..., after=<last id>)`` is called page by page while
  ``has_more``, once for each purpose in use when every file is listed (we drive the
  cursor ourselves instead of the SDK's auto-paginator, so a server that ignores ``after``
  cannot loop us);
- retrieve: Kimi has ``GET /files/{id}`` (``files.retrieve``); GLM documents none, so the
  file is found in the listing;
- content: Kimi serves extracted text for ``file-extract`` files; GLM serves ``batch`` and
  ``file-extract`` files only.

openai 3.x sends through the ``httpx2`` package, 1.x through ``httpx``: the HTTP client is made
with the SDK's own ``DefaultAsyncHttpxClient`` so either works; the send probe is installed
on it as a ``request`` event hook.

The SDK has no file-parser resource (GLM's ``/files/parser/*``): those two calls go through a
raw ``HttpTransport`` on the same base URL, key and timeouts, built on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, BinaryIO

from providers.transports._common import mark_sent_async
from providers.transports._http import HttpTransport
from providers.transports._sdk import SdkTransport
from providers.types import ParserAnswer

__all__ = ["OpenAITransport"]


class OpenAITransport(SdkTransport):
    """``providers.types.Transport`` over ``openai.AsyncOpenAI`` (``max_retries=0``).

    The SDK is imported (through ``importer``) and built on first use, so a missing or
    incompatible SDK surfaces as TransportUnavailable on the call, and the chain moves on.
    """

    name = "openai"
    _parser_http: HttpTransport | None = None

    def _build(self, sdk: ModuleType) -> Any:
        """The AsyncOpenAI client, its HTTP client carrying the send probe."""
        http_client = sdk.DefaultAsyncHttpxClient(event_hooks={"request": [mark_sent_async]})
        return sdk.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self._base_url,
            max_retries=0,
            timeout=sdk.Timeout(self._timeout, connect=self._connect_timeout),
            http_client=http_client,
        )

    async def _call(self, call: Callable[[Any], Any], client: Any) -> Any:
        """Await one SDK call."""
        return await call(client)

    def _answer(self, exc: Any) -> tuple[int, object]:
        """The status and JSON body; a non-JSON error page: the SDK's parsed body."""
        response: Any = exc.response
        try:
            body: object = response.json()
        except Exception:  # a non-JSON error page: classify the SDK's parsed body
            body = exc.body
        return exc.status_code, body

    def _raw(self) -> HttpTransport:
        """The raw transport for the calls the SDK lacks (built once)."""
        if self._parser_http is None:
            self._parser_http = HttpTransport(
                self._provider,
                base_url=self._base_url,
                api_key=self._api_key,
                timeout=self._timeout,
                connect_timeout=self._connect_timeout,
                clock=self._clock,
            )
        return self._parser_http

    async def parser_create(
        self, *, filename: str, fileobj: BinaryIO, file_type: str, tool_type: str, content_type: str
    ) -> str:
        """GLM's ``POST /files/parser/create`` (raw httpx: the SDK has no parser)."""
        return await self._raw().parser_create(
            filename=filename,
            fileobj=fileobj,
            file_type=file_type,
            tool_type=tool_type,
            content_type=content_type,
        )

    async def parser_result(self, task_id: str) -> ParserAnswer:
        """GLM's ``GET /files/parser/result/{task_id}/text`` (raw httpx)."""
        return await self._raw().parser_result(task_id)

    async def aclose(self) -> None:
        """Close the SDK's HTTP client (if it was ever built) and the raw parser client."""
        if self._client is not None:
            await self._client.close()
        if self._parser_http is not None:
            await self._parser_http.aclose()

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
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from providers.transports._common import mark_sent_async
from providers.transports._sdk import SdkTransport

__all__ = ["OpenAITransport"]


class OpenAITransport(SdkTransport):
    """``providers.types.Transport`` over ``openai.AsyncOpenAI`` (``max_retries=0``).

    The SDK is imported (through ``importer``) and built on first use, so a missing or
    incompatible SDK surfaces as TransportUnavailable on the call, and the chain moves on.
    """

    name = "openai"

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

    async def aclose(self) -> None:
        """Close the SDK's HTTP client (if it was ever built)."""
        if self._client is not None:
            await self._client.close()

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

GLM's file parser is the SDK's ``file_parser`` resource (``create``, ``content``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, BinaryIO

import anyio.to_thread

from providers.transports._common import mark_sent, parser_answer, parser_task
from providers.transports._sdk import SdkTransport
from providers.types import ParserAnswer

__all__ = ["ZhipuAITransport"]


class ZhipuAITransport(SdkTransport):
    """``providers.types.Transport`` over the synchronous ``zhipuai.ZhipuAI`` client (GLM only).

    The SDK is imported (through ``importer``) and built on first use, so a missing or
    incompatible SDK surfaces as TransportUnavailable on the call, and the chain moves on.
    """

    name = "zhipuai"
    _http: Any = None

    def _build(self, sdk: ModuleType) -> Any:
        """The ZhipuAI client over our own ``httpx.Client`` carrying the send probe."""
        httpx = self._importer("httpx")
        timeouts = httpx.Timeout(self._timeout, connect=self._connect_timeout)
        self._http = httpx.Client(timeout=timeouts, event_hooks={"request": [mark_sent]})
        return sdk.ZhipuAI(
            api_key=self._api_key,
            base_url=self._base_url,
            timeout=timeouts,
            max_retries=0,
            http_client=self._http,
            disable_token_cache=True,
        )

    async def _call(self, call: Callable[[Any], Any], client: Any) -> Any:
        """Run one SDK call in a worker thread."""
        return await anyio.to_thread.run_sync(call, client)

    def _answer(self, exc: Any) -> tuple[int, object]:
        """The status and JSON body (the text of a non-JSON error page)."""
        response: Any = exc.response
        try:
            body: object = response.json()
        except ValueError:
            body = response.text
        return response.status_code, body

    def _glm(self) -> bool:
        """Always: the SDK speaks GLM only (paginated listing; it has no ``files.retrieve``)."""
        return True

    async def parser_create(
        self, *, filename: str, fileobj: BinaryIO, file_type: str, tool_type: str, content_type: str
    ) -> str:
        """``file_parser.create`` with an open-file tuple; the task id."""
        answer = await self._run(
            lambda c: c.file_parser.create(
                file=(filename, fileobj, content_type), file_type=file_type, tool_type=tool_type
            )
        )
        return parser_task(self._provider, answer)

    async def parser_result(self, task_id: str) -> ParserAnswer:
        """``file_parser.content(task_id, format_type="text")``, normalised."""
        answer = await self._run(lambda c: c.file_parser.content(task_id, format_type="text"))
        return parser_answer(self._provider, bytes(answer.content))

    async def aclose(self) -> None:
        """Close our HTTP client (the SDK does not own it)."""
        if self._http is not None:
            await anyio.to_thread.run_sync(self._http.close)

"""Reading request bodies in the emulator: aiohttp's multipart reader made quiet and exact.

Shared by the upload and the file-parser handlers.
"""

from __future__ import annotations

import warnings
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from multidict import CIMultiDict, CIMultiDictProxy

from providers.emulator.disposition import disposition_params

__all__ = ["CHUNK", "QuietContent", "Reader", "drain"]

CHUNK = 1 << 16


class Reader(MultipartReader):
    """aiohttp's multipart reader, with each part's Content-Disposition read by us.

    aiohttp parses the first part's header itself (looking for ``_charset_``) and mangles
    names (strips a leading ``\\``, warns and gives up on a second ``;``); under
    ``filterwarnings = error`` that warning was a 500. Each part is handed on with a plain
    ``form-data; name="..."`` header, and its real one is kept in ``disposition``.
    """

    disposition: str | None = None

    async def fetch_next_part(self) -> MultipartReader | BodyPartReader:
        part = await super().fetch_next_part()
        self.disposition = part.headers.get("Content-Disposition")
        name = disposition_params(self.disposition).get("name", "")
        plain = CIMultiDict(part.headers)
        plain["Content-Disposition"] = 'form-data; name="{}"'.format(
            name.replace("\\", "\\\\").replace('"', '\\"')
        )
        part.headers = CIMultiDictProxy(plain)
        return part


class QuietContent:
    """The request body, minus the DeprecationWarning aiohttp's own multipart reader triggers.

    BodyPartReader calls the deprecated ``StreamReader.unread_data`` when a read overshoots
    a boundary (aiohttp#3260), at random, depending on TCP segmentation; under
    ``filterwarnings = error`` that warning became a 500. The call is synchronous, so the
    ``catch_warnings`` below cannot interleave with another request's.
    """

    def __init__(self, inner: StreamReader) -> None:
        self._inner = inner
        self.read = inner.read
        self.readline = inner.readline
        self.at_eof = inner.at_eof

    def unread_data(self, data: bytes) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self._inner.unread_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def drain(request: web.Request) -> None:
    """Read and discard the body, so the client sees the answer instead of a broken pipe."""
    while await request.content.read(CHUNK):
        pass

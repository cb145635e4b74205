"""Remote usage (file count, total bytes) counted page by page, equal to the whole listing."""

from __future__ import annotations

import importlib
import io
from types import ModuleType

import pytest

from providers.client import ProviderClient, UsageSource, usage_of
from providers.emulator.server import Emulator
from providers.limited import LimitedClient
from providers.transports._common import sum_pages
from providers.transports._zhipuai import ZhipuAITransport
from providers.types import RemoteFile
from tests.rigs import TRANSPORTS, make_transport

# GLM: more than two 100-file pages; Kimi sends one page whatever its length.
SEEDED = {"kimi": 7, "glm": 205}


async def seed(provider: str, emu: Emulator, count: int) -> None:
    """``count`` JSONL files of 10..18 bytes, uploaded through the raw transport."""
    seeder = make_transport(provider, "http", emu)
    # GLM caps "agent" at 100 files; "batch" takes JSONL and has no count cap.
    purpose = "file-extract" if provider == "kimi" else "batch"
    try:
        for i in range(count):
            await seeder.upload(
                filename=f"f{i}.jsonl" if provider == "glm" else f"f{i}.json",
                fileobj=io.BytesIO(b'{"n": "' + b"x" * (i % 9) + b'"}\n'),
                purpose=purpose,
                content_type="application/jsonl",
            )
    finally:
        await seeder.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("provider", "name"), TRANSPORTS)
async def test_usage_equals_the_listing_counted(provider: str, name: str) -> None:
    """``usage()`` of every transport is (len, sum of bytes) of the listing, over every page."""
    async with Emulator() as emu:
        await seed(provider, emu, SEEDED[provider])
        transport = make_transport(provider, name, emu)
        try:
            assert isinstance(transport, UsageSource)  # its own paging count, not the fallback
            counted = await transport.usage()
            pages = emu.counts()[provider]["list.200"]
            listed = await transport.list_files()
        finally:
            await transport.aclose()
        stored = [f for f in emu.files() if f.provider == provider]
    assert counted == (len(listed), sum(f.bytes for f in listed))
    assert counted == (SEEDED[provider], sum(f.bytes for f in stored))
    # GLM: each of the 6 documented purposes is asked (a purpose is required): batch 3 pages.
    assert pages == (8 if provider == "glm" else 1)


def _broken_sdk(name: str) -> ModuleType:
    """An importer for which the zhipuai SDK is not installed."""
    if name == "zhipuai":
        raise ModuleNotFoundError(f"No module named {name!r}")
    return importlib.import_module(name)


@pytest.mark.anyio
async def test_client_usage_walks_the_chain_past_an_unusable_transport() -> None:
    """ProviderClient.usage falls back like list_files, and LimitedClient passes it through."""
    async with Emulator() as emu:
        await seed("glm", emu, 150)
        head = ZhipuAITransport(
            "glm",
            base_url=emu.base_url("glm"),
            api_key=emu.key("glm"),
            timeout=10.0,
            connect_timeout=10.0,
            importer=_broken_sdk,
        )
        chain = ProviderClient("glm", [head, make_transport("glm", "http", emu)])
        client = LimitedClient(chain, 2)
        try:
            counted = await usage_of(client)
        finally:
            await client.aclose()
        total = sum(f.bytes for f in emu.files())
    assert counted == (150, total)


class ListingOnly:
    """A transport-like fake with a listing but no ``usage``."""

    name = "fake"

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        return [RemoteFile("glm", f"file-{i}", f"{i}.txt", i, 0.0, "agent") for i in (3, 4)]


@pytest.mark.anyio
async def test_usage_of_counts_the_listing_without_a_usage_method() -> None:
    """An object with only ``list_files`` is counted from its listing."""
    assert await usage_of(ListingOnly()) == (2, 7)


def _file(file_id: str, size: int) -> RemoteFile:
    return RemoteFile("glm", file_id, f"{file_id}.txt", size, 0.0, "agent")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("pages", "expected", "fetches"),
    [
        # Three pages; the second repeats one file of the first: counted once.
        ([(["a", "b"], True), (["b", "c"], True), (["d"], False)], (4, 1 + 2 + 3 + 4), 3),
        # A server ignoring ``after`` repeats page one: the repeated cursor stops the walk.
        ([(["a", "b"], True), (["a", "b"], True), (["x"], False)], (2, 1 + 2), 2),
        # has_more with an empty page stops too.
        ([(["a"], True), ([], True), (["x"], False)], (1, 1), 2),
    ],
)
async def test_sum_pages_counts_each_file_once_and_stops_on_a_repeat(
    pages: list[tuple[list[str], bool]], expected: tuple[int, int], fetches: int
) -> None:
    """sum_pages dedupes by id and keeps collect_pages' loop guards."""
    sizes = {"a": 1, "b": 2, "c": 3, "d": 4, "x": 100}
    cursors: list[str | None] = []

    async def fetch(after: str | None) -> tuple[list[RemoteFile], bool]:
        ids, more = pages[len(cursors)]
        cursors.append(after)
        return [_file(i, sizes[i]) for i in ids], more

    assert await sum_pages(fetch) == expected
    assert len(cursors) == fetches
    assert cursors[:2] == [None, pages[0][0][-1]]

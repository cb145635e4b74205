"""``extract`` through every transport of both providers against the real emulator.

Each case uploads through a ``ProviderClient`` whose chain is one transport, then fetches the
text: Kimi by its content envelope, GLM by ``/content`` (batch) or the file parser (agent),
including the still-processing poll, the permanent and the transient failures.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import BinaryIO

import pytest

from providers.client import ProviderClient
from providers.emulator.server import Emulator
from providers.errors import Permanent, Retryable, TransportUnavailable
from providers.extract import ExtractPolicy
from providers.limited import LimitedClient
from providers.types import Extracted, ParserTransport, RemoteFile, UploadResult
from tests.rigs import TRANSPORTS
from tests.rigs import make_transport as transport

GLM_TRANSPORTS = [name for provider, name in TRANSPORTS if provider == "glm"]
# Waits are recorded, never slept: the emulator answers each poll at once.
POLICY = ExtractPolicy(initial_delay=0.01, max_delay=0.04, give_up_after=0.1)


class Recorder:
    """A sleep that records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """An emulator whose parser tasks answer ``processing`` twice before their text."""
    async with Emulator(parser_polls=2) as running:
        yield running


async def _upload(client: ProviderClient, name: str, data: bytes, purpose: str) -> RemoteFile:
    result = await client.upload(
        filename=name,
        fileobj=io.BytesIO(data),
        size=len(data),
        purpose=purpose,
        content_type="application/octet-stream",
    )
    return result.remote


def _client(provider: str, name: str, emu: Emulator, sleep: Recorder) -> ProviderClient:
    return ProviderClient(
        provider, [transport(provider, name, emu)], extract_policy=POLICY, sleep=sleep
    )


@pytest.mark.anyio
@pytest.mark.parametrize(("provider", "name"), TRANSPORTS)
async def test_extract_text_equals_what_the_emulator_serves(
    emu: Emulator, provider: str, name: str
) -> None:
    """Every transport fetches exactly the emulator's text: Kimi's envelope content, GLM's
    batch lines, and GLM's parser text after two processing polls."""
    sleep = Recorder()
    client = _client(provider, name, emu, sleep)
    try:
        if provider == "kimi":
            cases = [("notes.md", "# 标题\nbody\n".encode(), "file-extract", "content")]
            cases.append(("scan.pdf", b"%PDF-1.4 x", "file-extract", "content"))
        else:
            cases = [("rows.jsonl", b'{"a": 1}\n', "batch", "content")]
            cases.append(("memo.txt", "备忘\n".encode(), "agent", "parser"))
            cases.append(("deck.pdf", b"%PDF-1.4 y", "code-interpreter", "parser"))
        got: list[Extracted] = []
        expected: list[Extracted] = []
        for filename, data, purpose, method in cases:
            remote = await _upload(client, filename, data, purpose)
            got.append(await client.extract(remote, io.BytesIO(data)))
            expected.append(Extracted(emu.extracted_text(remote.id), method, name))
    finally:
        await client.aclose()
    assert got == expected
    parsed = sum(1 for case in cases if case[3] == "parser")
    assert emu.counts()[provider].get("parse_result.200", 0) == 3 * parsed
    assert sleep.waits == [0.01, 0.02] * parsed


@pytest.mark.anyio
@pytest.mark.parametrize("name", GLM_TRANSPORTS)
async def test_parser_failure_is_permanent_extract_failed(emu: Emulator, name: str) -> None:
    """A parser task that ends ``failed`` is Permanent(reason="extract_failed")."""
    client = _client("glm", name, emu, Recorder())
    try:
        remote = await _upload(client, "a.pdf", b"%PDF-1.4", "agent")
        emu.set_faults("glm", "parsefail")
        with pytest.raises(Permanent) as info:
            await client.extract(remote, io.BytesIO(b"%PDF-1.4"))
    finally:
        await client.aclose()
    assert info.value.reason == "extract_failed"
    assert "status 'failed': 文件解析失败" in info.value.message


@pytest.mark.anyio
@pytest.mark.parametrize("name", GLM_TRANSPORTS)
async def test_parser_refused_type_is_permanent(emu: Emulator, name: str) -> None:
    """A type the server's parser refuses (400 1214 naming 文件解析) is extract_failed."""
    client = ProviderClient(
        "glm",
        [transport("glm", name, emu)],
        extract_policy=ExtractPolicy(tool_type="expert"),  # Expert reads pdf only
        sleep=Recorder(),
    )
    try:
        remote = await _upload(client, "a.docx", b"PK\x03\x04", "agent")
        with pytest.raises(Permanent) as info:
            await client.extract(remote, io.BytesIO(b"PK\x03\x04"))
    finally:
        await client.aclose()
    assert (info.value.reason, info.value.status, info.value.code) == (
        "extract_failed",
        400,
        "1214",
    )


@pytest.mark.anyio
@pytest.mark.parametrize("name", GLM_TRANSPORTS)
async def test_parser_transient_failures_are_retryable(emu: Emulator, name: str) -> None:
    """A 500 on create or on a poll, and a task still processing past the bound, are
    Retryable; the text then comes on a later try."""
    sleep = Recorder()
    client = _client("glm", name, emu, sleep)
    data = b"%PDF-1.4 z"
    try:
        remote = await _upload(client, "a.pdf", data, "agent")
        emu.set_faults("glm", "seq=503")  # the create request
        with pytest.raises(Retryable) as on_create:
            await client.extract(remote, io.BytesIO(data))
        emu.set_faults("glm", "seq=ok/ok/500")  # create, first poll, second poll
        with pytest.raises(Retryable) as on_poll:
            await client.extract(remote, io.BytesIO(data))
        emu.set_faults("glm", None)
        async with Emulator(parser_polls=50) as slow:
            slow_client = _client("glm", name, slow, sleep)
            try:
                slow_remote = await _upload(slow_client, "a.pdf", data, "agent")
                with pytest.raises(Retryable) as past_bound:
                    await slow_client.extract(slow_remote, io.BytesIO(data))
            finally:
                await slow_client.aclose()
        text = await client.extract(remote, io.BytesIO(data))
    finally:
        await client.aclose()
    assert (on_create.value.status, on_poll.value.status) == (503, 500)
    assert past_bound.value.status is None
    assert "still processing" in past_bound.value.message
    assert text.text == emu.extracted_text(remote.id)
    for error in (on_create.value, on_poll.value, past_bound.value):
        assert emu.key("glm") not in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["openai", "http"])
async def test_kimi_extract_failure_permanent_and_5xx_retryable(emu: Emulator, name: str) -> None:
    """Kimi's real extraction failure (500 "extract task failed") is extract_failed; a plain
    502 on the content request is Retryable; no error text carries the key."""
    client = _client("kimi", name, emu, Recorder())
    try:
        remote = await _upload(client, "a.pdf", b"%PDF", "file-extract")
        emu.set_faults("kimi", "seq=extract/502")
        with pytest.raises(Permanent) as failed:
            await client.extract(remote, None)
        with pytest.raises(Retryable) as passing:
            await client.extract(remote, None)
    finally:
        await client.aclose()
    assert (failed.value.reason, failed.value.status) == ("extract_failed", 500)
    assert passing.value.status == 502
    for error in (failed.value, passing.value):
        assert emu.key("kimi") not in str(error)


@pytest.mark.anyio
async def test_purpose_without_text_sends_nothing(emu: Emulator) -> None:
    """A Kimi image file has no text: extract_failed at once, no request sent."""
    client = _client("kimi", "http", emu, Recorder())
    remote = RemoteFile("kimi", "c1", "a.png", 4, 0.0, "image")
    try:
        with pytest.raises(Permanent) as info:
            await client.extract(remote, None)
    finally:
        await client.aclose()
    assert info.value.reason == "extract_failed"
    assert "no extracted text for purpose 'image'" in info.value.message
    assert emu.counts()["kimi"] == {}


@pytest.mark.anyio
async def test_glm_parser_needs_the_bytes(emu: Emulator) -> None:
    """Parsing a GLM agent file without its bytes is a caller's error (ValueError)."""
    client = _client("glm", "http", emu, Recorder())
    try:
        with pytest.raises(ValueError, match="parses agent files from their bytes"):
            await client.extract(RemoteFile("glm", "f1", "a.pdf", 4, 0.0, "agent"), None)
    finally:
        await client.aclose()


class _NoParser:
    """A Transport without the parser calls (a third-party one, say)."""

    name = "plain"

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, purpose: str, content_type: str
    ) -> RemoteFile:
        raise AssertionError("not used")

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        raise AssertionError("not used")

    async def retrieve(self, file_id: str) -> RemoteFile:
        raise AssertionError("not used")

    async def delete(self, file_id: str) -> None:
        raise AssertionError("not used")

    async def content(self, file_id: str) -> bytes:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_chain_walks_past_a_transport_without_the_parser(emu: Emulator) -> None:
    """A transport lacking the parser calls counts as unusable: the next one parses."""
    assert not isinstance(_NoParser(), ParserTransport)
    http = transport("glm", "http", emu)
    moves: list[tuple[str, str, str, str]] = []
    client = ProviderClient(
        "glm",
        [_NoParser(), http],
        extract_policy=POLICY,
        sleep=Recorder(),
        on_fallback=lambda *move: moves.append(move),
    )
    stored = emu.add_file("glm", "a.txt", b"hello", purpose="agent")
    remote = RemoteFile("glm", stored.id, "a.txt", 5, 0.0, "agent")
    try:
        got = await client.extract(remote, io.BytesIO(b"hello"))
    finally:
        await client.aclose()
    assert got == Extracted("hello", "parser", "http")
    assert [(m[1], m[2]) for m in moves] == [("plain", "http")] * 4  # create + 3 polls


@pytest.mark.anyio
async def test_limited_client_passes_extract_through(emu: Emulator) -> None:
    """LimitedClient.extract is the inner client's, unpaced; an inner without it is
    TransportUnavailable."""
    inner = _client("kimi", "http", emu, Recorder())
    limited = LimitedClient(inner, concurrency=1)
    try:
        remote = await _upload(inner, "a.txt", b"text", "file-extract")
        got = await limited.extract(remote, None)
        bare = LimitedClient(_Bare(), concurrency=1)
        with pytest.raises(TransportUnavailable, match="cannot fetch extracted text"):
            await bare.extract(remote, None)
    finally:
        await limited.aclose()
    assert got == Extracted("text", "content", "http")
    assert limited.pacer.concurrency == 1


class _Bare:
    """An UploadClient that cannot extract."""

    name = "kimi"

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult:
        raise AssertionError("not used")

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        return []

    async def delete(self, file_id: str) -> None:
        pass

    async def aclose(self) -> None:
        pass

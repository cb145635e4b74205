"""ProviderClient's chain: down only when nothing was sent; integrity; the factory's checks."""

from __future__ import annotations

import hashlib
import importlib
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, NamedTuple

import httpx
import pytest

from daemon.config.settings import InboxSettings, Settings
from daemon.runtime.wiring import build_clients
from providers.client import ProviderClient
from providers.emulator.server import Emulator
from providers.errors import (
    AuthFailed,
    ConfigError,
    Permanent,
    QuotaExhausted,
    Retryable,
    Throttled,
    TransportUnavailable,
)
from providers.factory import build_client
from providers.transports._openai import OpenAITransport
from providers.types import RemoteFile, Transport
from tests.fakes import Importer, missing
from tests.harness import provider_section
from tests.rigs import PAYLOAD, chain_client, make_transport, upload


def incompatible(module: str, client_class: str) -> Importer:
    """An importer whose ``module`` has a client class with a signature we do not fit."""

    class Drifted:
        def __init__(self, **kwargs: object) -> None:
            raise TypeError(f"__init__() got an unexpected keyword argument {sorted(kwargs)[0]!r}")

    def importer(name: str) -> ModuleType:
        real = importlib.import_module(name)
        if name != module:
            return real
        fake = ModuleType(name)
        fake.__dict__.update(real.__dict__)
        setattr(fake, client_class, Drifted)
        return fake

    return importer


class _RejectingFiles:
    """A real SDK's ``files`` whose ``create`` rejects our arguments before any I/O."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def create(self, **kwargs: object) -> Any:
        raise TypeError("create() got an unexpected keyword argument 'purpose'")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def rejects_before_sending(module: str, client_class: str) -> Importer:
    """The REAL SDK, except that ``files.create`` raises TypeError before sending."""

    def importer(name: str) -> ModuleType:
        real = importlib.import_module(name)
        if name != module:
            return real
        real_class = getattr(real, client_class)

        def build(**kwargs: object) -> Any:
            client = real_class(**kwargs)
            client.files = _RejectingFiles(client.files)
            return client

        fake = ModuleType(name)
        fake.__dict__.update(real.__dict__)
        setattr(fake, client_class, build)
        return fake

    return importer


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A fresh emulator."""
    async with Emulator() as running:
        yield running


class Head(NamedTuple):
    """A chain head: provider, transport name, its SDK module and client class."""

    provider: str
    name: str
    module: str
    client_class: str


HEADS = [
    pytest.param(Head("kimi", "openai", "openai", "AsyncOpenAI"), id="kimi-openai"),
    pytest.param(Head("glm", "zhipuai", "zhipuai", "ZhipuAI"), id="glm-zhipuai"),
    pytest.param(Head("glm", "openai", "openai", "AsyncOpenAI"), id="glm-openai"),
]
NEVER_SENT = [
    pytest.param(lambda module, _cls: missing(module), "ModuleNotFoundError", id="sdk-missing"),
    pytest.param(incompatible, "TypeError", id="sdk-incompatible"),
    pytest.param(rejects_before_sending, "TypeError", id="sdk-raises-before-sending"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize(("make_importer", "why"), NEVER_SENT)
async def test_never_sent_falls_back_to_the_next_transport(
    emu: Emulator,
    head: Head,
    make_importer: Callable[[str, str], Importer],
    why: str,
) -> None:
    """A head transport that fails before sending hands the upload to the next one, once."""
    provider = head.provider
    importer = make_importer(head.module, head.client_class)
    async with chain_client(
        provider,
        make_transport(provider, head.name, emu, importer=importer),
        make_transport(provider, "http", emu),
    ) as (client, fallbacks):
        result = await upload(client)
        assert result.transport == "http"
        [stored] = emu.files()
        assert stored.id == result.remote.id
        assert stored.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
        assert fallbacks.hops() == [(provider, head.name, "http")]
        assert why in fallbacks.calls[0][3]
        # Exactly one upload request reached the server: the head sent nothing.
        assert emu.counts()[provider] == {"upload.200": 1}


@pytest.mark.anyio
async def test_glm_walks_the_whole_chain(emu: Emulator) -> None:
    """GLM with zhipuai missing and openai incompatible ends on raw httpx, reporting both hops."""
    async with chain_client(
        "glm",
        make_transport("glm", "zhipuai", emu, importer=missing("zhipuai")),
        make_transport("glm", "openai", emu, importer=incompatible("openai", "AsyncOpenAI")),
        make_transport("glm", "http", emu),
    ) as (client, fallbacks):
        result = await upload(client)
        assert result.transport == "http"
        assert fallbacks.hops() == [("glm", "zhipuai", "openai"), ("glm", "openai", "http")]
        assert len(emu.files()) == 1


@pytest.mark.anyio
async def test_zhipuai_missing_lands_on_the_openai_sdk(emu: Emulator) -> None:
    """GLM's second link is the real openai SDK, used when zhipuai is not installed."""
    async with chain_client(
        "glm",
        make_transport("glm", "zhipuai", emu, importer=missing("zhipuai")),
        make_transport("glm", "openai", emu, importer=importlib.import_module),
        make_transport("glm", "http", emu),
    ) as (client, fallbacks):
        result = await upload(client)
        assert result.transport == "openai"
        assert fallbacks.hops() == [("glm", "zhipuai", "openai")]
        assert emu.counts()["glm"] == {"upload.200": 1}


@pytest.mark.anyio
async def test_every_transport_unusable_raises_transport_unavailable(emu: Emulator) -> None:
    """When no transport can send, the client says so and nothing reached the server."""
    chain = [
        make_transport("kimi", "openai", emu, importer=missing("openai")),
        make_transport("kimi", "openai", emu, importer=incompatible("openai", "AsyncOpenAI")),
    ]
    client = ProviderClient("kimi", chain)
    try:
        with pytest.raises(TransportUnavailable) as caught:
            await upload(client)
        assert "no transport could send the request (openai, openai)" in str(caught.value)
        assert emu.counts()["kimi"] == {}
    finally:
        await client.aclose()


# fault → the error every transport raises; none of them may move down the chain.
NO_FALLBACK = [
    pytest.param("401", AuthFailed, id="401"),
    pytest.param("quota", QuotaExhausted, id="quota-429"),
    pytest.param("429:1", Throttled, id="throttled-429"),
    pytest.param("500", Retryable, id="500"),
    pytest.param("503", Retryable, id="503"),
    pytest.param("reset", Retryable, id="reset-ambiguous"),
    pytest.param("drop", Retryable, id="drop-ambiguous"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize(("fault", "kind"), NO_FALLBACK)
async def test_server_answers_and_ambiguous_failures_never_fall_back(
    emu: Emulator,
    head: Head,
    fault: str,
    kind: type[Exception],
) -> None:
    """A 4xx/5xx/429 answer or a failure after sending is raised as is, from the head only."""
    provider = head.provider
    emu.set_faults(provider, fault)
    async with chain_client(
        provider,
        make_transport(provider, head.name, emu, importer=importlib.import_module),
        make_transport(provider, "http", emu),
    ) as (client, fallbacks):
        with pytest.raises(kind) as caught:
            await upload(client)
        assert type(caught.value) is kind
        if fault in ("reset", "drop"):
            assert isinstance(caught.value, Retryable)
            assert caught.value.ambiguous is True
        assert fallbacks.calls == []
        assert sum(emu.counts()[provider].values()) == 1


class FailsMidBody(io.BytesIO):
    """A file whose second read fails: the request was already being sent."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads += 1
        if self.reads >= 2:
            raise OSError("Input/output error")
        return super().read(size)


@pytest.mark.anyio
@pytest.mark.parametrize("head", HEADS)
async def test_failure_after_the_probe_is_ambiguous_not_a_fallback(
    emu: Emulator, head: Head
) -> None:
    """A raw OSError from the real SDK once the request reached its HTTP layer never falls back."""
    provider = head.provider
    async with chain_client(
        provider,
        make_transport(provider, head.name, emu, importer=importlib.import_module),
        make_transport(provider, "http", emu),
    ) as (client, fallbacks):
        with pytest.raises(Retryable) as caught:
            await upload(client, FailsMidBody(b"x" * (1 << 20)))
        assert caught.value.ambiguous is True
        assert fallbacks.calls == []
        assert emu.files() == []


class Lying:
    """A real transport whose upload reports one byte more than the provider stored."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.name = inner.name

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, purpose: str, content_type: str
    ) -> RemoteFile:
        remote = await self._inner.upload(
            filename=filename, fileobj=fileobj, purpose=purpose, content_type=content_type
        )
        return replace(remote, bytes=remote.bytes + 1)

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        return await self._inner.list_files(purpose)

    async def retrieve(self, file_id: str) -> RemoteFile:
        return await self._inner.retrieve(file_id)

    async def delete(self, file_id: str) -> None:
        await self._inner.delete(file_id)

    async def content(self, file_id: str) -> bytes:
        return await self._inner.content(file_id)

    async def aclose(self) -> None:
        await self._inner.aclose()


class ReadsThenGivesUp(Lying):
    """A transport that consumes part of the file, then finds it cannot send."""

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, purpose: str, content_type: str
    ) -> RemoteFile:
        fileobj.read(7)
        raise TransportUnavailable("cannot be used, nothing was sent (test)", provider="kimi")


@pytest.mark.anyio
async def test_size_mismatch_deletes_the_remote_copy(emu: Emulator) -> None:
    """A reported size other than ours deletes the stored copy and raises a plain Retryable."""
    client = ProviderClient("kimi", [Lying(make_transport("kimi", "http", emu))])
    try:
        with pytest.raises(Retryable) as caught:
            await upload(client)
        assert caught.value.ambiguous is False
        assert f"stored {len(PAYLOAD) + 1} bytes for doc.txt, we sent {len(PAYLOAD)}" in str(
            caught.value
        )
        assert emu.files() == []
        assert emu.counts()["kimi"] == {"upload.200": 1, "delete.200": 1}
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_fallback_rewinds_the_file(emu: Emulator) -> None:
    """The next transport sends the whole file even if the previous one read part of it."""
    inner = make_transport("kimi", "http", emu)
    client = ProviderClient("kimi", [ReadsThenGivesUp(inner), make_transport("kimi", "http", emu)])
    try:
        result = await upload(client)
        assert result.remote.bytes == len(PAYLOAD)
        [stored] = emu.files()
        assert stored.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_delete_of_an_unknown_file_is_done(emu: Emulator) -> None:
    """Deleting a file the provider does not know succeeds (it is gone either way)."""
    client = build_client(
        "glm",
        base_url=emu.base_url("glm"),
        api_key=emu.key("glm"),
        transports=["zhipuai", "openai", "http"],
        timeout=10.0,
        connect_timeout=10.0,
    )
    try:
        await client.delete("no-such-file")
        assert emu.counts()["glm"] == {"delete.404": 1}
        with pytest.raises(Permanent) as caught:
            await client.retrieve("no-such-file")
        assert caught.value.reason == "not_found"
    finally:
        await client.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "transports"),
    [("kimi", ["openai", "http"]), ("glm", ["zhipuai", "openai", "http"])],
)
async def test_factory_builds_a_working_chain(
    emu: Emulator, provider: str, transports: list[str]
) -> None:
    """build_client's chain uploads, lists and deletes with the head transport."""
    client = build_client(
        provider,
        base_url=emu.base_url(provider),
        api_key=emu.key(provider),
        transports=transports,
        timeout=10.0,
        connect_timeout=10.0,
    )
    try:
        assert client.transport_names == tuple(transports)
        result = await upload(client)
        assert result.transport == transports[0]
        assert await client.list_files() == [result.remote]
        await client.delete(result.remote.id)
        assert emu.files() == []
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_factory_hands_http_transport_to_the_raw_client() -> None:
    """The injected httpx transport carries the raw client's requests, without a hand-set type."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"id": "f1", "object": "file", "bytes": 3, "created_at": 1, "filename": "a.txt"}
        return httpx.Response(200, json={**body, "purpose": "file-extract", "status": "ok"})

    client = build_client(
        "kimi",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-test",
        transports=["http"],
        timeout=1.0,
        connect_timeout=1.0,
        http_transport=httpx.MockTransport(answer),
    )
    try:
        result = await client.upload(
            filename="a.txt",
            fileobj=io.BytesIO(b"abc"),
            size=3,
            purpose="file-extract",
            content_type="text/plain",
        )
        assert result.remote.id == "f1"
        [request] = seen
        assert request.url.path == "/v1/files"
        assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("provider", "transports", "needle"),
    [
        ("kimi", ["zhipuai", "http"], "providers.kimi.transports: 'zhipuai' cannot talk to kimi"),
        ("glm", ["carrier-pigeon"], "providers.glm.transports: 'carrier-pigeon'"),
        ("glm", [], "name at least one"),
        ("mistral", ["http"], "providers.mistral: unknown provider"),
    ],
)
def test_factory_rejects_impossible_chains(
    provider: str, transports: list[str], needle: str
) -> None:
    """A transport that cannot talk to the provider is a config error naming the key."""
    with pytest.raises(ConfigError) as caught:
        build_client(
            provider,
            base_url="http://127.0.0.1:9/v1",
            api_key="k",
            transports=transports,
            timeout=1.0,
            connect_timeout=1.0,
        )
    assert needle in str(caught.value)


@pytest.mark.anyio
async def test_key_quoted_by_a_failing_sdk_never_reaches_the_message(emu: Emulator) -> None:
    """An SDK error quoting the API key is scrubbed before it reaches logs or the error."""

    class Quoting:
        def __init__(self, *, api_key: str, **_: object) -> None:
            raise ValueError(f"malformed key {api_key}")

    def importer(name: str) -> ModuleType:
        real = importlib.import_module(name)
        if name != "openai":
            return real
        fake = ModuleType(name)
        fake.__dict__.update(real.__dict__)
        fake.AsyncOpenAI = Quoting  # type: ignore[attr-defined]
        return fake

    key = "emulator-key-without-a-key-shape"
    transport = OpenAITransport(
        "kimi",
        base_url=emu.base_url("kimi"),
        api_key=key,
        timeout=1.0,
        connect_timeout=1.0,
        importer=importer,
    )
    async with chain_client("kimi", transport, transport) as (client, fallbacks):
        with pytest.raises(TransportUnavailable) as caught:
            await upload(client)
        assert "malformed key [redacted]" in str(caught.value)
        assert key not in str(caught.value)
        assert all(key not in call[3] for call in fallbacks.calls)
        assert len(fallbacks.calls) == 1


@pytest.mark.anyio
async def test_wired_glm_client_lists_by_the_purposes_in_use(emu: Emulator, tmp_path: Path) -> None:
    """The daemon's GLM client counts its files with one list call per purpose in use."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    glm = provider_section("glm").model_copy(
        update={"base_url": emu.base_url("glm"), "api_key": emu.key("glm")}
    )
    settings = Settings(
        state_dir=tmp_path,
        inbox=[
            InboxSettings(name="a", path=tmp_path / "a", providers=["glm"]),
            InboxSettings(
                name="b", path=tmp_path / "b", providers=["glm"], purpose={"glm": "batch"}
            ),
        ],
        providers={"glm": glm},
    )
    client = build_clients(settings)["glm"]
    try:
        assert await client.usage() == (0, 0)
    finally:
        await client.aclose()
    assert emu.counts()["glm"] == {"list.200": 2}  # agent and batch, nothing else

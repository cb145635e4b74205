"""Every transport of both providers against the real emulator: round trip, paging, errors."""

from __future__ import annotations

import hashlib
import io
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from providers.emulator.server import Emulator
from providers.errors import Permanent, ProviderError, Retryable, TransportUnavailable
from providers.limits import GLM_LIMITS, KIMI_LIMITS, PurposeOverride
from providers.transports._http import HttpTransport
from providers.transports._openai import OpenAITransport
from providers.transports._zhipuai import ZhipuAITransport
from tests.rigs import TRANSPORTS, make_transport

# A purpose whose content the provider serves back, and a file name it accepts for it.
PURPOSE = {"kimi": "file-extract", "glm": "batch"}
FILENAME = {"kimi": "note.txt", "glm": "rows.jsonl"}

# Small limits so "too large" needs no big file: Kimi 64 bytes; GLM 32 bytes for batch and
# 64 for every other purpose (so 64 is GLM's API-wide cap, answered with HTTP 435).
SMALL_LIMITS = {
    "kimi": KIMI_LIMITS.with_overrides(
        {"file-extract": PurposeOverride(max_bytes=64)}, max_files=1
    ),
    "glm": GLM_LIMITS.with_overrides(
        {p: PurposeOverride(max_bytes=32 if p == "batch" else 64) for p in GLM_LIMITS.purposes},
        max_files=1,
    ),
}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A fresh emulator with documented limits."""
    async with Emulator() as running:
        yield running


@pytest.fixture
async def small_emu() -> AsyncIterator[Emulator]:
    """A fresh emulator with tiny size limits and a one-file account cap."""
    async with Emulator(limits=SMALL_LIMITS) as running:
        yield running


@pytest.mark.anyio
@pytest.mark.parametrize(("provider", "name"), TRANSPORTS)
async def test_round_trip(emu: Emulator, provider: str, name: str) -> None:
    """Upload, list, retrieve, content and delete all work and agree with the ground truth."""
    payload = b'{"n": 1}\n{"n": 2}\n'
    transport = make_transport(provider, name, emu)
    try:
        remote = await transport.upload(
            filename=FILENAME[provider],
            fileobj=io.BytesIO(payload),
            purpose=PURPOSE[provider],
            content_type="application/octet-stream",
        )
        [stored] = emu.files()
        assert (stored.provider, stored.id, stored.filename, stored.purpose) == (
            provider,
            remote.id,
            FILENAME[provider],
            PURPOSE[provider],
        )
        assert stored.bytes == remote.bytes == len(payload)
        assert stored.sha256 == hashlib.sha256(payload).hexdigest()
        assert remote.provider == provider
        assert remote.created_at > 0
        assert await transport.list_files() == [remote]
        assert await transport.list_files(PURPOSE[provider]) == [remote]
        assert await transport.list_files("image" if provider == "kimi" else "agent") == []
        assert await transport.retrieve(remote.id) == remote
        content = await transport.content(remote.id)
        if provider == "kimi":
            assert json.loads(content)["content"] == payload.decode()
        else:
            assert content == payload
        await transport.delete(remote.id)
        assert emu.files() == []
        assert await transport.list_files() == []
    finally:
        await transport.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["zhipuai", "openai", "http"])
async def test_glm_listing_follows_every_page(emu: Emulator, name: str) -> None:
    """A GLM listing longer than one 100-file page comes back whole, filtered by purpose."""
    seeder = make_transport("glm", "http", emu)
    transport = make_transport("glm", name, emu)
    try:
        for i in range(205):
            await seeder.upload(
                filename=f"f{i}.jsonl",
                fileobj=io.BytesIO(b"{}\n"),
                purpose="batch",
                content_type="application/jsonl",
            )
        await seeder.upload(
            filename="a.txt",
            fileobj=io.BytesIO(b"x"),
            purpose="agent",
            content_type="text/plain",
        )
        truth = {f.id for f in emu.files()}
        listed = await transport.list_files()
        assert len(listed) == 206
        assert {f.id for f in listed} == truth
        batch = await transport.list_files("batch")
        assert len(batch) == 205
        assert all(f.purpose == "batch" for f in batch)
        assert await transport.usage() == (206, 205 * 3 + 1)  # type: ignore[attr-defined]
        counts = emu.counts()["glm"]
        # Every list call names a purpose (GLM requires it): with none configured, a whole
        # listing asks each of the 6 documented purposes (batch: 3 pages, the others: 1).
        assert counts == {"upload.200": 206, "list.200": 8 + 3 + 8}
    finally:
        await seeder.aclose()
        await transport.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["zhipuai", "openai", "http"])
async def test_glm_listing_asks_the_purposes_in_use(emu: Emulator, name: str) -> None:
    """With the purposes in use given, a whole GLM listing and count ask exactly those."""
    cls = {"openai": OpenAITransport, "zhipuai": ZhipuAITransport, "http": HttpTransport}[name]
    transport = cls(
        "glm",
        base_url=emu.base_url("glm"),
        api_key=emu.key("glm"),
        timeout=10.0,
        connect_timeout=10.0,
        list_purposes=("agent", "batch"),
    )
    try:
        for purpose, filename in (("agent", "a.txt"), ("batch", "b.jsonl"), ("agent", "c.txt")):
            await transport.upload(
                filename=filename,
                fileobj=io.BytesIO(b"{}\n"),
                purpose=purpose,
                content_type="text/plain",
            )
        listed = await transport.list_files()
        assert sorted(f.filename for f in listed) == ["a.txt", "b.jsonl", "c.txt"]
        assert await transport.usage() == (3, 9)
        assert emu.counts()["glm"] == {"upload.200": 3, "list.200": 4}
    finally:
        await transport.aclose()


@dataclass(frozen=True)
class Case:
    """One error kind: how to provoke it and what every transport must raise."""

    fault: str | None = None
    size: int = 10
    purpose: str | None = None
    api_key: str | None = None
    refused: bool = False
    seed: bool = False
    op: str = "upload"
    timeout: float = 10.0
    stored_after: int | None = 0


CASES: dict[str, Case] = {
    "fault_401": Case(fault="401"),
    "wrong_key": Case(api_key="not-the-key"),
    "quota": Case(fault="quota"),
    "rate_limit": Case(fault="429:2"),
    "rate_limit_in_text": Case(fault="429msg:3"),
    "concurrency_limit": Case(fault="429conc"),
    "balance": Case(fault="balance"),
    "extract_failed": Case(fault="extract"),
    "server_500": Case(fault="500"),
    "server_503": Case(fault="503"),
    "reset": Case(fault="reset"),
    "drop": Case(fault="drop", stored_after=1),
    "refused": Case(refused=True),
    # The server may still store the file after we gave up: exactly why it is ambiguous.
    "read_timeout": Case(fault="latency=600", timeout=0.1, stored_after=None),
    "empty": Case(size=0),
    "bad_purpose": Case(purpose="assistants"),
    "too_large": Case(size=100),
    "glm_too_large_for_purpose": Case(size=40),
    "file_count": Case(seed=True, stored_after=1),
    "delete_unknown": Case(op="delete"),
}

KIMI_400 = "invalid_request_error"
# kind → provider → (class, status, code, reason, retry_after, ambiguous)
Sig = tuple[str, int | None, str | None, str | None, float | None, bool | None]
EXPECTED: dict[str, dict[str, Sig]] = {
    "fault_401": {
        "kimi": ("AuthFailed", 401, "invalid_authentication_error", None, None, None),
        "glm": ("AuthFailed", 401, "1002", None, None, None),
    },
    "wrong_key": {
        "kimi": ("AuthFailed", 401, "invalid_authentication_error", None, None, None),
        "glm": ("AuthFailed", 401, "1002", None, None, None),
    },
    "quota": {
        "kimi": ("QuotaExhausted", 429, "exceeded_current_quota_error", None, None, None),
        "glm": ("QuotaExhausted", 429, "1113", None, None, None),
    },
    "rate_limit": {
        "kimi": ("Throttled", 429, "rate_limit_reached_error", None, 2.0, False),
        "glm": ("Throttled", 429, "1302", None, 2.0, False),
    },
    # The wait only in Kimi's message text; GLM's 1302/1303 name none.
    "rate_limit_in_text": {
        "kimi": ("Throttled", 429, "rate_limit_reached_error", None, 3.0, False),
        "glm": ("Throttled", 429, "1303", None, None, False),
    },
    "concurrency_limit": {
        "kimi": ("Throttled", 429, "rate_limit_reached_error", None, 1.0, False),
        "glm": ("Throttled", 429, "1302", None, None, False),
    },
    "balance": {
        "kimi": ("QuotaExhausted", 403, "permission_denied_error", None, None, None),
        "glm": ("QuotaExhausted", 429, "1113", None, None, None),
    },
    "extract_failed": {
        "kimi": ("Permanent", 500, None, "extract_failed", None, None),
        "glm": ("Retryable", 500, "500", None, None, False),
    },
    "server_500": {
        "kimi": ("Retryable", 500, "server_error", None, None, False),
        "glm": ("Retryable", 500, "500", None, None, False),
    },
    "server_503": {
        "kimi": ("Retryable", 503, "server_error", None, None, False),
        "glm": ("Retryable", 503, "500", None, None, False),
    },
    "reset": dict.fromkeys(("kimi", "glm"), ("Retryable", None, None, None, None, True)),
    "drop": dict.fromkeys(("kimi", "glm"), ("Retryable", None, None, None, None, True)),
    "refused": dict.fromkeys(("kimi", "glm"), ("Retryable", None, None, None, None, False)),
    "read_timeout": dict.fromkeys(("kimi", "glm"), ("Retryable", None, None, None, None, True)),
    "empty": {
        "kimi": ("Permanent", 400, KIMI_400, "empty", None, None),
        "glm": ("Permanent", 400, "1214", "empty", None, None),
    },
    "bad_purpose": {
        "kimi": ("Permanent", 400, KIMI_400, "upload_rejected", None, None),
        "glm": ("Permanent", 400, "1214", "upload_rejected", None, None),
    },
    "too_large": {
        "kimi": ("Permanent", 400, KIMI_400, "too_large", None, None),
        "glm": ("Permanent", 435, "1214", "too_large", None, None),
    },
    "glm_too_large_for_purpose": {
        "glm": ("Permanent", 400, "1214", "too_large", None, None),
    },
    "file_count": {
        "kimi": ("QuotaExhausted", 400, KIMI_400, None, None, None),
        "glm": ("QuotaExhausted", 400, "1214", None, None, None),
    },
    "delete_unknown": {
        "kimi": ("Permanent", 404, "resource_not_found_error", "not_found", None, None),
        "glm": ("Permanent", 404, "1214", "not_found", None, None),
    },
}

ERROR_PARAMS = [
    pytest.param(provider, name, kind, id=f"{provider}-{name}-{kind}")
    for kind, by_provider in EXPECTED.items()
    for provider, name in TRANSPORTS
    if provider in by_provider
]


def signature(error: ProviderError) -> Sig:
    """The parts of an error every transport must agree on."""
    reason = error.reason if isinstance(error, Permanent) else None
    ambiguous = error.ambiguous if isinstance(error, Retryable) else None
    return (type(error).__name__, error.status, error.code, reason, error.retry_after, ambiguous)


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.anyio
@pytest.mark.parametrize(("provider", "name", "kind"), ERROR_PARAMS)
async def test_error_kinds_are_classified_identically(
    small_emu: Emulator, provider: str, name: str, kind: str
) -> None:
    """Each error kind yields the same class, status, code, reason and ambiguity everywhere."""
    case = CASES[kind]
    emu = small_emu
    base_url = None
    if case.refused:
        prefix = emu.base_url(provider).split(str(emu.port), 1)[1]
        base_url = f"http://127.0.0.1:{closed_port()}{prefix}"
    transport = make_transport(
        provider, name, emu, api_key=case.api_key, base_url=base_url, timeout=case.timeout
    )
    try:
        if case.seed:
            await transport.upload(
                filename=FILENAME[provider],
                fileobj=io.BytesIO(b"{}\n"),
                purpose=PURPOSE[provider],
                content_type="text/plain",
            )
        if case.fault is not None:
            emu.set_faults(provider, case.fault)

        async def provoke() -> None:
            if case.op == "delete":
                await transport.delete("file-that-does-not-exist")
                return
            await transport.upload(
                filename=FILENAME[provider],
                fileobj=io.BytesIO(b"x" * case.size),
                purpose=case.purpose or PURPOSE[provider],
                content_type="text/plain",
            )

        with pytest.raises(ProviderError) as caught:
            await provoke()
        assert signature(caught.value) == EXPECTED[kind][provider]
        if case.stored_after is not None:
            assert len(emu.files()) == case.stored_after
        assert "not-the-key" not in str(caught.value)
        assert emu.key(provider) not in str(caught.value)
    finally:
        await transport.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("provider", "name"), TRANSPORTS)
async def test_unusable_url_scheme_is_transport_unavailable(
    emu: Emulator, provider: str, name: str
) -> None:
    """A base_url this client cannot speak to is "never sent", and the message names base_url."""
    transport = make_transport(provider, name, emu, base_url="ftp://127.0.0.1:9/v1")
    try:
        with pytest.raises(TransportUnavailable) as caught:
            await transport.list_files()
        assert "check base_url" in str(caught.value)
        assert caught.value.status is None
    finally:
        await transport.aclose()

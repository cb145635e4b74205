"""Each injected fault kind, and what exactly each client sees; admin endpoints; the CLI."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import openai
import pytest
import zhipuai

from providers.emulator.server import Emulator


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A running emulator with the default keys and no faults yet."""
    async with Emulator(seed=7) as emulator:
        yield emulator


async def _kimi_upload(emu: Emulator, data: bytes = b"hello", name: str = "a.txt") -> Any:
    async with openai.AsyncOpenAI(
        base_url=emu.base_url("kimi"), api_key=emu.key("kimi"), max_retries=0
    ) as client:
        return await client.files.create(
            file=(name, io.BytesIO(data), "text/plain"),
            purpose="file-extract",  # type: ignore[arg-type]
        )


async def _glm_upload(emu: Emulator) -> Any:
    client = zhipuai.ZhipuAI(api_key=emu.key("glm"), base_url=emu.base_url("glm"), max_retries=0)
    try:
        return await anyio.to_thread.run_sync(
            lambda: client.files.create(
                file=("a.pdf", io.BytesIO(b"%PDF"), "application/pdf"),
                purpose="agent",
            )
        )
    finally:
        client.close()


@pytest.mark.parametrize(
    ("fault", "error", "status", "kind"),
    [
        ("500", openai.InternalServerError, 500, "server_error"),
        ("502", openai.InternalServerError, 502, "server_error"),
        ("503", openai.InternalServerError, 503, "server_error"),
        ("401", openai.AuthenticationError, 401, "invalid_authentication_error"),
        ("quota", openai.RateLimitError, 429, "exceeded_current_quota_error"),
        ("429:2", openai.RateLimitError, 429, "rate_limit_reached_error"),
    ],
)
@pytest.mark.anyio
async def test_kimi_status_faults(
    emu: Emulator, fault: str, error: type[openai.APIStatusError], status: int, kind: str
) -> None:
    """A status fault reaches openai as its exception class with Moonshot's error type."""
    emu.set_faults("kimi", fault)
    with pytest.raises(error) as info:
        await _kimi_upload(emu)
    assert info.value.status_code == status
    assert info.value.body["type"] == kind  # type: ignore[index]
    retry_after = info.value.response.headers.get("retry-after")
    assert retry_after == ("2" if fault == "429:2" else None)
    assert emu.files() == []
    assert emu.counts()["kimi"] == {f"upload.{status}": 1}


@pytest.mark.parametrize(
    ("fault", "error", "status", "code"),
    [
        ("500", zhipuai.APIInternalError, 500, "500"),
        ("503", zhipuai.APIServerFlowExceedError, 503, "500"),
        ("429", zhipuai.APIReachLimitError, 429, "1302"),
        ("quota", zhipuai.APIReachLimitError, 429, "1113"),
        ("401", zhipuai.APIAuthenticationError, 401, "1002"),
    ],
)
@pytest.mark.anyio
async def test_glm_status_faults(
    emu: Emulator, fault: str, error: type[zhipuai.APIStatusError], status: int, code: str
) -> None:
    """A status fault reaches zhipuai as its exception class with GLM's string code."""
    emu.set_faults("glm", fault)
    with pytest.raises(error) as info:
        await _glm_upload(emu)
    assert info.value.status_code == status
    assert info.value.response.json()["error"]["code"] == code
    assert emu.files() == []


@pytest.mark.anyio
async def test_reset_stores_nothing_and_breaks_the_connection(emu: Emulator) -> None:
    """reset: openai raises APIConnectionError, httpx RemoteProtocolError, nothing is stored."""
    emu.set_faults("kimi", "reset")
    with pytest.raises(openai.APIConnectionError):
        await _kimi_upload(emu)
    async with httpx.AsyncClient() as raw:
        with pytest.raises(httpx.RemoteProtocolError):
            await raw.post(
                f"{emu.base_url('kimi')}/files",
                headers={"Authorization": f"Bearer {emu.key('kimi')}"},
                files={"file": ("a.txt", b"x", "text/plain")},
                data={"purpose": "file-extract"},
            )
    assert emu.files() == []
    assert emu.counts()["kimi"] == {"upload.reset": 2}


@pytest.mark.anyio
async def test_drop_stores_the_file_then_breaks_the_connection(emu: Emulator) -> None:
    """drop: the client sees a connection error, yet the file IS stored (the ambiguous case)."""
    emu.set_faults("kimi", "seq=drop")
    with pytest.raises(openai.APIConnectionError):
        await _kimi_upload(emu, b"ambiguous")
    [stored] = emu.files()
    assert (stored.filename, stored.bytes) == ("a.txt", 9)
    again = await _kimi_upload(emu, b"ambiguous")  # the sequence is over: normal answers
    assert len(emu.files()) == 2
    assert again.id != stored.id
    assert emu.counts()["kimi"] == {"upload.drop": 1, "upload.200": 1}


@pytest.mark.anyio
async def test_drop_on_delete_deletes_then_breaks(emu: Emulator) -> None:
    """drop on a non-upload request performs it (the delete happens), then aborts."""
    created = await _kimi_upload(emu)
    emu.set_faults("kimi", "drop")
    async with openai.AsyncOpenAI(
        base_url=emu.base_url("kimi"), api_key=emu.key("kimi"), max_retries=0
    ) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.files.delete(created.id)
    assert emu.files() == []


@pytest.mark.anyio
async def test_latency_and_slow_body_delay_the_answer(emu: Emulator) -> None:
    """latency=5 and slow=2 (per 64 KiB chunk, 3+ chunks) delay a successful upload."""
    emu.set_faults("kimi", "latency=5,slow=2")
    start = time.monotonic()
    created = await _kimi_upload(emu, b"x" * (3 * 65536))
    assert time.monotonic() - start >= 0.005 + 3 * 0.002
    assert created.bytes == 3 * 65536


@pytest.mark.anyio
async def test_same_seed_same_fates() -> None:
    """Two emulators with the same seed and plan fail exactly the same requests."""
    fates = []
    for _ in range(2):
        async with Emulator(seed=42, faults="kimi:500@0.5") as emu:
            outcomes = []
            for _ in range(12):
                try:
                    await _kimi_upload(emu)
                    outcomes.append("ok")
                except openai.InternalServerError:
                    outcomes.append("500")
            fates.append(outcomes)
    assert fates[0] == fates[1]
    assert set(fates[0]) == {"ok", "500"}


@pytest.mark.anyio
async def test_admin_faults_counts_and_reset(emu: Emulator) -> None:
    """PUT /_emulator/faults sets a plan at run time; bad specs are 400; reset forgets files."""
    admin = f"http://127.0.0.1:{emu.port}/_emulator"
    async with httpx.AsyncClient() as raw:
        bad = await raw.put(f"{admin}/faults", content="kimi:teapot")
        good = await raw.put(f"{admin}/faults", content="glm:seq=503/ok")
        assert good.json() == {"kimi": "none", "glm": "seq=503/ok"}
        with pytest.raises(zhipuai.APIServerFlowExceedError):
            await _glm_upload(emu)
        await _glm_upload(emu)
        counts = (await raw.get(f"{admin}/counts")).json()
        assert counts == {"kimi": {}, "glm": {"upload.503": 1, "upload.200": 1}}
        reset = await raw.post(f"{admin}/reset")
        files = (await raw.get(f"{admin}/files")).json()
    assert bad.status_code == 400
    assert "unknown fault 'teapot'" in bad.json()["error"]
    assert reset.json() == {"reset": True}
    assert files == {"files": []}
    assert emu.counts() == {"kimi": {}, "glm": {}}


def test_cli_prints_working_urls_and_stops_on_sigterm() -> None:
    """`inboxd emulator --port 0` prints a base URL that answers, and exits 0 on SIGTERM."""
    code = "import sys; from providers.emulator.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--kimi-key", "k1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(8)]
        base = next(line.split('"')[1] for line in lines if "/v1" in line)
        assert "MOONSHOT_API_KEY=k1\n" in lines
        resp = httpx.get(f"{base}/files", headers={"Authorization": "Bearer k1"})
        assert resp.json() == {"object": "list", "data": []}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()

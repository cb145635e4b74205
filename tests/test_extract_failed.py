"""A file the provider cannot extract, through the real pipeline, store and emulator."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pytest

from daemon.config.settings import InboxSettings, Settings
from daemon.runtime.wiring import build_clients, build_dispatcher, build_plans
from daemon.state.store import Store
from handlers.budget import ByteBudget
from handlers.pipeline import Pipeline
from providers.dispatch import NullEvents
from providers.emulator.server import Emulator
from providers.errors import Permanent
from providers.types import RemoteFile, UploadClient, UploadResult
from tests.fakes import PipelineEvents
from tests.harness import provider_section, read_sidecar

pytestmark = pytest.mark.anyio


class ExtractFails:
    """Kimi as it answers a file it cannot extract: the file is stored, then a 500
    "extract task failed" (the real body's class) comes back."""

    def __init__(self, inner: UploadClient) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult:
        self.calls += 1
        await self.inner.upload(
            filename=filename,
            fileobj=fileobj,
            size=size,
            purpose=purpose,
            content_type=content_type,
        )
        raise Permanent(
            "extract task failed: failed", reason="extract_failed", provider="kimi", status=500
        )

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        return await self.inner.list_files(purpose)

    async def delete(self, file_id: str) -> None:
        await self.inner.delete(file_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_extract_failed_is_quarantined_and_leaves_no_remote_copy(tmp_path: Path) -> None:
    """Kimi stores the file but cannot extract it, twice: the file is quarantined as
    extract_failed after one more try, and both copies it left are deleted."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with Emulator() as emu, Store.open(tmp_path / "state.sqlite3") as store:
        section = provider_section("kimi").model_copy(
            update={"base_url": emu.base_url("kimi"), "api_key": emu.key("kimi")}
        )
        settings = Settings(
            state_dir=tmp_path,
            inbox=[InboxSettings(name="in", path=inbox, providers=["kimi"])],
            providers={"kimi": section},
        )
        kimi = ExtractFails(build_clients(settings)["kimi"])
        clients: dict[str, UploadClient] = {"kimi": kimi}
        limits = {"kimi": settings.providers.kimi.effective_limits("kimi")}
        events = PipelineEvents()
        pipeline = Pipeline(
            ledger=store,
            uploader=build_dispatcher(settings, clients, limits, store, NullEvents()),
            clients=clients,
            limits=limits,
            budget=ByteBudget(1 << 20),
            events=events,
        )
        try:
            path = inbox / "scan.pdf"
            path.write_bytes(b"%PDF-1.4 a scan no one can read")
            result = await pipeline.process(build_plans(settings)["in"], path, "scan.pdf")
            assert result.outcome == "quarantined"
            assert events.reasons == ["extract_failed"]
            assert kimi.calls == 2
            assert emu.files() == []
            sidecar = read_sidecar(tmp_path / "in.quarantine" / "scan.pdf.reason.json")
            assert sidecar["reason"] == "extract_failed"
            assert not path.exists()
        finally:
            await kimi.aclose()

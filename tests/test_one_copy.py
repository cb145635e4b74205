"""One remote copy across providers: an unsettled ambiguous attempt never fails over.

A real Store, the real emulator (Kimi drops the answer after storing the file, then its
listing fails), real clients and dispatcher, GLM healthy behind Kimi in the inbox's list.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config.settings import InboxSettings, Settings
from daemon.runtime.wiring import build_clients, build_dispatcher, build_plans
from daemon.state.store import Store
from handlers.budget import ByteBudget
from handlers.ledger import UPLOADING
from handlers.pipeline import Pipeline
from providers.dispatch import NullEvents
from providers.emulator.server import Emulator
from tests.fakes import PipelineEvents
from tests.harness import provider_section, read_sidecar, sha

pytestmark = pytest.mark.anyio


async def test_unsure_attempt_waits_for_its_listing_instead_of_failing_over(
    tmp_path: Path,
) -> None:
    """Kimi stores the file but drops the answer and then cannot be listed: the file is not
    sent to GLM while Kimi is unsure (row stays uploading, file in its inbox); once Kimi
    lists, the file is reconciled to Kimi's copy: exactly one remote copy overall."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    faults = "kimi:seq=drop/503/503/503/503/503/503/503/503/503/503/503"
    async with Emulator(faults=faults) as emu, Store.open(tmp_path / "state.sqlite3") as store:
        sections = {
            name: provider_section(name).model_copy(
                update={"base_url": emu.base_url(name), "api_key": emu.key(name)}
            )
            for name in ("kimi", "glm")
        }
        settings = Settings(
            state_dir=tmp_path,
            inbox=[InboxSettings(name="in", path=inbox, providers=["kimi", "glm"])],
            providers=sections,
        )
        clients = build_clients(settings)
        limits = {p: settings.providers.get(p).effective_limits(p) for p in clients}
        pipeline = Pipeline(
            ledger=store,
            uploader=build_dispatcher(settings, clients, limits, store, NullEvents()),
            clients=clients,
            limits=limits,
            budget=ByteBudget(1 << 20),
            events=PipelineEvents(forbid_quarantine=True),
            relist_delay=7.0,
        )
        plan = build_plans(settings)["in"]
        try:
            path = inbox / "report.txt"
            path.write_bytes(b"stored once, answer lost")
            first = await pipeline.process(plan, path, "report.txt")
            assert first.outcome == "parked"
            [row] = await store.rows_in_state(UPLOADING)
            assert row.provider == "kimi"
            assert path.read_bytes() == b"stored once, answer lost"
            assert [f.provider for f in emu.files()] == ["kimi"]
            assert "upload.200" not in emu.counts().get("glm", {})

            emu.set_faults("kimi", None)
            second = await pipeline.process(plan, path, "report.txt")
            assert second.outcome == "finished"
            [remote] = emu.files()
            assert (remote.provider, remote.sha256) == ("kimi", sha(b"stored once, answer lost"))
            receipt = read_sidecar(plan.done_dir / "report.txt.upload.json")
            assert (receipt["provider"], receipt["file_id"]) == ("kimi", remote.id)
            assert not path.exists()
        finally:
            for client in clients.values():
                await client.aclose()

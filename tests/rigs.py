"""Real things wired for tests, shared by several test modules (the fakes are in tests/fakes.py).

- Transports and clients pointed at the emulator: ``TRANSPORTS``, ``make_transport``,
  ``chain_client``, ``upload``.
- The pipeline alone over a real Store and the emulator: ``pipeline_rig``.
- A daemon's config file and loader, and files dropped whole: ``write_config``, ``loader_for``,
  ``drop``, ``until_in_flight``. (The running-daemon harness is tests/_harness.py.)
"""

from __future__ import annotations

import importlib
import io
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from daemon.config.settings import InboxSettings, Settings
from daemon.runtime.wiring import build_clients, build_dispatcher, build_plans
from daemon.state.store import Store
from handlers.budget import ByteBudget
from handlers.pipeline import InboxPlan, Pipeline, Uploader
from providers.client import ProviderClient
from providers.dispatch import NullEvents
from providers.emulator.server import Emulator
from providers.transports._http import HttpTransport
from providers.transports._openai import OpenAITransport
from providers.transports._zhipuai import ZhipuAITransport
from providers.types import Transport
from tests.fakes import Fallbacks, Importer, PipelineEvents
from tests.harness import provider_section

__all__ = [
    "FILENAME",
    "PAYLOAD",
    "PURPOSE",
    "TRANSPORTS",
    "PipelineRig",
    "chain_client",
    "make_transport",
    "pipeline_rig",
    "upload",
]

# -- transports and clients against the emulator --------------------------------------------

TRANSPORTS = [
    ("kimi", "openai"),
    ("kimi", "http"),
    ("glm", "zhipuai"),
    ("glm", "openai"),
    ("glm", "http"),
]
PAYLOAD = b'{"row": 1}\n' * 100
# A purpose whose content the provider serves back, and a file name it accepts for it.
PURPOSE = {"kimi": "file-extract", "glm": "batch"}
FILENAME = {"kimi": "doc.txt", "glm": "rows.jsonl"}


def make_transport(
    provider: str,
    name: str,
    emu: Emulator,
    *,
    importer: Importer | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
) -> Transport:
    """The named transport (``openai``, ``zhipuai``, ``http``) for one provider, pointed at
    the emulator; an SDK transport imports its SDK through ``importer`` when given."""
    kwargs: dict[str, Any] = {
        "base_url": base_url or emu.base_url(provider),
        "api_key": api_key or emu.key(provider),
        "timeout": timeout,
        "connect_timeout": timeout,
    }
    if name == "http":
        return HttpTransport(provider, **kwargs)
    kwargs["importer"] = importer or importlib.import_module
    if name == "zhipuai":
        return ZhipuAITransport(provider, **kwargs)
    return OpenAITransport(provider, **kwargs)


async def upload(client: ProviderClient, fileobj: BinaryIO | None = None) -> Any:
    """Upload PAYLOAD (or ``fileobj``) with the provider's test purpose."""
    return await client.upload(
        filename=FILENAME[client.name],
        fileobj=fileobj or io.BytesIO(PAYLOAD),
        size=len(PAYLOAD),
        purpose=PURPOSE[client.name],
        content_type="application/octet-stream",
    )


@asynccontextmanager
async def chain_client(
    provider: str, *chain: Transport
) -> AsyncIterator[tuple[ProviderClient, Fallbacks]]:
    """A ProviderClient over ``chain`` that records its fallbacks; closed on exit."""
    fallbacks = Fallbacks()
    client = ProviderClient(provider, list(chain), on_fallback=fallbacks)
    try:
        yield client, fallbacks
    finally:
        await client.aclose()


# -- the pipeline alone ----------------------------------------------------------------------


@dataclass
class PipelineRig:
    """A Pipeline for inbox ``in`` (Kimi) with its store, emulator, events and uploader."""

    emu: Emulator
    store: Store
    pipeline: Pipeline
    plan: InboxPlan
    events: PipelineEvents
    uploader: Uploader


@asynccontextmanager
async def pipeline_rig(
    tmp_path: Path,
    *,
    faults: str | None = None,
    attempts: int = 3,
    opener: Callable[[Path, int], int] = os.open,
    wrap: Callable[[Uploader], Uploader] | None = None,
    events: PipelineEvents | None = None,
) -> AsyncIterator[PipelineRig]:
    """The pipeline over a real Store in ``tmp_path`` and a fresh emulator (``faults``);
    ``wrap`` decorates the dispatcher, ``opener`` replaces ``os.open``."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with Emulator(faults=faults) as emu, Store.open(tmp_path / "state.sqlite3") as store:
        section = provider_section("kimi", retry={"attempts": attempts})
        settings = Settings(
            state_dir=tmp_path,
            inbox=[InboxSettings(name="in", path=inbox, providers=["kimi"])],
            providers={
                "kimi": section.model_copy(
                    update={"base_url": emu.base_url("kimi"), "api_key": emu.key("kimi")}
                )
            },
        )
        clients = build_clients(settings)
        limits = {"kimi": settings.providers.kimi.effective_limits("kimi")}
        dispatcher = build_dispatcher(settings, clients, limits, store, NullEvents())
        uploader: Uploader = dispatcher if wrap is None else wrap(dispatcher)
        events = PipelineEvents() if events is None else events
        pipeline = Pipeline(
            ledger=store,
            uploader=uploader,
            clients=clients,
            limits=limits,
            budget=ByteBudget(1 << 20),
            events=events,
            relist_delay=7.0,
            opener=opener,
        )
        try:
            yield PipelineRig(emu, store, pipeline, build_plans(settings)["in"], events, uploader)
        finally:
            for client in clients.values():
                await client.aclose()

"""Two hosts, one inbox, one ledger: claims in the pipeline and in recovery.

Two Stores with different host ids on ONE SQLite file stand in for two hosts; each has its
own Pipeline over the real emulator (one account) and the same inbox folder.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.config.settings import InboxSettings, Settings
from daemon.runtime.wiring import build_clients, build_dispatcher, build_plans
from daemon.state.store import Store
from handlers.archive import finish
from handlers.budget import ByteBudget
from handlers.ledger import LedgerRow
from handlers.outcomes import upload_record
from handlers.pipeline import InboxPlan, Pipeline, Result, Uploader
from providers.dispatch import NullEvents
from providers.emulator.server import Emulator
from providers.errors import ClaimedElsewhere
from providers.types import UploadResult
from tests.fakes import PipelineEvents
from tests.harness import drop, provider_section

LEASE = 30.0


@dataclass
class Host:
    """One host: its store (as ``name``) and its pipeline."""

    name: str
    store: Store
    pipeline: Pipeline


@dataclass
class Fleet:
    """Two hosts on one inbox, one state file, one emulator, one wall clock."""

    emu: Emulator
    plan: InboxPlan
    inbox: Path
    hosts: list[Host]
    now: list[float]

    def done(self) -> list[str]:
        return sorted(p.name for p in (self.inbox.parent / "in.done").iterdir())

    def stored_shas(self) -> list[str]:
        return sorted(f.sha256 for f in self.emu.stored_ever("kimi"))


class LedgerHook:
    """The real store, with ``before_begin`` awaited before each ``begin`` (a race, staged)."""

    def __init__(self, store: Store, before_begin: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._before = before_begin

    async def begin(self, inbox: str, relpath: str, *, size: int, mtime_ns: int) -> LedgerRow:
        await self._before()
        return await self._store.begin(inbox, relpath, size=size, mtime_ns=mtime_ns)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@asynccontextmanager
async def fleet(
    tmp_path: Path, wrap: Callable[[str, Uploader], Uploader] | None = None
) -> AsyncIterator[Fleet]:
    """Hosts ``host-a`` and ``host-b`` (in that order); ``wrap(host, uploader)`` decorates a
    host's dispatcher."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    now = [1_000_000.0]
    async with AsyncExitStack() as stack:
        emu = await stack.enter_async_context(Emulator())
        section = provider_section("kimi").model_copy(
            update={"base_url": emu.base_url("kimi"), "api_key": emu.key("kimi")}
        )
        settings = Settings(
            state_dir=tmp_path,
            inbox=[InboxSettings(name="in", path=inbox, providers=["kimi"])],
            providers={"kimi": section},
        )
        plan = build_plans(settings)["in"]
        hosts = []
        for name in ("host-a", "host-b"):
            store = await stack.enter_async_context(
                Store.open(tmp_path / "state.sqlite3", host=name, lease=LEASE, clock=lambda: now[0])
            )
            clients = build_clients(settings)
            for client in clients.values():
                stack.push_async_callback(client.aclose)
            limits = {"kimi": settings.providers.kimi.effective_limits("kimi")}
            dispatcher = build_dispatcher(settings, clients, limits, store, NullEvents())
            uploader: Uploader = dispatcher if wrap is None else wrap(name, dispatcher)
            pipeline = Pipeline(
                ledger=store,
                uploader=uploader,
                clients=clients,
                limits=limits,
                budget=ByteBudget(1 << 20),
                events=PipelineEvents(forbid_quarantine=True),
                clock=lambda: now[0],
                lost_park=LEASE,
                content_claims=store,
            )
            hosts.append(Host(name, store, pipeline))
        yield Fleet(emu, plan, inbox, hosts, now)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.anyio
async def test_a_file_claimed_by_a_live_host_is_parked_until_its_lease_ends(
    tmp_path: Path,
) -> None:
    """Host a holds the row (lease live): host b's pipeline parks the file until a's lease
    ends and sends nothing."""
    async with fleet(tmp_path) as f:
        a, b = f.hosts
        path = drop(f.inbox, "a.txt", b"alpha")
        row = await a.store.begin("in", "a.txt", size=5, mtime_ns=path.stat().st_mtime_ns)
        result = await b.pipeline.process(f.plan, path, "a.txt")
        assert (result.outcome, result.park_until) == ("parked", row.lease_until)
        assert row.lease_until == f.now[0] + LEASE
        assert f.stored_shas() == []
        assert path.exists()


@pytest.mark.anyio
async def test_file_archived_by_another_host_between_open_and_claim_is_not_sent(
    tmp_path: Path,
) -> None:
    """Host a uploads and archives the file while host b holds it open but has not claimed it
    yet: b ends it as vanished, sends nothing, and closes the row it began."""
    async with fleet(tmp_path) as f:
        a, b = f.hosts
        path = drop(f.inbox, "a.txt", b"alpha")
        first: list[Result] = []

        async def host_a_first() -> None:
            if not first:
                first.append(await a.pipeline.process(f.plan, path, "a.txt"))

        b.pipeline.ledger = LedgerHook(b.store, host_a_first)
        result = await b.pipeline.process(f.plan, path, "a.txt")
        assert [r.outcome for r in first] == ["uploaded"]
        assert result.outcome == "vanished"
        assert f.stored_shas() == [_sha(b"alpha")]
        assert f.done() == ["a.txt", "a.txt.upload.json"]
        rows = await a.store.rows_in_state("done")
        assert [(r.owner, r.reason, r.file_id is None) for r in rows] == [
            ("host-a", None, False),
            ("host-b", "vanished", True),
        ]


class StallThenLoseClaim:
    """Host b's uploader: during its upload the row's lease runs out and host a takes it."""

    def __init__(self, inner: Uploader, fleet_now: list[float]) -> None:
        self.inner = inner
        self.now = fleet_now
        self.take: Callable[[], Awaitable[LedgerRow | None]] | None = None

    async def upload(self, *args: Any, **kwargs: Any) -> UploadResult:
        result: UploadResult = await self.inner.upload(*args, **kwargs)
        self.now[0] += LEASE + 1  # b stalled past its lease ...
        assert self.take is not None
        assert await self.take() is not None  # ... and a took the row over
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.anyio
async def test_a_claim_lost_mid_upload_leaves_the_file_to_its_new_owner(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Host b's row is taken over by a while b uploads: b's next transition raises ClaimLost,
    and b parks the file for one lease (a warning, no quarantine, no archive)."""
    stalls: dict[str, StallThenLoseClaim] = {}

    def wrap(host: str, uploader: Uploader) -> Uploader:
        if host != "host-b":
            return uploader
        stalls[host] = StallThenLoseClaim(uploader, [])
        return stalls[host]

    caplog.set_level(logging.WARNING, logger="handlers.pipeline")
    async with fleet(tmp_path, wrap) as f:
        stall = stalls["host-b"]
        stall.now = f.now
        a, b = f.hosts
        path = drop(f.inbox, "a.txt", b"alpha")

        async def a_takes() -> LedgerRow | None:
            [row] = await a.store.rows_in_state("uploading")
            return await a.store.take(row.id)

        stall.take = a_takes
        result = await b.pipeline.process(f.plan, path, "a.txt")
        assert (result.outcome, result.park_until) == ("parked", f.now[0] + LEASE)
        assert path.exists()
        [row] = await a.store.rows_in_state("uploading")
        assert row.owner == "host-a"
    [record] = [r for r in caplog.records if r.name == "handlers.pipeline"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith("; the file is left to that host")


@pytest.mark.anyio
async def test_two_hosts_one_inbox_each_file_uploaded_once(tmp_path: Path) -> None:
    """Both hosts process all 12 files at once: each is uploaded exactly once and archived
    once; every file ends uploaded on one host and parked or vanished on the other."""
    async with fleet(tmp_path) as f:
        datas = {f"f{i:02d}.txt": f"file {i}".encode() for i in range(12)}
        paths = {name: drop(f.inbox, name, data) for name, data in datas.items()}
        results: dict[tuple[str, str], str] = {}

        async def run(host: Host) -> None:
            for name, path in paths.items():
                results[(host.name, name)] = (
                    await host.pipeline.process(f.plan, path, name)
                ).outcome

        async with anyio.create_task_group() as tg:
            for host in f.hosts:
                tg.start_soon(run, host)
        assert f.stored_shas() == sorted(_sha(d) for d in datas.values())
        assert f.done() == sorted([*datas, *(f"{n}.upload.json" for n in datas)])
        for name in datas:
            outcomes = sorted(results[(h.name, name)] for h in f.hosts)
            assert outcomes in (["parked", "uploaded"], ["uploaded", "vanished"]), (name, outcomes)


@pytest.mark.anyio
async def test_recovery_leaves_a_live_hosts_rows_and_takes_a_dead_hosts(tmp_path: Path) -> None:
    """Host a's recovery leaves host b's uploading row while b's lease is live; once it has
    run out (b died), a takes it over and settles it (no copy found: pending, a's)."""
    async with fleet(tmp_path) as f:
        a, b = f.hosts
        path = drop(f.inbox, "a.txt", b"alpha")
        row = await b.store.begin("in", "a.txt", size=5, mtime_ns=path.stat().st_mtime_ns)
        row = await b.store.transition(row.id, "uploading", provider="kimi", purpose="file-extract")
        await a.pipeline.recover({"in": f.plan})
        assert (await a.store.get(row.id)).state == "uploading"
        assert (await a.store.get(row.id)).owner == "host-b"
        f.now[0] += LEASE + 1
        await a.pipeline.recover({"in": f.plan})
        settled = await a.store.get(row.id)
        assert (settled.state, settled.owner) == ("pending", "host-a")
        with pytest.raises(ClaimedElsewhere):
            await b.store.begin("in", "a.txt", size=5, mtime_ns=path.stat().st_mtime_ns)


@pytest.mark.anyio
async def test_a_takeover_pass_closes_what_a_dead_host_archived_but_did_not_record(
    tmp_path: Path,
) -> None:
    """Host b uploaded and archived a file, then died before its row said done: a's takeover
    pass (``recover(host=...)``) leaves the row while b's lease is live, and after it records
    the archived path; a row whose file is still in the inbox is left to processing."""
    async with fleet(tmp_path) as f:
        a, b = f.hosts
        rows = {}
        for name, data in (("gone.txt", b"archived"), ("here.txt", b"still here")):
            path = drop(f.inbox, name, data)
            row = await b.store.begin("in", name, size=len(data), mtime_ns=path.stat().st_mtime_ns)
            await b.store.transition(row.id, "uploading", provider="kimi", purpose="file-extract")
            rows[name] = await b.store.transition(
                row.id,
                "uploaded",
                file_id=f"file-{name}",
                remote_bytes=len(data),
                sha256=_sha(data),
            )
        archived = finish(
            f.inbox / "gone.txt",
            on_success="archive",
            done_dir=f.plan.done_dir,
            record=upload_record(rows["gone.txt"], _sha(b"archived")),
        )
        assert archived is not None
        await a.pipeline.recover({"in": f.plan}, host="host-a")  # b's lease is live
        assert (await a.store.get(rows["gone.txt"].id)).state == "uploaded"
        f.now[0] += LEASE + 1
        await a.pipeline.recover({"in": f.plan}, host="host-a")
        gone = await a.store.get(rows["gone.txt"].id)
        here = await a.store.get(rows["here.txt"].id)
    assert (gone.state, gone.owner, gone.final_path) == ("done", "host-a", str(archived))
    assert (here.state, here.owner) == ("uploaded", "host-b")


@pytest.mark.anyio
async def test_one_content_is_uploaded_by_one_host_at_a_time(tmp_path: Path) -> None:
    """While host a holds the fleet's lock on a content (uploading it), host b's file with the
    same bytes is parked for busy_delay and sends nothing; once a's upload is done, b's file
    is archived as a duplicate of it: the content is stored once."""
    async with fleet(tmp_path) as f:
        a, b = f.hosts
        data = b"same bytes on two names"
        orig = drop(f.inbox, "orig.txt", data)
        copy = drop(f.inbox, "copy.txt", data)
        assert await a.store.hold(f"content:{_sha(data)}", ttl=LEASE)  # a is uploading it
        parked = await b.pipeline.process(f.plan, copy, "copy.txt")
        assert (parked.outcome, parked.park_until) == ("parked", f.now[0] + b.pipeline.busy_delay)
        assert f.stored_shas() == []
        await a.store.release(f"content:{_sha(data)}")
        first = await a.pipeline.process(f.plan, orig, "orig.txt")
        second = await b.pipeline.process(f.plan, copy, "copy.txt")
        assert (first.outcome, second.outcome) == ("uploaded", "duplicate")
        assert f.stored_shas() == [_sha(data)]
        assert await b.store.hold(f"content:{_sha(data)}", ttl=LEASE)  # a released it

"""The remote side of a file in the pipeline: extracted text beside the archive, keep_remote.

Through the real pipeline, a real Store and the real emulator. The extractor is a small adapter
over the client's ``content()`` (Kimi's JSON envelope; the integrator swaps in the provider's
``extract``) where the emulator can answer; fakes drive the failures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from prometheus_client import CollectorRegistry

from daemon.config.settings import InboxSettings, Settings
from daemon.ops.metrics import Metrics
from daemon.remote.deletions import delete_recorded
from daemon.runtime.wiring import build_clients, build_dispatcher, build_plans
from daemon.state.store import Store
from handlers.archive import finish
from handlers.budget import ByteBudget
from handlers.extract import ExtractedText, RemoteDeleter, TextSource, extracted_receipt
from handlers.ledger import DONE, UPLOADED
from handlers.names import NAME_MAX
from handlers.pipeline import InboxPlan, Pipeline
from providers.client import ProviderClient
from providers.dispatch import NullEvents
from providers.emulator.server import Emulator
from providers.errors import Permanent, Retryable
from providers.types import RemoteFile
from tests.harness import provider_section, read_sidecar, sha

pytestmark = pytest.mark.anyio

# The recorded deletion's clock: a minute after the pipeline's (``_Clock``), so a receipt says
# which of the two wrote its remote_deleted_at.
DELETED_AT = 1_800_000_060.0


class _Events:
    """PipelineEvents that remember the extraction outcomes."""

    def __init__(self) -> None:
        self.extractions: list[tuple[str, str]] = []

    def quarantined(self, reason: str) -> None: ...

    def duplicate(self) -> None: ...

    def upload_stored(self, provider: str, nbytes: int, seconds: float) -> None: ...

    def inflight_bytes(self, n: int) -> None: ...

    def extraction(self, provider: str, outcome: str) -> None:
        self.extractions.append((provider, outcome))


@dataclass(frozen=True)
class _Text:
    text: str


class _ContentExtractor:
    """Kimi's text through ``GET /files/{id}/content`` (the JSON envelope's ``content``)."""

    def __init__(self, client: ProviderClient) -> None:
        self.client = client
        self.calls: list[str] = []

    async def extract(self, remote: RemoteFile, fileobj: BinaryIO | None) -> ExtractedText:
        self.calls.append(remote.id)
        envelope = json.loads(await self.client.content(remote.id))
        return _Text(envelope["content"])


class _Scripted:
    """An extractor that raises the scripted errors first, then answers ``text``."""

    def __init__(self, *errors: Exception, text: str = "the text") -> None:
        self.errors = list(errors)
        self.text = text
        self.calls = 0

    async def extract(self, remote: RemoteFile, fileobj: BinaryIO | None) -> ExtractedText:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return _Text(self.text)


class _Crash(Exception):
    """Stands for the process dying mid-step (nothing catches it)."""


class _Deleter:
    """The recorded deletion (``daemon.remote.deletions.delete_recorded``: the ledger, the real
    client, every receipt naming the copy marked) at its own clock's ``now``; remembers each
    call and whether the receipt existed. ``mark = False``: deletes the copy and nothing else."""

    def __init__(
        self,
        store: Store,
        client: ProviderClient,
        receipt: Path | None,
        *errors: Exception,
        now: float = DELETED_AT,
        mark: bool = True,
    ) -> None:
        self.store = store
        self.client = client
        self.receipt = receipt
        self.errors = list(errors)
        self.now = now
        self.mark = mark
        self.calls: list[tuple[str, str, str, bool]] = []

    async def delete(self, provider: str, file_id: str, *, reason: str) -> None:
        written = self.receipt is not None and self.receipt.exists()
        self.calls.append((provider, file_id, reason, written))
        if self.errors:
            raise self.errors.pop(0)
        if self.mark:
            await delete_recorded(self.store, self.client, file_id, reason, self.now)
        else:
            await self.client.delete(file_id)


class _Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class _Rig:
    emu: Emulator
    store: Store
    plan: InboxPlan
    events: _Events
    client: ProviderClient
    clock: _Clock
    parts: dict[str, Any]

    def pipeline(
        self, extractor: TextSource | None = None, deleter: RemoteDeleter | None = None
    ) -> Pipeline:
        """A fresh pipeline (a restart is a new one) over the same store and clients."""
        return Pipeline(
            **self.parts,
            extractors={"kimi": extractor or _ContentExtractor(self.client)},
            deleter=deleter,
            extract_delay=30.0,
        )


@asynccontextmanager
async def _rig(tmp_path: Path, **plan: Any) -> AsyncIterator[_Rig]:
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with Emulator() as emu, Store.open(tmp_path / "state.sqlite3") as store:
        section = provider_section("kimi")
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
        events = _Events()
        clock = _Clock()
        parts: dict[str, Any] = {
            "ledger": store,
            "uploader": build_dispatcher(settings, clients, limits, store, NullEvents()),
            "clients": clients,
            "limits": limits,
            "budget": ByteBudget(1 << 20),
            "events": events,
            "clock": clock,
        }
        inner = clients["kimi"].inner
        assert isinstance(inner, ProviderClient)
        the_plan = dataclasses.replace(build_plans(settings)["in"], **({"extract": True} | plan))
        try:
            yield _Rig(emu, store, the_plan, events, inner, clock, parts)
        finally:
            for client in clients.values():
                await client.aclose()


def _uploads(emu: Emulator) -> int:
    return emu.counts()["kimi"].get("upload.200", 0)


async def test_extracted_text_is_written_beside_the_archived_file(tmp_path: Path) -> None:
    """With extract, the provider's text is archived as <name>.extracted.txt and the receipt
    names its length, sha256 and time."""
    async with _rig(tmp_path) as rig:
        text = "Zeile eins\nline two: 文字\n"
        path = rig.plan.path / "notes.txt"
        path.write_text(text, encoding="utf-8")
        extractor = _ContentExtractor(rig.client)
        result = await rig.pipeline(extractor).process(rig.plan, path, "notes.txt")
        assert result.outcome == "uploaded"
        [remote] = rig.emu.files()
        assert extractor.calls == [remote.id]
        saved = rig.plan.done_dir / "notes.txt.extracted.txt"
        assert saved.read_bytes() == text.encode("utf-8")
        receipt = read_sidecar(rig.plan.done_dir / "notes.txt.upload.json")
        assert receipt["extracted"] == {
            "chars": len(text),
            "sha256": sha(text.encode("utf-8")),
            "at": "2027-01-15T08:00:00.000Z",
        }
        assert "extract_error" not in receipt
        assert rig.events.extractions == [("kimi", "ok")]
        assert sorted(p.name for p in rig.plan.done_dir.iterdir()) == [
            "notes.txt",
            "notes.txt.extracted.txt",
            "notes.txt.upload.json",
        ]


async def test_without_extract_no_text_is_fetched(tmp_path: Path) -> None:
    """An inbox without extract archives the file alone and never asks for its text."""
    async with _rig(tmp_path, extract=False) as rig:
        path = rig.plan.path / "a.txt"
        path.write_bytes(b"plain")
        extractor = _ContentExtractor(rig.client)
        result = await rig.pipeline(extractor).process(rig.plan, path, "a.txt")
        assert result.outcome == "uploaded"
        assert extractor.calls == []
        assert sorted(p.name for p in rig.plan.done_dir.iterdir()) == ["a.txt", "a.txt.upload.json"]
        assert "extracted" not in read_sidecar(rig.plan.done_dir / "a.txt.upload.json")


async def test_extracted_text_lands_in_done_dir_when_the_file_is_deleted(tmp_path: Path) -> None:
    """With on_success = "delete", the file is deleted and its text is still in done_dir."""
    async with _rig(tmp_path, on_success="delete") as rig:
        path = rig.plan.path / "gone.txt"
        path.write_bytes(b"read me")
        result = await rig.pipeline().process(rig.plan, path, "gone.txt")
        assert result.outcome == "uploaded"
        assert not path.exists()
        assert [p.name for p in rig.plan.done_dir.iterdir()] == ["gone.txt.extracted.txt"]
        assert (rig.plan.done_dir / "gone.txt.extracted.txt").read_bytes() == b"read me"


async def test_a_duplicate_gets_the_text_of_the_existing_copy(tmp_path: Path) -> None:
    """A dedupe hit is not uploaded, and its text is fetched from the copy already stored."""
    async with _rig(tmp_path) as rig:
        extractor = _ContentExtractor(rig.client)
        pipeline = rig.pipeline(extractor)
        first = rig.plan.path / "one.txt"
        first.write_bytes(b"same words")
        assert (await pipeline.process(rig.plan, first, "one.txt")).outcome == "uploaded"
        second = rig.plan.path / "two.txt"
        second.write_bytes(b"same words")
        assert (await pipeline.process(rig.plan, second, "two.txt")).outcome == "duplicate"
        [remote] = rig.emu.files()
        assert extractor.calls == [remote.id, remote.id]
        assert (rig.plan.done_dir / "two.txt.extracted.txt").read_bytes() == b"same words"
        receipt = read_sidecar(rig.plan.done_dir / "two.txt.upload.json")
        assert receipt["extracted"]["sha256"] == sha(b"same words")
        assert receipt["file_id"] == remote.id


async def test_transient_failure_is_retried_later_without_a_second_upload(tmp_path: Path) -> None:
    """A transient extraction failure leaves the uploaded file waiting in its inbox until
    extract_delay has passed; then the text is fetched and the file archived, sent once."""
    async with _rig(tmp_path) as rig:
        extractor = _Scripted(Retryable("extract busy", provider="kimi", status=503))
        pipeline = rig.pipeline(extractor)
        path = rig.plan.path / "slow.txt"
        path.write_bytes(b"slow text")
        parked = await pipeline.process(rig.plan, path, "slow.txt")
        assert (parked.outcome, parked.park_until) == ("parked", rig.clock.now + 30.0)
        assert path.exists()
        [row] = await rig.store.rows_in_state(UPLOADED)
        assert row.not_before == rig.clock.now + 30.0
        rig.clock.now += 29.0
        early = await pipeline.process(rig.plan, path, "slow.txt")
        assert (early.outcome, early.park_until) == ("parked", row.not_before)
        assert extractor.calls == 1
        rig.clock.now += 1.0
        done = await pipeline.process(rig.plan, path, "slow.txt")
        assert done.outcome == "finished"
        assert extractor.calls == 2
        assert _uploads(rig.emu) == 1
        assert (rig.plan.done_dir / "slow.txt.extracted.txt").read_text() == "the text"
        assert (await rig.store.get(row.id)).state == DONE
        assert rig.events.extractions == [("kimi", "retry"), ("kimi", "ok")]


async def test_a_retry_after_longer_than_extract_delay_is_honoured(tmp_path: Path) -> None:
    """A transient failure that names its wait parks the file for that wait."""
    async with _rig(tmp_path) as rig:
        busy = Retryable("busy", provider="kimi", status=429, retry_after=120.0)
        path = rig.plan.path / "w.txt"
        path.write_bytes(b"wait")
        parked = await rig.pipeline(_Scripted(busy)).process(rig.plan, path, "w.txt")
        assert (parked.outcome, parked.park_until) == ("parked", rig.clock.now + 120.0)


async def test_permanent_failure_archives_the_file_with_extract_error(tmp_path: Path) -> None:
    """A file the provider cannot extract is archived all the same; its receipt says why and
    no text file is written."""
    async with _rig(tmp_path) as rig:
        refused = Permanent(
            "extract task failed: failed", reason="extract_failed", provider="kimi", status=500
        )
        path = rig.plan.path / "scan.txt"
        path.write_bytes(b"pixels")
        result = await rig.pipeline(_Scripted(refused)).process(rig.plan, path, "scan.txt")
        assert result.outcome == "uploaded"
        receipt = read_sidecar(rig.plan.done_dir / "scan.txt.upload.json")
        assert receipt["extract_error"] == "kimi HTTP 500: extract task failed: failed"
        assert "extracted" not in receipt
        assert not (rig.plan.done_dir / "scan.txt.extracted.txt").exists()
        assert rig.events.extractions == [("kimi", "failed")]


@pytest.mark.parametrize(
    ("mark", "deleted_at"), [(True, "2027-01-15T08:01:00.000Z"), (False, None)]
)
async def test_keep_remote_false_deletes_the_copy_after_the_receipt(
    tmp_path: Path, mark: bool, deleted_at: str | None
) -> None:
    """keep_remote = false: once the file is archived with its text, the remote copy is deleted
    through the deleter (once, reason keep_remote, the receipt already written); the receipt's
    remote_deleted_at is the recorded deletion's, at its time, never the pipeline's (a deleter
    that marks no receipt leaves none)."""
    async with _rig(tmp_path, keep_remote=False) as rig:
        receipt_path = rig.plan.done_dir / "k.txt.upload.json"
        deleter = _Deleter(rig.store, rig.client, receipt_path, mark=mark)
        path = rig.plan.path / "k.txt"
        path.write_bytes(b"keep nothing")
        result = await rig.pipeline(deleter=deleter).process(rig.plan, path, "k.txt")
        assert result.outcome == "uploaded"
        receipt = read_sidecar(receipt_path)
        assert deleter.calls == [("kimi", receipt["file_id"], "keep_remote", True)]
        assert rig.emu.files() == []
        assert receipt.get("remote_deleted_at") == deleted_at
        assert receipt["extracted"]["chars"] == len("keep nothing")


async def test_a_failing_remote_delete_does_not_block_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """keep_remote = false with the delete failing: the file is archived and done all the
    same, the receipt has no remote_deleted_at, and the log says the retention pass retries."""
    async with _rig(tmp_path, keep_remote=False, extract=False) as rig:
        down = Retryable("down", provider="kimi", status=503)
        deleter = _Deleter(rig.store, rig.client, None, down)
        path = rig.plan.path / "d.txt"
        path.write_bytes(b"still here remotely")
        with caplog.at_level(logging.WARNING, logger="handlers"):
            result = await rig.pipeline(deleter=deleter).process(rig.plan, path, "d.txt")
        assert result.outcome == "uploaded"
        assert result.row is not None
        assert result.row.state == DONE
        assert len(rig.emu.files()) == 1
        assert "remote_deleted_at" not in read_sidecar(rig.plan.done_dir / "d.txt.upload.json")
        [message] = [r.getMessage() for r in caplog.records if "retention pass" in r.getMessage()]
        assert "kimi HTTP 503: down" in message


async def test_a_duplicate_never_deletes_the_copy_it_shares(tmp_path: Path) -> None:
    """keep_remote = false: a dedupe hit points at another row's copy, which is not deleted."""
    async with _rig(tmp_path, keep_remote=False, extract=False) as rig:
        first = rig.plan.path / "a.txt"
        first.write_bytes(b"shared")
        kept = dataclasses.replace(rig.plan, keep_remote=True)
        deleter = _Deleter(rig.store, rig.client, None)
        pipeline = rig.pipeline(deleter=deleter)
        assert (await pipeline.process(kept, first, "a.txt")).outcome == "uploaded"
        second = rig.plan.path / "b.txt"
        second.write_bytes(b"shared")
        assert (await pipeline.process(rig.plan, second, "b.txt")).outcome == "duplicate"
        assert deleter.calls == []
        assert len(rig.emu.files()) == 1


async def test_restart_after_a_crash_before_the_text_fetches_it_without_uploading(
    tmp_path: Path,
) -> None:
    """A crash between the upload and the text leaves the row uploaded; at restart, recovery
    fetches the text and archives the file without sending it again."""
    async with _rig(tmp_path) as rig:
        path = rig.plan.path / "c.txt"
        path.write_bytes(b"crash text")
        with pytest.raises(_Crash):
            await rig.pipeline(_Scripted(_Crash())).process(rig.plan, path, "c.txt")
        [row] = await rig.store.rows_in_state(UPLOADED)
        restarted = rig.pipeline()
        await restarted.recover({"in": rig.plan})
        assert (await rig.store.get(row.id)).state == DONE
        assert _uploads(rig.emu) == 1
        assert (rig.plan.done_dir / "c.txt.extracted.txt").read_bytes() == b"crash text"
        assert read_sidecar(rig.plan.done_dir / "c.txt.upload.json")["file_id"] == row.file_id


async def test_recovery_leaves_a_file_whose_text_waits(tmp_path: Path) -> None:
    """At restart, an uploaded row whose text retry is not due yet is left to wait."""
    async with _rig(tmp_path) as rig:
        busy = Retryable("busy", provider="kimi", status=503)
        path = rig.plan.path / "r.txt"
        path.write_bytes(b"later")
        await rig.pipeline(_Scripted(busy)).process(rig.plan, path, "r.txt")
        extractor = _Scripted()
        await rig.pipeline(extractor).recover({"in": rig.plan})
        assert extractor.calls == 0
        assert path.exists()
        assert [r.state for r in await rig.store.rows_in_state(UPLOADED)] == [UPLOADED]


def _record(data: bytes) -> dict[str, object]:
    return {
        "provider": "kimi",
        "purpose": "file-extract",
        "file_id": "f1",
        "bytes": len(data),
        "sha256": sha(data),
        "uploaded_at": None,
        "transport": "httpx",
    }


def test_extracted_receipt_names_length_hash_and_time() -> None:
    """The receipt's ``extracted`` counts characters (not bytes) and hashes the UTF-8 text."""
    assert extracted_receipt("ä€", at=0.0) == {
        "extracted": {"chars": 2, "sha256": sha("ä€".encode()), "at": "1970-01-01T00:00:00.000Z"}
    }


def test_a_long_name_gets_a_shortened_text_name(tmp_path: Path) -> None:
    """A 255-byte file name archives with a text file name cut to NAME_MAX, hash-suffixed."""
    name = "x" * 251 + ".txt"
    src = tmp_path / name
    src.write_bytes(b"long")
    done = tmp_path / "done"
    final = finish(src, on_success="archive", done_dir=done, record=_record(b"long"), text="words")
    assert final == done / name
    [text_file] = [p for p in done.iterdir() if p.name.endswith(".extracted.txt")]
    assert len(text_file.name.encode()) == NAME_MAX
    assert text_file.read_text() == "words"
    assert not [p for p in done.iterdir() if p.name.startswith(".")]


def test_extractions_are_counted_per_provider_and_outcome() -> None:
    """inboxd_extractions_total{provider,outcome} exists at 0 for every outcome and counts."""
    registry = CollectorRegistry()
    metrics = Metrics(
        registry,
        version="0",
        inboxes=[],
        providers=["kimi"],
        transports={},
        reasons=[],
        outcomes=[],
    )
    for outcome in ("ok", "retry", "failed"):
        labels = {"provider": "kimi", "outcome": outcome}
        assert registry.get_sample_value("inboxd_extractions_total", labels) == 0
    metrics.extraction("kimi", "retry")
    labels = {"provider": "kimi", "outcome": "retry"}
    assert registry.get_sample_value("inboxd_extractions_total", labels) == 1


def test_a_foreign_text_file_takes_the_name_and_the_archive_moves_on(tmp_path: Path) -> None:
    """A <name>.extracted.txt already in done_dir holding other text is never overwritten: the
    file and its text take the next free name."""
    done = tmp_path / "done"
    done.mkdir()
    (done / "a.txt.extracted.txt").write_text("someone else's text")
    src = tmp_path / "a.txt"
    src.write_bytes(b"mine")
    final = finish(src, on_success="archive", done_dir=done, record=_record(b"mine"), text="new")
    assert final == done / "a~1.txt"
    assert (done / "a.txt.extracted.txt").read_text() == "someone else's text"
    assert (done / "a~1.txt.extracted.txt").read_text() == "new"


def test_a_crash_left_text_of_this_upload_is_adopted(tmp_path: Path) -> None:
    """A crash after the text and receipt were written but before the move leaves them; the
    next finish of the same upload writes over them under the same name, nothing twice."""
    done = tmp_path / "done"
    src = tmp_path / "a.txt"
    src.write_bytes(b"mine")
    record = _record(b"mine")
    done.mkdir()
    (done / "a.txt.extracted.txt").write_text("first fetch")
    (done / "a.txt.upload.json").write_text(json.dumps(record | {"name": "a.txt"}))
    final = finish(src, on_success="archive", done_dir=done, record=record, text="second fetch")
    assert final == done / "a.txt"
    assert (done / "a.txt.extracted.txt").read_text() == "second fetch"
    assert sorted(p.name for p in done.iterdir()) == [
        "a.txt",
        "a.txt.extracted.txt",
        "a.txt.upload.json",
    ]


async def test_a_duplicate_whose_text_waits_is_parked_unsent(tmp_path: Path) -> None:
    """A dedupe hit whose shared copy's text cannot be fetched now waits (pending, not_before)
    and is never uploaded; later it is archived as a duplicate with the text."""
    async with _rig(tmp_path) as rig:
        first = rig.plan.path / "one.txt"
        first.write_bytes(b"same")
        assert (await rig.pipeline().process(rig.plan, first, "one.txt")).outcome == "uploaded"
        extractor = _Scripted(Retryable("busy", provider="kimi", status=502), text="same")
        pipeline = rig.pipeline(extractor)
        second = rig.plan.path / "two.txt"
        second.write_bytes(b"same")
        parked = await pipeline.process(rig.plan, second, "two.txt")
        assert (parked.outcome, parked.park_until) == ("parked", rig.clock.now + 30.0)
        rig.clock.now += 30.0
        assert (await pipeline.process(rig.plan, second, "two.txt")).outcome == "duplicate"
        assert _uploads(rig.emu) == 1
        assert (rig.plan.done_dir / "two.txt.extracted.txt").read_text() == "same"

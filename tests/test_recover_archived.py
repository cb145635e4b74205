"""A process killed after it archived a file but before its ledger row said so: the next
start records where the file went, so a later deletion of its remote copy marks its receipt."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.remote.deletions import delete_recorded
from daemon.state.store import Store
from handlers.archive import finish, receipt_path
from handlers.extract import TextAndRelease
from handlers.finishing import Finisher
from handlers.ledger import DONE, UPLOADED, UPLOADING
from handlers.outcomes import InboxPlan, Outcomes, upload_record
from providers.emulator.server import Emulator
from providers.factory import build_client
from tests.fakes import PipelineEvents
from tests.harness import read_sidecar

pytestmark = pytest.mark.anyio


def _inbox(tmp_path: Path, name: str, data: bytes) -> tuple[InboxPlan, Path]:
    """An inbox ``in`` (Kimi, archive to ``in.done``) holding the file ``name``."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    src = inbox / name
    src.write_bytes(data)
    plan = InboxPlan(
        name="in",
        path=inbox,
        providers=("kimi",),
        purposes={"kimi": "file-extract"},
        done_dir=tmp_path / "in.done",
        quarantine_dir=tmp_path / "in.quarantine",
    )
    return plan, src


async def test_an_archive_the_ledger_missed_is_found_and_its_receipt_marked(
    tmp_path: Path,
) -> None:
    """The row is still ``uploaded`` but the file already sits in done/ with its receipt (the
    kill fell between the move and the ledger write): finishing it records the archived path,
    and the recorded deletion of the copy then marks that receipt ``remote_deleted_at``
    (before, the row was closed with no path and the receipt kept claiming a deleted copy)."""
    plan, src = _inbox(tmp_path, "f037.txt", b"file 37\n")
    done = plan.done_dir
    async with Emulator() as emu, Store.open(tmp_path / "state.sqlite3") as store:
        client = build_client(
            "kimi",
            base_url=emu.base_url("kimi"),
            api_key=emu.key("kimi"),
            transports=["http"],
            timeout=10.0,
            connect_timeout=10.0,
        )
        try:
            with src.open("rb") as f:
                stored = await client.upload(
                    filename=src.name,
                    fileobj=f,
                    size=8,
                    purpose="file-extract",
                    content_type="text/plain",
                )
            row = await store.begin("in", "f037.txt", size=8, mtime_ns=src.stat().st_mtime_ns)
            await store.transition(row.id, UPLOADING, provider="kimi", purpose="file-extract")
            row = await store.transition(
                row.id, UPLOADED, file_id=stored.remote.id, remote_bytes=8, transport="http"
            )
            # The killed process: the file and its receipt are archived, the row is not done.
            archived = finish(
                src, on_success="archive", done_dir=done, record=upload_record(row, "x" * 64)
            )
            assert archived is not None
            assert not src.exists()

            outcomes = Outcomes(ledger=store, events=PipelineEvents(), clock=lambda: 1.0e9)
            result = await outcomes.finish(plan, src, row)

            assert result.row is not None
            assert result.row.state == DONE
            assert result.row.final_path == str(archived)
            await delete_recorded(store, client, stored.remote.id, "max_files", 1.0e9)
            assert emu.files() == []
            assert "remote_deleted_at" in read_sidecar(receipt_path(archived))
        finally:
            await client.aclose()


async def test_recovery_at_start_records_where_a_killed_process_archived_the_file(
    tmp_path: Path,
) -> None:
    """Recovery at start (``Finisher.recover``) of an ``uploaded`` row whose file is already in
    done/ with its receipt records that path too (before, only the live finish looked for it,
    and the restart closed the row with no path: a later deletion of the copy left the receipt
    claiming it; test_remote_sigkill caught this about one run in eight)."""
    plan, src = _inbox(tmp_path, "f023.txt", b"file 23\n")
    done = plan.done_dir
    async with Store.open(tmp_path / "state.sqlite3") as store:
        row = await store.begin("in", "f023.txt", size=8, mtime_ns=src.stat().st_mtime_ns)
        await store.transition(row.id, UPLOADING, provider="kimi", purpose="file-extract")
        row = await store.transition(
            row.id, UPLOADED, file_id="file-23", remote_bytes=8, transport="http"
        )
        archived = finish(
            src, on_success="archive", done_dir=done, record=upload_record(row, "x" * 64)
        )
        assert archived is not None
        events = PipelineEvents()
        remote = TextAndRelease(
            ledger=store, extractors={}, deleter=None, events=events, clock=lambda: 1.0e9, delay=60
        )
        finisher = Finisher(
            ledger=store,
            outcomes=Outcomes(ledger=store, events=events, clock=lambda: 1.0e9),
            clients={},
            remote=remote,
            clock=lambda: 1.0e9,
            relist_delay=60.0,
        )
        await finisher.recover(plan, row)
        closed = await store.get(row.id)
    assert closed.state == DONE
    assert closed.final_path == str(archived)

"""A process killed after it archived a file but before its ledger row said so: the next
start records where the file went, so a later deletion of its remote copy marks its receipt."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.remote.deletions import delete_recorded
from daemon.state.store import Store
from handlers.archive import finish, receipt_path
from handlers.ledger import DONE, UPLOADED, UPLOADING
from handlers.outcomes import InboxPlan, Outcomes, upload_record
from providers.emulator.server import Emulator
from providers.factory import build_client
from tests.fakes import PipelineEvents
from tests.harness import read_sidecar

pytestmark = pytest.mark.anyio


async def test_an_archive_the_ledger_missed_is_found_and_its_receipt_marked(
    tmp_path: Path,
) -> None:
    """The row is still ``uploaded`` but the file already sits in done/ with its receipt (the
    kill fell between the move and the ledger write): finishing it records the archived path,
    and the recorded deletion of the copy then marks that receipt ``remote_deleted_at``
    (before, the row was closed with no path and the receipt kept claiming a deleted copy)."""
    inbox, done = tmp_path / "in", tmp_path / "in.done"
    inbox.mkdir()
    src = inbox / "f037.txt"
    src.write_bytes(b"file 37\n")
    plan = InboxPlan(
        name="in",
        path=inbox,
        providers=("kimi",),
        purposes={"kimi": "file-extract"},
        done_dir=done,
        quarantine_dir=tmp_path / "in.quarantine",
    )
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

"""daemon.remote's ledger (recorded deletions, owners, receipts, attempts) on both engines:
its SQL runs on the store's connection wrapper, so a PostgreSQL store answers as SQLite's."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.remote.ledger import DeletionRow, RemoteLedger
from daemon.remote.plan import Attempt, Owned
from handlers.archive import receipt_path
from providers.types import RemoteFile
from tests.conftest import StoreFactory
from tests.fakes import FakeClock

pytestmark = pytest.mark.anyio

ODD = b"caf\xe9.pdf".decode("utf-8", "surrogateescape")  # not UTF-8: stored as raw bytes


async def test_deletions_are_recorded_once_with_their_outcome(store_factory: StoreFactory) -> None:
    """An intent is recorded once per (provider, file id) (the second call returns the first),
    stays open until its outcome, and every recorded deletion is listed by file id."""
    remote = RemoteFile("kimi", "f-1", "a.pdf", 10, 5.0, "file-extract")
    async with store_factory() as store:
        ledger = RemoteLedger(store)
        first = await ledger.record_intent("kimi", "f-1", "max_files", now=100.0, remote=remote)
        assert first == DeletionRow(
            first.id, "kimi", "f-1", "max_files", None, "a.pdf", 10, 5.0, 100.0, None, None
        )
        again = await ledger.record_intent("kimi", "f-1", "orphan", now=200.0, ledger_id=7)
        assert again == first
        other = await ledger.record_intent("glm", "f-1", "orphan", now=300.0)
        assert await ledger.open_intents("kimi") == [first]
        await ledger.record_outcome(first.id, "deleted", now=150.0)
        assert await ledger.open_intents("kimi") == []
        assert await ledger.deletions("kimi") == {
            "f-1": DeletionRow(
                first.id,
                "kimi",
                "f-1",
                "max_files",
                None,
                "a.pdf",
                10,
                5.0,
                100.0,
                "deleted",
                150.0,
            )
        }
        assert await ledger.open_intents("glm") == [other]


async def test_owners_receipts_and_attempts_read_the_ledger(store_factory: StoreFactory) -> None:
    """owners names each uploaded file's original row (an undecodable name exact), receipts
    every archived copy's receipt, attempts/active_attempts the rows' last attempts."""
    clock = FakeClock(100.0)
    async with store_factory(clock=clock) as store:
        row = await store.begin("docs", ODD, size=3, mtime_ns=1)
        await store.set_sha256(row.id, "h")
        await store.transition(row.id, "uploading", provider="kimi", purpose="file-extract")
        clock.now = 101.0
        await store.transition(row.id, "uploaded", file_id="f-1", remote_bytes=3)
        clock.now = 102.0
        await store.transition(row.id, "done", final_path=f"/done/{ODD}")
        dup = await store.begin("docs", "dup.pdf", size=3, mtime_ns=1)
        await store.transition(
            dup.id,
            "done",
            provider="kimi",
            purpose="file-extract",
            file_id="f-1",
            dedupe_of=row.id,
            final_path="/done/dup.pdf",
        )
        busy = await store.begin("docs", "busy.pdf", size=4, mtime_ns=1)
        await store.transition(busy.id, "uploading", provider="kimi", purpose="file-extract")
        ledger = RemoteLedger(store)
        assert await ledger.owners("kimi", ["f-1", "f-2"]) == {
            "f-1": Owned(
                "f-1",
                row.id,
                "docs",
                ODD,
                str(receipt_path(Path(f"/done/{ODD}"))),
                settled=True,
                uploaded_at=101.0,
                sha256="h",
            )
        }
        assert await ledger.receipts("kimi", "f-1") == [
            receipt_path(Path(f"/done/{ODD}")),
            receipt_path(Path("/done/dup.pdf")),
        ]
        assert await ledger.attempts("kimi", since=0.0) == [
            Attempt(row.id, ODD, 3, "file-extract", 100.0, 102.0)
        ]
        assert await ledger.attempts("kimi", since=100.5) == []
        assert await ledger.active_attempts("kimi") == [
            Attempt(busy.id, "busy.pdf", 4, "file-extract", 102.0, float("inf"))
        ]
        assert await ledger.claimed("kimi", ["f-1", "f-9"]) == {"f-1"}

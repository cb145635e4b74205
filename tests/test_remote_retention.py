"""The remote side end to end: recorded deletions, retention passes, dedupe after a deletion.

Real emulator on loopback, real SQLite state file, real folders, the daemon in-process.
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from daemon.config.settings import RetentionSettings
from daemon.remote.deletions import delete_recorded
from daemon.remote.ledger import RemoteLedger
from daemon.remote.plan import RetentionLimits
from daemon.remote.prune import Pruner
from handlers.archive import receipt_path
from providers.emulator.server import Emulator
from providers.limits import KIMI_LIMITS
from tests.harness import Run, provider_section, read_sidecar, running, sha

pytestmark = pytest.mark.anyio


def _receipt(run: Run, name: str) -> dict[str, object]:
    return read_sidecar(receipt_path(run.done() / name))


async def test_dedupe_never_points_at_a_deleted_copy(tmp_path: Path) -> None:
    """Content whose remote copy was deleted (recorded) is uploaded again, not archived as a
    duplicate of the dead file id; the first receipt gets remote_deleted_at."""
    async with running(tmp_path) as run:
        (run.inbox() / "a.txt").write_bytes(b"same bytes")
        [first] = await run.wait_for(1)
        assert first.result.outcome == "uploaded"
        assert first.result.row is not None
        old_id = first.result.row.file_id
        assert old_id is not None
        assert run.daemon.current().store is not None
        outcome = await delete_recorded(
            run.daemon.current().store,
            run.daemon.current().clients["kimi"],
            old_id,
            "keep_remote",
            time.time(),
        )
        assert outcome == "deleted"
        (run.inbox() / "b.txt").write_bytes(b"same bytes")
        [second] = await run.wait_for(1)
        assert second.result.outcome == "uploaded"
        assert second.result.row is not None
        new_id = second.result.row.file_id
        assert new_id != old_id
        assert [f.id for f in run.emu.files()] == [new_id]
        assert "remote_deleted_at" in _receipt(run, "a.txt")
        assert "remote_deleted_at" not in _receipt(run, "b.txt")


async def test_pass_deletes_oldest_own_files_and_never_a_foreign_one(tmp_path: Path) -> None:
    """With max_files = 3, a pass leaves 3 files on the account: the foreign one (counted,
    never deleted) and the 2 newest of inboxd's; the 2 oldest receipts say remote_deleted_at."""
    kimi = provider_section("kimi", retention=RetentionSettings(max_files=3))
    async with running(tmp_path, providers={"kimi": kimi}) as run:
        foreign = (
            await run.daemon.current()
            .clients["kimi"]
            .upload(
                filename="foreign.txt",
                fileobj=io.BytesIO(b"not inboxd's"),
                size=12,
                purpose="file-extract",
                content_type="text/plain",
            )
        )
        for n in range(4):
            (run.inbox() / f"f{n}.txt").write_bytes(f"file {n}".encode())
            [seen] = await run.wait_for(1)  # one at a time: their upload order is known
            assert seen.result.outcome == "uploaded"
        report = await run.daemon.current().remote.run("kimi")
        assert report is not None
        assert (report.files, report.error) == (3, None)
        remaining = {f.filename for f in run.emu.files()}
        assert remaining == {"foreign.txt", "f2.txt", "f3.txt"}
        assert foreign.remote.id in {f.id for f in run.emu.files()}
        marked = {n: "remote_deleted_at" in _receipt(run, f"f{n}.txt") for n in range(4)}
        assert marked == {0: True, 1: True, 2: False, 3: False}
        counts = run.emu.counts()["kimi"]
        assert (counts.get("delete.200", 0), counts.get("delete.404", 0)) == (2, 0)
        sample = run.daemon.registry.get_sample_value(
            "inboxd_remote_deletions_total", {"provider": "kimi", "reason": "max_files"}
        )
        assert sample == 2.0


async def test_a_quota_answer_waits_only_until_a_pass_makes_room(tmp_path: Path) -> None:
    """A file parked by the account's file cap goes as soon as a retention pass makes room:
    uploaded, archived, none quarantined, the account at or under its cap."""
    cap = KIMI_LIMITS.with_overrides({}, max_files=3)
    async with Emulator(limits={"kimi": cap}) as emu:
        full = provider_section("kimi", max_files=3)
        async with running(tmp_path, emulator=emu, providers={"kimi": full}) as run:
            for n in range(4):
                (run.inbox() / f"f{n}.txt").write_bytes(f"file {n}".encode())
                [seen] = await run.wait_for(1)
            assert seen.result.outcome == "parked"  # the 4th: the account is full
            assert len(emu.files()) == 3
        # The same state and account, now with retention: the parked file goes.
        kept = provider_section("kimi", max_files=3, retention=RetentionSettings(max_files=100))
        async with running(tmp_path, emulator=emu, providers={"kimi": kept}) as run:
            seen_f3 = await run.wait_until("f3.txt", "uploaded")
            assert seen_f3.result.row is not None
            assert seen_f3.result.row.state == "done"
            assert len(emu.files()) <= 3
            assert list(run.quarantine().iterdir()) == []
            assert {p.name for p in run.done().iterdir() if not p.name.endswith(".json")} == {
                "f0.txt",
                "f1.txt",
                "f2.txt",
                "f3.txt",
            }


async def test_an_upload_that_would_cross_max_files_waits_for_a_pass(tmp_path: Path) -> None:
    """With max_files = 2, an upload that would take the account to 3 files first starts a
    pass on its own, which leaves room for it: the account ends with the 2 newest and never
    held 3 (no pass is called by the test)."""
    kimi = provider_section("kimi", retention=RetentionSettings(max_files=2))
    async with running(tmp_path, providers={"kimi": kimi}) as run:
        side = run.daemon.current().remote
        while "kimi" not in side.usage:  # the start pass has counted the account
            await side.passed.wait()
        for n in range(4):
            (run.inbox() / f"f{n}.txt").write_bytes(f"file {n}".encode())
            [seen] = await run.wait_for(1)
            assert seen.result.outcome == "uploaded"
        with anyio.fail_after(20):
            while {f.filename for f in run.emu.files()} != {"f2.txt", "f3.txt"}:
                await side.passed.wait()
        marked = {n: "remote_deleted_at" in _receipt(run, f"f{n}.txt") for n in range(4)}
        assert marked == {0: True, 1: True, 2: False, 3: False}
        assert run.emu.peak_files("kimi") == 2


async def test_a_deletion_waits_while_its_content_is_being_deduped(tmp_path: Path) -> None:
    """While the pipeline holds a file's content (deduping or uploading it), a pass records
    no deletion of that content's copy (a duplicate archived meanwhile never points at a copy
    deleted behind its back); once released, the pass deletes it."""
    async with running(tmp_path) as run:
        for n in range(2):
            (run.inbox() / f"f{n}.txt").write_bytes(f"file {n}".encode())
            [seen] = await run.wait_for(1)
            assert seen.result.outcome == "uploaded"
        oldest = next(f for f in run.emu.files() if f.filename == "f0.txt")
        assert run.daemon.current().store is not None
        pipeline = run.daemon.current().pipeline
        assert run.daemon.current().remote.pruner.content_lock == pipeline.content_lock
        reached = anyio.Event()

        @asynccontextmanager
        async def watched(sha256: str) -> AsyncIterator[None]:
            reached.set()
            async with pipeline.content_lock(sha256):
                yield

        pruner = Pruner(
            store=run.daemon.current().store,
            clients=run.daemon.current().clients,
            limits={"kimi": RetentionLimits(max_files=1)},
            skew=run.settings.reconcile_skew,
            content_lock=watched,
        )
        with anyio.fail_after(20):
            async with pipeline.content_lock(sha(b"file 0")), anyio.create_task_group() as tg:
                tg.start_soon(pruner.run, "kimi")
                await reached.wait()
                await anyio.wait_all_tasks_blocked()
                assert await RemoteLedger(run.daemon.current().store).deletions("kimi") == {}
                tg.cancel_scope.cancel()
        report = await pruner.run("kimi")
        assert [d.file.id for d in report.done] == [oldest.id]

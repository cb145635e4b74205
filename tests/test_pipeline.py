"""The pipeline on its own: a real Store, the real emulator, real clients and dispatcher.

For what is easier to drive without the watcher: a file unreadable to root, a file rewritten
while it is being sent, listings that fail while an interrupted upload is settled.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from handlers.ledger import PENDING, UPLOADING
from handlers.pipeline import Uploader
from providers.types import BreakerRecord
from tests.harness import RewriteDuringSend, read_sidecar, sha
from tests.rigs import PipelineRig, pipeline_rig

pytestmark = pytest.mark.anyio


async def test_unreadable_file_is_quarantined(tmp_path: Path) -> None:
    """A file that cannot be opened (EACCES) is quarantined as unreadable with the fix named."""

    def opener(path: Path, flags: int) -> int:
        if flags & os.O_PATH:
            return os.open(path, flags)
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    async with pipeline_rig(tmp_path, opener=opener) as rig:
        path = rig.plan.path / "locked.txt"
        path.write_bytes(b"locked")
        result = await rig.pipeline.process(rig.plan, path, "locked.txt")
        assert result.outcome == "quarantined"
        sidecar = read_sidecar(rig.plan.quarantine_dir / "locked.txt.reason.json")
        assert sidecar["reason"] == "unreadable"
        assert sidecar["detail"] == (
            "cannot open locked.txt: Permission denied; give the inboxd user read access "
            "and requeue it"
        )
        assert (rig.plan.quarantine_dir / "locked.txt").read_bytes() == b"locked"
        assert rig.events.reasons == ["unreadable"]
        assert rig.emu.files() == []


@pytest.mark.parametrize(
    "new",
    [b"second version, longer", b"FIRST VERSION"],
    ids=["size-changes", "same-size"],
)
async def test_file_changed_during_upload(tmp_path: Path, new: bytes) -> None:
    """A file rewritten while being sent: every remote copy is deleted, then the new bytes go up.

    A new size fails the client's stored-bytes check (it deletes each copy); the same size
    passes it, and the pipeline's re-fstat after the upload deletes the copy.
    """
    path = tmp_path / "in" / "doc.txt"
    holder: dict[str, RewriteDuringSend] = {}

    def wrap(inner: Uploader) -> Uploader:
        holder["w"] = RewriteDuringSend(inner, path, new)
        return holder["w"]

    async with pipeline_rig(tmp_path, wrap=wrap) as rig:
        path.write_bytes(b"first version")
        first = await rig.pipeline.process(rig.plan, path, "doc.txt")
        assert first.outcome == "changed"
        assert rig.emu.files() == []  # stored, then deleted
        counts = rig.emu.counts()["kimi"]
        assert counts["delete.200"] == counts["upload.200"] >= 1
        assert rig.events.reasons == []
        [row] = await rig.store.rows_in_state(PENDING)
        assert (row.file_id, row.relpath) == (None, "doc.txt")
        second = await rig.pipeline.process(rig.plan, path, "doc.txt")
        assert second.outcome == "uploaded"
        [remote] = rig.emu.files()
        assert remote.sha256 == sha(new)
        receipt = read_sidecar(rig.plan.done_dir / "doc.txt.upload.json")
        assert (receipt["file_id"], receipt["sha256"]) == (remote.id, remote.sha256)
        assert holder["w"].rewrites == 1


async def _interrupted(rig: PipelineRig, name: str, data: bytes) -> tuple[Path, int]:
    """A file with an ``uploading`` row as a crash right after a stored upload leaves it."""
    path = rig.plan.path / name
    path.write_bytes(data)
    st = path.stat()
    row = await rig.store.begin("in", name, size=st.st_size, mtime_ns=st.st_mtime_ns)
    await rig.store.set_sha256(row.id, sha(data))
    row = await rig.store.transition(row.id, UPLOADING, provider="kimi", purpose="file-extract")
    client = rig.pipeline.clients["kimi"]
    with path.open("rb") as f:
        await client.upload(
            filename=name,
            fileobj=f,
            size=len(data),
            purpose="file-extract",
            content_type="text/plain",
        )
    return path, row.id


async def test_recover_survives_a_failing_listing(tmp_path: Path) -> None:
    """Recovery at start with the listing failing: no crash, the row stays uploading, the file
    is parked for relist_delay, and once listing works it is finished with no second copy."""
    async with pipeline_rig(tmp_path) as rig:
        path, row_id = await _interrupted(rig, "a.txt", b"stored before the crash")
        rig.emu.set_faults("kimi", "503")
        await rig.pipeline.recover({"in": rig.plan})
        assert (await rig.store.get(row_id)).state == UPLOADING
        before = rig.pipeline.clock()
        parked = await rig.pipeline.process(rig.plan, path, "a.txt")
        assert parked.outcome == "parked"
        assert parked.park_until is not None
        assert before + 7.0 <= parked.park_until <= rig.pipeline.clock() + 7.0
        assert (await rig.store.get(row_id)).state == UPLOADING
        rig.emu.set_faults("kimi", None)
        done = await rig.pipeline.process(rig.plan, path, "a.txt")
        assert done.outcome == "finished"
        [remote] = rig.emu.files()
        row = await rig.store.get(row_id)
        assert (row.state, row.file_id, row.transport) == ("done", remote.id, "reconciled")
        assert not path.exists()


async def test_ambiguous_last_attempt_is_never_quarantined_when_stored(tmp_path: Path) -> None:
    """Accept-then-drop on the only attempt and a reset on the listing after it: the last-chance
    listing finds the stored copy, so the file is uploaded once and not quarantined."""
    async with pipeline_rig(tmp_path, faults="kimi:seq=drop/reset", attempts=1) as rig:
        path = rig.plan.path / "b.txt"
        path.write_bytes(b"dropped but stored")
        result = await rig.pipeline.process(rig.plan, path, "b.txt")
        assert result.outcome == "uploaded"
        [remote] = rig.emu.files()
        receipt = read_sidecar(rig.plan.done_dir / "b.txt.upload.json")
        assert (receipt["file_id"], receipt["transport"]) == (remote.id, "reconcile")
        assert rig.events.reasons == []
        counts: dict[str, Any] = rig.emu.counts()["kimi"]
        assert counts == {"upload.drop": 1, "list.reset": 1, "list.200": 1}


async def test_parked_after_an_unsettled_ambiguous_attempt_keeps_the_intent(
    tmp_path: Path,
) -> None:
    """Accept-then-drop, then the listings fail until the breaker parks the file: a last
    listing finds the stored copy, so the file is never sent a second time."""
    async with pipeline_rig(tmp_path, faults="kimi:seq=drop/503/quota") as rig:
        path = rig.plan.path / "c.txt"
        path.write_bytes(b"stored, then the provider went quiet")
        result = await rig.pipeline.process(rig.plan, path, "c.txt")
        assert result.outcome == "uploaded"
        [remote] = rig.emu.files()
        assert remote.sha256 == sha(b"stored, then the provider went quiet")
        receipt = read_sidecar(rig.plan.done_dir / "c.txt.upload.json")
        assert receipt["file_id"] == remote.id
        assert rig.emu.counts()["kimi"] == {
            "upload.drop": 1,
            "list.503": 1,
            "list.429": 1,
            "list.200": 1,
        }


async def test_recover_never_archives_a_new_file_with_an_old_receipt(tmp_path: Path) -> None:
    """A row left ``uploaded`` whose name now holds a different file of the same size: the row
    is closed, and the new file stays in the inbox to be uploaded on its own."""
    async with pipeline_rig(tmp_path) as rig:
        path = rig.plan.path / "same.txt"
        path.write_bytes(b"old bytes")
        st = path.stat()
        row = await rig.store.begin("in", "same.txt", size=st.st_size, mtime_ns=st.st_mtime_ns)
        await rig.store.transition(row.id, UPLOADING, provider="kimi", purpose="file-extract")
        await rig.store.transition(row.id, "uploaded", file_id="file-old", remote_bytes=9)
        path.unlink()  # archived before the crash, then a new file came under the same name
        path.write_bytes(b"new bytes")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        await rig.pipeline.recover({"in": rig.plan})
        closed = await rig.store.get(row.id)
        assert (closed.state, closed.final_path) == ("done", None)
        assert path.read_bytes() == b"new bytes"
        assert not rig.plan.done_dir.exists() or list(rig.plan.done_dir.iterdir()) == []
        result = await rig.pipeline.process(rig.plan, path, "same.txt")
        assert result.outcome == "uploaded"
        [remote] = rig.emu.files()
        assert remote.sha256 == sha(b"new bytes")


async def test_recover_finishes_an_uploaded_file_left_in_the_inbox(tmp_path: Path) -> None:
    """A row left ``uploaded`` with its file still in the inbox is archived at start, unsent."""
    async with pipeline_rig(tmp_path) as rig:
        path = rig.plan.path / "kept.txt"
        path.write_bytes(b"uploaded bytes")
        st = path.stat()
        row = await rig.store.begin("in", "kept.txt", size=st.st_size, mtime_ns=st.st_mtime_ns)
        await rig.store.set_sha256(row.id, sha(b"uploaded bytes"))
        await rig.store.transition(row.id, UPLOADING, provider="kimi", purpose="file-extract")
        await rig.store.transition(row.id, "uploaded", file_id="file-1", remote_bytes=14)
        await rig.pipeline.recover({"in": rig.plan})
        assert (await rig.store.get(row.id)).state == "done"
        assert (rig.plan.done_dir / "kept.txt").read_bytes() == b"uploaded bytes"
        receipt = read_sidecar(rig.plan.done_dir / "kept.txt.upload.json")
        assert (receipt["file_id"], receipt["sha256"]) == ("file-1", sha(b"uploaded bytes"))
        assert rig.emu.files() == []


async def test_interrupted_upload_of_an_earlier_file_at_the_same_name(tmp_path: Path) -> None:
    """An ``uploading`` row whose copy is found, while the name now holds other bytes: the
    row is closed with that copy, and the new bytes are uploaded with a receipt of their own."""
    async with pipeline_rig(tmp_path) as rig:
        path, row_id = await _interrupted(rig, "n.txt", b"before the crash")
        path.write_bytes(b"rewritten after the crash, longer")
        result = await rig.pipeline.process(rig.plan, path, "n.txt")
        assert result.outcome == "uploaded"
        old = await rig.store.get(row_id)
        copies = {f.sha256: f.id for f in rig.emu.files()}
        assert copies.keys() == {
            sha(b"before the crash"),
            sha(b"rewritten after the crash, longer"),
        }
        assert (old.state, old.file_id, old.final_path) == (
            "done",
            copies[sha(b"before the crash")],
            None,
        )
        receipt = read_sidecar(rig.plan.done_dir / "n.txt.upload.json")
        new_sha = sha(b"rewritten after the crash, longer")
        assert (receipt["file_id"], receipt["sha256"]) == (copies[new_sha], new_sha)


async def test_uploaded_row_records_the_hash_written_with_the_intent(tmp_path: Path) -> None:
    """A plain upload leaves its content hash on the done row (written with the intent)."""
    async with pipeline_rig(tmp_path) as rig:
        path = rig.plan.path / "h.txt"
        path.write_bytes(b"hash me once")
        result = await rig.pipeline.process(rig.plan, path, "h.txt")
        assert result.outcome == "uploaded"
        assert result.row is not None
        assert (result.row.state, result.row.sha256) == ("done", sha(b"hash me once"))
        assert result.row.attempts == 1


async def test_file_parked_before_any_attempt_keeps_its_hash(tmp_path: Path) -> None:
    """A forced-open breaker parks the file without an intent; its pending row keeps the hash."""
    async with pipeline_rig(tmp_path) as rig:
        await rig.store.save_breaker("kimi", BreakerRecord(state="forced_open", reason="auth"))
        path = rig.plan.path / "p.txt"
        path.write_bytes(b"waits for a reset")
        result = await rig.pipeline.process(rig.plan, path, "p.txt")
        assert result.outcome == "parked"
        row = await rig.store.active_for("in", "p.txt")
        assert row is not None
        assert (row.state, row.sha256, row.attempts) == (PENDING, sha(b"waits for a reset"), 0)
        assert rig.emu.files() == []

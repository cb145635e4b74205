"""What is archived is what was uploaded: the path must still name the uploaded inode, unchanged.

Each change is made at a fixed point of the pipeline (a hook after the upload returns, or
after the ``uploaded`` row is written), never by timing; the real emulator holds the copies.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from daemon.state.store import Store
from handlers.archive import finish
from handlers.identity import Identity, judge
from handlers.ledger import UPLOADED, UPLOADING
from handlers.pipeline import Uploader
from handlers.quarantine import quarantine
from providers.errors import FileChanged
from providers.types import RemoteFile, UploadResult
from tests.fakes import PipelineEvents
from tests.harness import read_sidecar, sha
from tests.rigs import pipeline_rig

pytestmark = pytest.mark.anyio

V1 = b"version one, as uploaded"
V2 = b"version two, saved by an editor"


class _AfterUpload:
    """The dispatcher, then ``action`` once, right after the first upload returns."""

    def __init__(self, inner: Uploader, action: Callable[[], None]) -> None:
        self.inner = inner
        self.action: Callable[[], None] | None = action

    async def upload(
        self,
        *,
        preference: Sequence[str],
        purposes: Mapping[str, str],
        filename: str,
        size: int,
        content_type: str,
        open_file: Callable[[], BinaryIO],
        before_attempt: Callable[[str, str], Awaitable[None]],
        reconcile: Callable[[str, str], Awaitable[RemoteFile | None]],
        first_tried: float | None = None,
        attempts: int = 0,
    ) -> UploadResult:
        result = await self.inner.upload(
            preference=preference,
            purposes=purposes,
            filename=filename,
            size=size,
            content_type=content_type,
            open_file=open_file,
            before_attempt=before_attempt,
            reconcile=reconcile,
            first_tried=first_tried,
            attempts=attempts,
        )
        if self.action is not None:
            action, self.action = self.action, None
            action()
        return result


class _StoredHook(PipelineEvents):
    """Events that run ``action`` once when the upload is recorded (after the ``uploaded`` row
    is written, before the file is archived)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: Callable[[], None] | None = None

    def upload_stored(self, provider: str, nbytes: int, seconds: float) -> None:
        super().upload_stored(provider, nbytes, seconds)
        if self.action is not None:
            action, self.action = self.action, None
            action()


def _atomic_save(path: Path, data: bytes) -> None:
    """What an editor does: write a new file, rename it over the old name."""
    tmp = path.with_name(".save.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _symlink_over(path: Path) -> None:
    target = path.with_name("elsewhere.bin")
    target.write_bytes(b"not for upload")
    link = path.with_name(".link.tmp")
    link.symlink_to(target)
    link.replace(path)


_ID = Identity(1, 2, 3, 4, 5)


@pytest.mark.parametrize(
    ("now", "verdict"),
    [
        (_ID, "same"),
        (None, "gone"),
        (_ID._replace(ino=9), "replaced"),
        (_ID._replace(dev=9), "replaced"),
        (_ID._replace(size=4), "changed"),
        (_ID._replace(mtime_ns=5), "changed"),
        (_ID._replace(ctime_ns=6), "changed"),
    ],
)
def test_judge(now: Identity | None, verdict: str) -> None:
    """Another inode is 'replaced', the same inode with other size/mtime/ctime 'changed'."""
    assert judge(_ID, now) == verdict


async def test_atomic_save_after_upload_is_not_archived_under_the_old_receipt(
    tmp_path: Path,
) -> None:
    """v2 renamed over v1 after v1's upload: v1 is archived from its open fd with its own
    receipt, v2 stays in the inbox and goes up on its own with a receipt of its own."""
    path = tmp_path / "in" / "doc.txt"

    def wrap(inner: Uploader) -> Uploader:
        return _AfterUpload(inner, lambda: _atomic_save(path, V2))

    async with pipeline_rig(tmp_path, wrap=wrap) as rig:
        path.write_bytes(V1)
        first = await rig.pipeline.process(rig.plan, path, "doc.txt")
        assert first.outcome == "changed"
        assert first.row is not None
        [v1_remote] = rig.emu.files()
        assert v1_remote.sha256 == sha(V1)
        done = rig.plan.done_dir
        v1_row = await rig.store.get(first.row.id)
        assert (v1_row.state, v1_row.file_id, v1_row.final_path) == (
            "done",
            v1_remote.id,
            str(done / "doc.txt"),
        )
        assert path.read_bytes() == V2
        assert (done / "doc.txt").read_bytes() == V1
        receipt = read_sidecar(done / "doc.txt.upload.json")
        assert (receipt["sha256"], receipt["file_id"]) == (sha(V1), v1_remote.id)
        second = await rig.pipeline.process(rig.plan, path, "doc.txt")
        assert second.outcome == "uploaded"
        receipt = read_sidecar(done / "doc~1.txt.upload.json")
        remote = {f.sha256: f.id for f in rig.emu.files()}
        assert remote.keys() == {sha(V1), sha(V2)}
        assert (receipt["sha256"], receipt["file_id"]) == (sha(V2), remote[sha(V2)])
        assert (done / "doc~1.txt").read_bytes() == V2
        assert sorted(p.name for p in done.iterdir()) == [
            "doc.txt",
            "doc.txt.upload.json",
            "doc~1.txt",
            "doc~1.txt.upload.json",
        ]


async def test_atomic_save_after_upload_is_never_deleted(tmp_path: Path) -> None:
    """With on_success = "delete", a v2 renamed over the uploaded v1 is not deleted."""
    path = tmp_path / "in" / "keep.txt"

    def wrap(inner: Uploader) -> Uploader:
        return _AfterUpload(inner, lambda: _atomic_save(path, V2))

    async with pipeline_rig(tmp_path, wrap=wrap) as rig:
        plan = replace(rig.plan, on_success="delete")
        path.write_bytes(V1)
        first = await rig.pipeline.process(plan, path, "keep.txt")
        assert first.outcome == "changed"
        assert first.row is not None
        assert (first.row.state, first.row.final_path) == ("done", None)
        assert path.read_bytes() == V2
        second = await rig.pipeline.process(plan, path, "keep.txt")
        assert second.outcome == "uploaded"
        assert not path.exists()
        assert {f.sha256 for f in rig.emu.files()} == {sha(V1), sha(V2)}


async def test_file_grown_after_upload_is_uploaded_whole_and_the_truncated_copy_deleted(
    tmp_path: Path,
) -> None:
    """A writer appends after the upload was recorded: the truncated remote copy is deleted,
    nothing is archived with its receipt, and the whole file is uploaded and archived."""
    path = tmp_path / "in" / "log.txt"
    events = _StoredHook()

    def append() -> None:
        with path.open("ab") as f:
            f.write(b" and the rest")

    events.action = append
    async with pipeline_rig(tmp_path, events=events) as rig:
        path.write_bytes(V1)
        first = await rig.pipeline.process(rig.plan, path, "log.txt")
        assert first.outcome == "changed"
        assert first.row is not None
        assert rig.emu.files() == []  # the truncated copy is gone
        assert rig.emu.counts()["kimi"]["delete.200"] == 1
        old = await rig.store.get(first.row.id)
        assert (old.state, old.file_id, old.final_path) == ("done", None, None)
        assert old.detail is not None
        assert "deleted" in old.detail
        assert not rig.plan.done_dir.exists() or list(rig.plan.done_dir.iterdir()) == []
        second = await rig.pipeline.process(rig.plan, path, "log.txt")
        assert second.outcome == "uploaded"
        [remote] = rig.emu.files()
        whole = V1 + b" and the rest"
        assert remote.sha256 == sha(whole)
        receipt = read_sidecar(rig.plan.done_dir / "log.txt.upload.json")
        assert (receipt["sha256"], receipt["file_id"], receipt["bytes"]) == (
            sha(whole),
            remote.id,
            len(whole),
        )


async def test_symlink_renamed_over_after_upload_is_never_archived(tmp_path: Path) -> None:
    """A symlink renamed over the uploaded file never goes to done_dir (the uploaded bytes do,
    from the open fd); it is quarantined as a symlink on its own next pass."""
    path = tmp_path / "in" / "s.txt"

    def wrap(inner: Uploader) -> Uploader:
        return _AfterUpload(inner, lambda: _symlink_over(path))

    async with pipeline_rig(tmp_path, wrap=wrap) as rig:
        path.write_bytes(V1)
        first = await rig.pipeline.process(rig.plan, path, "s.txt")
        assert first.outcome == "changed"
        assert first.row is not None
        done = rig.plan.done_dir
        assert (first.row.state, first.row.final_path) == ("done", str(done / "s.txt"))
        assert not (done / "s.txt").is_symlink()
        assert (done / "s.txt").read_bytes() == V1
        assert read_sidecar(done / "s.txt.upload.json")["sha256"] == sha(V1)
        second = await rig.pipeline.process(rig.plan, path, "s.txt")
        assert second.outcome == "quarantined"
        assert read_sidecar(rig.plan.quarantine_dir / "s.txt.reason.json")["reason"] == "symlink"
        assert (rig.plan.quarantine_dir / "s.txt").is_symlink()


async def test_replaced_upload_whose_bytes_changed_is_recorded_without_a_receipt(
    tmp_path: Path,
) -> None:
    """v1 overwritten in place after its upload, then replaced by v2: its open fd no longer
    holds the uploaded bytes, so nothing is archived for it; its row is done with no final
    path, and v2 is uploaded and archived on its own."""
    path = tmp_path / "in" / "w.txt"
    events = _StoredHook()

    def overwrite_then_replace() -> None:
        with path.open("r+b") as f:
            f.write(V1.upper())
        _atomic_save(path, V2)

    events.action = overwrite_then_replace
    async with pipeline_rig(tmp_path, events=events) as rig:
        path.write_bytes(V1)
        first = await rig.pipeline.process(rig.plan, path, "w.txt")
        assert first.outcome == "changed"
        assert first.row is not None
        [v1_remote] = rig.emu.files()
        assert (first.row.state, first.row.file_id, first.row.final_path) == (
            "done",
            v1_remote.id,
            None,
        )
        assert not rig.plan.done_dir.exists() or list(rig.plan.done_dir.iterdir()) == []
        second = await rig.pipeline.process(rig.plan, path, "w.txt")
        assert second.outcome == "uploaded"
        assert read_sidecar(rig.plan.done_dir / "w.txt.upload.json")["sha256"] == sha(V2)


async def test_file_replaced_after_validation_is_not_quarantined_under_its_reason(
    tmp_path: Path,
) -> None:
    """An empty file replaced by a good one right after it was opened: the good one is not
    quarantined as 'empty'; it stays, and is uploaded on its next pass."""
    path = tmp_path / "in" / "e.txt"

    def opener(p: Path, flags: int) -> int:
        fd = os.open(p, flags)
        if not flags & os.O_PATH and path.stat().st_size == 0:
            _atomic_save(path, V2)  # after open, before the quarantine move
        return fd

    async with pipeline_rig(tmp_path, opener=opener) as rig:
        path.write_bytes(b"")
        first = await rig.pipeline.process(rig.plan, path, "e.txt")
        assert first.outcome == "changed"
        assert path.read_bytes() == V2
        assert not rig.plan.quarantine_dir.exists() or list(rig.plan.quarantine_dir.iterdir()) == []
        assert rig.events.reasons == []
        second = await rig.pipeline.process(rig.plan, path, "e.txt")
        assert second.outcome == "uploaded"


async def test_duplicate_replaced_before_its_archive_is_not_filed_under_the_original(
    tmp_path: Path,
) -> None:
    """A copy of uploaded content, replaced by new bytes right after it was opened: the new
    bytes are not archived under the original's receipt; they are uploaded on their own."""
    path = tmp_path / "in" / "copy.txt"

    def opener(p: Path, flags: int) -> int:
        fd = os.open(p, flags)
        if p == path and not flags & os.O_PATH and path.read_bytes() == V1:
            _atomic_save(path, V2)  # after the open: the fd holds V1, the name V2
        return fd

    async with pipeline_rig(tmp_path, opener=opener) as rig:
        original = rig.plan.path / "original.txt"
        original.write_bytes(V1)
        assert (await rig.pipeline.process(rig.plan, original, "original.txt")).outcome == (
            "uploaded"
        )
        path.write_bytes(V1)
        first = await rig.pipeline.process(rig.plan, path, "copy.txt")
        assert first.outcome == "changed"
        assert path.read_bytes() == V2
        assert sorted(p.name for p in rig.plan.done_dir.iterdir()) == [
            "original.txt",
            "original.txt.upload.json",
        ]
        second = await rig.pipeline.process(rig.plan, path, "copy.txt")
        assert second.outcome == "uploaded"
        receipt = read_sidecar(rig.plan.done_dir / "copy.txt.upload.json")
        assert (receipt["sha256"], "dedupe_of" in receipt) == (sha(V2), False)


async def _uploaded_row(
    store: Store, name: str, st: os.stat_result, data: bytes, file_id: str
) -> int:
    """The ``uploaded`` row a crash between the upload and the archive leaves."""
    row = await store.begin("in", name, size=st.st_size, mtime_ns=st.st_mtime_ns)
    await store.set_sha256(row.id, sha(data))
    await store.transition(row.id, UPLOADING, provider="kimi", purpose="file-extract")
    await store.transition(row.id, UPLOADED, file_id=file_id, remote_bytes=len(data))
    return row.id


async def test_recover_checks_content_not_only_size_and_mtime(tmp_path: Path) -> None:
    """An ``uploaded`` row whose name now holds other bytes of the same size and mtime: the row
    is closed without archiving them under its receipt; they are uploaded on their own."""
    async with pipeline_rig(tmp_path) as rig:
        path = rig.plan.path / "same.txt"
        path.write_bytes(b"uploaded bytes")
        st = path.stat()
        row_id = await _uploaded_row(rig.store, "same.txt", st, b"uploaded bytes", "file-old")
        _atomic_save(path, b"UPLOADED BYTES")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        await rig.pipeline.recover({"in": rig.plan})
        closed = await rig.store.get(row_id)
        assert (closed.state, closed.file_id, closed.final_path) == ("done", "file-old", None)
        assert not rig.plan.done_dir.exists() or list(rig.plan.done_dir.iterdir()) == []
        result = await rig.pipeline.process(rig.plan, path, "same.txt")
        assert result.outcome == "uploaded"
        [remote] = rig.emu.files()
        assert remote.sha256 == sha(b"UPLOADED BYTES")
        receipt = read_sidecar(rig.plan.done_dir / "same.txt.upload.json")
        assert receipt["sha256"] == sha(b"UPLOADED BYTES")


async def test_resume_deletes_the_truncated_copy_of_a_file_that_grew(tmp_path: Path) -> None:
    """An ``uploaded`` row (crash before the archive) whose file has grown since: its remote
    copy (a truncated file) is deleted and the whole file is uploaded and archived."""
    async with pipeline_rig(tmp_path) as rig:
        path = rig.plan.path / "grew.txt"
        path.write_bytes(V1)
        with path.open("rb") as f:
            stored = await rig.pipeline.clients["kimi"].upload(
                filename="grew.txt",
                fileobj=f,
                size=len(V1),
                purpose="file-extract",
                content_type="text/plain",
            )
        row_id = await _uploaded_row(rig.store, "grew.txt", path.stat(), V1, stored.remote.id)
        with path.open("ab") as f:
            f.write(b" and more")
        await rig.pipeline.recover({"in": rig.plan})
        old = await rig.store.get(row_id)
        assert (old.state, old.file_id, old.final_path) == ("done", None, None)
        assert rig.emu.files() == []
        result = await rig.pipeline.process(rig.plan, path, "grew.txt")
        assert result.outcome == "uploaded"
        [remote] = rig.emu.files()
        assert remote.sha256 == sha(V1 + b" and more")
        assert (rig.plan.done_dir / "grew.txt").read_bytes() == V1 + b" and more"


def test_archive_refuses_a_replaced_file_and_leaves_no_receipt(tmp_path: Path) -> None:
    """finish() with the uploaded file's identity: a file renamed over it is not archived,
    and the receipt written before the move is removed again."""
    src = tmp_path / "a.txt"
    src.write_bytes(V1)
    expect = Identity.of(src.lstat())
    _atomic_save(src, V2)
    record = {
        "provider": "kimi",
        "purpose": "file-extract",
        "file_id": "f",
        "bytes": len(V1),
        "sha256": sha(V1),
        "uploaded_at": None,
        "transport": "openai",
    }
    for mode in ("archive", "delete"):
        with pytest.raises(FileChanged) as caught:
            finish(src, on_success=mode, done_dir=tmp_path / "done", record=record, expect=expect)
        assert caught.value.kind == "replaced"
    assert list((tmp_path / "done").iterdir()) == []
    assert src.read_bytes() == V2


def test_quarantine_refuses_a_file_written_to_since_its_check(tmp_path: Path) -> None:
    """quarantine() with the checked file's identity: the same inode grown since is not
    moved, and no reason sidecar is left."""
    src = tmp_path / "b.txt"
    src.write_bytes(b"")
    expect = Identity.of(src.lstat())
    with src.open("ab") as f:
        f.write(b"now with content")
    qdir = tmp_path / "q"
    with pytest.raises(FileChanged) as caught:
        quarantine(
            src,
            qdir,
            reason="empty",
            detail="",
            inbox="i",
            size=0,
            sha256=None,
            now=0.0,
            expect=expect,
        )
    assert caught.value.kind == "changed"
    assert list(qdir.iterdir()) == []
    assert src.read_bytes() == b"now with content"

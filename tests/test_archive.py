"""finish(): archive with the exact upload sidecar, never overwriting, or delete."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from handlers.archive import finish, mark_receipt
from providers.errors import FileVanished


def _record(data: bytes, file_id: str = "file-abc123") -> dict[str, object]:
    return {
        "provider": "kimi",
        "purpose": "file-extract",
        "file_id": file_id,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "uploaded_at": "2026-11-25T20:43:25.120Z",
        "transport": "openai",
    }


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """An inbox folder in tmp_path."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def test_archive_writes_exact_sidecar(inbox: Path, tmp_path: Path) -> None:
    """The file moves to done/ and <name>.upload.json holds exactly the record, fields in order,
    then the name the file had in the inbox."""
    data = b"%PDF-1.7 hello"
    src = inbox / "report.pdf"
    src.write_bytes(data)
    done = tmp_path / "done"
    final = finish(src, on_success="archive", done_dir=done, record=_record(data))
    assert final == done / "report.pdf"
    assert (final.read_bytes(), src.exists()) == (data, False)
    digest = hashlib.sha256(data).hexdigest()
    assert (done / "report.pdf.upload.json").read_text(encoding="utf-8") == (
        "{\n"
        '  "provider": "kimi",\n'
        '  "purpose": "file-extract",\n'
        '  "file_id": "file-abc123",\n'
        '  "bytes": 14,\n'
        f'  "sha256": "{digest}",\n'
        '  "uploaded_at": "2026-11-25T20:43:25.120Z",\n'
        '  "transport": "openai",\n'
        '  "name": "report.pdf"\n'
        "}\n"
    )


def test_archive_dedupe_record_keeps_dedupe_of(inbox: Path, tmp_path: Path) -> None:
    """A duplicate's sidecar carries dedupe_of after the standard fields."""
    data = b"same bytes"
    src = inbox / "copy.txt"
    src.write_bytes(data)
    record = {"dedupe_of": "report.txt", **_record(data)}
    final = finish(src, on_success="archive", done_dir=tmp_path / "done", record=record)
    assert final is not None
    sidecar = json.loads(final.with_name("copy.txt.upload.json").read_text(encoding="utf-8"))
    assert list(sidecar) == [
        "provider",
        "purpose",
        "file_id",
        "bytes",
        "sha256",
        "uploaded_at",
        "transport",
        "dedupe_of",
        "name",
    ]
    assert (sidecar["dedupe_of"], sidecar["name"]) == ("report.txt", "copy.txt")


def test_archive_never_overwrites(inbox: Path, tmp_path: Path) -> None:
    """A second file of the same name becomes name~1.ext with its own sidecar."""
    done = tmp_path / "done"
    finals = []
    for i in range(2):
        data = f"version {i}".encode()
        src = inbox / "a.txt"
        src.write_bytes(data)
        finals.append(
            finish(src, on_success="archive", done_dir=done, record=_record(data, f"file-{i}"))
        )
    assert finals == [done / "a.txt", done / "a~1.txt"]
    ids = [
        json.loads((done / f"{n}.upload.json").read_text(encoding="utf-8"))["file_id"]
        for n in ("a.txt", "a~1.txt")
    ]
    assert ids == ["file-0", "file-1"]
    assert [(done / n).read_bytes() for n in ("a.txt", "a~1.txt")] == [b"version 0", b"version 1"]


def test_orphan_sidecar_of_same_upload_is_adopted(inbox: Path, tmp_path: Path) -> None:
    """After a crash between sidecar and move, finishing again reuses the name: no orphan left."""
    data = b"payload"
    done = tmp_path / "done"
    done.mkdir()
    (done / "x.txt.upload.json").write_text(json.dumps(_record(data)), encoding="utf-8")
    src = inbox / "x.txt"
    src.write_bytes(data)
    assert finish(src, on_success="archive", done_dir=done, record=_record(data)) == done / "x.txt"
    assert sorted(p.name for p in done.iterdir()) == ["x.txt", "x.txt.upload.json"]


def test_foreign_orphan_sidecar_is_not_adopted(inbox: Path, tmp_path: Path) -> None:
    """A sidecar of a different upload keeps its name; the file takes the next one."""
    data = b"payload"
    done = tmp_path / "done"
    done.mkdir()
    (done / "x.txt.upload.json").write_text(
        json.dumps(_record(b"other", "file-other")), encoding="utf-8"
    )
    src = inbox / "x.txt"
    src.write_bytes(data)
    assert (
        finish(src, on_success="archive", done_dir=done, record=_record(data)) == done / "x~1.txt"
    )


def test_delete_removes_source(inbox: Path, tmp_path: Path) -> None:
    """on_success=delete removes the file, writes nothing, returns None; repeating is a no-op."""
    src = inbox / "a.txt"
    src.write_bytes(b"x")
    done = tmp_path / "done"
    assert finish(src, on_success="delete", done_dir=done, record=_record(b"x")) is None
    assert (src.exists(), done.exists()) == (False, False)
    assert finish(src, on_success="delete", done_dir=done, record=_record(b"x")) is None


def test_archive_vanished_source(inbox: Path, tmp_path: Path) -> None:
    """A source gone before archiving raises FileVanished and leaves no sidecar."""
    done = tmp_path / "done"
    with pytest.raises(FileVanished):
        finish(inbox / "ghost.txt", on_success="archive", done_dir=done, record=_record(b""))
    assert list(done.iterdir()) == []


def test_incomplete_record_refused(inbox: Path, tmp_path: Path) -> None:
    """A record missing fields is a caller bug, named in the message; the file stays put."""
    src = inbox / "a.txt"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="upload record lacks file_id, transport"):
        finish(
            src,
            on_success="archive",
            done_dir=tmp_path / "done",
            record={
                "provider": "glm",
                "purpose": "agent",
                "bytes": 1,
                "sha256": "0",
                "uploaded_at": 0,
            },
        )
    assert src.read_bytes() == b"x"


def test_mark_receipt_adds_only_missing_fields_and_says_when_there_is_no_receipt(
    tmp_path: Path,
) -> None:
    """``mark_receipt`` adds the fields a receipt lacks, keeps an earlier value, and answers
    False (writing nothing) for a receipt that is gone or not a JSON object."""
    receipt = tmp_path / "a.txt.upload.json"
    receipt.write_text(json.dumps({"file_id": "f1", "remote_deleted_at": "earlier"}))
    fields = {"remote_deleted_at": "later", "note": "n"}
    assert mark_receipt(receipt, fields) is True
    assert json.loads(receipt.read_text()) == {
        "file_id": "f1",
        "remote_deleted_at": "earlier",
        "note": "n",
    }
    assert mark_receipt(tmp_path / "gone.upload.json", fields) is False
    assert not (tmp_path / "gone.upload.json").exists()
    listed = tmp_path / "b.txt.upload.json"
    listed.write_text("[1, 2]")
    assert mark_receipt(listed, fields) is False
    assert listed.read_text() == "[1, 2]"

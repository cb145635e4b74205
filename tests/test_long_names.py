"""Names up to NAME_MAX (255 bytes, multi-byte UTF-8 included) on real folders.

Every name kind inboxd makes from a file's name (``~N`` collision names, ``.upload.json`` and
``.reason.json`` sidecars, ``.<name>.inboxd-XXXXXXXX.tmp`` temp names) stays within 255 bytes:
a longer one is shortened to a cut stem + ``~`` + 10 hex digits of the full name's sha256,
keeping the extension and the suffix; the original name is recorded in the JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.archive import finish
from handlers.leftovers import is_temp_leftover, remove_temp_leftovers
from handlers.moves import move_file, move_unique, write_json_atomic
from handlers.names import NAME_MAX, fit_name, sidecar_name, temp_name
from handlers.quarantine import quarantine, reason_sidecar, requeue

ASCII_255 = "a" * 251 + ".txt"
CJK_252 = "文" * 84  # 252 bytes, no extension
CJK_255 = "文" * 83 + "ab.txt"  # 255 bytes: 83 three-byte characters + 6 ASCII


def _b(name: str) -> int:
    return len(os.fsencode(name))


def _record(data: bytes, file_id: str = "file-1") -> dict[str, object]:
    return {
        "provider": "kimi",
        "purpose": "file-extract",
        "file_id": file_id,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "uploaded_at": "2026-11-25T20:43:25.120Z",
        "transport": "openai",
    }


def _h(name: str) -> str:
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:10]


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on a different filesystem than tmp_path (a tmpfs), removed afterwards."""
    folder = Path("/dev/shm") / f"inboxd-names-{os.getpid()}-{tmp_path.name}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_names_used_here_are_at_the_limit() -> None:
    """The sample names are exactly as long as the test claims (255, 252, 255 bytes)."""
    assert [_b(n) for n in (ASCII_255, CJK_252, CJK_255)] == [255, 252, 255]


@pytest.mark.parametrize(
    ("name", "kw", "expected"),
    [
        ("a.txt", {"suffix": ".upload.json"}, "a.txt.upload.json"),
        ("a.txt", {"tag": "~2"}, "a~2.txt"),
        ("noext", {"tag": "~2"}, "noext~2"),
        (".hidden", {"tag": "~1"}, ".hidden~1"),
        ("a.txt", {"prefix": ".", "suffix": ".inboxd-0a1b2c3d.tmp"}, ".a.txt.inboxd-0a1b2c3d.tmp"),
        (
            ASCII_255,
            {"suffix": ".upload.json"},
            "a" * (255 - 11 - 4 - 12) + "~" + _h(ASCII_255) + ".txt.upload.json",
        ),
        (ASCII_255, {"tag": "~1"}, "a" * (255 - 11 - 2 - 4) + "~" + _h(ASCII_255) + "~1.txt"),
        (
            CJK_255,
            {"suffix": ".reason.json"},
            # 255 - 11 (~hash) - 4 (.txt) - 12 = 228 bytes of stem: 76 characters, no "ab"
            "文" * 76 + "~" + _h(CJK_255) + ".txt.reason.json",
        ),
        (
            CJK_252,
            {"prefix": ".", "suffix": ".inboxd-0a1b2c3d.tmp"},
            # 255 - 1 - 11 - 20 = 223 bytes: 74 whole characters (222), never half of one
            "." + "文" * 74 + "~" + _h(CJK_252) + ".inboxd-0a1b2c3d.tmp",
        ),
    ],
)
def test_fit_name(name: str, kw: dict[str, str], expected: str) -> None:
    """A name that fits is kept as it is; a longer one is cut on a character boundary and
    given ~<10 hex of the full name's sha256>, keeping tag, extension, prefix and suffix."""
    got = fit_name(name, **kw)
    assert got == expected
    assert _b(got) <= NAME_MAX


def test_fit_name_never_confuses_two_long_names() -> None:
    """Two 255-byte names that differ only past the cut get different shortened names."""
    one, two = "x" * 250 + "1.txt", "x" * 250 + "2.txt"
    assert sidecar_name(one, ".upload.json") != sidecar_name(two, ".upload.json")
    assert fit_name(one, tag="~1") != fit_name(two, tag="~1")


def test_fit_name_of_an_undecodable_name_round_trips() -> None:
    """A long name with non-UTF-8 bytes (surrogate-escaped) shortens to an encodable name."""
    raw = b"\xff" * 250 + b".txt"
    name = os.fsdecode(raw)
    short = sidecar_name(name, ".reason.json")
    assert len(os.fsencode(short)) <= NAME_MAX
    assert os.fsencode(short).endswith(b".txt.reason.json")


@pytest.mark.parametrize("name", [ASCII_255, CJK_252, CJK_255], ids=["ascii", "cjk252", "cjk255"])
def test_archive_and_collision_with_long_names(tmp_path: Path, name: str) -> None:
    """Two uploads with one 255-byte name are archived side by side (the second under a
    shortened ~1 name), each with a receipt that names the original name."""
    inbox, done = tmp_path / "in", tmp_path / "done"
    inbox.mkdir()
    finals = []
    for n in range(2):
        data = f"version {n}".encode()
        src = inbox / name
        src.write_bytes(data)
        final = finish(src, on_success="archive", done_dir=done, record=_record(data, f"f{n}"))
        assert final is not None
        finals.append(final)
    assert [f.name for f in finals] == [name, fit_name(name, tag="~1")]
    for n, final in enumerate(finals):
        assert final.read_bytes() == f"version {n}".encode()
        receipt = json.loads((done / sidecar_name(final.name, ".upload.json")).read_text("utf-8"))
        assert (receipt["file_id"], receipt["name"]) == (f"f{n}", name)
    assert all(_b(p.name) <= NAME_MAX for p in done.iterdir())
    assert len(list(done.iterdir())) == 4


def test_orphan_receipt_with_a_shortened_name_is_adopted(tmp_path: Path) -> None:
    """A crash between the shortened receipt and the move: finishing again reuses that name."""
    inbox, done = tmp_path / "in", tmp_path / "done"
    inbox.mkdir()
    done.mkdir()
    data = b"payload"
    (done / sidecar_name(CJK_255, ".upload.json")).write_text(json.dumps(_record(data)), "utf-8")
    src = inbox / CJK_255
    src.write_bytes(data)
    assert finish(src, on_success="archive", done_dir=done, record=_record(data)) == done / CJK_255
    assert {p.name for p in done.iterdir()} == {CJK_255, sidecar_name(CJK_255, ".upload.json")}


@pytest.mark.parametrize("name", [ASCII_255, CJK_255], ids=["ascii", "cjk"])
def test_quarantine_and_requeue_with_long_names(tmp_path: Path, name: str) -> None:
    """Two refused files with one 255-byte name are quarantined with their reasons and
    requeued under the original name (the second back in the inbox as a shortened ~1)."""
    inbox, qdir = tmp_path / "in", tmp_path / "q"
    inbox.mkdir()
    kept = []
    for n in range(2):
        src = inbox / name
        src.write_bytes(f"bad {n}".encode())
        kw = {"detail": "d", "inbox": "in", "size": 5, "sha256": None, "now": 0.0}
        kept.append(quarantine(src, qdir, reason="empty", **kw))  # type: ignore[arg-type]
    assert [q.name for q in kept] == [name, fit_name(name, tag="~1")]
    for q in kept:
        reason = json.loads(reason_sidecar(q).read_text("utf-8"))
        assert (reason["reason"], reason["name"]) == ("empty", name)
    back = [requeue(q, inbox) for q in kept]
    assert [b.name for b in back] == [name, fit_name(name, tag="~1")]
    assert [b.read_bytes() for b in back] == [b"bad 0", b"bad 1"]
    assert list(qdir.iterdir()) == []


def test_write_json_atomic_at_the_limit(tmp_path: Path) -> None:
    """A sidecar whose own name is 255 bytes is written (its temp name is shortened)."""
    path = tmp_path / ("r" * 243 + ".reason.json")
    write_json_atomic(path, {"reason": "empty"})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert json.loads(path.read_text("utf-8")) == {"reason": "empty"}


def test_move_across_filesystems_with_a_255_byte_name(tmp_path: Path, other_fs: Path) -> None:
    """A 255-byte multi-byte name crosses filesystems (its temp copy name is shortened)."""
    src = tmp_path / CJK_255
    src.write_bytes(b"bytes kept")
    dst = move_file(src, other_fs / CJK_255)
    assert dst.read_bytes() == b"bytes kept"
    assert [p.name for p in other_fs.iterdir()] == [CJK_255]
    assert not src.exists()


def test_move_unique_across_filesystems_collision(tmp_path: Path, other_fs: Path) -> None:
    """The second 255-byte name into the same folder gets the shortened ~1 name."""
    (other_fs / ASCII_255).write_bytes(b"first")
    src = tmp_path / ASCII_255
    src.write_bytes(b"second")
    moved = move_unique(src, other_fs)
    assert moved.name == fit_name(ASCII_255, tag="~1")
    assert moved.read_bytes() == b"second"


@pytest.mark.parametrize("target", [ASCII_255, CJK_252, sidecar_name(CJK_255, ".upload.json")])
def test_shortened_temp_names_are_leftovers(tmp_path: Path, target: str) -> None:
    """The start-up cleanup recognises and removes a shortened temp name, and only that."""
    leftover = tmp_path / temp_name(target, "0a1b2c3d", host="node-1")
    assert _b(leftover.name) <= NAME_MAX
    assert is_temp_leftover(leftover.name, host="node-1", legacy=False)
    leftover.write_bytes(b"half")
    (tmp_path / ASCII_255).write_bytes(b"kept")
    assert remove_temp_leftovers([tmp_path], host="node-1", legacy=False) == 1
    assert [p.name for p in tmp_path.iterdir()] == [ASCII_255]

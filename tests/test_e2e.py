"""End to end on real folders: the daemon in-process against the real emulator and real SDKs."""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.state.store import Store
from providers.limits import LIMITS, MIB, PurposeLimits
from tests.fakes import FakeClock, LogEvent
from tests.harness import RewriteDuringSend, Run, provider_section, read_sidecar, running, sha

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("provider", "transport"),
    [("kimi", "openai"), ("kimi", "http"), ("glm", "zhipuai"), ("glm", "openai"), ("glm", "http")],
)
async def test_happy_path(tmp_path: Path, provider: str, transport: str) -> None:
    """A settled file is uploaded once via the configured transport and archived with a receipt."""
    providers = {provider: provider_section(provider, transports=[transport])}
    async with running(
        tmp_path, inboxes=[{"name": "in", "providers": [provider]}], providers=providers
    ) as run:
        data = b"hello inboxd " + provider.encode() + transport.encode()
        (run.inbox() / "note.txt").write_bytes(data)
        [seen] = await run.wait_for(1)
        assert seen.result.outcome == "uploaded"
        [remote] = run.emu.files()
        purpose = "file-extract" if provider == "kimi" else "agent"
        assert (remote.provider, remote.filename, remote.purpose, remote.sha256) == (
            provider,
            "note.txt",
            purpose,
            sha(data),
        )
        done = run.done() / "note.txt"
        assert done.read_bytes() == data
        receipt = read_sidecar(run.done() / "note.txt.upload.json")
        assert receipt["file_id"] == remote.id
        assert receipt["transport"] == transport
        assert receipt["sha256"] == sha(data)
        assert receipt["bytes"] == len(data)
        assert list(run.inbox().iterdir()) == []
        [row] = await run.rows()
        assert (row.state, row.file_id, row.provider, row.transport) == (
            "done",
            remote.id,
            provider,
            transport,
        )


async def _quarantined(run: Run, name: str, reason: str, inbox: str = "in") -> dict[str, Any]:
    """Assert ``name`` sits in quarantine with ``reason`` and a quarantined ledger row."""
    qfile = run.quarantine(inbox) / name
    assert qfile.is_symlink() or qfile.exists()
    sidecar = read_sidecar(run.quarantine(inbox) / (name + ".reason.json"))
    assert sidecar["reason"] == reason
    assert sidecar["inbox"] == inbox
    rows = [r for r in await run.rows() if r.relpath == name]
    assert [(r.state, r.reason, r.final_path) for r in rows] == [
        ("quarantined", reason, str(qfile))
    ]
    return sidecar


async def test_fifo_is_quarantined_and_never_blocks(tmp_path: Path) -> None:
    """A fifo (no writer) is quarantined as not_regular_file while a real file beside it uploads."""
    async with running(tmp_path) as run:
        os.mkfifo(run.inbox() / "pipe.txt")
        (run.inbox() / "real.txt").write_bytes(b"real")
        seen = {s.relpath: s.result.outcome for s in await run.wait_for(2)}
        assert seen == {"pipe.txt": "quarantined", "real.txt": "uploaded"}
        sidecar = await _quarantined(run, "pipe.txt", "not_regular_file")
        assert "fifo" in sidecar["detail"]
        assert stat.S_ISFIFO(os.lstat(run.quarantine() / "pipe.txt").st_mode)
        assert [f.filename for f in run.emu.files()] == ["real.txt"]


async def test_symlink_outside_is_never_uploaded(tmp_path: Path) -> None:
    """A symlink to a file outside the inbox is quarantined as a link; its target is untouched."""
    target = tmp_path / "secret.txt"
    target.write_bytes(b"top secret")
    async with running(tmp_path) as run:
        (run.inbox() / "link.txt").symlink_to(target)
        [seen] = await run.wait_for(1)
        assert seen.result.outcome == "quarantined"
        await _quarantined(run, "link.txt", "symlink")
        assert (run.quarantine() / "link.txt").readlink() == target
        assert target.read_bytes() == b"top secret"
        assert run.emu.files() == []


async def test_empty_file(tmp_path: Path) -> None:
    """An empty file is quarantined as empty, with its size in the sidecar."""
    async with running(tmp_path) as run:
        (run.inbox() / "empty.txt").write_bytes(b"")
        await run.wait_for(1)
        sidecar = await _quarantined(run, "empty.txt", "empty")
        assert sidecar["size"] == 0
        assert run.emu.files() == []


async def test_too_large_sparse(tmp_path: Path) -> None:
    """A sparse 101 MiB file is quarantined as too_large naming the limit; its size is kept."""
    async with running(tmp_path) as run:
        big = run.inbox() / "big.txt"
        with big.open("wb") as f:
            f.write(b"x")
        os.truncate(big, 101 * MIB)
        await run.wait_for(1)
        sidecar = await _quarantined(run, "big.txt", "too_large")
        assert sidecar["size"] == 101 * MIB
        assert sidecar["detail"] == f"kimi (file-extract): {101 * MIB} bytes > {100 * MIB} bytes"
        assert (run.quarantine() / "big.txt").stat().st_size == 101 * MIB
        assert run.emu.files() == []


@pytest.mark.parametrize(
    ("name", "data"), [("tool.exe", b"MZ binary"), ("fake.pdf", b"not a pdf at all")]
)
async def test_type_not_allowed(tmp_path: Path, name: str, data: bytes) -> None:
    """A type the provider refuses, or content contradicting its extension, is type_not_allowed."""
    async with running(tmp_path) as run:
        (run.inbox() / name).write_bytes(data)
        await run.wait_for(1)
        sidecar = await _quarantined(run, name, "type_not_allowed")
        assert (run.quarantine() / name).read_bytes() == data
        assert sidecar["size"] == len(data)
        assert run.emu.files() == []


@pytest.mark.parametrize("raw_name", [b"bad\xff\xfename.txt", b"bell\x07name.txt"])
async def test_name_invalid(tmp_path: Path, raw_name: bytes) -> None:
    """A name with undecodable bytes or a control character is name_invalid; bytes kept."""
    async with running(tmp_path) as run:
        raw = os.fsencode(run.inbox()) + b"/" + raw_name
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"content")
        os.close(fd)
        await run.wait_for(1)
        name = os.fsdecode(raw_name)
        await _quarantined(run, name, "name_invalid")
        assert (run.quarantine() / name).read_bytes() == b"content"
        assert run.emu.files() == []


@pytest.mark.parametrize(
    ("server_limit", "reason"),
    [
        (PurposeLimits(max_bytes=100 * MIB, types=frozenset({"pdf"})), "upload_rejected"),
        (PurposeLimits(max_bytes=4), "too_large"),
    ],
)
async def test_rejected_by_provider(
    tmp_path: Path, server_limit: PurposeLimits, reason: str
) -> None:
    """A file the server refuses (a Permanent error) though our table accepts it is quarantined."""
    lowered = replace(
        LIMITS["kimi"], purposes={**LIMITS["kimi"].purposes, "file-extract": server_limit}
    )
    async with running(tmp_path, limits={"kimi": lowered}) as run:
        (run.inbox() / "ten.txt").write_bytes(b"0123456789")
        await run.wait_for(1)
        sidecar = await _quarantined(run, "ten.txt", reason)
        assert sidecar["detail"].startswith("kimi HTTP 400 ")
        assert sidecar["sha256"] == sha(b"0123456789")
        assert run.emu.files() == []


async def test_persistent_5xx_leaves_the_file_waiting(tmp_path: Path) -> None:
    """Persistent 500s exhaust one pass's attempts: the file stays in its inbox, pending with
    a later not_before (30 s ceiling on the first pass), nothing quarantined or stored."""
    async with running(tmp_path, faults="kimi:500") as run:
        (run.inbox() / "a.txt").write_bytes(b"aaa")
        [seen] = await run.wait_for(1)
        assert seen.result.outcome == "parked"
        assert (run.inbox() / "a.txt").read_bytes() == b"aaa"
        [row] = await run.rows()
        assert row.state == "pending"
        assert row.not_before == seen.result.park_until
        assert row.not_before is not None
        assert row.not_before <= row.updated_at + 30.0
        assert list(run.quarantine().iterdir()) == []
        assert run.emu.files() == []
        assert run.emu.counts()["kimi"]["upload.500"] == 3


async def test_a_waiting_file_deleted_by_hand_stops_waiting(tmp_path: Path) -> None:
    """A file left waiting by persistent 500s and then deleted by the operator: the daemon's
    vanished pass closes its row (done, reason vanished) and the inbox's oldest-pending gauge
    goes back to 0, so the alert on it clears."""
    async with running(tmp_path, faults="kimi:500") as run:
        (run.inbox() / "a.txt").write_bytes(b"aaa")
        [seen] = await run.wait_for(1)
        assert seen.result.outcome == "parked"
        await run.daemon.refresh_oldest_pending()
        gauge = {"inbox": "in"}
        waited = run.daemon.registry.get_sample_value("inboxd_oldest_pending_seconds", gauge)
        assert waited is not None
        (run.inbox() / "a.txt").unlink()
        assert await run.daemon.close_vanished() == 1
        [row] = await run.rows()
        assert (row.state, row.reason) == ("done", "vanished")
        await run.daemon.refresh_oldest_pending()
        assert run.daemon.registry.get_sample_value("inboxd_oldest_pending_seconds", gauge) == 0


async def test_upload_failed_once_give_up_after_passed(tmp_path: Path) -> None:
    """With give_up_after set (tiny here), persistent 500s quarantine the file as
    upload_failed after the pass that outlives it: nothing stored, 3 calls made."""
    kimi = provider_section("kimi", retry={"give_up_after": 0.001})
    async with running(tmp_path, faults="kimi:500", providers={"kimi": kimi}) as run:
        (run.inbox() / "a.txt").write_bytes(b"aaa")
        await run.wait_for(1)
        sidecar = await _quarantined(run, "a.txt", "upload_failed")
        assert "give_up_after" in sidecar["detail"]
        assert sidecar["sha256"] == sha(b"aaa")
        assert run.emu.files() == []
        assert run.emu.counts()["kimi"]["upload.500"] == 3


async def test_quota_quarantine(tmp_path: Path) -> None:
    """With on_quota = "quarantine", a quota answer quarantines the file as quota_exhausted."""
    inboxes = [{"name": "in", "providers": ["kimi"], "on_quota": "quarantine"}]
    async with running(tmp_path, inboxes=inboxes, faults="kimi:quota") as run:
        (run.inbox() / "q.txt").write_bytes(b"quota")
        await run.wait_for(1)
        await _quarantined(run, "q.txt", "quota_exhausted")
        assert run.emu.files() == []


async def test_quota_wait_parks(tmp_path: Path) -> None:
    """With on_quota = "wait", a quota answer parks the file: it stays in the inbox, pending."""
    async with running(tmp_path, faults="kimi:quota") as run:
        (run.inbox() / "q.txt").write_bytes(b"quota")
        [seen] = await run.wait_for(1)
        assert seen.result.outcome == "parked"
        assert seen.result.park_until is not None
        assert seen.result.park_until > time.time() + 60
        assert (run.inbox() / "q.txt").read_bytes() == b"quota"
        [row] = await run.rows()
        assert (row.state, row.not_before) == ("pending", seen.result.park_until)
        assert list(run.quarantine().iterdir()) == []
        assert run.emu.files() == []


async def test_a_parked_file_offered_again_is_discovered_once(tmp_path: Path) -> None:
    """A parked file that every rescan offers again counts once in files_discovered."""
    async with running(tmp_path, faults="kimi:quota") as run:
        (run.inbox() / "q.txt").write_bytes(b"quota")
        [first] = await run.wait_for(1)
        assert run.daemon.workers.watcher is not None
        await run.daemon.workers.watcher.rescan_now()
        [again] = await run.wait_for(1)
        assert (first.result.outcome, again.result.outcome) == ("parked", "parked")
        (run.inbox() / "new.txt").write_bytes(b"another")
        await run.wait_for(1)
        discovered = run.daemon.registry.get_sample_value(
            "inboxd_files_discovered_total", {"inbox": "in"}
        )
        assert discovered == 2.0


async def test_a_busy_file_is_tried_again_soon_without_a_rescan(tmp_path: Path) -> None:
    """A file that cannot be opened for now (EMFILE) is tried again after busy_delay, not
    at the next rescan (an hour away here), and is then uploaded."""
    async with running(tmp_path) as run:
        failures = [errno.EMFILE]

        def opener(path: str | os.PathLike[str], flags: int) -> int:
            if failures:
                raise OSError(failures.pop(), os.strerror(errno.EMFILE))
            return os.open(path, flags)

        pipeline = run.daemon.current().pipeline
        pipeline.opener = opener
        pipeline.busy_delay = 0.3
        (run.inbox() / "b.txt").write_bytes(b"busy for a moment")
        [first] = await run.wait_for(1)
        assert first.result.outcome == "busy"
        assert first.result.park_until is not None
        [again] = await run.wait_for(1, limit=10)
        assert again.result.outcome == "uploaded"
        assert [f.sha256 for f in run.emu.files()] == [sha(b"busy for a moment")]


async def test_duplicate_content(tmp_path: Path) -> None:
    """Two files with the same bytes: uploaded once, the second archived as a duplicate."""
    async with running(tmp_path) as run:
        (run.inbox() / "one.txt").write_bytes(b"same bytes")
        await run.wait_for(1)
        (run.inbox() / "two.txt").write_bytes(b"same bytes")
        [seen] = await run.wait_for(1)
        assert seen.result.outcome == "duplicate"
        [remote] = run.emu.files()
        first = read_sidecar(run.done() / "one.txt.upload.json")
        second = read_sidecar(run.done() / "two.txt.upload.json")
        rows = {r.relpath: r for r in await run.rows()}
        assert first["file_id"] == second["file_id"] == remote.id
        assert second["dedupe_of"] == rows["one.txt"].id
        assert "dedupe_of" not in first
        assert rows["two.txt"].dedupe_of == rows["one.txt"].id
        assert (run.done() / "two.txt").read_bytes() == b"same bytes"


async def test_duplicates_at_once(tmp_path: Path) -> None:
    """Five files with the same bytes dropped together: one upload, four duplicates."""
    async with running(tmp_path) as run:
        for i in range(5):
            (run.inbox() / f"d{i}.txt").write_bytes(b"twins")
        outcomes = sorted(s.result.outcome for s in await run.wait_for(5))
        assert outcomes == ["duplicate"] * 4 + ["uploaded"]
        assert len(run.emu.files()) == 1


ROBUST_RETRY = {
    "attempts": 12,
    "budget_ratio": 1.0,
    "budget_floor": 10_000.0,
    "retry_after_cap": 2.0,
}


def _assert_exactly_once(run: Run, contents: dict[str, bytes], inbox: str = "in") -> None:
    """Every content is stored exactly once remotely and archived; nothing else is stored."""
    remote = run.remote_by_sha()
    assert sorted(remote) == sorted(sha(d) for d in contents.values())
    assert all(len(copies) == 1 for copies in remote.values()), {
        k: len(v) for k, v in remote.items() if len(v) > 1
    }
    for name, data in contents.items():
        assert (run.done(inbox) / name).read_bytes() == data
        receipt = read_sidecar(run.done(inbox) / f"{name}.upload.json")
        [copy] = remote[sha(data)]
        assert (receipt["file_id"], receipt["sha256"]) == (copy.id, sha(data))
    assert list(run.inbox(inbox).iterdir()) == []


@pytest.mark.parametrize("provider", ["kimi", "glm"])
async def test_faults_every_file_exactly_once(tmp_path: Path, provider: str) -> None:
    """Under 5xx bursts, 429 + Retry-After, resets and accept-then-drop each file is stored once."""
    faults = (
        f"{provider}:seq=503/503/503/429:1/reset/drop/ok/drop/reset,"
        "503@0.1,502@0.05,429:0@0.05,reset@0.1,drop@0.1"
    )
    providers = {provider: provider_section(provider, retry=ROBUST_RETRY)}
    inboxes = [{"name": "in", "providers": [provider]}]
    async with running(
        tmp_path, inboxes=inboxes, providers=providers, faults=faults, seed=7
    ) as run:
        contents = {f"f{i:03}.txt": f"file {i} {provider}\n".encode() * (i + 1) for i in range(60)}
        for name, data in contents.items():
            (run.inbox() / name).write_bytes(data)
        seen = await run.wait_for(60, limit=60)
        assert sorted(s.result.outcome for s in seen) == ["uploaded"] * 60
        _assert_exactly_once(run, contents)
        counts = run.emu.counts()[provider]
        assert counts["upload.drop"] >= 2
        assert counts["upload.reset"] >= 1
        assert counts["upload.429"] >= 1
        assert counts["upload.503"] >= 3


async def test_thousand_files(tmp_path: Path) -> None:
    """1,000 files dropped at once are all uploaded exactly once and archived."""
    async with running(tmp_path) as run:
        contents = {f"n{i:04}.txt": f"number {i}\n".encode() for i in range(1000)}
        for name, data in contents.items():
            (run.inbox() / name).write_bytes(data)
        seen = await run.wait_for(1000, limit=120)
        assert sorted(s.result.outcome for s in seen) == ["uploaded"] * 1000
        _assert_exactly_once(run, contents)
        rows = await run.rows()
        assert len(rows) == 1000
        assert {r.state for r in rows} == {"done"}


@pytest.mark.parametrize("latency", [0, 700], ids=["fast", "slow-upload"])
async def test_changed_during_upload_goes_again(tmp_path: Path, latency: int) -> None:
    """A file rewritten while being sent: its remote copy is deleted and it is settled and
    uploaded again with the new content, without waiting for a rescan (even when the watch
    event of the rewrite arrived while the upload was still running)."""
    async with running(tmp_path, faults=f"kimi:latency={latency}") as run:
        path = run.inbox() / "doc.txt"
        pipeline = run.daemon.current().pipeline
        rewrite = RewriteDuringSend(pipeline.uploader, path, b"VERSION TWO!")
        pipeline.uploader = rewrite
        path.write_bytes(b"version one!")
        [first] = await run.wait_for(1)
        assert first.result.outcome == "changed"
        [second] = await run.wait_for(1, limit=10)
        assert second.result.outcome == "uploaded"
        [remote] = run.emu.files()
        assert remote.sha256 == sha(b"VERSION TWO!")
        counts = run.emu.counts()["kimi"]
        assert counts["upload.200"] == 2
        assert counts["delete.200"] == 1
        assert (run.done() / "doc.txt").read_bytes() == b"VERSION TWO!"
        assert rewrite.rewrites == 1


async def test_growing_file_uploaded_once_complete(tmp_path: Path) -> None:
    """A file still being appended to is not taken before it has settled: one upload, whole."""
    async with running(tmp_path, settle_seconds=1.0) as run:
        path = run.inbox() / "grow.log"
        with path.open("wb") as f:
            for i in range(5):
                f.write(f"line {i}\n".encode())
                f.flush()
                await anyio.sleep(0.02)  # a slow writer's pace, well inside the settle window
        [seen] = await run.wait_for(1)
        assert seen.result.outcome == "uploaded"
        whole = b"".join(f"line {i}\n".encode() for i in range(5))
        assert [f.sha256 for f in run.emu.files()] == [sha(whole)]


async def test_deleted_before_upload(tmp_path: Path) -> None:
    """A file deleted while settling is forgotten: nothing uploaded, no ledger row."""
    async with running(tmp_path, settle_seconds=0.5) as run:
        path = run.inbox() / "gone.txt"
        path.write_bytes(b"short-lived")
        path.unlink()
        (run.inbox() / "kept.txt").write_bytes(b"kept")
        [seen] = await run.wait_for(1)
        assert (seen.relpath, seen.result.outcome) == ("kept.txt", "uploaded")
        assert [f.filename for f in run.emu.files()] == ["kept.txt"]
        assert [r.relpath for r in await run.rows()] == ["kept.txt"]


async def test_rename_into_inbox(tmp_path: Path) -> None:
    """A file written elsewhere and renamed into the inbox is uploaded under its new name."""
    async with running(tmp_path) as run:
        outside = tmp_path / "staging.bin.tmp"
        outside.write_bytes(b"renamed in")
        outside.rename(run.inbox() / "arrived.txt")
        [seen] = await run.wait_for(1)
        assert (seen.relpath, seen.result.outcome) == ("arrived.txt", "uploaded")
        [remote] = run.emu.files()
        assert (remote.filename, remote.sha256) == ("arrived.txt", sha(b"renamed in"))


async def test_temp_and_dot_files_ignored(tmp_path: Path) -> None:
    """Temp and dot files are never uploaded nor moved; a write-then-rename uploads once."""
    names = [".hidden.txt", "a.part", "b.tmp", "c.crdownload", "d.swp", "~lock.txt"]
    async with running(tmp_path) as run:
        for name in names:
            (run.inbox() / name).write_bytes(b"temp " + name.encode())
        (run.inbox() / "final.txt.part").write_bytes(b"final")
        (run.inbox() / "final.txt.part").rename(run.inbox() / "final.txt")
        [seen] = await run.wait_for(1)
        assert (seen.relpath, seen.result.outcome) == ("final.txt", "uploaded")
        await run.daemon.workers.watcher.rescan_now()  # type: ignore[union-attr]
        await anyio.wait_all_tasks_blocked()
        assert sorted(p.name for p in run.inbox().iterdir()) == sorted(names)
        assert [f.filename for f in run.emu.files()] == ["final.txt"]
        assert [r.relpath for r in await run.rows()] == ["final.txt"]


async def test_folders_in_inboxes(tmp_path: Path) -> None:
    """A recursive inbox uploads what is in its subfolders; a plain inbox leaves them alone."""
    inboxes: list[dict[str, Any]] = [
        {"name": "flat", "providers": ["kimi"]},
        {"name": "deep", "providers": ["kimi"], "recursive": True},
    ]
    async with running(tmp_path, inboxes=inboxes) as run:
        for box in ("flat", "deep"):
            (run.inbox(box) / "sub").mkdir()
            (run.inbox(box) / "sub" / f"{box}.txt").write_bytes(f"in {box}".encode())
        [seen] = await run.wait_for(1)
        assert (seen.inbox, seen.relpath, seen.result.outcome) == (
            "deep",
            "sub/deep.txt",
            "uploaded",
        )
        await run.daemon.workers.watcher.rescan_now()  # type: ignore[union-attr]
        await anyio.wait_all_tasks_blocked()
        assert [f.filename for f in run.emu.files()] == ["deep.txt"]
        assert (run.inbox("flat") / "sub" / "flat.txt").read_bytes() == b"in flat"
        assert (run.done("deep") / "deep.txt").read_bytes() == b"in deep"
        assert run.outcomes.statistics().current_buffer_used == 0


async def test_delete_on_success_and_no_dedupe(tmp_path: Path) -> None:
    """on_success = "delete" removes uploaded files (no receipt); dedupe = false sends twins."""
    inboxes = [{"name": "in", "providers": ["glm"], "on_success": "delete", "dedupe": False}]
    async with running(tmp_path, inboxes=inboxes) as run:
        (run.inbox() / "a.txt").write_bytes(b"twin")
        (run.inbox() / "b.txt").write_bytes(b"twin")
        seen = await run.wait_for(2)
        assert sorted(s.result.outcome for s in seen) == ["uploaded", "uploaded"]
        assert sorted(f.filename for f in run.emu.files()) == ["a.txt", "b.txt"]
        assert {f.sha256 for f in run.emu.files()} == {sha(b"twin")}
        assert list(run.inbox().iterdir()) == []
        assert list(run.done().iterdir()) == []
        rows = await run.rows()
        assert [(r.state, r.final_path, r.dedupe_of) for r in rows] == [("done", None, None)] * 2


async def test_finished_rows_past_the_retention_are_pruned_at_start(tmp_path: Path) -> None:
    """With ledger_retention_days = 1, a row finished 3 days ago is gone soon after start;
    a row finished an hour ago and an active row stay."""
    now = time.time()
    clock = FakeClock(now - 3 * 86400)
    (tmp_path / "state").mkdir()
    async with Store.open(tmp_path / "state" / "inboxd.sqlite3", clock=clock) as store:
        old = await store.begin("in", "old.txt", size=1, mtime_ns=1)
        await store.transition(old.id, "quarantined", reason="empty")
        clock.now = now - 3600
        recent = await store.begin("in", "recent.txt", size=1, mtime_ns=1)
        await store.transition(recent.id, "quarantined", reason="empty")
        active = await store.begin("in", "gone-from-inbox.txt", size=1, mtime_ns=1)
    # The start-up prune runs beside the first files, not before READY: wait for its log line.
    with LogEvent.on("daemon.state.retention", "ledger: pruned 1 ") as pruned:
        async with running(tmp_path, ledger_retention_days=1) as run:
            with anyio.fail_after(60):
                await pruned.seen.wait()
            assert {r.id for r in await run.rows()} == {recent.id, active.id}

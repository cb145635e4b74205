"""The failure domain is one file: a fault that hits one file never stops the daemon.

End to end on real folders against the emulator: one inbox's ``done_dir`` is made unwritable
under the running daemon (``chattr +i``, a tmpfs remounted read-only or a full tmpfs: root
ignores mode bits, not these), a second inbox is ordinary. The bad files wait in their inbox
with their rows ``uploaded``, are counted, logged once, make /readyz 503 with a reason, and are
archived once the fault is gone; a restart with the fault still present starts and serves.
Time is a fake clock: backoffs are passed by moving it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from daemon.runtime.failures import FileErrors
from providers.emulator.server import Emulator
from tests._tools import need_tool
from tests.fakes import FakeClock
from tests.harness import Run, read_sidecar, running

pytestmark = pytest.mark.anyio

BAD = [f"bad-{i}.txt" for i in range(3)]
GOOD = [f"good-{i}.txt" for i in range(2)]
BACKOFF = 3600.0  # never passed by real time in a test: only by moving the fake clock


def _clock() -> FakeClock:
    """A fake wall clock starting at the real time: the park loop's wake-ups stay far in the
    future instead of firing at once."""
    return FakeClock(time.time())


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Fault:
    """``tmp_path/bad.done`` made unwritable for root (root ignores mode bits): immutable
    (``chattr +i``), a tmpfs remounted read-only (EROFS), or a full tmpfs (ENOSPC).

    ``prepare()`` runs before the daemon starts (a tmpfs is mounted writable and empty);
    ``on()`` brings the fault, ``off()`` removes it. An immutable or read-only folder is
    refused by ``check-config`` at start, so the daemon meets those only once running; a full
    disk passes every start-up check and is met again by a restart's recovery.
    """

    def __init__(self, done: Path, kind: str) -> None:
        self.done = done
        self.kind = kind
        self.mounted = False

    def prepare(self) -> None:
        if self.kind in ("tmpfs_ro", "full"):
            _run("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(self.done))
            self.mounted = True

    def on(self) -> None:
        if self.kind == "chattr":
            _run("chattr", "+i", str(self.done))
        elif self.kind == "tmpfs_ro":
            _run("mount", "-o", "remount,ro", str(self.done))
        else:
            _fill(self.done / ".filler")

    def off(self) -> None:
        if self.kind == "chattr":
            _run("chattr", "-i", str(self.done))
        elif self.kind == "tmpfs_ro":
            _run("mount", "-o", "remount,rw", str(self.done))
        else:
            (self.done / ".filler").unlink()

    def clean_up(self) -> None:
        if self.kind == "chattr":
            _run("chattr", "-i", str(self.done))
        elif self.mounted:
            _run("umount", "-l", str(self.done))


def _fill(path: Path) -> None:
    """Write ``path`` until its filesystem is full (ENOSPC), unbuffered."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


@pytest.fixture(params=["chattr", "tmpfs_ro", "full"])
def fault(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fault]:
    """An unwritable done_dir for inbox ``bad``, not yet on (skipped where the test may not
    make one)."""
    done = tmp_path / "bad.done"
    done.mkdir()
    made = Fault(done, request.param)
    tool = "chattr" if made.kind == "chattr" else "mount"
    need_tool(tool, "e2fsprogs" if tool == "chattr" else "util-linux")
    try:
        made.prepare()
        if made.kind == "chattr":  # can root make a folder immutable here?
            made.on()
            made.off()
    except subprocess.CalledProcessError as exc:
        made.clean_up()
        pytest.skip(f"{tool} not permitted here ({exc.stderr!r}): no unwritable done_dir")
    try:
        yield made
    finally:
        made.clean_up()


def _options(clock: FakeClock, log: io.StringIO) -> dict[str, Any]:
    return {
        "daemon_options": {
            "file_errors": FileErrors(clock=clock, base=BACKOFF, cap=4 * BACKOFF),
        },
        "log_stream": log,
        "inboxes": ({"name": "bad"}, {"name": "good"}),
        "metrics": {"enabled": True, "listen": "127.0.0.1:0"},
        "log": {"format": "json", "level": "info"},
    }


async def _until(run: Run, wanted: set[tuple[str, str]], *, limit: float = 30.0) -> None:
    """Outcomes until every (relpath, outcome) in ``wanted`` was reported."""
    missing = set(wanted)
    with anyio.fail_after(limit):
        while missing:
            item = await run.outcomes.receive()
            run.seen.append(item)
            missing.discard((item.relpath, item.result.outcome))


async def _readyz(run: Run) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{run.daemon.http_port}/readyz")


def _errors(run: Run, stage: str) -> float | None:
    return run.daemon.registry.get_sample_value("inboxd_file_errors_total", {"stage": stage})


def _error_lines(log: io.StringIO, name: str) -> list[dict[str, Any]]:
    """The warning/error lines about a failing stage of the file ``name``."""
    lines = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    return [
        line
        for line in lines
        if line.get("file") == name
        and line["level"] in {"warning", "error"}
        and "failed at stage" in line["msg"]
    ]


async def _retry(run: Run, clock: FakeClock, by: float) -> None:
    """Move the fake clock past the backoff and have the daemon look again."""
    clock.now += by
    assert run.daemon.workers.watcher is not None
    await run.daemon.workers.watcher.rescan_now()


async def test_unwritable_done_dir_fails_its_files_only_until_fixed(
    tmp_path: Path, fault: Fault
) -> None:
    """With one inbox's done_dir unwritable the daemon keeps serving: the other inbox is
    archived, the bad files wait uploaded in their inbox (counted, logged once, /readyz 503
    naming the stage) and are archived with their receipts once the fault is removed."""
    clock, log = _clock(), io.StringIO()
    async with running(tmp_path, **_options(clock, log)) as run:
        fault.on()
        for name in BAD:
            (run.inbox("bad") / name).write_bytes(f"bad {name}".encode())
        for name in GOOD:
            (run.inbox("good") / name).write_bytes(f"good {name}".encode())
        await _until(run, {(n, "failed") for n in BAD} | {(n, "uploaded") for n in GOOD})

        assert sorted(p.name for p in run.done("good").iterdir()) == sorted(
            [*GOOD, *(n + ".upload.json" for n in GOOD)]
        )
        assert sorted(p.name for p in run.inbox("bad").iterdir()) == BAD
        rows = {r.relpath: r.state for r in await run.rows() if r.inbox == "bad"}
        assert rows == dict.fromkeys(BAD, "uploaded")
        assert _errors(run, "archive") == 3
        assert _errors(run, "open") == 0
        ready = await _readyz(run)
        assert ready.status_code == 503
        (reason,) = ready.json()["reasons"]
        assert reason.startswith("inbox bad: stage archive failing for every file (3 files since ")

        # Still failing after the backoff: counted again, but logged once per file and stage.
        await _retry(run, clock, BACKOFF + 1)
        await _until(run, {(n, "failed") for n in BAD})
        assert _errors(run, "archive") == 6
        assert {n: len(_error_lines(log, n)) for n in BAD} == dict.fromkeys(BAD, 1)

        fault.off()
        await _retry(run, clock, 2 * BACKOFF + 1)
        await _until(run, {(n, "finished") for n in BAD})
        assert list(run.inbox("bad").iterdir()) == []
        for name in BAD:
            receipt = read_sidecar(run.done("bad") / (name + ".upload.json"))
            assert (run.done("bad") / name).read_bytes() == f"bad {name}".encode()
            assert receipt["provider"] == "kimi"
        assert (await _readyz(run)).status_code == 200
        rows = {r.relpath: r.state for r in await run.rows() if r.inbox == "bad"}
        assert rows == dict.fromkeys(BAD, "done")


@pytest.mark.parametrize("fault", ["full"], indirect=True)
async def test_restart_with_the_fault_still_present_starts_and_serves(
    tmp_path: Path, fault: Fault
) -> None:
    """A restart whose recovery meets the same full done_dir starts anyway (counted under
    stage ``recover``), keeps the files waiting, and archives them once it is fixed. (An
    immutable or read-only done_dir is refused by check-config at start instead: exit 2, no
    restart loop.)"""
    async with Emulator() as emu:
        clock, log = _clock(), io.StringIO()
        async with running(tmp_path, emulator=emu, **_options(clock, log)) as run:
            fault.on()
            for name in BAD:
                (run.inbox("bad") / name).write_bytes(f"bad {name}".encode())
            await _until(run, {(n, "failed") for n in BAD})
        clock2, log2 = _clock(), io.StringIO()
        async with running(tmp_path, emulator=emu, **_options(clock2, log2)) as again:
            await _check_restart(again, clock2, fault)


async def _check_restart(again: Run, clock2: FakeClock, fault: Fault) -> None:
    """What the restarted daemon must show (see the test above)."""
    assert _errors(again, "recover") == 3
    # Recovery's failures hold the files: the first scan finds them parked, not retried.
    await _until(again, {(n, "parked") for n in BAD})
    assert sorted(p.name for p in again.inbox("bad").iterdir()) == BAD
    fault.off()
    await _retry(again, clock2, BACKOFF + 1)
    await _until(again, {(n, "finished") for n in BAD})
    assert sorted(p.name for p in again.done("bad").iterdir()) == sorted(
        [*BAD, *(n + ".upload.json" for n in BAD)]
    )
    assert len(again.emu.files()) == 3  # each sent once, across both runs


async def test_unwritable_quarantine_dir_is_counted_and_retried(tmp_path: Path) -> None:
    """A refused file whose quarantine folder became unwritable under the running daemon
    (check-config refuses one at start) stays in its inbox, counted at stage ``quarantine``
    and parked with backoff like any other failure of one file, and is quarantined once the
    folder is writable again."""
    need_tool("chattr", "e2fsprogs")
    qdir = tmp_path / "bad.quarantine"
    qdir.mkdir()
    made = Fault(qdir, "chattr")
    clock, log = _clock(), io.StringIO()
    try:
        async with running(tmp_path, **_options(clock, log)) as run:
            try:
                made.on()
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"chattr not permitted here ({exc.stderr!r}): no unwritable folder")
            (run.inbox("bad") / "empty.txt").write_bytes(b"")
            (run.inbox("good") / "fine.txt").write_bytes(b"fine")
            await _until(run, {("empty.txt", "failed"), ("fine.txt", "uploaded")})
            assert [p.name for p in run.inbox("bad").iterdir()] == ["empty.txt"]
            assert _errors(run, "quarantine") == 1
            assert len(_error_lines(log, "empty.txt")) == 1

            made.off()
            await _retry(run, clock, BACKOFF + 1)
            await _until(run, {("empty.txt", "quarantined")})
            assert list(run.inbox("bad").iterdir()) == []
            assert (qdir / "empty.txt").read_bytes() == b""
    finally:
        made.clean_up()

"""daemon.runtime.intake: settle on a fake clock, one record per path, a bounded hand-out stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from daemon.runtime.intake import Intake
from daemon.runtime.watcher import Candidate, WatchedInbox, Watcher

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class _Stat:
    st_size: int
    st_mtime_ns: int


class _FakeFiles:
    """What ``lstat`` sees, set by the test; counts every call."""

    def __init__(self) -> None:
        self.files: dict[Path, _Stat] = {}
        self.calls: list[Path] = []

    def set(self, path: Path, size: int, mtime_ns: int) -> Candidate:
        self.files[path] = _Stat(size, mtime_ns)
        return Candidate("docs", path, path.name, size, mtime_ns)

    def stat(self, path: Path) -> _Stat:
        self.calls.append(path)
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(path) from None


class _FakeTime:
    """A clock that moves only when the test says so; sleep() waits for it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.naps: list[float] = []
        self._moved = anyio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.naps.append(delay)
        wake = self.now + delay
        while self.now < wake:
            await self._moved.wait()

    async def advance(self, delay: float) -> None:
        self.now += delay
        self._moved.set()
        self._moved = anyio.Event()
        await anyio.wait_all_tasks_blocked()


@asynccontextmanager
async def _running(intake: Intake) -> AsyncIterator[Intake]:
    with intake.receive:
        async with anyio.create_task_group() as tg:
            await tg.start(intake.run)
            yield intake
            tg.cancel_scope.cancel()


def _out(intake: Intake) -> list[Candidate]:
    out: list[Candidate] = []
    while True:
        try:
            out.append(intake.receive.receive_nowait())
        except anyio.WouldBlock:
            return out


async def test_growing_file_is_ready_only_after_it_stops_changing(tmp_path: Path) -> None:
    """A file whose size changes at each check is handed out settle_seconds after the last one."""
    files, time = _FakeFiles(), _FakeTime()
    intake = Intake(settle_seconds=2, clock=time.clock, sleep=time.sleep, stat=files.stat)
    f = tmp_path / "big.bin"
    async with _running(intake):
        await intake.offer(files.set(f, 10, 1))
        await anyio.wait_all_tasks_blocked()
        files.set(f, 20, 2)
        await time.advance(2)  # t=2: grew → settle again from here
        assert _out(intake) == []
        files.set(f, 30, 3)
        await time.advance(2)  # t=4: grew again
        assert _out(intake) == []
        await time.advance(1.5)  # t=5.5: not due yet (due at 6)
        assert _out(intake) == []
        await time.advance(0.5)  # t=6: unchanged for 2 s
        got = _out(intake)
    assert got == [Candidate("docs", f, "big.bin", 30, 3)]
    assert files.calls == [f, f, f]  # one stat per settle window, no busy polling
    assert time.naps == [2, 2, 2]


async def test_repeated_sightings_keep_one_record(tmp_path: Path) -> None:
    """The same unchanged file offered many times is tracked once, checked once, handed out once."""
    files, time = _FakeFiles(), _FakeTime()
    intake = Intake(settle_seconds=2, clock=time.clock, sleep=time.sleep, stat=files.stat)
    f = tmp_path / "a.txt"
    async with _running(intake):
        for _ in range(100):
            await intake.offer(files.set(f, 5, 7))
        assert intake.queue_depth == 1
        await anyio.wait_all_tasks_blocked()
        await time.advance(2)
        got = _out(intake)
        assert (intake.queue_depth, intake.in_flight) == (0, 1)
    assert [c.relpath for c in got] == ["a.txt"]
    assert files.calls == [f]


async def test_vanished_file_is_forgotten(tmp_path: Path) -> None:
    """A file deleted while settling leaves no record and is never handed out."""
    files, time = _FakeFiles(), _FakeTime()
    intake = Intake(settle_seconds=2, clock=time.clock, sleep=time.sleep, stat=files.stat)
    f = tmp_path / "gone.txt"
    async with _running(intake):
        await intake.offer(files.set(f, 5, 7))
        await anyio.wait_all_tasks_blocked()
        del files.files[f]
        await time.advance(2)
        assert intake.queue_depth == 0
        assert _out(intake) == []
    assert time.naps == [2]


async def test_in_flight_key_is_not_handed_out_again_until_done(tmp_path: Path) -> None:
    """Sightings of a handed-out file are ignored until done(); afterwards it is tracked again."""
    intake = Intake(settle_seconds=0)
    c = Candidate("docs", tmp_path / "x.txt", "x.txt", 1, 1)
    async with _running(intake):
        await intake.offer(c)
        await anyio.wait_all_tasks_blocked()
        first = _out(intake)
        await intake.offer(c)
        await anyio.wait_all_tasks_blocked()
        while_in_flight = _out(intake)
        intake.done(c.key)
        await intake.offer(c)
        await anyio.wait_all_tasks_blocked()
        after_done = _out(intake)
    assert (first, while_in_flight, after_done) == ([c], [], [c])


async def test_ready_file_that_changes_while_queued_settles_again(tmp_path: Path) -> None:
    """A settled file waiting for room goes back to settling when a sighting shows a change."""
    files, time = _FakeFiles(), _FakeTime()
    intake = Intake(
        settle_seconds=2, capacity=1, clock=time.clock, sleep=time.sleep, stat=files.stat
    )
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    async with _running(intake):
        for path in (a, b, c):
            await intake.offer(files.set(path, 1, 1))
        await anyio.wait_all_tasks_blocked()
        await time.advance(2)  # all ready: a fills the stream, b and c wait in the intake
        assert (intake.queue_depth, intake.in_flight) == (2, 1)
        await intake.offer(files.set(c, 2, 2))  # c grew while waiting
        assert intake.queue_depth == 2
        first = [x.relpath for x in _out(intake)]  # a, then b straight from the blocked sender
        await anyio.wait_all_tasks_blocked()
        assert _out(intake) == []  # c is settling again, not handed out
        await time.advance(2)
        last = _out(intake)
    assert first == ["a", "b"]
    assert last == [Candidate("docs", c, "c", 2, 2)]
    assert intake.in_flight == 3


async def test_new_file_wakes_an_idle_intake(tmp_path: Path) -> None:
    """An intake with nothing tracked sleeps without a timer and wakes when a file arrives."""
    files, time = _FakeFiles(), _FakeTime()
    intake = Intake(settle_seconds=1, clock=time.clock, sleep=time.sleep, stat=files.stat)
    f = tmp_path / "late.txt"
    async with _running(intake):
        await anyio.wait_all_tasks_blocked()
        assert time.naps == []  # idle: no timer at all
        await time.advance(100)
        await intake.offer(files.set(f, 3, 3))
        await anyio.wait_all_tasks_blocked()
        await time.advance(1)
        got = _out(intake)
    assert [c.relpath for c in got] == ["late.txt"]
    assert time.naps == [1]


async def test_bounded_stream_with_5000_real_files_each_out_exactly_once(tmp_path: Path) -> None:
    """5,000 files from a real inbox wait in the intake, never more than capacity in the stream."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    for i in range(5000):
        (inbox / f"f{i:05}.txt").touch()
    capacity = 10
    intake = Intake(settle_seconds=0.001, capacity=capacity)
    watcher = Watcher([WatchedInbox("docs", inbox)], rescan_interval=1e9)
    received: list[str] = []
    max_buffered = max_depth = 0
    with intake.receive:
        async with anyio.create_task_group() as tg:
            await tg.start(intake.run)
            await tg.start(watcher.run, intake.offer)
            with anyio.fail_after(30):
                # The first scan offers every file before any is taken: the backlog waits in
                # the intake however fast this machine consumes (driven by progress, not time).
                while intake.queue_depth + intake.in_flight < 5000:
                    await anyio.wait_all_tasks_blocked()
                while len(received) < 5000:
                    candidate = await intake.receive.receive()
                    buffered = intake.receive.statistics().current_buffer_used
                    max_buffered = max(max_buffered, buffered)
                    max_depth = max(max_depth, intake.queue_depth)
                    candidate.path.unlink()  # the consumer moves it away, then says done
                    intake.done(candidate.key)
                    received.append(candidate.relpath)
                await watcher.rescan_now()
                await anyio.wait_all_tasks_blocked()
            leftover = intake.queue_depth
            tg.cancel_scope.cancel()
    assert sorted(received) == [f"f{i:05}.txt" for i in range(5000)]
    assert len(set(received)) == 5000
    assert max_buffered <= capacity
    assert max_depth > 1000  # the backlog waited in the intake, not in the stream
    assert leftover == 0
    assert intake.in_flight == 0


def test_capacity_must_be_positive() -> None:
    """A zero-capacity stream is refused (nothing could ever be handed out)."""
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        Intake(settle_seconds=1, capacity=0)

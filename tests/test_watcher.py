"""daemon.runtime.watcher on real folders with real watchfiles (and fakes only to drop events)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import watchfiles
from anyio.streams.memory import MemoryObjectReceiveStream

from daemon.runtime.watcher import AwatchFactory, Candidate, WatchedInbox, Watcher

pytestmark = pytest.mark.anyio

NEVER = 1e9  # a rescan interval no test reaches


def _fast_awatch(*paths: Path | str, **kwargs: Any) -> AsyncIterator[set[tuple[Any, str]]]:
    """The real watchfiles.awatch with a short debounce so tests are quick."""
    kwargs.update(debounce=50, step=10)
    return watchfiles.awatch(*paths, **kwargs)


async def _deaf(
    *paths: Path | str, stop_event: Any = None, **kwargs: Any
) -> AsyncIterator[set[tuple[watchfiles.Change, str]]]:
    """A watch that never reports anything: every inotify event is dropped."""
    await anyio.sleep_forever()
    yield set()


def _make(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@asynccontextmanager
async def _watching(
    inboxes: list[WatchedInbox],
    *,
    rescan_interval: float = NEVER,
    awatch: AwatchFactory = _fast_awatch,
    stop_event: anyio.Event | None = None,
) -> AsyncIterator[tuple[Watcher, MemoryObjectReceiveStream[Candidate]]]:
    """A running Watcher feeding a roomy stream; stopped and closed on exit."""
    send, receive = anyio.create_memory_object_stream[Candidate](10_000)
    watcher = Watcher(
        inboxes,
        rescan_interval=rescan_interval,
        awatch=awatch,
        stop_event=stop_event,
        error_backoff=0,
    )
    with send, receive:
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run, send)
            yield watcher, receive
            if stop_event is None:
                tg.cancel_scope.cancel()


async def _until(
    receive: MemoryObjectReceiveStream[Candidate], relpath: str, seen: list[Candidate] | None = None
) -> Candidate:
    """Receive candidates until one for ``relpath`` arrives (5 s at most)."""
    with anyio.fail_after(5):
        async for candidate in receive:
            if seen is not None:
                seen.append(candidate)
            if candidate.relpath == relpath:
                return candidate
    raise AssertionError("stream closed")


def _drain(receive: MemoryObjectReceiveStream[Candidate]) -> list[Candidate]:
    out: list[Candidate] = []
    while True:
        try:
            out.append(receive.receive_nowait())
        except anyio.WouldBlock:
            return out


async def test_initial_scan_offers_files_present_before_start(tmp_path: Path) -> None:
    """A file already in the inbox is offered by the start-up scan with its lstat size and mtime."""
    inbox = tmp_path / "in"
    f = _make(inbox / "a.txt", b"hello")
    async with _watching([WatchedInbox("docs", inbox)], awatch=_deaf) as (_, receive):
        got = await _until(receive, "a.txt")
    st = f.lstat()
    assert got == Candidate("docs", f, "a.txt", 5, st.st_mtime_ns)
    assert got.key == "docs:a.txt"


async def test_file_created_after_start_is_found_by_the_watch(tmp_path: Path) -> None:
    """With rescans out of reach, a new file is still discovered through inotify."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with _watching([WatchedInbox("docs", inbox)]) as (watcher, receive):
        await watcher.rescan_now()  # the start-up scan is over; only the watch is left
        assert watcher.healthy
        _make(inbox / "new.pdf", b"12345678")
        got = await _until(receive, "new.pdf")
    assert (got.inbox, got.size) == ("docs", 8)
    assert not watcher.healthy


async def test_file_renamed_into_the_inbox_is_found(tmp_path: Path) -> None:
    """A write-then-rename into the inbox (a moved-in event, no close-write) is discovered."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    staging = _make(tmp_path / "staging" / "report.csv", b"a,b\n")
    async with _watching([WatchedInbox("docs", inbox)]) as (watcher, receive):
        await watcher.rescan_now()
        staging.rename(inbox / "report.csv")
        got = await _until(receive, "report.csv")
    assert got.path == inbox / "report.csv"
    assert got.size == 4


@pytest.mark.parametrize("name", [".hidden", "x.part", "y.tmp", "z.crdownload", ".a.swp", "~lock"])
async def test_temp_and_dot_names_are_never_offered(tmp_path: Path, name: str) -> None:
    """Temp names are skipped by both the watch and the scans; a real file beside them is not."""
    inbox = tmp_path / "in"
    _make(inbox / (name + "0" if name.startswith((".", "~")) else "0" + name))
    async with _watching([WatchedInbox("docs", inbox)]) as (watcher, receive):
        _make(inbox / name)
        _make(inbox / "real.txt")
        seen: list[Candidate] = []
        await _until(receive, "real.txt", seen)
        await watcher.rescan_now()
        seen += _drain(receive)
    assert {c.relpath for c in seen} == {"real.txt"}


async def test_rescan_now_finds_a_file_the_watch_missed(tmp_path: Path) -> None:
    """When every event is dropped, a triggered full scan still offers the new file."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with _watching([WatchedInbox("docs", inbox)], awatch=_deaf) as (watcher, receive):
        await watcher.rescan_now()
        assert _drain(receive) == []
        _make(inbox / "missed.txt")
        await watcher.rescan_now()
        got = _drain(receive)
    assert [c.relpath for c in got] == ["missed.txt"]


async def test_periodic_rescan_finds_a_file_the_watch_missed(tmp_path: Path) -> None:
    """Without any trigger, the periodic rescan offers a file no event reported."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with _watching([WatchedInbox("docs", inbox)], awatch=_deaf, rescan_interval=0.001) as (
        watcher,
        receive,
    ):
        with anyio.fail_after(5):
            while watcher.scans_completed < 1:
                await anyio.wait_all_tasks_blocked()
        scans_before = watcher.scans_completed
        # Written beside the inbox and renamed in: a 1 ms rescan (in a thread) must not see it
        # half-written (size 0), which would make this test depend on the machine's speed.
        _make(tmp_path / "later.txt").rename(inbox / "later.txt")
        got = await _until(receive, "later.txt")
    assert got.size == 1
    assert scans_before >= 1  # the start-up scan was over before the file existed


async def test_watch_error_triggers_a_rescan_and_a_new_watch(tmp_path: Path) -> None:
    """A failing watch marks the watcher unhealthy, rescans at once and is set up again."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    fail = anyio.Event()
    calls: list[tuple[Path | str, ...]] = []

    async def flaky(
        *paths: Path | str, stop_event: Any = None, **kwargs: Any
    ) -> AsyncIterator[set[tuple[watchfiles.Change, str]]]:
        calls.append(paths)
        if len(calls) == 1:
            await fail.wait()
            raise RuntimeError("inotify queue overflow")
        await anyio.sleep_forever()
        yield set()

    async with _watching([WatchedInbox("docs", inbox)], awatch=flaky) as (watcher, receive):
        await watcher.rescan_now()
        _make(inbox / "during-outage.txt")
        fail.set()
        got = await _until(receive, "during-outage.txt")
        with anyio.fail_after(5):
            while len(calls) < 2:
                await anyio.wait_all_tasks_blocked()
        assert watcher.healthy
    assert calls == [(inbox,), (inbox,)]
    assert got.inbox == "docs"


async def test_undecodable_name_breaks_the_watch_but_the_rescan_offers_it(tmp_path: Path) -> None:
    """watchfiles fails on a non-UTF-8 name; the watcher rescans, offers it, and watches again."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with _watching([WatchedInbox("docs", inbox)]) as (watcher, receive):
        await watcher.rescan_now()
        scans = watcher.scans_completed
        fd = os.open(os.fsencode(inbox) + b"/bad\xff.txt", os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
        seen: list[Candidate] = []
        await _until(receive, "bad\udcff.txt", seen)
        with anyio.fail_after(5):
            while watcher.scans_completed == scans or not watcher.healthy:
                await anyio.wait_all_tasks_blocked()
        _make(inbox / "after.txt")
        await _until(receive, "after.txt", seen)  # the watch was set up again
    assert {c.relpath for c in seen} >= {"bad\udcff.txt", "after.txt"}
    assert seen[0].path == inbox / "bad\udcff.txt"


async def test_missing_inbox_is_watched_once_it_appears(tmp_path: Path) -> None:
    """An inbox folder absent at start is retried, then watched and scanned once it exists."""
    inbox = tmp_path / "in"
    async with _watching([WatchedInbox("docs", inbox)]) as (watcher, receive):
        assert not watcher.healthy
        _make(inbox / "first.txt")
        await _until(receive, "first.txt")
        with anyio.fail_after(5):
            while not watcher.healthy:
                await anyio.wait_all_tasks_blocked()
        await watcher.rescan_now()
        _drain(receive)
        _make(inbox / "second.txt")
        got = await _until(receive, "second.txt")
    assert got.path == inbox / "second.txt"


async def test_non_recursive_inbox_ignores_subfolders(tmp_path: Path) -> None:
    """A non-recursive inbox offers its top-level files only, never a folder or its content."""
    inbox = tmp_path / "in"
    _make(inbox / "sub" / "inner.txt")
    _make(inbox / "top.txt")
    async with _watching([WatchedInbox("docs", inbox)]) as (watcher, receive):
        await watcher.rescan_now()
        _make(inbox / "sub2" / "deep.txt")
        _make(inbox / "after.txt")
        seen = _drain(receive)
        await _until(receive, "after.txt", seen)
        await watcher.rescan_now()
        seen += _drain(receive)
    assert {c.relpath for c in seen} == {"top.txt", "after.txt"}


async def test_recursive_inbox_descends_and_finds_moved_in_folders(tmp_path: Path) -> None:
    """A recursive inbox offers nested files, including those of a folder moved in later."""
    inbox = tmp_path / "in"
    _make(inbox / "sub" / "inner.txt")
    _make(inbox / ".git" / "HEAD")
    _make(tmp_path / "outside" / "batch" / "one.txt")
    async with _watching([WatchedInbox("docs", inbox, recursive=True)]) as (watcher, receive):
        first = await _until(receive, "sub/inner.txt")
        await watcher.rescan_now()
        _drain(receive)
        (tmp_path / "outside" / "batch").rename(inbox / "batch")
        moved = await _until(receive, "batch/one.txt")
    assert first.path == inbox / "sub" / "inner.txt"
    assert moved.path == inbox / "batch" / "one.txt"


async def test_symlinks_and_fifos_are_offered_without_being_opened(tmp_path: Path) -> None:
    """A symlink and a fifo are offered (lstat only) so the validator can quarantine them."""
    inbox = tmp_path / "in"
    target = _make(tmp_path / "secret.txt", b"secret!")
    inbox.mkdir()
    (inbox / "link.txt").symlink_to(target)
    os.mkfifo(inbox / "pipe")
    async with _watching([WatchedInbox("docs", inbox)], awatch=_deaf) as (watcher, receive):
        await watcher.rescan_now()
        seen = {c.relpath: c for c in _drain(receive)}
    assert set(seen) == {"link.txt", "pipe"}
    assert seen["link.txt"].size == (inbox / "link.txt").lstat().st_size
    assert seen["pipe"].size == 0


async def test_excluded_folders_inside_an_inbox_are_skipped(tmp_path: Path) -> None:
    """The inbox's own done/quarantine folders are never scanned, even in a recursive inbox."""
    inbox = tmp_path / "in"
    _make(inbox / "done" / "old.txt")
    _make(inbox / "keep" / "new.txt")
    spec = WatchedInbox("docs", inbox, recursive=True, exclude=(inbox / "done",))
    async with _watching([spec], awatch=_deaf) as (watcher, receive):
        await watcher.rescan_now()
        seen = _drain(receive)
    assert {c.relpath for c in seen} == {"keep/new.txt"}


async def test_several_inboxes_keep_their_names(tmp_path: Path) -> None:
    """Files are attributed to the inbox they were found in, across recursive and flat inboxes."""
    a, b = tmp_path / "a", tmp_path / "b"
    _make(a / "one.txt")
    _make(b / "deep" / "two.txt")
    inboxes = [WatchedInbox("alpha", a), WatchedInbox("beta", b, recursive=True)]
    async with _watching(inboxes) as (watcher, receive):
        await watcher.rescan_now()
        seen = {(c.inbox, c.relpath) for c in _drain(receive)}
        assert watcher.healthy
    assert seen == {("alpha", "one.txt"), ("beta", "deep/two.txt")}


async def test_stop_event_ends_run(tmp_path: Path) -> None:
    """Setting the stop event makes run() return and frees the watch thread promptly."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    stop = anyio.Event()
    with anyio.fail_after(5):
        async with _watching([WatchedInbox("docs", inbox)], stop_event=stop) as (watcher, _):
            assert watcher.healthy
            stop.set()
    assert not watcher.healthy


def test_rescan_interval_must_be_positive(tmp_path: Path) -> None:
    """A zero rescan interval is refused (it would spin)."""
    with pytest.raises(ValueError, match="rescan_interval must be > 0"):
        Watcher([WatchedInbox("docs", tmp_path)], rescan_interval=0)


def test_watchfiles_awatch_fits_the_factory_protocol() -> None:
    """The real awatch is accepted where an AwatchFactory is expected."""
    factory: AwatchFactory = watchfiles.awatch
    make: Callable[..., object] = factory
    assert make is watchfiles.awatch


async def test_undecodable_dotfile_does_not_slow_discovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a non-UTF-8 name poisons watchfiles, the next new file is found by a new watch at
    once (no error backoff, no periodic rescan), and the log names the real exception."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    send, receive = anyio.create_memory_object_stream[Candidate](100)
    # Error backoff and rescans out of reach: only an immediate new watch can find the file.
    watcher = Watcher(
        [WatchedInbox("docs", inbox)],
        rescan_interval=NEVER,
        awatch=_fast_awatch,
        error_backoff=NEVER,
    )
    with send, receive:
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run, send)
            await watcher.rescan_now()
            scans = watcher.scans_completed
            fd = os.open(os.fsencode(inbox) + b"/.\xff", os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
            with anyio.fail_after(5):
                # The new watch asks for one rescan (events in between were lost) once it is up.
                while watcher.scans_completed == scans:
                    await anyio.wait_all_tasks_blocked()
            _make(inbox / "after.txt")
            got = await _until(receive, "after.txt")
            assert watcher.scans_completed == scans + 1  # found by the watch, not by a scan
            assert watcher.healthy
            tg.cancel_scope.cancel()
    assert got.relpath == "after.txt"
    lines = [r.getMessage() for r in caplog.records if r.name == "daemon.runtime.watcher"]
    assert any(
        "WatchfilesRustInternalError" in line and "Unable to decode path" in line for line in lines
    ), lines
    assert not any("ExceptionGroup" in line for line in lines), lines

"""Discovery: turn inbox folders into a stream of file candidates (watch + full rescans).

watchfiles reports changes as an unordered set, drops inotify overflow silently and may miss
close-write events, so its event kinds are never trusted: every reported path is ``lstat``-ed
to learn what is really there, and every inbox is scanned in full at start, every
``rescan_interval`` and after any watcher error. The same file may therefore be offered many
times; the intake keeps one record per path.
A name watchfiles cannot decode (non-UTF-8 bytes) poisons its watch for good: the watch is
set up again at once, never after the error back-off, so such a name never delays discovery.

Every non-temp entry of an inbox is offered — regular files, symlinks and fifos alike (only
``lstat``-ed, never opened), so the validator can quarantine what must not be uploaded.
Directories are never offered: a recursive inbox descends into them, a non-recursive inbox
ignores them and logs a warning once per directory. Entries under a temp-named directory
(``.git/``, ``~tmp/``) and the inbox's own done/quarantine folders (if they were placed inside
it) are skipped.

Two ``awatch`` loops at most (one for recursive inboxes, one for the others), so the watcher
holds at most two of anyio's worker threads whatever the number of inboxes.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import watchfiles
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from handlers.names import is_temp_name

__all__ = ["AwatchFactory", "Candidate", "Sink", "WatchedInbox", "Watcher"]

logger = logging.getLogger(__name__)

# How many directory entries one worker-thread call lstat()s during a scan: big enough to
# amortise the thread hop, small enough that a 100,000-file inbox never becomes one list.
_SCAN_CHUNK = 512

# The longest wait between attempts to set a failed watch up again (rescans go on meanwhile).
_MAX_ERROR_BACKOFF = 60.0


@dataclass(frozen=True, slots=True)
class WatchedInbox:
    """One inbox as the watcher sees it; ``exclude`` lists folders never to offer from."""

    name: str
    path: Path
    recursive: bool = False
    exclude: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A directory entry seen in an inbox, with what ``lstat`` said about it at that moment."""

    inbox: str
    path: Path
    relpath: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        """``<inbox>:<relpath>``: unique across inboxes (names cannot contain ``:``)."""
        return f"{self.inbox}:{self.relpath}"


Sink = Callable[[Candidate], Awaitable[None]] | MemoryObjectSendStream[Candidate]


class AwatchFactory(Protocol):
    """The shape of ``watchfiles.awatch`` that the watcher uses (injectable for tests)."""

    def __call__(
        self,
        *paths: Path | str,
        watch_filter: Callable[[watchfiles.Change, str], bool] | None = ...,
        debounce: int = ...,
        step: int = ...,
        stop_event: Any = ...,
        recursive: bool = ...,
    ) -> AsyncIterator[set[tuple[watchfiles.Change, str]]]: ...


class Watcher:
    """Watches every inbox and rescans them; offers each entry it finds to a sink."""

    def __init__(
        self,
        inboxes: Sequence[WatchedInbox],
        *,
        rescan_interval: float,
        awatch: AwatchFactory = watchfiles.awatch,
        stop_event: anyio.Event | None = None,
        # A steady trickle of events keeps watchfiles batching until ``debounce`` ends: 200 ms
        # put p50 drop-to-archived at 160 ms over settle (bench/latency.py). ``step`` is how
        # often awatch's thread wakes, idle or not: step 10 ms gave p50 24 ms but 0.44 s of
        # idle CPU a minute (10 inboxes; target 0.3), step 20 ms p50 41 ms and 0.18 s.
        debounce_ms: int = 50,
        step_ms: int = 20,
        error_backoff: float = 1.0,
    ) -> None:
        if rescan_interval <= 0:
            raise ValueError(f"rescan_interval must be > 0, got {rescan_interval}")
        self._inboxes = tuple(inboxes)
        self._rescan_interval = rescan_interval
        self._awatch = awatch
        self._stop_event = stop_event
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._error_backoff = error_backoff
        self._groups = [
            group
            for group in (
                tuple(i for i in self._inboxes if not i.recursive),
                tuple(i for i in self._inboxes if i.recursive),
            )
            if group
        ]
        self._up = [False] * len(self._groups)
        self._running = False
        self._warned_dirs: set[Path] = set()
        self._undecodable_seen: set[str] = set()
        self._trigger = anyio.Event()
        self._scan_done = anyio.Event()
        self._scans_started = 0
        self._scans_completed = 0

    @property
    def healthy(self) -> bool:
        """True while run() is running and every watch is established (for /readyz)."""
        return self._running and all(self._up)

    @property
    def scans_completed(self) -> int:
        """How many full scans have finished since construction."""
        return self._scans_completed

    async def rescan_now(self) -> None:
        """Ask for a full scan and wait until one that started after this call has finished."""
        wanted = self._scans_started + 1
        self._trigger.set()
        while self._scans_completed < wanted:
            await self._scan_done.wait()

    async def run(
        self, sink: Sink, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch and rescan until cancelled or ``stop_event`` is set.

        ``task_status.started()`` is called once the watches have been set up and the first
        full scan has begun.
        """
        send = sink.send if isinstance(sink, MemoryObjectSendStream) else sink
        # awatch's thread polls this every step_ms: setting it on exit frees the thread at once
        # instead of after rust_timeout (5 s).
        halt = anyio.Event()
        self._running = True
        try:
            async with anyio.create_task_group() as tg:
                try:
                    for index, group in enumerate(self._groups):
                        tg.start_soon(self._watch_group, index, group, halt, send, tg)
                    # On asyncio a new task's first step runs before we resume, and awatch sets
                    # up its inotify watches synchronously in that first step: scanning after
                    # this leaves no gap in which a new file is neither watched nor scanned.
                    await anyio.lowlevel.checkpoint()
                    await anyio.lowlevel.checkpoint()
                    tg.start_soon(self._scan_loop, send)
                    task_status.started()
                    if self._stop_event is None:
                        await anyio.sleep_forever()
                    else:
                        await self._stop_event.wait()
                        logger.info("watcher: stop requested, no more discovery")
                finally:
                    halt.set()
                    tg.cancel_scope.cancel()
        finally:
            self._running = False
            self._up = [False] * len(self._groups)

    async def _scan_loop(self, send: Callable[[Candidate], Awaitable[None]]) -> None:
        while True:
            self._scans_started += 1
            self._trigger = anyio.Event()
            for inbox in self._inboxes:
                await self._scan_inbox(inbox, inbox.path, send)
            self._scans_completed = self._scans_started
            done, self._scan_done = self._scan_done, anyio.Event()
            done.set()
            with anyio.move_on_after(self._rescan_interval):
                await self._trigger.wait()

    async def _watch_group(
        self,
        index: int,
        group: tuple[WatchedInbox, ...],
        halt: anyio.Event,
        send: Callable[[Candidate], Awaitable[None]],
        tg: TaskGroup,
    ) -> None:
        recursive = group[0].recursive
        paths = [inbox.path for inbox in group]
        names = ", ".join(str(p) for p in paths)
        # Doubles after each failure in a row (a deleted inbox must not flood the log), back to
        # the start once a watch delivers again.
        delay = self._error_backoff
        cap = max(self._error_backoff, min(self._rescan_interval, _MAX_ERROR_BACKOFF))
        retry = False
        while not halt.is_set():
            self._up[index] = True
            if retry:
                # Events between the failure and this new watch are lost: scan once it is up.
                tg.start_soon(self._rescan_after_first_step)
            retry = True
            try:
                async for changes in self._awatch(
                    *paths,
                    watch_filter=None,
                    debounce=self._debounce_ms,
                    step=self._step_ms,
                    stop_event=halt,
                    recursive=recursive,
                ):
                    delay = self._error_backoff
                    for _, raw in changes:
                        await self._offer_event(group, Path(raw), send)
                if halt.is_set():
                    return
                logger.warning("watcher: watch on %s ended unexpectedly; rescanning", names)
            except Exception as exc:  # watchfiles raises many kinds; a rescan covers all
                cause = _root_cause(exc)
                if _undecodable(cause):
                    # Not a failure of the folder: watchfiles keeps raising this for good once
                    # it met the name, so a new watch at once (the rescan it asks for offers
                    # whatever happened meanwhile), never the error backoff.
                    self._log_undecodable(names, cause)
                    continue
                logger.warning(
                    "watcher: watching %s failed (%s: %s); rescanning, retrying in %.1f s "
                    "(check the folders exist and are readable by the daemon)",
                    names,
                    type(cause).__name__,
                    cause,
                    delay,
                )
            self._up[index] = False
            self._trigger.set()
            await anyio.sleep(delay)
            delay = min(delay * 2, cap)

    def _log_undecodable(self, names: str, cause: BaseException) -> None:
        # Once per distinct message: a writer appending to such a file repeats it per write.
        text = str(cause)
        level = logging.DEBUG if text in self._undecodable_seen else logging.WARNING
        self._undecodable_seen.add(text)
        logger.log(
            level,
            "watcher: a name in %s is not valid UTF-8 (%s: %s); watching again at once and "
            "rescanning; rename it to a UTF-8 name (e.g. with convmv) or remove it",
            names,
            type(cause).__name__,
            cause,
        )

    async def _rescan_after_first_step(self) -> None:
        # Same reasoning as in run(): by now the watch task has set its inotify watches up.
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        self._trigger.set()

    async def _offer_event(
        self,
        group: tuple[WatchedInbox, ...],
        path: Path,
        send: Callable[[Candidate], Awaitable[None]],
    ) -> None:
        for inbox in group:
            try:
                rel = path.relative_to(inbox.path)
            except ValueError:
                continue
            if not rel.parts or (not inbox.recursive and len(rel.parts) != 1):
                return
            if any(is_temp_name(part) for part in rel.parts) or _excluded(inbox, path):
                return
            found = _examine(inbox, path, None, self._warned_dirs)
            if isinstance(found, Candidate):
                await send(found)
            elif found is not None:
                # A directory moved into a recursive inbox brings files no event reported.
                await self._scan_inbox(inbox, found, send)
            return

    async def _scan_inbox(
        self,
        inbox: WatchedInbox,
        top: Path,
        send: Callable[[Candidate], Awaitable[None]],
    ) -> None:
        pending = [top]
        while pending:
            folder = pending.pop()
            try:
                entries = os.scandir(folder)
            except OSError as exc:
                logger.warning(
                    "watcher: cannot list %s in inbox %r (%s); check it exists and is readable",
                    folder,
                    inbox.name,
                    exc.strerror,
                )
                continue
            with entries:
                while True:
                    found = await anyio.to_thread.run_sync(
                        _scan_chunk, inbox, entries, self._warned_dirs
                    )
                    if not found:
                        break
                    for item in found:
                        if isinstance(item, Candidate):
                            await send(item)
                        elif item is not None:
                            pending.append(item)


def _scan_chunk(
    inbox: WatchedInbox, entries: Iterator[os.DirEntry[str]], warned: set[Path]
) -> list[Candidate | Path | None]:
    """Examine up to _SCAN_CHUNK entries (in a worker thread); [] when the folder is done."""
    out: list[Candidate | Path | None] = []
    for entry in islice(entries, _SCAN_CHUNK):
        path = Path(entry.path)
        if is_temp_name(entry.name) or _excluded(inbox, path):
            out.append(None)
            continue
        out.append(_examine(inbox, path, entry, warned))
    return out


def _examine(
    inbox: WatchedInbox, path: Path, entry: os.DirEntry[str] | None, warned: set[Path]
) -> Candidate | Path | None:
    """A Candidate for an entry to offer, a Path for a folder to descend into, else None."""
    try:
        st = entry.stat(follow_symlinks=False) if entry is not None else path.lstat()
    except OSError:
        return None  # vanished (or unreadable parent): nothing to offer now
    if stat.S_ISDIR(st.st_mode):
        if inbox.recursive:
            return path
        if path not in warned:
            warned.add(path)
            logger.warning(
                "watcher: ignoring folder %s in inbox %r (not recursive); set recursive = true "
                "to upload what is inside, or move it out",
                path,
                inbox.name,
            )
        return None
    relpath = path.relative_to(inbox.path).as_posix()
    return Candidate(inbox.name, path, relpath, st.st_size, st.st_mtime_ns)


def _root_cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (awatch raises through a task group), else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _undecodable(exc: BaseException) -> bool:
    """watchfiles met a name it cannot turn into ``str`` (non-UTF-8 bytes).

    watchfiles 1.x decodes every event path in Rust and, on failure, stores the error in the
    watch object and raises it from then on at every call, losing the events in between:
    the only cure is a new watch. (Its ``watch_filter`` runs in Python, too late to help.)
    """
    return isinstance(exc, RuntimeError) and "Unable to decode path" in str(exc)


def _excluded(inbox: WatchedInbox, path: Path) -> bool:
    return any(path == ex or ex in path.parents for ex in inbox.exclude)

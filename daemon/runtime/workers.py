"""What feeds and drains a running ``Daemon``'s intake: the watcher, the workers, the park loop.

The watcher is replaced without a gap (a reload). A worker takes one file at a time through
the pipeline. Files in work are counted per config generation: a client replaced by a reload
closes once no file of its generation is left.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from anyio.abc import TaskStatus

from daemon.runtime.failures import FATAL, FileErrors
from daemon.runtime.watcher import Candidate, WatchedInbox, Watcher
from handlers.ledger import LedgerRow
from handlers.outcomes import InboxPlan, Result
from handlers.stages import stage_of
from providers.types import UploadClient

if TYPE_CHECKING:
    from daemon.runtime.daemon import Daemon

__all__ = [
    "WorkState",
    "close_client",
    "close_idle_clients",
    "file_failed",
    "is_fatal",
    "park_loop",
    "recover_failed",
    "start_watcher",
    "wake_at",
    "worker",
]

logger = logging.getLogger(__name__)

# Outcomes that leave the file where it is, to be offered again (by a rescan, the park loop
# or straight away): it was counted as discovered once, the first time.
_STAYS = frozenset({"parked", "changed", "busy", "failed"})


class WorkState:
    """The workers' shared bookkeeping (one per ``Daemon``, its ``work`` attribute).

    Files in work are counted per config generation (a reload starts a new one): clients a
    reload replaced close once no file of their generation is left, and shutdown waits for
    ``drained``. The park loop rescans at ``park_until``. ``left_in_inbox`` holds the keys of
    files counted as discovered whose last outcome left them in their inbox (one small
    string per parked/busy file; dropped when the file ends or vanishes). ``errors`` holds
    the files that failed unexpectedly, their backoff and the stages failing for every file.
    """

    def __init__(self, errors: FileErrors | None = None) -> None:
        self.errors = errors or FileErrors()
        self.generation = 0
        self.busy: dict[int, int] = {}
        self.drained = anyio.Event()
        self.drained.set()
        self.retired: list[tuple[int, UploadClient]] = []
        self.park_wake = anyio.Event()
        self.park_until: float | None = None
        self.left_in_inbox: set[str] = set()

    @property
    def in_work(self) -> int:
        """Files in work, every generation."""
        return sum(self.busy.values())

    def enter(self) -> int:
        """One more file in work, of the current generation (returned)."""
        if not self.busy:  # the first file in work: shutdown must now wait
            self.drained = anyio.Event()
        self.busy[self.generation] = self.busy.get(self.generation, 0) + 1
        return self.generation

    def leave(self, generation: int) -> bool:
        """One file of ``generation`` done; True when that generation has none left."""
        self.busy[generation] -= 1
        idle = not self.busy[generation]
        if idle:
            del self.busy[generation]
        if not self.busy:
            self.drained.set()
        return idle


async def start_watcher(daemon: Daemon) -> None:
    """Start a watcher over the current plans, then stop the previous one (no gap)."""
    watcher = Watcher(
        [
            WatchedInbox(
                name=p.name,
                path=p.path,
                recursive=p.recursive,
                exclude=(p.done_dir, p.quarantine_dir),
            )
            for p in daemon.plans.values()
        ],
        rescan_interval=daemon.settings.rescan_interval,
    )
    scope: anyio.CancelScope = await daemon._intake_tasks.start(_run_watcher, daemon, watcher)
    previous = daemon._watcher_scope
    daemon.watcher, daemon._watcher_scope = watcher, scope
    if previous is not None:
        previous.cancel()


async def _run_watcher(
    daemon: Daemon, watcher: Watcher, *, task_status: TaskStatus[anyio.CancelScope]
) -> None:
    assert daemon.intake is not None
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run, daemon.intake.offer)
            task_status.started(scope)


async def worker(daemon: Daemon, receive: anyio.abc.ObjectReceiveStream[Candidate]) -> None:
    """Take settled files from ``receive`` through the pipeline until the stream closes.

    Counts the files in work (shutdown waits for them; a reload's replaced clients close
    once none of their generation is left), re-offers a file that changed in flight and
    wakes the park loop for a parked one.
    """
    assert daemon.intake is not None
    async with receive:
        async for candidate in receive:
            if daemon.stopping.is_set():
                return
            plan = daemon.plans.get(candidate.inbox)
            if plan is None:  # inbox removed by a reload
                daemon.intake.done(candidate.key)
                continue
            generation = daemon.work.enter()
            rooms = daemon.remote.rooms
            try:
                result = await _process(daemon, plan, candidate)
            finally:
                if daemon.work.leave(generation):
                    close_idle_clients(daemon)
                daemon.intake.done(candidate.key)
            if result.outcome == "changed":
                # Its watch events came while it was in flight (ignored): settle it again.
                daemon.intake.offer_nowait(candidate)
            if result.park_until is not None:
                wake_at(daemon, result.park_until)
            if await daemon.remote.after_file(result.outcome, result.row, rooms=rooms):
                wake_at(daemon, time.time())  # room was made while it was being parked
            if daemon.observer is not None:
                daemon.observer(candidate, result)


async def _process(daemon: Daemon, plan: InboxPlan, candidate: Candidate) -> Result:
    """The pipeline's result for ``candidate``; counted as discovered once, not again each
    time a file left in its inbox (parked, changed, busy, failed) is offered anew.

    The failure domain is one file: an unexpected error parks this file with a growing
    backoff (``failed``) and every other file goes on; only an error of the daemon itself
    (its state file) propagates and stops the process.
    """
    key = candidate.key
    errors = daemon.work.errors
    if key not in daemon.work.left_in_inbox:
        daemon.metrics.file_discovered(candidate.inbox)
    held = errors.held_until(key)
    if held is not None:  # failed before and its backoff is not over: not even opened
        daemon.work.left_in_inbox.add(key)
        return Result("parked", park_until=held)
    try:
        result = await daemon.pipeline.process(plan, candidate.path, candidate.relpath)
    except Exception as exc:
        if is_fatal(exc):
            raise
        until = file_failed(daemon, candidate.inbox, candidate.relpath, exc)
        result = Result("failed", park_until=until)
    else:
        if result.outcome == "vanished":
            errors.forget(key)
        else:
            errors.passed(key, candidate.inbox, result.outcome)
    if result.outcome in _STAYS:
        daemon.work.left_in_inbox.add(key)
    else:
        daemon.work.left_in_inbox.discard(key)
    return result


def is_fatal(exc: BaseException) -> bool:
    """An error of the daemon itself (alone or inside an exception group)?"""
    if isinstance(exc, BaseExceptionGroup):
        return any(is_fatal(inner) for inner in exc.exceptions)
    return isinstance(exc, FATAL)


def file_failed(
    daemon: Daemon, inbox: str, relpath: str, exc: Exception, *, stage: str | None = None
) -> float:
    """Record, count and log an unexpected error of one file; when it may go again.

    Logged at error once per file and stage, repeats at debug; the traceback at debug.
    """
    stage = stage or stage_of(exc) or "other"
    failure = daemon.work.errors.failed(f"{inbox}:{relpath}", inbox, stage)
    daemon.metrics.file_error(stage)
    wait = max(failure.until - daemon.work.errors.clock(), 0.0)
    logger.log(
        logging.ERROR if failure.loud else logging.DEBUG,
        "%s failed at stage %s (%s: %s); it stays where it is and is tried again in %.0f s "
        "(doubling up to %.0f s); other files go on",
        relpath,
        stage,
        type(exc).__name__,
        exc,
        wait,
        daemon.work.errors.cap,
        extra={"inbox": inbox, "file": relpath, "stage": stage},
    )
    logger.debug("traceback of %s's failure at stage %s", relpath, stage, exc_info=exc)
    return failure.until


def recover_failed(daemon: Daemon, row: LedgerRow | None, exc: Exception) -> None:
    """``Pipeline.recover``'s ``on_error``: one row's failure makes that file wait (the
    daemon starts); a fault of the daemon itself is raised (start-up fails)."""
    if is_fatal(exc):
        raise exc
    if row is not None:
        file_failed(daemon, row.inbox, row.relpath, exc, stage="recover")
        return
    # The batch of interrupted uploads: each is settled when its file is processed.
    logger.error(
        "settling interrupted uploads at start failed (%s: %s); each is settled when its "
        "file is processed",
        type(exc).__name__,
        exc,
    )
    logger.debug("traceback of that failure", exc_info=exc)
    daemon.metrics.file_error("recover")


def wake_at(daemon: Daemon, until: float) -> None:
    """Have the park loop rescan at ``until`` (if that is earlier than its next wake-up)."""
    state = daemon.work
    if state.park_until is None or until < state.park_until:
        state.park_until = until
        state.park_wake.set()


async def park_loop(daemon: Daemon) -> None:
    """Rescan when the earliest parked file may go again (its provider reopens)."""
    state = daemon.work
    while True:
        await state.park_wake.wait()
        state.park_wake = anyio.Event()
        while state.park_until is not None:
            delay = state.park_until - time.time()
            with anyio.move_on_after(max(delay, 0)):
                await state.park_wake.wait()
                state.park_wake = anyio.Event()
                continue
            state.park_until = None
            assert daemon.watcher is not None
            await daemon.watcher.rescan_now()


def close_idle_clients(daemon: Daemon) -> None:
    """Close replaced clients once no file of their generation (or older) is in work."""
    state = daemon.work
    oldest = min(state.busy, default=math.inf)
    idle = [client for gen, client in state.retired if gen < oldest]
    state.retired = [(gen, client) for gen, client in state.retired if gen >= oldest]
    for client in idle:
        daemon._tasks.start_soon(close_client, client)


async def close_client(client: UploadClient) -> None:
    """Close ``client``, shielded from cancellation; a failure is only a warning."""
    with anyio.CancelScope(shield=True):
        try:
            await client.aclose()
        except Exception as exc:  # closing is best effort: the pool is dropped anyway
            logger.warning("closing a replaced %s client failed: %s", client.name, exc)

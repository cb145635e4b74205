"""What feeds and drains the intake: the watcher, the workers, the park loop (``Workers``).

The watcher is replaced without a gap (a reload). A worker takes one file at a time through
the pipeline of the components current when it takes the file. Files in work are counted per
config generation: a client replaced by a reload closes once no file of its generation is left.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

import anyio
import anyio.abc
from anyio.abc import TaskGroup, TaskStatus

from daemon.runtime.failures import FileErrors, is_fatal
from daemon.runtime.intake import Intake
from daemon.runtime.watcher import Candidate, WatchedInbox, Watcher
from daemon.runtime.wiring import Components
from handlers.ledger import LedgerRow
from handlers.outcomes import InboxPlan, Result
from handlers.stages import stage_of
from providers.types import UploadClient

__all__ = ["WorkState", "Workers", "close_client"]

logger = logging.getLogger(__name__)

# Outcomes that leave the file where it is, to be offered again (by a rescan, the park loop
# or straight away): it was counted as discovered once, the first time.
_STAYS = frozenset({"parked", "changed", "busy", "failed"})

Observer = Callable[[Candidate, Result], None]


class WorkState:
    """The workers' shared bookkeeping (``Workers.state``).

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

    def take_idle(self) -> list[UploadClient]:
        """The retired clients no file in work may still use (removed from ``retired``)."""
        oldest = min(self.busy, default=math.inf)
        idle = [client for gen, client in self.retired if gen < oldest]
        self.retired = [(gen, client) for gen, client in self.retired if gen >= oldest]
        return idle


class Workers:
    """The intake, what feeds it (watcher, park loop) and the workers that drain it.

    ``components`` returns the daemon's current components: each file goes through the
    pipeline current when a worker takes it. ``run`` starts everything (``tg.start``);
    ``stop`` stops the intake, lets the files in work finish for ``grace`` seconds, then
    cancels them. ``settle_seconds`` is the intake's (a restart knob); ``errors`` holds the
    failing files' backoff; ``observer`` is told each file's outcome; ``clock`` is wall-clock
    time (the park loop's deadlines).
    """

    def __init__(
        self,
        components: Callable[[], Components],
        *,
        settle_seconds: float,
        errors: FileErrors | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._components = components
        self.state = WorkState(errors)
        self._observer = observer
        self._clock = clock
        self.intake = Intake(settle_seconds=settle_seconds)
        self.watcher: Watcher | None = None
        self._watcher_scope: anyio.CancelScope | None = None
        self._feed_scope = anyio.CancelScope()
        self._feed_tasks: TaskGroup | None = None
        self._worker_tasks: TaskGroup | None = None
        self._workers = 0
        self._stopping = anyio.Event()
        self._stopped = anyio.Event()

    # -- lifetime ----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until ``stop``; started once the intake runs and every watch is set up."""
        try:
            async with anyio.create_task_group() as workers:
                self._worker_tasks = workers
                await workers.start(self._feed)
                task_status.started()
                await self._stopped.wait()
                workers.cancel_scope.cancel()
        finally:
            self.close()

    async def _feed(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with self._feed_scope:
            async with anyio.create_task_group() as feed:
                self._feed_tasks = feed
                await feed.start(self.intake.run)
                current = self._components()
                await self.replace_watcher(
                    current.plans, rescan_interval=current.settings.rescan_interval
                )
                feed.start_soon(self._park_loop)
                task_status.started()

    async def stop(self, grace: float) -> None:
        """No new files from now on; the files in work get ``grace`` seconds, then are cancelled."""
        self._stopping.set()
        self._feed_scope.cancel()
        with anyio.move_on_after(grace) as waited:
            await self.state.drained.wait()
        if waited.cancelled_caught:
            logger.warning(
                "shutdown: %d upload(s) still running after %.0f s; cancelled, they "
                "resume on the next start",
                self.state.in_work,
                grace,
            )
        self._stopped.set()

    def close(self) -> None:
        """Close the intake's stream (the workers held clones; this is the original); also
        when ``run`` never started (a start-up error)."""
        self.intake.close()

    @property
    def healthy(self) -> bool:
        """The watcher runs and every watch is set up."""
        return self.watcher is not None and self.watcher.healthy

    # -- what a reload changes ---------------------------------------------------------------

    async def replace_watcher(
        self, plans: Mapping[str, InboxPlan], *, rescan_interval: float
    ) -> None:
        """Start a watcher over ``plans``, then stop the previous one (no gap)."""
        assert self._feed_tasks is not None, "replace_watcher: Workers.run has not started"
        watcher = Watcher(
            [
                WatchedInbox(
                    name=p.name,
                    path=p.path,
                    recursive=p.recursive,
                    exclude=(p.done_dir, p.quarantine_dir),
                )
                for p in plans.values()
            ],
            rescan_interval=rescan_interval,
        )
        scope: anyio.CancelScope = await self._feed_tasks.start(self._run_watcher, watcher)
        previous = self._watcher_scope
        self.watcher, self._watcher_scope = watcher, scope
        if previous is not None:
            previous.cancel()

    async def _run_watcher(
        self, watcher: Watcher, *, task_status: TaskStatus[anyio.CancelScope]
    ) -> None:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                await tg.start(watcher.run, self.intake.offer)
                task_status.started(scope)

    def ensure(self, wanted: int) -> None:
        """At least ``wanted`` workers run (a reload may raise it, never lowers it)."""
        assert self._worker_tasks is not None, "ensure: Workers.run has not started"
        for _ in range(wanted - self._workers):
            self._worker_tasks.start_soon(self._worker, self.intake.receive.clone())
        self._workers = max(wanted, self._workers)

    def retire(self, clients: list[UploadClient]) -> None:
        """A new generation starts; ``clients`` (replaced) close once no file of an older
        generation is in work."""
        self.state.generation += 1
        self.state.retired += [(self.state.generation - 1, c) for c in clients]
        self._close_idle()

    def take_retired(self) -> list[UploadClient]:
        """Every retired client not closed yet (shutdown closes them)."""
        retired, self.state.retired = self.state.retired, []
        return [client for _, client in retired]

    def wake_at(self, until: float) -> None:
        """Have the park loop rescan at ``until`` (if that is earlier than its next wake-up)."""
        state = self.state
        if state.park_until is None or until < state.park_until:
            state.park_until = until
            state.park_wake.set()

    def _close_idle(self) -> None:
        for client in self.state.take_idle():
            assert self._worker_tasks is not None
            self._worker_tasks.start_soon(close_client, client)

    # -- the loops ---------------------------------------------------------------------------

    async def _park_loop(self) -> None:
        """Rescan when the earliest parked file may go again (its provider reopens)."""
        state = self.state
        while True:
            await state.park_wake.wait()
            state.park_wake = anyio.Event()
            while state.park_until is not None:
                delay = state.park_until - self._clock()
                with anyio.move_on_after(max(delay, 0)):
                    await state.park_wake.wait()
                    state.park_wake = anyio.Event()
                    continue
                state.park_until = None
                assert self.watcher is not None
                await self.watcher.rescan_now()

    async def _worker(self, receive: anyio.abc.ObjectReceiveStream[Candidate]) -> None:
        """Take settled files from ``receive`` through the pipeline until the stream closes.

        Counts the files in work, re-offers a file that changed in flight and wakes the park
        loop for a parked one.
        """
        async with receive:
            async for candidate in receive:
                if self._stopping.is_set():
                    return
                components = self._components()
                plan = components.plans.get(candidate.inbox)
                if plan is None:  # inbox removed by a reload
                    self.intake.done(candidate.key)
                    continue
                generation = self.state.enter()
                rooms = components.remote.rooms
                try:
                    result = await self._process(components, plan, candidate)
                finally:
                    if self.state.leave(generation):
                        self._close_idle()
                    self.intake.done(candidate.key)
                if result.outcome == "changed":
                    # Its watch events came while it was in flight (ignored): settle it again.
                    self.intake.offer_nowait(candidate)
                if result.park_until is not None:
                    self.wake_at(result.park_until)
                if await components.remote.after_file(result.outcome, result.row, rooms=rooms):
                    self.wake_at(self._clock())  # room was made while it was being parked
                if self._observer is not None:
                    self._observer(candidate, result)

    async def _process(
        self, components: Components, plan: InboxPlan, candidate: Candidate
    ) -> Result:
        """The pipeline's result for ``candidate``; counted as discovered once, not again each
        time a file left in its inbox (parked, changed, busy, failed) is offered anew.

        The failure domain is one file: an unexpected error parks this file with a growing
        backoff (``failed``) and every other file goes on; only an error of the daemon itself
        (its state file) propagates and stops the process.
        """
        key = candidate.key
        state = self.state
        if key not in state.left_in_inbox:
            components.metrics.file_discovered(candidate.inbox)
        held = state.errors.held_until(key)
        if held is not None:  # failed before and its backoff is not over: not even opened
            state.left_in_inbox.add(key)
            return Result("parked", park_until=held)
        try:
            result = await components.pipeline.process(plan, candidate.path, candidate.relpath)
        except Exception as exc:
            if is_fatal(exc):
                raise
            until = self.file_failed(candidate.inbox, candidate.relpath, exc)
            result = Result("failed", park_until=until)
        else:
            if result.outcome == "vanished":
                state.errors.forget(key)
            else:
                state.errors.passed(key, candidate.inbox, result.outcome)
        if result.outcome in _STAYS:
            state.left_in_inbox.add(key)
        else:
            state.left_in_inbox.discard(key)
        return result

    # -- failures ----------------------------------------------------------------------------

    def file_failed(
        self, inbox: str, relpath: str, exc: Exception, *, stage: str | None = None
    ) -> float:
        """Record, count and log an unexpected error of one file; when it may go again.

        Logged at error once per file and stage, repeats at debug; the traceback at debug.
        """
        stage = stage or stage_of(exc) or "other"
        errors = self.state.errors
        failure = errors.failed(f"{inbox}:{relpath}", inbox, stage)
        self._components().metrics.file_error(stage)
        wait = max(failure.until - errors.clock(), 0.0)
        logger.log(
            logging.ERROR if failure.loud else logging.DEBUG,
            "%s failed at stage %s (%s: %s); it stays where it is and is tried again in %.0f s "
            "(doubling up to %.0f s); other files go on",
            relpath,
            stage,
            type(exc).__name__,
            exc,
            wait,
            errors.cap,
            extra={"inbox": inbox, "file": relpath, "stage": stage},
        )
        logger.debug("traceback of %s's failure at stage %s", relpath, stage, exc_info=exc)
        return failure.until

    def recover_failed(self, row: LedgerRow | None, exc: Exception) -> None:
        """``Pipeline.recover``'s ``on_error``: one row's failure makes that file wait (the
        daemon starts); a fault of the daemon itself is raised (start-up fails)."""
        if is_fatal(exc):
            raise exc
        if row is not None:
            self.file_failed(row.inbox, row.relpath, exc, stage="recover")
            return
        # The batch of interrupted uploads: each is settled when its file is processed.
        logger.error(
            "settling interrupted uploads at start failed (%s: %s); each is settled when its "
            "file is processed",
            type(exc).__name__,
            exc,
        )
        logger.debug("traceback of that failure", exc_info=exc)
        self._components().metrics.file_error("recover")


async def close_client(client: UploadClient) -> None:
    """Close ``client``, shielded from cancellation; a failure is only a warning."""
    with anyio.CancelScope(shield=True):
        try:
            await client.aclose()
        except Exception as exc:  # closing is best effort: the pool is dropped anyway
            logger.warning("closing a replaced %s client failed: %s", client.name, exc)

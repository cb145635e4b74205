"""The composition root: builds the real collaborators from the settings and runs the daemon.

Start order: leftover temp files of a killed write removed from done/quarantine folders →
store (integrity check, migrations) → provider clients → recovery of rows a crash left
behind → HTTP (/metrics, /healthz, /readyz) → intake and watchers (first full scan queued) →
``READY=1``. Stop (SIGTERM/SIGINT): ``STOPPING=1``, intake stops at once, uploads in flight
get ``shutdown_grace`` seconds, then are cancelled; the ledger holds whatever is left and
the next start resumes it. SIGHUP reloads the config (``daemon.runtime.reloading`` applies
``daemon.config.reload_plan``'s plan). The watcher, the workers and the park loop are
``daemon.runtime.workers``.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import TextIO, get_args

import anyio
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from daemon.cli import package_version
from daemon.config.check import check
from daemon.config.settings import Settings
from daemon.ops.http import serve_http
from daemon.ops.logs import setup_logging
from daemon.ops.metrics import Metrics
from daemon.ops.notify import Notifier, watchdog_loop
from daemon.remote.ledger import RemoteLedger
from daemon.remote.service import build_remote_side
from daemon.runtime.failures import FileErrors, daemon_fault
from daemon.runtime.intake import Intake
from daemon.runtime.periodic import every
from daemon.runtime.reloading import apply_reload, unpark_forever
from daemon.runtime.remote_usage import REMOTE_USAGE_INTERVAL, refresh_remote_usage
from daemon.runtime.vanished import close_vanished
from daemon.runtime.watcher import Candidate, Watcher
from daemon.runtime.wiring import build_clients, build_dispatcher, build_plans
from daemon.runtime.workers import (
    WorkState,
    close_client,
    park_loop,
    recover_failed,
    start_watcher,
    wake_at,
    worker,
)
from daemon.state.retention import PRUNE_INTERVAL, prune_ledger
from daemon.state.store import Store
from daemon.state.watch import watch_state_file
from handlers.budget import ByteBudget
from handlers.leftovers import remove_temp_leftovers
from handlers.pipeline import InboxPlan, Pipeline, Result
from providers.client import ProviderClient
from providers.errors import ConfigError, Reason
from providers.retry import COMMON_ERROR_KINDS
from providers.types import UploadClient

__all__ = ["Daemon", "run_daemon", "unpark_forever", "with_emulator"]

logger = logging.getLogger(__name__)

REASONS = get_args(Reason)
# What the dispatcher reports per call: success, reconciled, or the error's kind.
OUTCOMES = ("success", "reconciled", *COMMON_ERROR_KINDS)
STATUS_INTERVAL = 5.0
STATE_CHECK_INTERVAL = 2.0

Loader = Callable[[], Settings]


def with_emulator(settings: Settings, urls: Mapping[str, str], keys: Mapping[str, str]) -> Settings:
    """``settings`` with every provider pointed at the emulator's URL and key."""
    updates = {
        name: settings.providers.get(name).model_copy(
            update={"base_url": urls[name], "api_key": SecretStr(keys[name])}
        )
        for name in ("kimi", "glm")
    }
    providers = settings.providers.model_copy(update=updates)
    return settings.model_copy(update={"providers": providers})


def run_daemon(settings: Settings, *, emulator: bool = False, loader: Loader | None = None) -> int:
    """Run until SIGTERM or SIGINT; returns the exit code. Raises ConfigError before starting.

    ``loader`` loads the config again (the same file and CLI overrides) on SIGHUP.
    """
    try:
        return anyio.run(_main, settings, emulator, loader, backend="asyncio")
    except BaseExceptionGroup as group:
        fault = daemon_fault(group)
        if fault is None:
            raise
        raise fault from None  # the CLI prints it and exits non-zero


async def _main(settings: Settings, emulator: bool, loader: Loader | None) -> int:
    async with AsyncExitStack() as stack:
        if emulator:
            from providers.emulator import Emulator

            emu = await stack.enter_async_context(Emulator())
            urls = {p: emu.base_url(p) for p in ("kimi", "glm")}
            keys = {p: emu.key(p) for p in ("kimi", "glm")}
            settings = with_emulator(settings, urls, keys)
            if loader is not None:
                loader = _pointed(loader, urls, keys)
            print(
                f"inboxd: emulator on {emu.base_url('kimi')} and {emu.base_url('glm')}; "
                f"drop files into {', '.join(str(i.path) for i in settings.inbox)}",
                flush=True,
            )
        daemon = Daemon(settings, loader=loader)
        await daemon.run()
    return 0


def _prepare(clients: Sequence[UploadClient]) -> None:
    """Import and build every provider's transports (blocking: run in a worker thread)."""
    for client in clients:
        if isinstance(client, ProviderClient):
            client.prepare()


def _pointed(loader: Loader, urls: Mapping[str, str], keys: Mapping[str, str]) -> Loader:
    return lambda: with_emulator(loader(), urls, keys)


def _secrets(settings: Settings) -> list[str]:
    keys = (settings.providers.get(name).api_key for name in ("kimi", "glm"))
    return [key.get_secret_value() for key in keys if key is not None]


class Daemon:
    """One running inboxd: owns the task tree and the mutable runtime (reloadable) state."""

    def __init__(
        self,
        settings: Settings,
        *,
        notifier: Notifier | None = None,
        observer: Callable[[Candidate, Result], None] | None = None,
        loader: Loader | None = None,
        log_stream: TextIO | None = None,
        file_errors: FileErrors | None = None,
        state_check_interval: float = STATE_CHECK_INTERVAL,
    ) -> None:
        """``observer`` is told each file's outcome (tests and benchmarks wait on it);
        ``loader`` reads the config again for ``reload()`` (None: reload is refused);
        ``log_stream`` is where log lines go (default stderr); ``file_errors`` holds the
        failing files' backoff (tests inject one with a fake clock);
        ``state_check_interval``: seconds between checks that the state file is still the
        one opened."""
        self.state_check_interval = state_check_interval
        self.state_lost: str | None = None
        self.settings = settings
        self.loader = loader
        self.log_stream = log_stream
        self.notifier = notifier or Notifier.from_environ()
        self.observer = observer
        self.registry = CollectorRegistry()
        self.http_port: int | None = None
        self.stopping = anyio.Event()
        self.ready = anyio.Event()
        self.plans: dict[str, InboxPlan] = {}
        self.watcher: Watcher | None = None
        self.intake: Intake | None = None
        self.store: Store | None = None
        self._fallbacks_seen: set[tuple[str, str, str]] = set()
        self.work = WorkState(file_errors or FileErrors())
        self._workers = 0
        self._watcher_scope: anyio.CancelScope | None = None
        self._reload_lock = anyio.Lock()
        self.reloads = 0

    # -- start -------------------------------------------------------------------------------

    def _prepare(self) -> None:
        report = check(self.settings)
        if report.problems:
            raise ConfigError(report.problems)
        self._setup_logging()
        for line in report.warnings:
            logger.warning("%s", line)

    def _setup_logging(self) -> None:
        stream = self.log_stream if self.log_stream is not None else sys.stderr
        setup_logging(self.settings.log, stream=stream, secrets=_secrets(self.settings))

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``); every start-up error reaches the caller."""
        self._prepare()
        settings = self.settings
        self.plans = build_plans(settings)
        for plan in self.plans.values():
            plan.done_dir.mkdir(parents=True, exist_ok=True)
            plan.quarantine_dir.mkdir(parents=True, exist_ok=True)
        folders = [f for p in self.plans.values() for f in (p.done_dir, p.quarantine_dir)]
        removed = await anyio.to_thread.run_sync(remove_temp_leftovers, folders)
        if removed:
            logger.info(
                "removed %d temp file(s) left in done/quarantine folders by an interrupted write",
                removed,
            )
        providers = settings.providers_in_use()
        self.metrics = Metrics(
            self.registry,
            version=package_version(),
            inboxes=list(self.plans),
            providers=providers,
            transports={p: settings.providers.get(p).transports for p in providers},
            reasons=REASONS,
            outcomes=OUTCOMES,
        )
        async with AsyncExitStack() as stack:
            self.store = store = await stack.enter_async_context(Store.open(settings.state_file))
            built = build_clients(settings, on_fallback=self._on_fallback, events=self.metrics)
            self.clients: dict[str, UploadClient] = dict(built)
            stack.push_async_callback(self._close_clients)
            # SDK imports take ~1 s: done here, off the loop, not at the first upload.
            await anyio.to_thread.run_sync(_prepare, [c.inner for c in built.values()])
            self.limits = {p: settings.providers.get(p).effective_limits(p) for p in providers}
            self.dispatcher = build_dispatcher(
                settings, self.clients, self.limits, store, self.metrics
            )
            self.pipeline = Pipeline(
                ledger=store,
                uploader=self.dispatcher,
                clients=self.clients,
                limits=self.limits,
                budget=ByteBudget(settings.max_inflight_bytes),
                events=self.metrics,
                skew=settings.reconcile_skew,
            )
            self.remote = build_remote_side(
                settings,
                store=store,
                clients=self.clients,
                registry=self.registry,
                on_room=self.room_on,
                content_lock=self.pipeline.content_lock,
            )
            await self.pipeline.recover(self.plans, on_error=partial(recover_failed, self))
            await self._serve()

    async def _serve(self) -> None:
        settings = self.settings
        async with anyio.create_task_group() as root:
            self._tasks = root
            if settings.metrics.enabled:
                self.http_port = await root.start(
                    serve_http, settings.metrics, self.registry, self.readiness
                )
            await root.start(self._signals)
            root.start_soon(watchdog_loop, self.notifier)
            assert self.store is not None
            root.start_soon(self._watch_state_file, self.store)
            async with anyio.create_task_group() as work:
                intake_scope = await self._start_intake(work)
                self.notifier.ready()
                self.ready.set()
                root.start_soon(self._status_loop)
                root.start_soon(every, REMOTE_USAGE_INTERVAL, self.refresh_remote_usage)
                root.start_soon(every, PRUNE_INTERVAL, self.prune_ledger)
                root.start_soon(every, settings.rescan_interval, self.close_vanished)
                self.remote.start(root)  # retention passes: now, every rescan_interval, on demand
                root.start_soon(every, settings.rescan_interval, self.remote.run_all)
                logger.info(
                    "inboxd %s running: %d inbox(es), providers %s",
                    package_version(),
                    len(self.plans),
                    ", ".join(self.clients),
                )
                await self.stopping.wait()
                self.notifier.stopping()
                intake_scope.cancel()  # no new files from here on
                with anyio.move_on_after(settings.shutdown_grace) as grace:
                    await self.work.drained.wait()
                if grace.cancelled_caught:
                    logger.warning(
                        "shutdown: %d upload(s) still running after %.0f s; cancelled, they "
                        "resume on the next start",
                        self.work.in_work,
                        settings.shutdown_grace,
                    )
                work.cancel_scope.cancel()
            if self.intake is not None:
                self.intake.receive.close()  # the workers held clones; this is the original
            root.cancel_scope.cancel()
        logger.info("inboxd stopped")
        self.notifier.close()

    async def _start_intake(self, work: TaskGroup) -> anyio.CancelScope:
        settings = self.settings
        self.intake = intake = Intake(settle_seconds=settings.settle_seconds)
        scope = anyio.CancelScope()

        async def intake_tree(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            with scope:
                async with anyio.create_task_group() as tg:
                    self._intake_tasks = tg
                    await tg.start(intake.run)
                    await start_watcher(self)
                    tg.start_soon(park_loop, self)
                    task_status.started()

        # READY=1 waits for this: the intake runs and every watch is set up.
        await work.start(intake_tree)
        self._work = work
        self._add_workers()
        return scope

    def _add_workers(self) -> None:
        """Twice every provider's concurrency, plus 2 (more after a reload raises it).

        A file spends about half its time outside the upload (open, ledger, archive): with
        one worker per upload slot, the slots would sit idle while their files do that.
        The uploads themselves stay limited to each provider's ``concurrency``.
        """
        assert self.intake is not None
        slots = sum(self.settings.providers.get(p).concurrency for p in self.clients)
        wanted = 2 * slots + 2
        for _ in range(wanted - self._workers):
            self._work.start_soon(worker, self, self.intake.receive.clone())
        self._workers = max(wanted, self._workers)

    # -- clients -----------------------------------------------------------------------------

    def _on_fallback(self, provider: str, from_t: str, to_t: str, reason: str) -> None:
        self.metrics.fallback(provider, from_t, to_t)
        first = (provider, from_t, to_t) not in self._fallbacks_seen
        self._fallbacks_seen.add((provider, from_t, to_t))
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "%s: transport %s unusable (%s); using %s",
            provider,
            from_t,
            reason,
            to_t,
        )

    # -- operations --------------------------------------------------------------------------

    def readiness(self) -> list[str]:
        """Why the daemon is not ready (empty when it is), for /readyz.

        Once stopping, that is the one reason: the watchers stop as a consequence.
        """
        if self.stopping.is_set():
            return ["stopping"]
        reasons = []
        if self.state_lost is not None:
            reasons.append(self.state_lost)
        if self.store is None:
            reasons.append("state file not open")
        if self.watcher is None or not self.watcher.healthy:
            reasons.append("watchers not running")
        reasons.extend(self.work.errors.reasons(self.plans))
        return reasons

    async def _watch_state_file(self, store: Store) -> None:
        def lost(reason: str) -> None:
            self.state_lost = reason  # /readyz says so until the process is gone

        await watch_state_file(
            store.path, store.identity, interval=self.state_check_interval, on_lost=lost
        )

    async def _status_loop(self) -> None:
        assert self.store is not None
        next_summary = anyio.current_time() + self.settings.log.summary_interval
        last = ""
        while True:
            counts = await self.store.counts_by_state()
            depth = self.intake.queue_depth if self.intake else 0
            self.metrics.queue_depth(depth)
            await self.refresh_oldest_pending()
            text = (
                f"done {counts.get('done', 0)}, quarantined {counts.get('quarantined', 0)}, "
                f"uploading {counts.get('uploading', 0)}, queued {depth}"
            )
            if text != last:  # systemctl status shows the last one: resend only changes
                self.notifier.status(text)
                last = text
            now = anyio.current_time()
            if now >= next_summary:
                logger.info("summary: %s", text)
                # The interval as reloaded; a late tick does not cause a burst of summaries.
                next_summary += self.settings.log.summary_interval
                if next_summary <= now:
                    next_summary = now + self.settings.log.summary_interval
            await anyio.sleep(max(0.0, min(STATUS_INTERVAL, next_summary - now)))

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._tasks.start_soon(self.reload)  # SIGTERM stays answerable meanwhile
                    continue
                logger.info("received %s, stopping", signal.Signals(signum).name)
                self.stop()

    def stop(self) -> None:
        """Begin a graceful stop (what SIGTERM does)."""
        self.stopping.set()

    async def reload(self) -> bool:
        """SIGHUP: load the config again and apply it; False when refused (old config kept).

        In-flight uploads finish on the clients they started with; a refused config logs one
        error line per problem. Breakers forced open by a refused key (AuthFailed) close.
        """
        await self.ready.wait()  # a SIGHUP during start-up applies once started
        async with self._reload_lock:
            if self.stopping.is_set():
                logger.warning("reload ignored: inboxd is stopping")
                return False
            self.notifier.reloading()
            try:
                return await apply_reload(self)
            finally:
                self.notifier.ready()

    async def _close_clients(self) -> None:
        retired, self.work.retired = self.work.retired, []
        for client in [*self.clients.values(), *(c for _, c in retired)]:
            await close_client(client)

    async def refresh_remote_usage(self) -> dict[str, tuple[int, int]]:
        """List each provider in use once; a failure is a warning, never a crash."""
        return await refresh_remote_usage(
            self.settings.providers_in_use(), self.clients, self.metrics
        )

    async def refresh_oldest_pending(self) -> None:
        """Set ``inboxd_oldest_pending_seconds`` from the ledger (the status loop's tick)."""
        assert self.store is not None
        self.metrics.oldest_pending(await self.store.oldest_waiting(), now=time.time())

    async def room_on(self, provider: str) -> None:
        """A retention pass asked for by a quota answer made room on ``provider``: close its
        breaker and let the files parked behind it go now (``daemon.remote.service``)."""
        assert self.store is not None
        await self.dispatcher.reset_breaker(provider)
        released = await RemoteLedger(self.store).release_parked(provider)
        logger.info("%s: room made on the account; %d parked file(s) go again", provider, released)
        wake_at(self, time.time())

    async def close_vanished(self) -> int:
        """Close waiting rows whose file left its inbox (``daemon.runtime.vanished``)."""
        assert self.store is not None
        assert self.intake is not None
        return await close_vanished(self.store, self.plans, busy=self.intake.busy)

    async def prune_ledger(self) -> int:
        """Prune finished ledger rows past ``ledger_retention_days`` (the current settings)."""
        assert self.store is not None
        return await prune_ledger(
            self.store, days=self.settings.ledger_retention_days, now=time.time()
        )

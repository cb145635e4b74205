"""One running inboxd (``Daemon``): its start order, its task tree, its reload and its stop.

Start order: this host's leftover temp files of a killed write removed from done/quarantine
folders → store (integrity check, migrations; a shared database that does not answer yet is
waited for, with /healthz and /readyz served meanwhile: ``daemon.runtime.starting``) →
components (provider clients, dispatcher, pipeline: ``daemon.runtime.wiring.build``) →
recovery of rows a crash left behind (this host's, or a dead host's) → HTTP (/metrics,
/healthz, /readyz) → workers (intake, watchers, first full scan queued) → ``READY=1``. Stop
(SIGTERM/SIGINT): ``STOPPING=1``, intake stops at once, uploads in flight get
``shutdown_grace`` seconds, then are cancelled; the ledger holds whatever is left and the
next start resumes it. SIGHUP reloads the config: new components, swapped in at once
(``daemon.runtime.reloading``). Logging is set up by the caller (``inboxd run``).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import anyio
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import CollectorRegistry

from daemon.config.check import check
from daemon.config.reload_plan import plan_reload
from daemon.config.settings import Settings
from daemon.ops.http import serve_http
from daemon.ops.metrics import Metrics
from daemon.ops.notify import Notifier, watchdog_loop
from daemon.ops.version import package_version
from daemon.runtime.failures import FileErrors
from daemon.runtime.operations import Operations
from daemon.runtime.periodic import every
from daemon.runtime.reloading import load_checked, release_forced
from daemon.runtime.remote_usage import REMOTE_USAGE_INTERVAL
from daemon.runtime.starting import (
    RETRY_CAP,
    RETRY_FIRST,
    StateHealth,
    StoreOpener,
    make_folders,
    open_store,
    prepare_clients,
    store_opener,
)
from daemon.runtime.status import StatusLine
from daemon.runtime.wiring import Components, build
from daemon.runtime.workers import Observer, Workers, close_client
from daemon.state.retention import PRUNE_INTERVAL
from daemon.state.store import Store
from daemon.state.watch import watch_state_file
from handlers.moves import host_id, use_host_id
from providers.errors import ConfigError
from providers.retry import COMMON_ERROR_KINDS

__all__ = ["OUTCOMES", "Daemon"]

logger = logging.getLogger(__name__)

# What the dispatcher reports per call: success, reconciled, or the error's kind.
OUTCOMES = ("success", "reconciled", *COMMON_ERROR_KINDS)

STATE_CHECK_INTERVAL = 2.0

Loader = Callable[[], Settings]


class Daemon(Operations):
    """One running inboxd: owns its components (swapped whole by a reload) and its workers.

    ``components``: built ones to run on (tests inject them; their store is the caller's to
    close), else ``run`` builds them; ``observer`` is told each file's outcome (tests and
    benchmarks wait on it); ``loader`` reads the config again for ``reload()`` (None: reload
    is refused); ``configure_logging`` sets logging up again when a reload changes ``log``;
    ``file_errors`` holds the failing files' backoff (tests inject one with a fake clock);
    ``clock`` is wall-clock time; ``state_check_interval``: seconds between checks that the
    state file is still the one opened. ``open_store`` opens the store (default: the one the
    settings name, as ``host_id``); ``state_retry`` (first, cap) are the seconds between tries
    while its database does not answer at start, waited with ``sleep``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        components: Components | None = None,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
        observer: Observer | None = None,
        loader: Loader | None = None,
        configure_logging: Callable[[Settings], None] | None = None,
        file_errors: FileErrors | None = None,
        state_check_interval: float = STATE_CHECK_INTERVAL,
        open_store: StoreOpener | None = None,
        state_retry: tuple[float, float] = (RETRY_FIRST, RETRY_CAP),
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._initial = settings
        self.components = components
        self._clock = clock
        self._loader = loader
        self._configure_logging = configure_logging
        self._state_check_interval = state_check_interval
        self._open_store = open_store or store_opener(settings)
        self._state_retry = state_retry
        self._sleep = sleep
        self.notifier = notifier or Notifier.from_environ()
        self.registry = (
            components.metrics.registry if components is not None else CollectorRegistry()
        )
        self.workers = Workers(
            self.current,
            settle_seconds=settings.settle_seconds,
            errors=file_errors or FileErrors(clock=clock),
            observer=observer,
            clock=clock,
        )
        self.http_port: int | None = None
        self.state_lost: str | None = None
        self.stopping = anyio.Event()
        self.ready = anyio.Event()
        self.reloads = 0
        self._status = StatusLine(self.notifier)
        self._fallbacks_seen: set[tuple[str, str, str]] = set()
        self._reload_lock = anyio.Lock()
        self._tasks: TaskGroup | None = None
        self._metrics = components.metrics if components is not None else None
        self.state = StateHealth(self._count_state_error)

    @property
    def settings(self) -> Settings:
        """The running config (the latest accepted reload's)."""
        return self._initial if self.components is None else self.components.settings

    def current(self) -> Components:
        """The components files are processed with now (set once ``run`` built them)."""
        assert self.components is not None, "Daemon.current: run() has not built them yet"
        return self.components

    # -- start -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``); started (``tg.start``) once ready, and
        every start-up error reaches the caller."""
        settings = self.settings
        report = check(settings)
        if report.problems:
            self.workers.close()
            raise ConfigError(report.problems)
        for line in report.warnings:
            logger.warning("%s", line)
        async with AsyncExitStack() as stack:
            stack.callback(self.workers.close)
            stack.callback(use_host_id, host_id())  # temp names: this host's while it runs
            use_host_id(settings.host_id)
            folders = [f for i in settings.inbox for f in (i.done_path, i.quarantine_path)]
            legacy = settings.state_url is None  # only a single host may own unscoped ones
            await make_folders(folders, host=settings.host_id, legacy=legacy)
            if self.components is None:
                self._metrics = self._new_metrics(settings)
                store = await open_store(
                    stack,
                    self._open_store,
                    self.state,
                    settings=settings,
                    readiness=self.readiness,
                    registry=self.registry,
                    stopping=self.stopping,
                    on_http_port=self._on_http_port,
                    first=self._state_retry[0],
                    cap=self._state_retry[1],
                    sleep=self._sleep,
                )
                if store is None:
                    logger.info("inboxd stopped before the state store answered")
                    return
                self.components = self._build(settings, store, self._metrics)
            current = self.components
            stack.push_async_callback(self._close_clients)
            # SDK imports take ~1 s: done here, off the loop, not at the first upload.
            clients = [c.inner for c in current.clients.values()]
            await anyio.to_thread.run_sync(prepare_clients, clients)
            await current.pipeline.recover(current.plans, on_error=self.workers.recover_failed)
            await self._serve(task_status)

    def _count_state_error(self) -> None:
        if self._metrics is not None:
            self._metrics.state_error()

    def _on_http_port(self, port: int) -> None:
        self.http_port = port

    def _new_metrics(self, settings: Settings) -> Metrics:
        providers = settings.providers_in_use()
        return Metrics(
            self.registry,
            version=package_version(),
            inboxes=[inbox.name for inbox in settings.inbox],
            providers=providers,
            transports={p: settings.providers.get(p).transports for p in providers},
            outcomes=OUTCOMES,
        )

    def _build(self, settings: Settings, store: Store, metrics: Metrics) -> Components:
        return build(
            settings,
            store=store,
            metrics=metrics,
            on_fallback=self._on_fallback,
            on_room=self.room_on,
        )

    async def _serve(self, task_status: TaskStatus[None]) -> None:
        settings = self.settings
        current = self.current()
        async with anyio.create_task_group() as root:
            self._tasks = root
            if settings.metrics.enabled:
                self.http_port = await root.start(
                    serve_http, settings.metrics, self.registry, self.readiness
                )
            await root.start(self._signals)
            root.start_soon(watchdog_loop, self.notifier)
            root.start_soon(self._watch_state_file, current.store)
            root.start_soon(every, current.store.lease / 3, self.renew_leases)
            # READY=1 waits for this: the intake runs and every watch is set up.
            await root.start(self.workers.run)
            self.workers.ensure(self._wanted_workers())
            self.notifier.ready()
            self.ready.set()
            task_status.started()
            root.start_soon(self._status_loop)
            root.start_soon(every, REMOTE_USAGE_INTERVAL, self.refresh_remote_usage)
            root.start_soon(every, PRUNE_INTERVAL, self.prune_ledger)
            root.start_soon(every, settings.rescan_interval, self.close_vanished)
            current.remote.start(root)  # retention passes: now, every rescan_interval, on demand
            root.start_soon(every, settings.rescan_interval, self.retention_passes)
            logger.info(
                "inboxd %s running: %d inbox(es), providers %s",
                package_version(),
                len(current.plans),
                ", ".join(current.clients),
            )
            await self.stopping.wait()
            self.notifier.stopping()
            await self.workers.stop(self.settings.shutdown_grace)
            root.cancel_scope.cancel()
        logger.info("inboxd stopped")
        self.notifier.close()

    def _wanted_workers(self) -> int:
        """Twice every provider's concurrency, plus 2 (more after a reload raises it).

        A file spends about half its time outside the upload (open, ledger, archive): with
        one worker per upload slot, the slots would sit idle while their files do that.
        The uploads themselves stay limited to each provider's ``concurrency``.
        """
        current = self.current()
        slots = sum(current.settings.providers.get(p).concurrency for p in current.clients)
        return 2 * slots + 2

    # -- clients -----------------------------------------------------------------------------

    def _on_fallback(self, provider: str, from_t: str, to_t: str, reason: str) -> None:
        self.current().metrics.fallback(provider, from_t, to_t)
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

    async def _close_clients(self) -> None:
        current = self.current()
        for client in [*current.clients.values(), *self.workers.take_retired()]:
            await close_client(client)

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
        if self.state.reason is not None:
            reasons.append(self.state.reason)
        elif self.components is None:
            reasons.append("state file not open")
        if not self.workers.healthy:
            reasons.append("watchers not running")
        plans = self.components.plans if self.components is not None else {}
        reasons.extend(self.workers.state.errors.reasons(plans))
        return reasons

    async def _watch_state_file(self, store: Store) -> None:
        def lost(reason: str) -> None:
            self.state_lost = reason  # /readyz says so until the process is gone

        if store.path is None or store.identity is None:
            return  # PostgreSQL (state_url): no state file to watch
        await watch_state_file(
            store.path, store.identity, interval=self._state_check_interval, on_lost=lost
        )

    async def _status_loop(self) -> None:
        while True:
            current = self.current()
            counts = await current.store.counts_by_state()
            depth = self.workers.intake.queue_depth
            current.metrics.queue_depth(depth)
            await self.refresh_oldest_pending()
            pause = self._status.tick(
                counts, depth, now=anyio.current_time(), every=self.settings.log.summary_interval
            )
            await anyio.sleep(pause)

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    assert self._tasks is not None
                    self._tasks.start_soon(self.reload)  # SIGTERM stays answerable meanwhile
                    continue
                logger.info("received %s, stopping", signal.Signals(signum).name)
                self.stop()

    def stop(self) -> None:
        """Begin a graceful stop (what SIGTERM does)."""
        self.stopping.set()

    async def reload(self) -> bool:
        """SIGHUP: load the config again and apply it; False when refused (old config kept).

        In-flight uploads finish on the components they started with; a refused config logs
        one error line per problem. Breakers forced open by a refused key (AuthFailed) close.
        """
        await self.ready.wait()  # a SIGHUP during start-up applies once started
        async with self._reload_lock:
            if self.stopping.is_set():
                logger.warning("reload ignored: inboxd is stopping")
                return False
            self.notifier.reloading()
            try:
                return await self._reload()
            finally:
                self.notifier.ready()

    async def _reload(self) -> bool:
        new = load_checked(self._loader)
        if new is None:
            return False
        old = self.current()
        plan = plan_reload(old.settings, new)
        if plan.logging_changed and self._configure_logging is not None:
            self._configure_logging(new)
        for key in plan.restart_needed:
            logger.warning("reload: %s changed; it takes effect at the next restart", key)
        for name in plan.added_inboxes:
            old.metrics.add_inbox(name)
        self.components = current = build(
            new,
            store=old.store,
            metrics=old.metrics,
            on_fallback=self._on_fallback,
            on_room=self.room_on,
            previous=old,
            renew=plan.new_clients,
            rebuild_dispatcher=plan.rebuild_dispatcher,
        )
        self.workers.retire(
            [c for n, c in old.clients.items() if current.clients.get(n) not in (c, None)]
        )
        if plan.restart_watcher:
            await self.workers.replace_watcher(current.plans, rescan_interval=new.rescan_interval)
        self.workers.ensure(self._wanted_workers())
        if await release_forced(current.store, current.dispatcher, current.clients):
            self.workers.wake_at(self._clock())  # files parked behind it go again now
        self.reloads += 1
        logger.info("config reloaded: %s", plan.summary())
        return True

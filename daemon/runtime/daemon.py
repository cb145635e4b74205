"""One running inboxd (``Daemon``): its start order, its task tree, its reload and its stop.

Start order: leftover temp files of a killed write removed from done/quarantine folders →
store (integrity check, migrations) → components (provider clients, dispatcher, pipeline:
``daemon.runtime.wiring.build``) → recovery of rows a crash left behind → HTTP (/metrics,
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
from collections.abc import Callable, Sequence
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
from daemon.remote.ledger import RemoteLedger
from daemon.runtime.failures import FileErrors
from daemon.runtime.periodic import every
from daemon.runtime.reloading import load_checked, release_forced
from daemon.runtime.remote_usage import REMOTE_USAGE_INTERVAL, refresh_remote_usage
from daemon.runtime.status import StatusLine
from daemon.runtime.vanished import close_vanished
from daemon.runtime.wiring import Components, build
from daemon.runtime.workers import Observer, Workers, close_client
from daemon.state.retention import PRUNE_INTERVAL, prune_ledger
from daemon.state.store import Store
from daemon.state.watch import watch_state_file
from handlers.leftovers import remove_temp_leftovers
from handlers.moves import host_id, use_host_id
from providers.client import ProviderClient
from providers.errors import ConfigError
from providers.retry import COMMON_ERROR_KINDS
from providers.types import UploadClient

__all__ = ["OUTCOMES", "Daemon"]

logger = logging.getLogger(__name__)

# What the dispatcher reports per call: success, reconciled, or the error's kind.
OUTCOMES = ("success", "reconciled", *COMMON_ERROR_KINDS)

STATE_CHECK_INTERVAL = 2.0

Loader = Callable[[], Settings]


def _prepare(clients: Sequence[UploadClient]) -> None:
    """Import and build every provider's transports (blocking: run in a worker thread)."""
    for client in clients:
        if isinstance(client, ProviderClient):
            client.prepare()


class Daemon:
    """One running inboxd: owns its components (swapped whole by a reload) and its workers.

    ``components``: built ones to run on (tests inject them; their store is the caller's to
    close), else ``run`` builds them; ``observer`` is told each file's outcome (tests and
    benchmarks wait on it); ``loader`` reads the config again for ``reload()`` (None: reload
    is refused); ``configure_logging`` sets logging up again when a reload changes ``log``;
    ``file_errors`` holds the failing files' backoff (tests inject one with a fake clock);
    ``clock`` is wall-clock time; ``state_check_interval``: seconds between checks that the
    state file is still the one opened.
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
    ) -> None:
        self._initial = settings
        self.components = components
        self._clock = clock
        self._loader = loader
        self._configure_logging = configure_logging
        self._state_check_interval = state_check_interval
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
            await self._make_folders(settings)
            if self.components is None:
                store = await stack.enter_async_context(Store.open(settings.state_file))
                self.components = self._build(settings, store)
            current = self.components
            stack.push_async_callback(self._close_clients)
            # SDK imports take ~1 s: done here, off the loop, not at the first upload.
            await anyio.to_thread.run_sync(_prepare, [c.inner for c in current.clients.values()])
            await current.pipeline.recover(current.plans, on_error=self.workers.recover_failed)
            await self._serve(task_status)

    async def _make_folders(self, settings: Settings) -> None:
        folders = []
        for inbox in settings.inbox:
            for folder in (inbox.done_path, inbox.quarantine_path):
                folder.mkdir(parents=True, exist_ok=True)
                folders.append(folder)
        removed = await anyio.to_thread.run_sync(
            lambda: remove_temp_leftovers(
                folders, host=settings.host_id, legacy=settings.state_url is None
            )
        )
        if removed:
            logger.info(
                "removed %d temp file(s) left in done/quarantine folders by an interrupted write",
                removed,
            )

    def _build(self, settings: Settings, store: Store) -> Components:
        providers = settings.providers_in_use()
        metrics = Metrics(
            self.registry,
            version=package_version(),
            inboxes=[inbox.name for inbox in settings.inbox],
            providers=providers,
            transports={p: settings.providers.get(p).transports for p in providers},
            outcomes=OUTCOMES,
        )
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
        if self.components is None:
            reasons.append("state file not open")
        if not self.workers.healthy:
            reasons.append("watchers not running")
        plans = self.components.plans if self.components is not None else {}
        reasons.extend(self.workers.state.errors.reasons(plans))
        return reasons

    async def _watch_state_file(self, store: Store) -> None:
        def lost(reason: str) -> None:
            self.state_lost = reason  # /readyz says so until the process is gone

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

    async def retention_passes(self) -> None:
        """A retention pass over every provider with retention set (``daemon.remote``)."""
        await self.current().remote.run_all()

    async def room_on(self, provider: str) -> None:
        """A retention pass asked for by a quota answer made room on ``provider``: close its
        breaker and let the files parked behind it go now (``daemon.remote.service``)."""
        current = self.current()
        await current.dispatcher.reset_breaker(provider)
        released = await RemoteLedger(current.store).release_parked(provider)
        logger.info("%s: room made on the account; %d parked file(s) go again", provider, released)
        self.workers.wake_at(self._clock())

    async def refresh_remote_usage(self) -> dict[str, tuple[int, int]]:
        """List each provider in use once; a failure is a warning, never a crash."""
        current = self.current()
        return await refresh_remote_usage(
            current.settings.providers_in_use(), current.clients, current.metrics
        )

    async def refresh_oldest_pending(self) -> None:
        """Set ``inboxd_oldest_pending_seconds`` from the ledger (the status loop's tick)."""
        current = self.current()
        current.metrics.oldest_pending(await current.store.oldest_waiting(), now=self._clock())

    async def close_vanished(self) -> int:
        """Close waiting rows whose file left its inbox (``daemon.runtime.vanished``)."""
        current = self.current()
        return await close_vanished(current.store, current.plans, busy=self.workers.intake.busy)

    async def prune_ledger(self) -> int:
        """Prune finished ledger rows past ``ledger_retention_days`` (the current settings)."""
        current = self.current()
        return await prune_ledger(
            current.store, days=current.settings.ledger_retention_days, now=self._clock()
        )

"""The composition root: builds the real collaborators from the settings and runs the daemon.

Start order: store (integrity check, migrations) → provider clients → recovery of rows a
crash left behind → HTTP (/metrics, /healthz, /readyz) → intake and watchers (first full scan
queued) → ``READY=1``. Stop (SIGTERM/SIGINT): ``STOPPING=1``, intake stops at once, uploads in
flight get ``shutdown_grace`` seconds, then are cancelled; the ledger holds whatever is left
and the next start resumes it. SIGHUP reloads the config (see ``daemon.reload``).
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import TextIO

import anyio
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from daemon.cli import package_version
from daemon.config_check import check
from daemon.http import serve_http
from daemon.intake import Intake
from daemon.logs import setup_logging
from daemon.metrics import Metrics
from daemon.notify import Notifier, watchdog_loop
from daemon.reload import ReloadPlan, plan_reload
from daemon.settings import Settings
from daemon.store import Store
from daemon.watcher import Candidate, WatchedInbox, Watcher
from daemon.wiring import build_clients, build_dispatcher, build_plans
from handlers.budget import ByteBudget
from handlers.ledger import PENDING
from handlers.pipeline import InboxPlan, Pipeline, Result
from providers.breaker import FORCED_OPEN
from providers.errors import ConfigError, ProviderError
from providers.types import UploadClient

__all__ = ["Daemon", "run_daemon", "unpark_forever", "with_emulator"]

logger = logging.getLogger(__name__)

REASONS = (
    "not_regular_file",
    "symlink",
    "empty",
    "too_large",
    "type_not_allowed",
    "unreadable",
    "name_invalid",
    "upload_rejected",
    "upload_failed",
    "quota_exhausted",
)
OUTCOMES = ("success", "retryable", "permanent", "auth_failed", "quota_exhausted", "ambiguous")
REMOTE_USAGE_INTERVAL = 600.0
STATUS_INTERVAL = 5.0

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
    return anyio.run(_main, settings, emulator, loader, backend="asyncio")


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


def _pointed(loader: Loader, urls: Mapping[str, str], keys: Mapping[str, str]) -> Loader:
    return lambda: with_emulator(loader(), urls, keys)


async def unpark_forever(store: Store) -> int:
    """Clear ``not_before`` of files parked until a breaker reset (forced open); how many."""
    rows = [
        row
        for row in await store.rows_in_state(PENDING)
        if row.not_before is not None and math.isinf(row.not_before)
    ]
    for row in rows:
        await store.transition(row.id, PENDING, not_before=None)
    return len(rows)


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
    ) -> None:
        """``observer`` is told each file's outcome (tests and benchmarks wait on it);
        ``loader`` reads the config again for ``reload()`` (None: reload is refused);
        ``log_stream`` is where log lines go (default stderr)."""
        self.settings = settings
        self.loader = loader
        self.log_stream = log_stream
        self.notifier = notifier or Notifier.from_environ()
        self.observer = observer
        self.registry = CollectorRegistry()
        self.http_port: int | None = None
        self.stopping = anyio.Event()
        self.ready = anyio.Event()
        self._park_wake = anyio.Event()
        self._park_until: float | None = None
        self.plans: dict[str, InboxPlan] = {}
        self.watcher: Watcher | None = None
        self.intake: Intake | None = None
        self.store: Store | None = None
        self._fallbacks_seen: set[tuple[str, str, str]] = set()
        # Reload bookkeeping: files in work per config generation, clients replaced by a
        # reload (closed once no file of their generation is still in work).
        self._generation = 0
        self._gen_busy: dict[int, int] = {}
        self._retired: list[tuple[int, UploadClient]] = []
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
            self.clients: dict[str, UploadClient] = dict(
                build_clients(settings, on_fallback=self._on_fallback)
            )
            stack.push_async_callback(self._close_clients)
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
            await self.pipeline.recover(self.plans)
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
            async with anyio.create_task_group() as work:
                intake_scope = await self._start_intake(work)
                self.notifier.ready()
                self.ready.set()
                root.start_soon(self._status_loop)
                root.start_soon(self._remote_usage_loop)
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
                    await self._drained.wait()
                if grace.cancelled_caught:
                    logger.warning(
                        "shutdown: %d upload(s) still running after %.0f s; cancelled, they "
                        "resume on the next start",
                        self._busy,
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
        self._busy = 0
        self._drained = anyio.Event()
        self._drained.set()
        scope = anyio.CancelScope()

        async def intake_tree(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            with scope:
                async with anyio.create_task_group() as tg:
                    self._intake_tasks = tg
                    await tg.start(intake.run)
                    await self._start_watcher()
                    tg.start_soon(self._park_loop)
                    task_status.started()

        # READY=1 waits for this: the intake runs and every watch is set up.
        await work.start(intake_tree)
        self._work = work
        self._add_workers()
        return scope

    def _add_workers(self) -> None:
        """Enough workers for every provider's concurrency (more after a reload raises it)."""
        assert self.intake is not None
        wanted = sum(self.settings.providers.get(p).concurrency for p in self.clients) + 2
        for _ in range(wanted - self._workers):
            self._work.start_soon(self._worker, self.intake.receive.clone())
        self._workers = max(wanted, self._workers)

    async def _start_watcher(self) -> None:
        """Start a watcher over the current plans, then stop the previous one (no gap)."""
        watcher = Watcher(
            [
                WatchedInbox(
                    name=p.name,
                    path=p.path,
                    recursive=self._recursive(p.name),
                    exclude=(p.done_dir, p.quarantine_dir),
                )
                for p in self.plans.values()
            ],
            rescan_interval=self.settings.rescan_interval,
        )
        scope: anyio.CancelScope = await self._intake_tasks.start(self._run_watcher, watcher)
        previous = self._watcher_scope
        self.watcher, self._watcher_scope = watcher, scope
        if previous is not None:
            previous.cancel()

    async def _run_watcher(
        self, watcher: Watcher, *, task_status: TaskStatus[anyio.CancelScope]
    ) -> None:
        assert self.intake is not None
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                await tg.start(watcher.run, self.intake.offer)
                task_status.started(scope)

    def _recursive(self, inbox: str) -> bool:
        return next(i.recursive for i in self.settings.inbox if i.name == inbox)

    # -- work --------------------------------------------------------------------------------

    async def _worker(self, receive: anyio.abc.ObjectReceiveStream[Candidate]) -> None:
        assert self.intake is not None
        async with receive:
            async for candidate in receive:
                if self.stopping.is_set():
                    return
                plan = self.plans.get(candidate.inbox)
                if plan is None:  # inbox removed by a reload
                    self.intake.done(candidate.key)
                    continue
                self._busy += 1
                self._drained = anyio.Event() if self._busy == 1 else self._drained
                generation = self._generation
                self._gen_busy[generation] = self._gen_busy.get(generation, 0) + 1
                try:
                    self.metrics.file_discovered(candidate.inbox)
                    result = await self.pipeline.process(plan, candidate.path, candidate.relpath)
                finally:
                    self._busy -= 1
                    if self._busy == 0:
                        self._drained.set()
                    self._gen_busy[generation] -= 1
                    if not self._gen_busy[generation]:
                        del self._gen_busy[generation]
                        self._close_idle_clients()
                    self.intake.done(candidate.key)
                if result.outcome == "changed":
                    # Its watch events came while it was in flight (ignored): settle it again.
                    self.intake.offer_nowait(candidate)
                if result.park_until is not None:
                    self._wake_at(result.park_until)
                if self.observer is not None:
                    self.observer(candidate, result)

    def _wake_at(self, until: float) -> None:
        if self._park_until is None or until < self._park_until:
            self._park_until = until
            self._park_wake.set()

    async def _park_loop(self) -> None:
        """Rescan when the earliest parked file may go again (its provider reopens)."""
        while True:
            await self._park_wake.wait()
            self._park_wake = anyio.Event()
            while self._park_until is not None:
                delay = self._park_until - time.time()
                with anyio.move_on_after(max(delay, 0)):
                    await self._park_wake.wait()
                    self._park_wake = anyio.Event()
                    continue
                self._park_until = None
                assert self.watcher is not None
                await self.watcher.rescan_now()

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
        """Why the daemon is not ready (empty when it is), for /readyz."""
        reasons = []
        if self.store is None:
            reasons.append("state file not open")
        if self.watcher is None or not self.watcher.healthy:
            reasons.append("watchers not running")
        if self.stopping.is_set():
            reasons.append("stopping")
        return reasons

    async def _status_loop(self) -> None:
        assert self.store is not None
        next_summary = anyio.current_time() + self.settings.log.summary_interval
        last = ""
        while True:
            counts = await self.store.counts_by_state()
            depth = self.intake.queue_depth if self.intake else 0
            self.metrics.queue_depth(depth)
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
                return await self._reload()
            finally:
                self.notifier.ready()

    async def _reload(self) -> bool:
        if self.loader is None:
            logger.error("reload refused: this daemon was started without a config to re-read")
            return False
        try:
            new = self.loader()
            problems = check(new).problems
        except ConfigError as exc:
            problems = list(exc.problems)
        if problems:
            for line in problems:
                logger.error("reload refused, keeping the running config: %s", line)
            return False
        plans = build_plans(new)
        try:
            for inbox in plans.values():
                inbox.done_dir.mkdir(parents=True, exist_ok=True)
                inbox.quarantine_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.error(
                "reload refused, keeping the running config: cannot create %s (%s); make it "
                "writable by the daemon's user",
                exc.filename,
                exc.strerror,
            )
            return False
        plan = plan_reload(self.settings, new)
        await self._apply(plan, new, plans)
        self.reloads += 1
        logger.info("config reloaded: %s", plan.summary())
        return True

    async def _apply(self, plan: ReloadPlan, new: Settings, plans: dict[str, InboxPlan]) -> None:
        assert self.store is not None
        self.settings = new
        if plan.logging_changed:
            self._setup_logging()
        for key in plan.restart_needed:
            logger.warning("reload: %s changed; it takes effect at the next restart", key)
        await self._apply_providers(plan, new)
        for name in plan.added_inboxes:
            self.metrics.add_inbox(name)
        self.plans.clear()
        self.plans.update(plans)
        if plan.restart_watcher and self.intake is not None:
            await self._start_watcher()
        if self.intake is not None:
            self._add_workers()
        forced = [
            provider
            for provider, record in (await self.store.all_breakers()).items()
            if record.state == FORCED_OPEN and provider in self.clients
        ]
        for provider in forced:
            await self.dispatcher.reset_breaker(provider)
        if forced and await unpark_forever(self.store):
            self._wake_at(time.time())  # files parked behind it go again now
        self._close_idle_clients()

    async def _apply_providers(self, plan: ReloadPlan, new: Settings) -> None:
        assert self.store is not None
        self._generation += 1
        fresh = build_clients(new, on_fallback=self._on_fallback)
        for name, client in fresh.items():
            if name in plan.new_clients:
                old = self.clients.get(name)
                self.clients[name] = client  # in place: the pipeline and dispatchers share it
                if old is not None:
                    self._retired.append((self._generation - 1, old))
            else:
                await client.aclose()
        # Clients of providers no longer used stay until shutdown: an upload in flight may
        # still retry on them.
        for name in new.providers_in_use():
            self.limits[name] = new.providers.get(name).effective_limits(name)
        if plan.rebuild_dispatcher:
            self.dispatcher = build_dispatcher(
                new, self.clients, self.limits, self.store, self.metrics
            )
            self.pipeline.uploader = self.dispatcher  # uploads in flight keep the old one

    def _close_idle_clients(self) -> None:
        """Close replaced clients once no file of their generation (or older) is in work."""
        oldest = min(self._gen_busy, default=math.inf)
        idle = [client for gen, client in self._retired if gen < oldest]
        self._retired = [(gen, client) for gen, client in self._retired if gen >= oldest]
        for client in idle:
            self._tasks.start_soon(self._close_client, client)

    @staticmethod
    async def _close_client(client: UploadClient) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await client.aclose()
            except Exception as exc:  # closing is best effort: the pool is dropped anyway
                logger.warning("closing a replaced %s client failed: %s", client.name, exc)

    async def _close_clients(self) -> None:
        retired, self._retired = self._retired, []
        for client in [*self.clients.values(), *(c for _, c in retired)]:
            await self._close_client(client)

    async def _remote_usage_loop(self) -> None:
        """At start and every 10 minutes: each provider's stored files and bytes (quota use)."""
        while True:
            await self.refresh_remote_usage()
            await anyio.sleep(REMOTE_USAGE_INTERVAL)

    async def refresh_remote_usage(self) -> dict[str, tuple[int, int]]:
        """List each provider in use once; a failure is a warning, never a crash."""
        usage: dict[str, tuple[int, int]] = {}
        for provider in self.settings.providers_in_use():
            client = self.clients.get(provider)
            if client is None:
                continue
            try:
                files = await client.list_files()
            except ProviderError as exc:
                logger.warning("%s: cannot list remote files for quota use: %s", provider, exc)
                continue
            usage[provider] = (len(files), sum(f.bytes for f in files))
            self.metrics.remote_usage(provider, *usage[provider])
        return usage

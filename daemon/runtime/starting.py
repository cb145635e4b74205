"""Start-up steps of ``daemon.runtime.daemon.Daemon`` before its components exist: the
done/quarantine folders (and this host's temp leftovers in them), and the state store, waited
for while its database does not answer.

A shared database (``state_url``) that does not answer at start is not a reason to exit (a
crash loop would only hammer it): ``open_store`` logs one line per attempt and tries again
with backoff (1 s doubling to 30 s), while /healthz answers 200 and /readyz 503 naming the
reason, until it answers or the daemon is stopped. ``StateHealth`` keeps that reason while the
daemon runs too: the store's ``on_error`` hook sets it (and counts
``inboxd_state_errors_total``), its ``on_ok`` clears it.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path

import anyio
from prometheus_client import CollectorRegistry

from daemon.config.settings import Settings
from daemon.ops.http import Readiness, serve_http
from daemon.state.store import Store
from handlers.leftovers import remove_temp_leftovers
from providers.client import ProviderClient
from providers.errors import StateUnavailable
from providers.types import UploadClient

__all__ = [
    "RETRY_CAP",
    "RETRY_FIRST",
    "StateHealth",
    "StoreOpener",
    "make_folders",
    "next_delay",
    "open_store",
    "prepare_clients",
    "state_target",
    "store_opener",
]

logger = logging.getLogger(__name__)

RETRY_FIRST = 1.0
RETRY_CAP = 30.0


class StateHealth:
    """Whether the state store answers: ``reason`` (for /readyz) while it does not.

    ``failed`` and ``answered`` are the store's ``on_error`` / ``on_ok`` hooks; ``count`` is
    told of each failure (``Metrics.state_error``).
    """

    def __init__(self, count: Callable[[], None]) -> None:
        self.reason: str | None = None
        self._count = count

    def failed(self, exc: BaseException) -> None:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self.reason = f"state: database unreachable: {first_line}"
        self._count()

    def answered(self) -> None:
        self.reason = None


StoreOpener = Callable[[StateHealth], AbstractAsyncContextManager[Store]]


def store_opener(settings: Settings) -> StoreOpener:
    """Opens the store ``settings`` name (``state_url``, else the file in ``state_dir``) as
    this host, its failures told to the ``StateHealth`` given."""

    def opener(health: StateHealth) -> AbstractAsyncContextManager[Store]:
        return Store.open(
            state_target(settings),
            host=settings.host_id,
            on_error=health.failed,
            on_ok=health.answered,
        )

    return opener


def state_target(settings: Settings) -> Path | str:
    """What the store of ``settings`` is: ``state_url`` when set, else the state file."""
    return settings.state_url if settings.state_url is not None else settings.state_file


def next_delay(delay: float, cap: float) -> float:
    """The wait after ``delay``: doubled, at most ``cap``."""
    return min(delay * 2, cap)


async def open_store(
    stack: AsyncExitStack,
    opener: StoreOpener,
    health: StateHealth,
    *,
    settings: Settings,
    readiness: Readiness,
    registry: CollectorRegistry,
    stopping: anyio.Event,
    on_http_port: Callable[[int], None],
    first: float = RETRY_FIRST,
    cap: float = RETRY_CAP,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> Store | None:
    """The store, entered into ``stack``; None when stopped (SIGTERM, ``stopping``) before its
    database answered.

    While it does not answer, /healthz and /readyz are served (``readiness``; the port goes to
    ``on_http_port``) and SIGTERM/SIGINT stop the wait.
    """
    try:
        return await stack.enter_async_context(opener(health))
    except StateUnavailable as exc:
        _failed(health, exc, attempt=1, delay=first)
    opened: list[Store] = []
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        if settings.metrics.enabled:
            port = await tg.start(serve_http, settings.metrics, registry, readiness)
            on_http_port(port)
        tg.start_soon(_stop_on_signal, stopping)

        async def until_stopped() -> None:
            await stopping.wait()
            tg.cancel_scope.cancel()

        async def retry() -> None:
            delay, attempt = first, 1
            try:
                while True:
                    await sleep(delay)
                    attempt += 1
                    delay = next_delay(delay, cap)
                    try:
                        opened.append(await stack.enter_async_context(opener(health)))
                        return
                    except StateUnavailable as exc:
                        _failed(health, exc, attempt=attempt, delay=delay)
            except Exception as exc:  # re-raised outside the group, as a start-up error
                errors.append(exc)
            finally:
                tg.cancel_scope.cancel()

        tg.start_soon(until_stopped)
        tg.start_soon(retry)
    if errors:
        raise errors[0]
    if opened:
        health.answered()
        logger.info("state store answers: %s", opened[0].describe())
        return opened[0]
    return None


def _failed(health: StateHealth, exc: StateUnavailable, *, attempt: int, delay: float) -> None:
    health.failed(exc)
    logger.error("%s (attempt %d; next in %g s)", exc, attempt, delay)


async def _stop_on_signal(stopping: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            logger.info("received %s while waiting for the state store, stopping", name)
            stopping.set()
            return


async def make_folders(folders: Sequence[Path], *, host: str, legacy: bool) -> None:
    """Create the done/quarantine ``folders``; remove ``host``'s temp leftovers in them
    (``legacy``: the unscoped ones of earlier versions too)."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    removed = await anyio.to_thread.run_sync(
        lambda: remove_temp_leftovers(folders, host=host, legacy=legacy)
    )
    if removed:
        logger.info(
            "removed %d temp file(s) left in done/quarantine folders by an interrupted write",
            removed,
        )


def prepare_clients(clients: Sequence[UploadClient]) -> None:
    """Import and build every provider's transports (blocking: run in a worker thread)."""
    for client in clients:
        if isinstance(client, ProviderClient):
            client.prepare()

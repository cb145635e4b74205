"""The operations HTTP listener: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` is answered by a handler on the daemon's own event loop, so a 200 proves the loop
runs. ``/readyz`` asks the injected ``readiness`` callable for reasons not to be ready (store
closed, a watcher down, ...): none → 200, some → 503 with them as JSON. ``/metrics`` serves
the injected registry in the format the scraper asks for (Prometheus text by default,
OpenMetrics when the ``Accept`` header asks for it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from daemon.config.settings import MetricsSettings
from providers.errors import ConfigError

__all__ = ["Readiness", "build_app", "serve_http"]

logger = logging.getLogger(__name__)

Readiness = Callable[[], list[str]]


def build_app(registry: CollectorRegistry, readiness: Readiness) -> web.Application:
    """The aiohttp application serving the three endpoints."""

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        reasons = readiness()
        body = json.dumps({"ready": not reasons, "reasons": reasons}) + "\n"
        return web.Response(
            text=body, status=503 if reasons else 200, content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve_http(
    settings: MetricsSettings,
    registry: CollectorRegistry,
    readiness: Readiness,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Bind ``settings.listen``, report the bound port via ``task_status``, serve until cancelled.

    Raises ConfigError when the address cannot be bound (in use, not local, no permission).
    """
    runner = web.AppRunner(
        build_app(registry, readiness), handle_signals=False, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"metrics.listen: cannot listen on {settings.listen} ({exc.strerror or exc}); "
                "pick a free local HOST:PORT, or set metrics.enabled = false"
            ) from exc
        port = int(runner.addresses[0][1])
        logger.info("metrics: serving /metrics, /healthz, /readyz on %s:%d", settings.host, port)
        task_status.started(port)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()

"""daemon.ops.http: /healthz, /readyz and /metrics over real loopback HTTP."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from daemon.config.settings import MetricsSettings
from daemon.ops.http import serve_http
from providers.errors import ConfigError


class Readiness:
    """A readiness source the test can flip: the reasons it returns are the ones set."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.calls = 0

    def __call__(self) -> list[str]:
        self.calls += 1
        return list(self.reasons)


@pytest.fixture
def readiness() -> Readiness:
    """A readiness source with no reasons (ready)."""
    return Readiness()


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry holding one known counter."""
    registry = CollectorRegistry()
    Counter("inboxd_test_things", "A test counter.", registry=registry).inc(3)
    return registry


@pytest.fixture
async def client(
    registry: CollectorRegistry, readiness: Readiness
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client pointed at serve_http on a free loopback port."""
    async with anyio.create_task_group() as tg:
        settings = MetricsSettings(listen="127.0.0.1:0")
        port = await tg.start(serve_http, settings, registry, readiness)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield http
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_healthz_answers_200_from_the_loop(client: httpx.AsyncClient) -> None:
    """/healthz answers 200 ``ok`` while the event loop runs."""
    response = await client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


@pytest.mark.anyio
async def test_readyz_is_200_with_no_reasons(
    client: httpx.AsyncClient, readiness: Readiness
) -> None:
    """/readyz answers 200 and an empty reason list when readiness has nothing to say."""
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == {"ready": True, "reasons": []}
    assert readiness.calls == 1


@pytest.mark.anyio
async def test_readyz_is_503_with_the_reasons_as_json(
    client: httpx.AsyncClient, readiness: Readiness
) -> None:
    """/readyz answers 503 with exactly the reasons readiness returns, asked on each request."""
    readiness.reasons = ["store not open", "watcher scans not running"]
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "reasons": ["store not open", "watcher scans not running"],
    }
    readiness.reasons = []
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.anyio
async def test_metrics_serves_the_injected_registry_as_prometheus_text(
    client: httpx.AsyncClient,
) -> None:
    """/metrics without an Accept header is the Prometheus text format of our registry."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "inboxd_test_things_total 3.0\n" in response.text
    assert "python_info" not in response.text  # the global registry is not served


@pytest.mark.anyio
async def test_metrics_speaks_openmetrics_when_asked(client: httpx.AsyncClient) -> None:
    """A scraper asking for OpenMetrics gets it, terminated by ``# EOF``."""
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    assert response.text.endswith("# EOF\n")
    assert "inboxd_test_things_total 3.0\n" in response.text


@pytest.mark.anyio
async def test_unknown_path_is_404(client: httpx.AsyncClient) -> None:
    """Only the three endpoints exist."""
    assert (await client.get("/")).status_code == 404


@pytest.mark.anyio
async def test_bind_failure_is_a_config_error_naming_the_key(
    registry: CollectorRegistry, readiness: Readiness
) -> None:
    """A port in use raises ConfigError naming metrics.listen, the address and the fix."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = MetricsSettings(listen=f"127.0.0.1:{port}")
        with pytest.raises(ConfigError) as info:
            await serve_http(settings, registry, readiness)
    (problem,) = info.value.problems
    assert problem.startswith(f"metrics.listen: cannot listen on 127.0.0.1:{port} (")
    assert problem.endswith("pick a free local HOST:PORT, or set metrics.enabled = false")


@pytest.mark.anyio
async def test_cancelling_closes_the_listener(
    registry: CollectorRegistry, readiness: Readiness
) -> None:
    """After cancellation the port is free again: the server closed cleanly."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            serve_http, MetricsSettings(listen="127.0.0.1:0"), registry, readiness
        )
        tg.cancel_scope.cancel()
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # raises EADDRINUSE if the listener were still open
        assert again.getsockname() == ("127.0.0.1", port)

"""System tools the tests drive for real (promtool, Prometheus, systemd-analyze).

A missing tool fails the test in CI (``$CI`` set: ``.ci/run`` installs them) and skips it,
with the package to install, elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

import anyio
import httpx
import pytest

__all__ = ["free_port", "missing_tool", "need_tool", "query_until", "run_prometheus"]


def need_tool(name: str, package: str = "prometheus") -> str:
    """The path of system tool ``name``; fail in CI when it is missing, skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        missing_tool(f"{name} not installed: apt-get install {package}")
    return path


def missing_tool(message: str) -> NoReturn:
    """Fail the test in CI (``.ci/run`` installs every tool), skip it elsewhere: ``message``."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def run_prometheus(tmp_path: Path, target: str) -> AsyncIterator[int]:
    """A real Prometheus on loopback scraping ``target`` (HOST:PORT) every second; its port."""
    binary = need_tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML: no YAML writer needed
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {"job_name": "inboxd", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with (tmp_path / "prometheus.log").open("wb") as log:
        async with await anyio.open_process(argv, stdout=log, stderr=log) as process:
            try:
                yield port
            finally:
                process.terminate()
                with anyio.move_on_after(10, shield=True):
                    await process.wait()
                if process.returncode is None:
                    process.kill()


async def query_until(port: int, promql: str) -> list[dict[str, object]]:
    """Poll Prometheus's query API until ``promql`` has a result (60 s at most)."""
    async with httpx.AsyncClient() as client:
        with anyio.fail_after(60):
            while True:
                try:
                    response = await client.get(
                        f"http://127.0.0.1:{port}/api/v1/query", params={"query": promql}
                    )
                except httpx.TransportError:
                    response = None  # not listening yet
                if response is not None and response.status_code == 200:
                    result: list[dict[str, object]] = response.json()["data"]["result"]
                    if result:
                        return result
                await anyio.sleep(0.2)  # poll interval of an external server, bounded above

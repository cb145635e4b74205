"""``[providers.<name>] rpm`` and ``concurrency`` reach one limiter per provider and its metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from daemon.config.settings import load_settings
from daemon.ops.metrics import Metrics
from daemon.runtime.wiring import build_clients
from providers.errors import ConfigError
from providers.limited import LimitedClient

ENV = {"MOONSHOT_API_KEY": "sk-test", "ZHIPUAI_API_KEY": "id.secret"}


def _config(tmp_path: Path, kimi: str, glm: str = "") -> Path:
    inbox = tmp_path / "in"
    inbox.mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(
        f"[providers.kimi]\n{kimi}\n[providers.glm]\n{glm}\n"
        f'[[inbox]]\nname = "a"\npath = "{inbox}"\nproviders = ["kimi", "glm"]\n'
    )
    return path


def test_rpm_is_optional_and_read_per_provider(tmp_path: Path) -> None:
    """``rpm`` defaults to None (learned) and is read from each provider's section."""
    settings = load_settings(_config(tmp_path, "rpm = 120\nconcurrency = 4"), environ=ENV)
    assert settings.providers.kimi.rpm == 120
    assert settings.providers.glm.rpm is None


@pytest.mark.parametrize("value", ["0", "-5", '"fast"'])
def test_bad_rpm_is_refused(tmp_path: Path, value: str) -> None:
    """An rpm that is not a positive number refuses to start, naming the key."""
    with pytest.raises(ConfigError, match=r"providers\.kimi\.rpm"):
        load_settings(_config(tmp_path, f"rpm = {value}"), environ=ENV)


@pytest.mark.anyio
async def test_build_clients_starts_each_limiter_at_the_configured_ceilings(
    tmp_path: Path,
) -> None:
    """Each provider gets its own LimitedClient starting at its rpm and concurrency, and the
    gauges show them from the start (no rpm → 0)."""
    settings = load_settings(
        _config(tmp_path, "rpm = 120\nconcurrency = 4", "concurrency = 2"), environ=ENV
    )
    registry = CollectorRegistry()
    metrics = Metrics(
        registry,
        version="0",
        inboxes=["a"],
        providers=["kimi", "glm"],
        transports={},
        reasons=[],
        outcomes=[],
    )
    clients = build_clients(settings, events=metrics)
    try:
        kimi, glm = clients["kimi"], clients["glm"]
        assert isinstance(kimi, LimitedClient)
        assert (kimi.pacer.rpm, kimi.pacer.concurrency) == (120, 4)
        assert (glm.pacer.rpm, glm.pacer.concurrency) == (None, 2)
        assert kimi.pacer is not glm.pacer
        sample = registry.get_sample_value
        assert sample("inboxd_rate_limit_rpm", {"provider": "kimi"}) == 120
        assert sample("inboxd_concurrency_limit", {"provider": "kimi"}) == 4
        assert sample("inboxd_rate_limit_rpm", {"provider": "glm"}) == 0
        assert sample("inboxd_concurrency_limit", {"provider": "glm"}) == 2
    finally:
        for client in clients.values():
            await client.aclose()

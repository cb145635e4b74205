"""The composition root: builds the real collaborators and runs the daemon until a signal."""

from __future__ import annotations

import logging
import signal
from contextlib import AsyncExitStack

import anyio
from pydantic import SecretStr

from daemon.config_check import check
from daemon.settings import Settings
from providers.errors import ConfigError

__all__ = ["run_daemon", "with_emulator"]

logger = logging.getLogger(__name__)


def with_emulator(settings: Settings, urls: dict[str, str], keys: dict[str, str]) -> Settings:
    """``settings`` with every provider pointed at the emulator's URL and key."""
    updates = {
        name: settings.providers.get(name).model_copy(
            update={"base_url": urls[name], "api_key": SecretStr(keys[name])}
        )
        for name in ("kimi", "glm")
    }
    providers = settings.providers.model_copy(update=updates)
    return settings.model_copy(update={"providers": providers})


def run_daemon(settings: Settings, *, emulator: bool = False) -> int:
    """Run until SIGTERM or SIGINT; returns the exit code. Raises ConfigError before starting."""
    logging.basicConfig(
        level=settings.log.level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    return anyio.run(_main, settings, emulator, backend="asyncio")


async def _main(settings: Settings, emulator: bool) -> int:
    async with AsyncExitStack() as stack:
        if emulator:
            from providers.emulator import Emulator

            emu = await stack.enter_async_context(Emulator())
            settings = with_emulator(
                settings,
                {p: emu.base_url(p) for p in ("kimi", "glm")},
                {p: emu.key(p) for p in ("kimi", "glm")},
            )
            print(f"inboxd: emulator on {emu.base_url('kimi')} and {emu.base_url('glm')}")
        report = check(settings)
        if report.problems:
            raise ConfigError(report.problems)
        for line in report.warnings:
            logger.warning("%s", line)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            logger.info("inboxd running: %d inbox(es)", len(settings.inbox))
            async for signum in signals:
                logger.info("received %s, stopping", signal.Signals(signum).name)
                break
    return 0

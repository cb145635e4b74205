"""``inboxd run``: the daemon in its own event loop, optionally against the bundled emulator."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack

import anyio
from pydantic import SecretStr

from daemon.config.settings import Settings
from daemon.runtime.daemon import Daemon
from daemon.runtime.failures import daemon_fault

__all__ = ["run_daemon", "with_emulator"]

Loader = Callable[[], Settings]
ConfigureLogging = Callable[[Settings], None]


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


def run_daemon(
    settings: Settings,
    *,
    emulator: bool = False,
    loader: Loader | None = None,
    configure_logging: ConfigureLogging | None = None,
) -> int:
    """Run until SIGTERM or SIGINT; returns the exit code. Raises ConfigError before starting.

    ``loader`` loads the config again (the same file and CLI overrides) on SIGHUP;
    ``configure_logging`` sets logging up from a config (at start, and on a reload that
    changes ``log``).
    """
    try:
        return anyio.run(_main, settings, emulator, loader, configure_logging, backend="asyncio")
    except BaseExceptionGroup as group:
        fault = daemon_fault(group)
        if fault is None:
            raise
        raise fault from None  # the CLI prints it and exits non-zero


async def _main(
    settings: Settings,
    emulator: bool,
    loader: Loader | None,
    configure_logging: ConfigureLogging | None,
) -> int:
    async with AsyncExitStack() as stack:
        if emulator:
            from providers.emulator.server import Emulator

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
        if configure_logging is not None:
            configure_logging(settings)
        daemon = Daemon(settings, loader=loader, configure_logging=configure_logging)
        await daemon.run()
    return 0


def _pointed(loader: Loader, urls: Mapping[str, str], keys: Mapping[str, str]) -> Loader:
    return lambda: with_emulator(loader(), urls, keys)

"""``inboxd demo``: the provider emulator and a daemon on a temporary workspace, three files
dropped into its inbox (valid, oversize, forbidden type), each one's outcome printed.

The one command that runs the daemon besides ``inboxd run``; the CLI imports it only for
``demo``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import anyio

from daemon.config.settings import InboxSettings, LogSettings, MetricsSettings, Settings
from daemon.ops.logs import logging_to
from daemon.ops.notify import Notifier
from daemon.runtime.daemon import Daemon
from daemon.runtime.main import with_emulator
from handlers.pipeline import Result
from providers.emulator.server import Emulator
from providers.errors import InboxdError
from providers.limits import MIB

__all__ = ["DEMO_FILES", "run_demo"]

# name → (size, content or None for a sparse file): valid, oversize (sparse), forbidden type.
DEMO_FILES: dict[str, tuple[int, bytes | None]] = {
    "hello.txt": (0, b"Hello from the inboxd demo.\n"),
    "huge.pdf": (101 * MIB, None),
    "setup.exe": (0, b"MZ not really a program\n"),
}


def _make_demo_files(inbox: Path) -> None:
    for name, (size, content) in DEMO_FILES.items():
        tmp = inbox.parent / name
        if content is None:
            with tmp.open("wb") as f:
                os.truncate(f.fileno(), size)  # sparse: no disk space used
        else:
            tmp.write_bytes(content)
        tmp.rename(inbox / name)  # appears whole in the inbox


def _describe(name: str, result: Result) -> str:
    row = result.row
    if result.outcome == "uploaded" and row is not None:
        return f"{name}: uploaded to {row.provider} as file id {row.file_id} ({row.size} bytes)"
    if result.outcome == "quarantined" and row is not None:
        return f"{name}: quarantined, reason {row.reason}: {row.detail}"
    return f"{name}: {result.outcome}"


async def run_demo(*, out: TextIO, wait: float = 60.0) -> int:
    """``inboxd demo``: emulator + daemon on a temporary workspace, three files, outcomes; 0."""
    with tempfile.TemporaryDirectory(prefix="inboxd-demo-") as tmp:
        root = Path(tmp)
        inbox = root / "inbox"
        inbox.mkdir()
        results: dict[str, Result] = {}
        all_in = anyio.Event()
        async with Emulator() as emu:
            settings = with_emulator(
                Settings(
                    state_dir=root / "state",
                    settle_seconds=0.2,
                    metrics=MetricsSettings(enabled=False),
                    log=LogSettings(level="error"),
                    inbox=[InboxSettings(name="demo", path=inbox, providers=["kimi", "glm"])],
                ),
                {p: emu.base_url(p) for p in ("kimi", "glm")},
                {p: emu.key(p) for p in ("kimi", "glm")},
            )

            def observe(candidate: Any, result: Result) -> None:
                if result.outcome in ("uploaded", "quarantined", "duplicate"):
                    results[candidate.relpath] = result
                if set(results) == set(DEMO_FILES):
                    all_in.set()

            logging_to(sys.stderr)(settings)  # errors only (the demo's log level)
            daemon = Daemon(settings, notifier=Notifier(None), observer=observe)
            out.write(f"demo workspace {root}; provider emulator on {emu.base_url('kimi')}\n")
            async with anyio.create_task_group() as tg:
                await tg.start(daemon.run)
                _make_demo_files(inbox)
                out.write("dropped: " + ", ".join(DEMO_FILES) + "\n")
                with anyio.move_on_after(wait) as waited:
                    await all_in.wait()
                daemon.stop()
            for name in DEMO_FILES:
                out.write(
                    _describe(name, results[name]) + "\n"
                    if name in results
                    else f"{name}: no outcome within {wait:.0f} s\n"
                )
        if waited.cancelled_caught:
            raise InboxdError(f"demo: not every file had an outcome within {wait:.0f} s")
    return 0

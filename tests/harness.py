"""In-process end-to-end harness: a real Emulator, a real Daemon on real folders, outcomes awaited.

``running(tmp_path, ...)`` starts the emulator and the daemon (state in tmp_path, metrics off,
tiny settle and retry knobs) and yields a ``Run``: drop files into ``run.inbox(name)``, then
``await run.wait_for(n)`` collects the next ``n`` outcomes the daemon's observer reports.
``started(daemon)`` runs a daemon built by the test (``await tg.start(daemon.run)``: ready
when the block starts, stopped gracefully when it ends); ``write_config``, ``loader_for``,
``Outcomes`` and ``drop`` build such a daemon from a real config file.
Every wait is bounded with ``anyio.fail_after``; nothing sleeps on real time.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import anyio
from anyio.abc import Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from daemon.config.settings import InboxSettings, ProviderSettings, Settings, load_settings
from daemon.ops.logs import logging_to
from daemon.ops.notify import Notifier
from daemon.runtime.daemon import Daemon
from daemon.runtime.main import with_emulator
from daemon.runtime.watcher import Candidate
from daemon.state.store import Store
from handlers.ledger import LedgerRow
from handlers.pipeline import Result, Uploader
from providers.emulator.server import Emulator
from providers.emulator.state import StoredFile
from providers.limits import ProviderLimits
from providers.types import RemoteFile, UploadResult

__all__ = [
    "FAST_BREAKER",
    "FAST_RETRY",
    "FINAL",
    "Outcomes",
    "RewriteDuringSend",
    "Run",
    "Seen",
    "drop",
    "ledger_rows",
    "loader_for",
    "logging_daemon",
    "provider_section",
    "read_sidecar",
    "running",
    "sha",
    "started",
    "until_in_flight",
    "write_config",
]

_ROOT = Path(__file__).resolve().parent.parent  # the checkout: `python -m daemon` runs from it
FINAL = frozenset({"uploaded", "quarantined", "duplicate"})

FAST_RETRY: dict[str, Any] = {
    "base": 0.001,
    "cap": 0.01,
    "retry_after_cap": 0.01,
    "deadline": 60.0,
    "attempts": 3,
}
# Breakers that never open during a test (a fault burst must not park files).
FAST_BREAKER: dict[str, Any] = {
    "consecutive_failures": 10_000,
    "min_calls": 10_000,
    "open_base": 0.01,
    "open_max": 0.01,
}


def sha(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def provider_section(name: str, **changes: Any) -> ProviderSettings:
    """The provider's default section with fast retry/breaker knobs and ``changes`` applied."""
    base = Settings().providers.get(name)
    retry = base.retry.model_copy(update=FAST_RETRY | changes.pop("retry", {}))
    breaker = base.breaker.model_copy(update=FAST_BREAKER | changes.pop("breaker", {}))
    return base.model_copy(update={"retry": retry, "breaker": breaker, **changes})


def read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON sidecar at ``path``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@dataclass(frozen=True)
class Seen:
    """One outcome the daemon reported."""

    inbox: str
    relpath: str
    result: Result


@dataclass
class Run:
    """A running emulator + daemon; ``outcomes`` receives every processed file's result."""

    emu: Emulator
    daemon: Daemon
    settings: Settings
    root: Path
    outcomes: MemoryObjectReceiveStream[Seen]
    seen: list[Seen] = field(default_factory=list)

    def inbox(self, name: str = "in") -> Path:
        return self.root / name

    def done(self, name: str = "in") -> Path:
        return self.root / f"{name}.done"

    def quarantine(self, name: str = "in") -> Path:
        return self.root / f"{name}.quarantine"

    async def wait_for(
        self, n: int, *, limit: float = 20.0, final_only: bool = False
    ) -> list[Seen]:
        """The next ``n`` outcomes (only final ones — not parked/changed/busy/failed — if asked)."""
        got: list[Seen] = []
        with anyio.fail_after(limit):
            while len(got) < n:
                item = await self.outcomes.receive()
                self.seen.append(item)
                if final_only and item.result.outcome in {"changed", "busy", "parked", "failed"}:
                    continue
                got.append(item)
        return got

    async def wait_until(self, relpath: str, outcome: str, *, limit: float = 20.0) -> Seen:
        """Outcomes until ``relpath`` reports ``outcome``; returns that one."""
        with anyio.fail_after(limit):
            while True:
                item = await self.outcomes.receive()
                self.seen.append(item)
                if item.relpath == relpath and item.result.outcome == outcome:
                    return item

    def remote_by_sha(self) -> dict[str, list[StoredFile]]:
        """The emulator's ground truth grouped by content sha256."""
        out: dict[str, list[StoredFile]] = {}
        for f in self.emu.files():
            out.setdefault(f.sha256, []).append(f)
        return out

    async def rows(self) -> list[LedgerRow]:
        """Every ledger row, read through a second connection to the state file."""
        store = self.daemon.current().store
        rows: list[LedgerRow] = []
        for state in ("pending", "uploading", "uploaded", "done", "quarantined", "requeued"):
            rows += await store.rows_in_state(state)
        return sorted(rows, key=lambda r: r.id)


class RewriteDuringSend:
    """The dispatcher, but the file is rewritten in place right after the first intent."""

    def __init__(self, inner: Uploader, path: Path, new: bytes) -> None:
        self.inner = inner
        self.path = path
        self.new = new
        self.rewrites = 0

    async def upload(
        self,
        *,
        preference: Sequence[str],
        purposes: Mapping[str, str],
        filename: str,
        size: int,
        content_type: str,
        open_file: Callable[[], BinaryIO],
        before_attempt: Callable[[str, str], Awaitable[None]],
        reconcile: Callable[[str, str], Awaitable[RemoteFile | None]],
        first_tried: float | None = None,
        attempts: int = 0,
    ) -> UploadResult:
        async def intent_then_rewrite(provider: str, purpose: str) -> None:
            await before_attempt(provider, purpose)
            if self.rewrites == 0:
                self.rewrites += 1
                with self.path.open("r+b") as f:  # same inode: only fstat can tell
                    f.write(self.new)
                    f.truncate()

        return await self.inner.upload(
            preference=preference,
            purposes=purposes,
            filename=filename,
            size=size,
            content_type=content_type,
            open_file=open_file,
            before_attempt=intent_then_rewrite,
            reconcile=reconcile,
            first_tried=first_tried,
            attempts=attempts,
        )


def _settings(
    root: Path,
    inboxes: Sequence[Mapping[str, Any]],
    providers: Mapping[str, ProviderSettings],
    extra: Mapping[str, Any],
) -> Settings:
    boxes = []
    for given in inboxes:
        spec = dict(given)
        name = spec.setdefault("name", "in")
        spec.setdefault("path", root / name)
        spec.setdefault("providers", ["kimi"])
        Path(spec["path"]).mkdir(parents=True, exist_ok=True)
        boxes.append(InboxSettings(**spec))
    sections = {name: providers.get(name) or provider_section(name) for name in ("kimi", "glm")}
    base: dict[str, Any] = {
        "state_dir": root / "state",
        "settle_seconds": 0.05,
        "rescan_interval": 3600.0,
        "shutdown_grace": 2.0,
        "metrics": {"enabled": False},
    }
    return Settings(**(base | dict(extra)), inbox=boxes, providers=sections)


@asynccontextmanager
async def running(
    root: Path,
    *,
    inboxes: Sequence[Mapping[str, Any]] = ({"name": "in"},),
    providers: Mapping[str, ProviderSettings] | None = None,
    faults: str | None = None,
    limits: Mapping[str, ProviderLimits] | None = None,
    seed: int = 0,
    emulator: Emulator | None = None,
    daemon_options: Mapping[str, Any] | None = None,
    log_stream: TextIO | None = None,
    **extra: Any,
) -> AsyncIterator[Run]:
    """Emulator + Daemon running on ``root``; stopped (gracefully) on exit.

    ``emulator``: a running one to use (it outlives this daemon) instead of a fresh one;
    ``daemon_options``: more keyword arguments for ``Daemon`` (injected fakes);
    ``log_stream``: log there, as ``inboxd run`` logs to stderr (else logging is untouched).
    """
    (root / "state").mkdir(parents=True, exist_ok=True)
    settings = _settings(root, inboxes, providers or {}, extra)
    send: MemoryObjectSendStream[Seen]
    send, receive = anyio.create_memory_object_stream[Seen](100_000)

    def observer(candidate: Candidate, result: Result) -> None:
        send.send_nowait(Seen(candidate.inbox, candidate.relpath, result))

    async with AsyncExitStack() as stack:
        emu = (
            emulator
            if emulator is not None
            else await stack.enter_async_context(Emulator(faults=faults, limits=limits, seed=seed))
        )
        settings = with_emulator(
            settings,
            {p: emu.base_url(p) for p in ("kimi", "glm")},
            {p: emu.key(p) for p in ("kimi", "glm")},
        )
        options = dict(daemon_options or {})
        if log_stream is not None:
            options["configure_logging"] = configure = logging_to(log_stream)
            configure(settings)
        daemon = Daemon(settings, notifier=Notifier(None), observer=observer, **options)
        async with started(daemon):
            yield Run(emu, daemon, settings, root, receive)
        send.close()
        receive.close()


@asynccontextmanager
async def started(daemon: Daemon) -> AsyncIterator[Daemon]:
    """``daemon`` running (and ready) until the block ends, then stopped gracefully."""
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(30):
            await tg.start(daemon.run)
        try:
            yield daemon
        finally:
            daemon.stop()


def write_config(
    path: Path,
    root: Path,
    inboxes: Sequence[tuple[str, Sequence[str]]],
    *,
    extra: str = "",
) -> None:
    """A TOML config: one ``[[inbox]]`` per (name, providers), folders under ``root``."""
    lines = [
        f'state_dir = "{root / "state"}"',
        "settle_seconds = 0.05",
        "shutdown_grace = 30",
        extra,
        "[metrics]",
        'listen = "127.0.0.1:0"',
    ]
    for name, providers in inboxes:
        (root / name).mkdir(parents=True, exist_ok=True)
        lines += [
            "[[inbox]]",
            f'name = "{name}"',
            f'path = "{root / name}"',
            "providers = [" + ", ".join(f'"{p}"' for p in providers) + "]",
        ]
    path.write_text("\n".join(lines) + "\n")


def loader_for(config: Path, emu: Emulator) -> Callable[[], Settings]:
    """Load ``config`` pointed at ``emu`` (what ``run --emulator`` does on every reload)."""
    urls = {p: emu.base_url(p) for p in ("kimi", "glm")}
    keys = {p: emu.key(p) for p in ("kimi", "glm")}
    return lambda: with_emulator(load_settings(config), urls, keys)


class Outcomes:
    """The daemon's observer: every result, and an event per (inbox, relpath, outcome kind)."""

    def __init__(self) -> None:
        self.results: list[tuple[str, str, Result]] = []
        self._events: dict[tuple[str, str, bool], anyio.Event] = {}

    def _event(self, inbox: str, relpath: str, final: bool) -> anyio.Event:
        return self._events.setdefault((inbox, relpath, final), anyio.Event())

    def __call__(self, candidate: Candidate, result: Result) -> None:
        self.results.append((candidate.inbox, candidate.relpath, result))
        self._event(candidate.inbox, candidate.relpath, result.outcome in FINAL).set()

    async def wait(self, inbox: str, relpath: str, *, final: bool = True) -> Result:
        """The first final (or, ``final=False``, non-final) result for the file."""
        with anyio.fail_after(30):
            await self._event(inbox, relpath, final).wait()
        return next(
            r
            for i, p, r in self.results
            if (i, p) == (inbox, relpath) and (r.outcome in FINAL) == final
        )


def drop(folder: Path, name: str, data: bytes) -> Path:
    """Write a file beside ``folder`` and rename it in, so it appears whole."""
    tmp = folder.parent / f".{name}.tmp"
    tmp.write_bytes(data)
    return tmp.rename(folder / name)


async def ledger_rows(state_file: Path) -> list[LedgerRow]:
    """Every ledger row of a (stopped daemon's) state file."""
    async with Store.open(state_file) as store:
        rows: list[LedgerRow] = []
        for state in ("pending", "uploading", "uploaded", "done", "quarantined", "requeued"):
            rows += await store.rows_in_state(state)
    return sorted(rows, key=lambda r: r.id)


async def until_in_flight(daemon: Daemon) -> None:
    """Return once a file's upload intent is committed (the emulator then holds the upload)."""
    store = daemon.current().store
    with anyio.fail_after(30):
        while not await store.rows_in_state("uploading"):
            await anyio.wait_all_tasks_blocked()


def logging_daemon(loader: Callable[[], Settings], outcomes: Outcomes, stream: TextIO) -> Daemon:
    """A daemon on ``loader()``'s config that logs to ``stream`` as ``inboxd run`` logs to
    stderr (set up now, and again by a reload that changes ``[log]``)."""
    settings, configure = loader(), logging_to(stream)
    configure(settings)
    return Daemon(
        settings,
        notifier=Notifier(None),
        observer=outcomes,
        loader=loader,
        configure_logging=configure,
    )


async def start_inboxd(
    cfg: Path, env: dict[str, str], sock: socket.socket, log: Path, procs: list[Process]
) -> Process:
    """Start a real ``inboxd run -c cfg`` (added to ``procs``, output appended to ``log``) and
    return once it has sent READY=1 on ``sock`` (its ``NOTIFY_SOCKET``); fail at once if it
    exits before that."""
    with log.open("ab") as err:
        proc = await anyio.open_process(
            [sys.executable, "-m", "daemon", "run", "-c", str(cfg)],
            env=env,
            cwd=_ROOT,
            stdout=err,
            stderr=err,
        )
    procs.append(proc)
    exited: int | None = None

    async def ready(scope: anyio.CancelScope) -> None:
        while True:
            await anyio.wait_readable(sock)
            if b"READY=1" in sock.recv(4096).split(b"\n"):
                scope.cancel()
                return

    async def exits(scope: anyio.CancelScope) -> None:
        nonlocal exited
        exited = await proc.wait()
        scope.cancel()

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ready, tg.cancel_scope)
            tg.start_soon(exits, tg.cancel_scope)
    if exited is not None:  # a config error, a crash at start: say so now, not in 120 s
        raise AssertionError(f"inboxd run -c {cfg} exited with {exited} before READY=1; see {log}")
    return proc

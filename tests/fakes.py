"""Hand-written fakes shared by the tests: one of each, satisfying the real thing's Protocol.

- ``FakeClock``: a wall or monotonic clock that moves only when told or when its ``sleep`` is
  awaited (it records every delay).
- ``FakeClient``: an ``UploadClient`` replaying a script of results and errors.
- ``FakeBreakerStore``: an in-memory ``BreakerStore`` (``tests/contracts/test_breaker_claim.py``
  proves its claim agrees with the SQLite store's).
- ``ResilienceLog``: ``providers.events.ResilienceEvents`` that record every call.
- ``PipelineEvents``: the pipeline's events that record quarantine reasons and stored uploads.
- ``NotifySocket``: a bound unix datagram socket standing in for systemd's ``NOTIFY_SOCKET``.
- ``Outcomes``: the daemon's observer, with an event per file and outcome kind to wait on.
- ``LogEvent``: an event set when a logger emits a given line (for what only a log tells).
- ``missing``: an SDK importer for which one module is not installed; ``Fallbacks``: a
  ``ProviderClient``'s fallback observer.

Nothing here sleeps on real time; every wait is bounded with ``anyio.fail_after``.
"""

from __future__ import annotations

import importlib
import io
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

import anyio
import anyio.lowlevel

from providers.breaker import HALF_OPEN, probe_due
from providers.errors import ProviderError
from providers.limited import LimitedClient
from providers.types import BreakerRecord, RemoteFile, UploadResult

__all__ = [
    "OK",
    "FakeBreakerStore",
    "FakeClient",
    "FakeClock",
    "Fallbacks",
    "Importer",
    "LogEvent",
    "NotifySocket",
    "PipelineEvents",
    "ResilienceLog",
    "Step",
    "missing",
]

# -- time ------------------------------------------------------------------------------------


@dataclass
class FakeClock:
    """A clock that moves only when ``sleep`` is awaited or a test sets ``now``.

    ``sleep`` records each delay in ``slept``, moves the clock by it and yields once (as a real
    sleep would), so a task sleeping on it never starves the others.
    """

    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.now += delay
        await anyio.lowlevel.checkpoint()


# -- provider clients and the breaker store --------------------------------------------------

OK = "ok"
Step = str | ProviderError


@dataclass
class FakeClient:
    """An UploadClient that replays a script of results and errors, one per upload call.

    ``gate``: when set, every upload waits on it (after setting ``entered``).
    """

    name: str
    script: list[Step] = field(default_factory=list)
    calls: list[tuple[str, str, bytes]] = field(default_factory=list)
    gate: anyio.Event | None = None
    entered: anyio.Event = field(default_factory=anyio.Event)
    deleted: list[str] = field(default_factory=list)
    created_at: float = 1_000_000.0

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult:
        self.calls.append((filename, purpose, fileobj.read()))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        step = self.script.pop(0) if self.script else OK
        if isinstance(step, ProviderError):
            raise step
        remote = RemoteFile(
            self.name, f"{self.name}-id", filename, size, self.created_at, "file-extract"
        )
        return UploadResult(remote, transport="http")

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        return []

    async def delete(self, file_id: str) -> None:
        self.deleted.append(file_id)

    async def aclose(self) -> None:
        return None


class FakeBreakerStore:
    """An in-memory BreakerStore; its claim follows ``breaker.CLAIM_RULE``, as the SQLite one's."""

    def __init__(self, records: dict[str, BreakerRecord] | None = None) -> None:
        self.records = dict(records or {})
        self.saves: list[tuple[str, BreakerRecord]] = []
        self.claims: list[tuple[str, bool]] = []

    async def load_breaker(self, provider: str) -> BreakerRecord | None:
        return self.records.get(provider)

    async def save_breaker(self, provider: str, record: BreakerRecord) -> None:
        self.records[provider] = record
        self.saves.append((provider, record))

    async def claim_probe(self, provider: str, *, now: float, lease_until: float) -> bool:
        rec = self.records.get(provider)
        ok = rec is not None and probe_due(rec, now=now)
        if rec is not None and ok:
            self.records[provider] = replace(rec, state=HALF_OPEN, probe_until=lease_until)
        self.claims.append((provider, ok))
        return ok


Importer = Callable[[str], ModuleType]


def missing(module: str) -> Importer:
    """An importer for which ``module`` is not installed."""

    def importer(name: str) -> ModuleType:
        if name == module:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return importlib.import_module(name)

    return importer


class Fallbacks:
    """Records every ``on_fallback`` call of a ``ProviderClient``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []

    def __call__(self, provider: str, source: str, target: str, reason: str) -> None:
        self.calls.append((provider, source, target, reason))

    def hops(self) -> list[tuple[str, str, str]]:
        """(provider, from, to) of each fallback."""
        return [c[:3] for c in self.calls]


# -- events ----------------------------------------------------------------------------------


@dataclass
class ResilienceLog:
    """``ResilienceEvents`` that record every instrumentation hook call."""

    log: list[tuple[str, ...]] = field(default_factory=list)

    def retry(self, provider: str, reason: str) -> None:
        self.log.append(("retry", provider, reason))

    def breaker_transition(self, provider: str, to_state: str) -> None:
        self.log.append(("transition", provider, to_state))

    def breaker_state(self, provider: str, state: str) -> None:
        self.log.append(("state", provider, state))

    def upload_outcome(self, provider: str, transport: str, outcome: str) -> None:
        self.log.append(("outcome", provider, transport, outcome))

    def give_up(self, provider: str, reason: str) -> None:
        self.log.append(("give_up", provider, reason))

    def of(self, kind: str) -> list[tuple[str, ...]]:
        return [entry for entry in self.log if entry[0] == kind]


class PipelineEvents:
    """The pipeline's events, remembering quarantine reasons and stored uploads.

    ``forbid_quarantine``: a quarantine fails the test at once (it must never happen there).
    """

    def __init__(self, *, forbid_quarantine: bool = False) -> None:
        self.forbid_quarantine = forbid_quarantine
        self.reasons: list[str] = []
        self.stored: list[str] = []
        self.extractions: list[tuple[str, str]] = []

    def quarantined(self, reason: str) -> None:
        if self.forbid_quarantine:
            raise AssertionError(f"quarantined: {reason}")
        self.reasons.append(reason)

    def duplicate(self) -> None: ...

    def upload_stored(self, provider: str, nbytes: int, seconds: float) -> None:
        self.stored.append(provider)

    def inflight_bytes(self, n: int) -> None: ...

    def extraction(self, provider: str, outcome: str) -> None:
        self.extractions.append((provider, outcome))


# -- the daemon's surroundings ---------------------------------------------------------------


class NotifySocket:
    """A bound unix datagram socket standing in for systemd's ``NOTIFY_SOCKET``."""

    def __init__(self, path: Path, *, limit: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.limit = limit

    async def next(self) -> str:
        """The next datagram (waits until the socket is readable, at most ``limit`` s)."""
        with anyio.fail_after(self.limit):
            while True:
                try:
                    return self.sock.recv(4096, socket.MSG_DONTWAIT).decode()
                except BlockingIOError:
                    await anyio.wait_readable(self.sock)

    async def until(self, prefix: str) -> list[str]:
        """Every datagram up to and including the first that starts with ``prefix``."""
        seen = [await self.next()]
        while not seen[-1].startswith(prefix):
            seen.append(await self.next())
        return seen

    def close(self) -> None:
        self.sock.close()


class LogEvent(logging.Handler):
    """Set ``seen`` when ``logger`` emits a record whose message starts with ``prefix``.

    Use ``with LogEvent.on(logger, prefix) as event: ... await event.seen.wait()``; records are
    emitted in the event loop's thread by the async code that logs them.
    """

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.DEBUG)
        self.prefix = prefix
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.prefix):
            self.seen.set()

    @classmethod
    @contextmanager
    def on(cls, logger: str, prefix: str) -> Iterator[LogEvent]:
        """The handler attached to ``logger`` for the block."""
        handler = cls(prefix)
        target = logging.getLogger(logger)
        level = target.level
        target.setLevel(logging.DEBUG)  # the daemon does not set levels: ``inboxd run`` does
        target.addHandler(handler)
        try:
            yield handler
        finally:
            target.removeHandler(handler)
            target.setLevel(level)


# -- a scripted provider behind the limiter (providers.limited) ------------------------------


class FakeProvider:
    """Answers uploads from a script (an exception or success); records when each arrived."""

    name = "kimi"

    def __init__(self, clock: FakeClock, script: list[Exception | None] | None = None) -> None:
        self.clock = clock
        self.script = list(script or [])
        self.times: list[float] = []
        self.in_flight = 0
        self.most = 0
        self.hold: anyio.Event | None = None

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult:
        self.times.append(self.clock.now)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
            answer = self.script.pop(0) if self.script else None
            if answer is not None:
                raise answer
            remote = RemoteFile(
                provider="kimi",
                id=f"f{len(self.times)}",
                filename=filename,
                bytes=size,
                created_at=0,
                purpose=purpose,
            )
            return UploadResult(remote=remote, transport="fake")
        finally:
            self.in_flight -= 1

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        return []

    async def delete(self, file_id: str) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def send_one(client: LimitedClient, name: str = "a.txt") -> UploadResult:
    """One tiny upload through ``client``."""
    return await client.upload(
        filename=name, fileobj=io.BytesIO(b"x"), size=1, purpose="file-extract", content_type="t"
    )

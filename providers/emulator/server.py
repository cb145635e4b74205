"""The :class:`Emulator`: a local Moonshot + Z.ai files API on loopback, on the running loop.

Default keys are :data:`DEFAULT_KEYS`. The fault spec language is documented in
``providers.emulator.faults``. File content lives on disk under ``data_dir`` (a temporary
directory, removed on stop, unless one is given); the ground truth stays in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType

from aiohttp import web

from providers.emulator.app import PREFIXES, EmulatorApp, new_id
from providers.emulator.extraction import served_text
from providers.emulator.faults import FaultPlan, coerce_plans, parse_plan
from providers.emulator.state import StoredFile
from providers.limits import LIMITS, PROVIDERS, ProviderLimits, extract_method

__all__ = ["DEFAULT_KEYS", "Emulator"]

DEFAULT_KEYS: Mapping[str, str] = {"kimi": "sk-emulator-kimi", "glm": "emulator-id.emulator-secret"}


class Emulator:
    """Both providers' files APIs on ``host:port`` (port 0: a free one), for tests and demos.

    ``keys`` maps provider → API key (missing ones take DEFAULT_KEYS); ``faults`` is a spec
    string, one plan for every provider, or None; ``limits`` replaces providers.limits.LIMITS
    (e.g. a lowered ``max_files`` to test quotas quickly). ``clock`` (monotonic seconds) drives
    the ``rpm=`` window and ``sleep`` the ``latency=``/``slow=`` delays: tests inject both.
    ``parser_polls`` is how many result requests a GLM file-parser task answers
    ``processing`` before its text (more than 0, so clients must poll).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keys: Mapping[str, str] | None = None,
        faults: str | FaultPlan | None = None,
        seed: int = 0,
        data_dir: Path | None = None,
        limits: Mapping[str, ProviderLimits] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        parser_polls: int = 1,
    ) -> None:
        if parser_polls < 0:
            raise ValueError(f"parser_polls must be 0 or more, not {parser_polls}")
        self._parser_polls = parser_polls
        self._clock = clock
        self._sleep = sleep
        self._host = host
        self._port = port
        self._keys = {**DEFAULT_KEYS, **(keys or {})}
        self._limits = {**LIMITS, **(limits or {})}
        self._initial = coerce_plans(faults)
        self._seed = seed
        self._data_dir = data_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._runner: web.AppRunner | None = None
        self._app: EmulatorApp | None = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on host:port and serve until :meth:`stop`."""
        if self._data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="inboxd-emulator-")
        data_dir = self._data_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self._app = EmulatorApp(
            keys=self._keys,
            limits=self._limits,
            data_dir=data_dir,
            seed=self._seed,
            clock=self._clock,
            sleep=self._sleep,
            parser_polls=self._parser_polls,
        )
        for provider, plan in self._initial.items():
            self._app.set_plan(provider, plan)
        # No access log: one line per request would cost more than serving it.
        self._runner = web.AppRunner(self._app.build(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, backlog=1024)
        await site.start()
        server = site._server  # aiohttp exposes the bound port nowhere else
        assert isinstance(server, asyncio.Server)
        self._port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving and remove the temporary data directory."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def port(self) -> int:
        """The bound port (the real one once started, when 0 was asked)."""
        return self._port

    @property
    def host(self) -> str:
        """The listening address."""
        return self._host

    def base_url(self, provider: str) -> str:
        """The base URL for that provider's SDK: ``http://host:port/v1`` or ``…/api/paas/v4``."""
        return f"http://{self._host}:{self._port}{PREFIXES[provider]}"

    def key(self, provider: str) -> str:
        """The API key the emulator accepts for that provider."""
        return self._keys[provider]

    def set_faults(self, provider: str, spec: str | FaultPlan | None) -> None:
        """Replace one provider's faults: items like ``500@0.5,latency=5``, a plan, or None."""
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")
        if spec is None:
            plan = FaultPlan()
        elif isinstance(spec, FaultPlan):
            plan = spec
        else:
            plan = parse_plan(spec.split(":", 1)[1] if spec.startswith(f"{provider}:") else spec)
        self._initial[provider] = plan
        if self._app is not None:
            self._app.set_plan(provider, plan)

    def files(self) -> list[StoredFile]:
        """Every stored file of every provider, in upload order per provider."""
        return self._running().accounts.all()

    def stored_ever(self, provider: str) -> list[StoredFile]:
        """Every file ever stored on ``provider``'s account, deleted ones too, in order."""
        return list(self._running().accounts.history[provider])

    def delete_log(self, provider: str) -> list[str]:
        """The file id of every DELETE sent to ``provider``, found or not, in order."""
        return list(self._running().accounts.deletes[provider])

    def peak_files(self, provider: str) -> int:
        """The most files ``provider``'s account held at any moment (since start or reset)."""
        return self._running().accounts.peak[provider]

    def upload_times(self, provider: str) -> list[float]:
        """When (``clock`` time) each upload was admitted under the plan's ``rpm=`` or
        ``concurrency=`` limit, in order (since start or reset); refused ones are not listed,
        and without such a limit nothing is."""
        return list(self._running().admitted[provider])

    def counts(self) -> dict[str, dict[str, int]]:
        """Requests per provider per ``op.outcome``, e.g. ``{"kimi": {"upload.200": 3}}``.

        ``op`` is upload, list, retrieve, delete, content, parse or parse_result; ``outcome``
        the HTTP status, or ``reset`` / ``drop`` for aborted connections.
        """
        return {p: dict(c) for p, c in self._running().counts.items()}

    async def wait_count(self, provider: str, key: str, n: int) -> None:
        """Return once ``counts()[provider][key]`` is at least ``n`` (progress, not time)."""
        app = self._running()
        while app.counts[provider].get(key, 0) < n:
            await app.counted()

    def extracted_text(self, file_id: str) -> str:
        """The text a correct client fetches for the stored file ``file_id``.

        Kimi: the content envelope's ``content``; GLM: what ``/content`` (batch,
        file-extract) or the file parser (same name and bytes) answers. KeyError for an
        unknown id; ValueError for a file whose purpose has no text.
        """
        app = self._running()
        found = [f for f in app.accounts.all() if f.id == file_id]
        if not found:
            raise KeyError(f"no stored file {file_id!r}")
        f = found[0]
        if extract_method(f.provider, f.purpose) is None:
            raise ValueError(f"{f.provider} serves no text for purpose {f.purpose!r}")
        return served_text(f, app.path_of(f).read_bytes())

    def add_file(
        self,
        provider: str,
        filename: str,
        data: bytes,
        *,
        purpose: str | None = None,
        created_at: int | None = None,
    ) -> StoredFile:
        """Store a file directly, as if another client had uploaded it (no limit is checked).

        For tests that need a full account or files inboxd did not upload.
        """
        app = self._running()
        stored = StoredFile(
            provider,
            new_id(provider),
            filename,
            purpose or self._limits[provider].default_purpose,
            len(data),
            hashlib.sha256(data).hexdigest(),
            int(time.time()) if created_at is None else created_at,
        )
        app.path_of(stored).write_bytes(data)
        app.accounts.add(stored)
        return stored

    def reset(self) -> None:
        """Forget stored files and counts and restart the seeded decisions (faults stay)."""
        self._running().reset()

    def _running(self) -> EmulatorApp:
        if self._app is None:
            raise RuntimeError("the emulator is not started: use 'async with Emulator()'")
        return self._app

"""The emulator's aiohttp handlers: both files APIs at their real paths, and ``/_emulator/``.

Thin: each handler reads the request, asks ``state``/``faults`` what the provider would do,
and acts. Multipart bodies stream field by field into sha256 and a spool file, so a 100 MB
upload costs a few 64 KiB buffers, never the whole body.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import cast

from aiohttp import BodyPartReader, StreamReader, web

from providers.emulator.disposition import disposition_params
from providers.emulator.extraction import TEXT_TYPES, content_error, extracted
from providers.emulator.faults import Decision, FaultPlan, decide, parse_faults
from providers.emulator.multipart import CHUNK, QuietContent, Reader, drain
from providers.emulator.parser import ParserRoutes
from providers.emulator.ratelimit import KeyLimiter, limit_error
from providers.emulator.state import (
    Accounts,
    ApiError,
    StoredFile,
    as_json,
    auth_error,
    bad_request,
    fault_error,
    file_object,
    glm_page,
    judge_upload,
    kimi_page,
    not_found,
)
from providers.errors import ConfigError
from providers.limits import PROVIDERS, ProviderLimits, extension_of

__all__ = ["PREFIXES", "EmulatorApp", "new_id"]

logger = logging.getLogger(__name__)

PREFIXES = {"kimi": "/v1", "glm": "/api/paas/v4"}
_ABORTS = ("reset", "drop")
# Faults that change what a request does instead of answering an error.
_NOT_ANSWERS = (*_ABORTS, "parsefail")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _AbortedError(Exception):
    """The connection was aborted on purpose (a reset or drop fault)."""


class EmulatorApp:
    """The mutable heart of one emulator: stored files, fault plans, counters, handlers."""

    def __init__(
        self,
        *,
        keys: Mapping[str, str],
        limits: Mapping[str, ProviderLimits],
        data_dir: Path,
        seed: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        parser_polls: int = 1,
    ) -> None:
        self.keys = dict(keys)
        self.limits = dict(limits)
        self.data_dir = data_dir
        self.seed = seed
        self.accounts = Accounts()
        self.plans: dict[str, FaultPlan] = dict.fromkeys(PROVIDERS, FaultPlan())
        self.counts: dict[str, dict[str, int]] = {p: {} for p in PROVIDERS}
        self._spool = itertools.count()
        self._rngs: dict[str, random.Random] = {}
        self._index: dict[str, int] = {}
        # The rpm/concurrency limits' state; ``clock`` drives their 60 s window and ``sleep``
        # the latency and slow delays (both injected by tests).
        self._limiters = {p: KeyLimiter() for p in PROVIDERS}
        # When each upload was admitted under an rpm/concurrency limit (``clock`` time): what
        # tests measure a rate from. Read-only for the API, like ``accounts.history``.
        self.admitted: dict[str, list[float]] = {p: [] for p in PROVIDERS}
        self._clock = clock
        self._sleep = sleep
        self._tick = asyncio.Event()
        self.parser_polls = parser_polls
        self.parser = ParserRoutes(lambda: self.parser_polls, lambda e: self._error("glm", e))
        self.reset()
        for provider in PROVIDERS:
            (data_dir / provider).mkdir(parents=True, exist_ok=True)

    def reset(self) -> None:
        """Forget stored files and counts; restart the seeded fault decisions. Plans stay."""
        for f in self.accounts.all():
            self.path_of(f).unlink(missing_ok=True)
        self.accounts.clear()
        self.parser.tasks.clear()
        for provider in PROVIDERS:
            self.counts[provider] = {}
            self._rngs[provider] = random.Random(f"{self.seed}:{provider}")
            self._index[provider] = 0
            self._limiters[provider].forget_window()
            self.admitted[provider].clear()

    def set_plan(self, provider: str, plan: FaultPlan) -> None:
        """Replace a provider's faults; its scripted sequence starts again."""
        self.plans[provider] = plan
        self._index[provider] = 0

    def build(self) -> web.Application:
        """The aiohttp application serving both providers and the admin endpoints."""
        app = web.Application()
        for provider, prefix in PREFIXES.items():
            files = f"{prefix}/files"
            upload = self._limited(provider, self._api(provider, "upload", self._upload))
            app.router.add_post(files, upload)
            app.router.add_get(files, self._api(provider, "list", self._list))
            one = f"{files}/{{file_id}}"
            app.router.add_get(one, self._api(provider, "retrieve", self._retrieve))
            app.router.add_delete(one, self._api(provider, "delete", self._delete))
            app.router.add_get(f"{one}/content", self._api(provider, "content", self._content))
        parser = f"{PREFIXES['glm']}/files/parser"
        app.router.add_post(f"{parser}/create", self._api("glm", "parse", self.parser.create))
        result = f"{parser}/result/{{task_id}}/{{format_type}}"
        app.router.add_get(result, self._api("glm", "parse_result", self.parser.result))
        app.router.add_get("/_emulator/files", self._admin_files)
        app.router.add_get("/_emulator/counts", self._admin_counts)
        app.router.add_get("/_emulator/faults", self._admin_get_faults)
        app.router.add_put("/_emulator/faults", self._admin_set_faults)
        app.router.add_post("/_emulator/faults", self._admin_set_faults)
        app.router.add_post("/_emulator/reset", self._admin_reset)
        return app

    # -- the provider APIs -------------------------------------------------------------

    def _api(
        self,
        provider: str,
        op: str,
        action: Callable[[web.Request, str, Decision], Awaitable[web.StreamResponse]],
    ) -> _Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            rng = self._rngs[provider]
            decision = decide(
                self.plans[provider], self._index[provider], rng.random(), rng.random()
            )
            self._index[provider] += 1
            if decision.delay:
                await self._sleep(decision.delay)
            try:
                denied = auth_error(
                    provider, request.headers.get("Authorization"), self.keys[provider]
                )
                kind = decision.fault.kind if decision.fault is not None else None
                if denied is None and decision.fault is not None and op != "upload":
                    # Uploads read the body first and abort inside _upload.
                    if kind == "drop":
                        await action(request, provider, decision)
                    if kind in ("reset", "drop"):
                        self._abort(request, kind)
                if denied is None and decision.fault is not None and kind not in _NOT_ANSWERS:
                    plan = self.plans[provider]
                    denied = fault_error(
                        provider,
                        decision.fault,
                        now=time.time(),
                        rpm=plan.rpm,
                        concurrency=plan.concurrency,
                    )
                response: web.StreamResponse
                if denied is not None:
                    await drain(request)
                    response = self._error(provider, denied, decision)
                else:
                    response = await action(request, provider, decision)
            except _AbortedError as exc:
                self._count(provider, op, str(exc))
                raise web.HTTPException() from None  # the transport is gone: nothing is sent
            self._count(provider, op, str(response.status))
            return response

        return handler

    def _limited(self, provider: str, inner: _Handler) -> _Handler:
        """``inner`` behind the plan's rpm/concurrency limits (refused before any latency)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            plan = self.plans[provider]
            unlimited = plan.rpm is None and plan.concurrency is None
            key = self.keys[provider]
            if unlimited or auth_error(provider, request.headers.get("Authorization"), key):
                return await inner(request)
            limiter = self._limiters[provider]
            now = self._clock()
            scope = limiter.admit(rpm=plan.rpm, concurrency=plan.concurrency, now=now)
            if scope is not None:
                await drain(request)
                self._count(provider, "upload", "429")
                limit = plan.rpm if scope == "rate" else plan.concurrency
                assert limit is not None
                return self._error(provider, limit_error(provider, scope, limit))
            self.admitted[provider].append(now)
            try:
                return await inner(request)
            finally:
                limiter.finish()

        return handler

    async def _upload(
        self, request: web.Request, provider: str, decision: Decision
    ) -> web.StreamResponse:
        limits = self.limits[provider]
        ctype = request.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data") or "boundary=" not in ctype:
            await drain(request)
            return self._error(
                provider,
                bad_request(provider, "Content-Type must be multipart/form-data with a boundary"),
            )
        spool = self.data_dir / f"spool-{next(self._spool)}"
        try:
            fields = await self._read_multipart(request, spool, decision.slow, limits)
            if isinstance(fields, ApiError):
                return self._error(provider, fields)
            filename, purpose, size, digest = fields
            fault = decision.fault
            if fault is not None and fault.kind == "reset":
                self._abort(request, "reset")
            refusal = judge_upload(limits, purpose, filename, size, self.accounts.usage(provider))
            if refusal is not None:
                return self._error(provider, refusal)
            stored = StoredFile(
                provider, new_id(provider), filename, purpose, size, digest, int(time.time())
            )
            spool.rename(self.path_of(stored))
            self.accounts.add(stored)
            if fault is not None and fault.kind == "drop":
                self._abort(request, "drop")
            return web.json_response(file_object(stored))
        finally:
            spool.unlink(missing_ok=True)

    async def _read_multipart(
        self, request: web.Request, spool: Path, slow: float, limits: ProviderLimits
    ) -> tuple[str, str, int, str] | ApiError:
        provider = limits.provider
        # Bytes beyond the largest accepted size are hashed but not kept: the file is refused.
        keep = max(p.max_bytes for p in limits.purposes.values())
        filename: str | None = None
        purpose = ""
        size = 0
        digest = hashlib.sha256()
        quiet = cast("StreamReader", QuietContent(request.content))
        reader = Reader(request.headers, quiet)
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                return bad_request(provider, "Nested multipart bodies are not accepted")
            params = disposition_params(reader.disposition)
            if params.get("name") == "purpose":
                purpose = (await part.read()).decode(errors="replace")
            elif params.get("name") == "file":
                filename = params.get("filename") or "upload"
                with spool.open("wb") as out:
                    while chunk := await part.read_chunk(CHUNK):
                        if slow:
                            await self._sleep(slow)
                        digest.update(chunk)
                        if size <= keep:
                            out.write(chunk)
                        size += len(chunk)
            else:
                await part.release()
        if filename is None:
            return bad_request(provider, "Missing multipart field 'file'")
        if not purpose:
            return bad_request(provider, "Missing multipart field 'purpose'")
        return filename, purpose, size, digest.hexdigest()

    async def _list(self, request: web.Request, provider: str, _: Decision) -> web.StreamResponse:
        files = self.accounts.of(provider)
        if provider == "kimi":
            return web.json_response(kimi_page(files, request.query))
        page = glm_page(files, request.query, self.limits[provider])
        if isinstance(page, ApiError):
            return self._error(provider, page)
        return web.json_response(page)

    async def _retrieve(
        self, request: web.Request, provider: str, _: Decision
    ) -> web.StreamResponse:
        f = self.accounts.get(provider, request.match_info["file_id"])
        if f is None:
            return self._error(provider, not_found(provider, request.match_info["file_id"]))
        return web.json_response(file_object(f))

    async def _delete(self, request: web.Request, provider: str, _: Decision) -> web.StreamResponse:
        f = self.accounts.remove(provider, request.match_info["file_id"])
        if f is None:
            return self._error(provider, not_found(provider, request.match_info["file_id"]))
        self.path_of(f).unlink(missing_ok=True)
        return web.json_response({"id": f.id, "object": "file", "deleted": True})

    async def _content(
        self, request: web.Request, provider: str, _: Decision
    ) -> web.StreamResponse:
        f = self.accounts.get(provider, request.match_info["file_id"])
        if f is None:
            return self._error(provider, not_found(provider, request.match_info["file_id"]))
        refused = content_error(f)
        if refused is not None:
            return self._error(provider, refused)
        raw = extension_of(f.filename) in TEXT_TYPES or f.purpose == "batch"
        body, ctype = extracted(f, self.path_of(f).read_bytes() if raw else None)
        return web.Response(body=body, headers={"Content-Type": ctype})

    # -- admin ---------------------------------------------------------------------

    async def _admin_files(self, _: web.Request) -> web.StreamResponse:
        return web.json_response({"files": [as_json(f) for f in self.accounts.all()]})

    async def _admin_counts(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(self.counts)

    async def _admin_get_faults(self, _: web.Request) -> web.StreamResponse:
        return web.json_response({p: str(plan) for p, plan in self.plans.items()})

    async def _admin_set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            plans = parse_faults(await request.text())
        except ConfigError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        for provider, plan in plans.items():
            self.set_plan(provider, plan)
        return await self._admin_get_faults(request)

    async def _admin_reset(self, _: web.Request) -> web.StreamResponse:
        self.reset()
        return web.json_response({"reset": True})

    # -- helpers -------------------------------------------------------------------

    def path_of(self, f: StoredFile) -> Path:
        """Where the stored file's bytes are kept."""
        return self.data_dir / f.provider / f.id

    def _count(self, provider: str, op: str, outcome: str) -> None:
        key = f"{op}.{outcome}"
        counts = self.counts[provider]
        counts[key] = counts.get(key, 0) + 1
        self._tick.set()
        self._tick = asyncio.Event()

    async def counted(self) -> None:
        """Return at the next request counted."""
        await self._tick.wait()

    def _abort(self, request: web.Request, kind: str) -> None:
        if request.transport is not None:
            request.transport.abort()
        raise _AbortedError(kind)

    @staticmethod
    def _error(provider: str, error: ApiError, decision: Decision | None = None) -> web.Response:
        headers = {}
        fault = decision.fault if decision is not None else None
        # Only "429" sends Retry-After; "429msg"/"429conc" name the wait in the text alone.
        if fault is not None and fault.kind == "429" and error.status == 429:
            headers["Retry-After"] = str(fault.retry_after)
        return web.Response(
            body=json.dumps(error.body(provider)).encode(),
            status=error.status,
            headers={"Content-Type": "application/json", **headers},
        )


def new_id(provider: str) -> str:
    """A fresh file id in the provider's shape."""
    hexed = uuid.uuid4().hex
    return f"c{hexed[:19]}" if provider == "kimi" else f"{int(time.time())}-{hexed}"

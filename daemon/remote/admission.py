"""The gate before every upload to an account with ``max_files`` / ``max_bytes``: room first.

``AdmittedClient`` wraps a provider's client for the dispatcher: each upload first reserves
room in ``Admission`` (known usage + uploads being sent + this one within the limits, the
pure rule in ``daemon.remote.room``). Without room it asks for a retention pass, which makes
room for every upload waiting or being sent, and waits for that pass to end (an event, never
a timer). After a pass that freed nothing it waits for an upload in flight to end and asks
again; with none in flight, when the pass fell short of its target, it goes (the account is
full of files inboxd did not upload: the provider's quota answer parks the file). The
reservation is the one count of an upload: kept when the file was stored (or may have been:
an ambiguous failure), given back when it was refused. A pass resets the known usage to its
listing, plus whatever was stored since it began (a copy stored while it listed is counted
twice until the next pass: too high is safe, too low never happens).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import BinaryIO

import anyio

from daemon.remote.plan import RetentionLimits
from daemon.remote.room import PassOutcome, Usage, admit, limited
from providers.errors import ProviderError, Retryable
from providers.types import RemoteFile, UploadClient, UploadResult

__all__ = ["Admission", "AdmittedClient"]

logger = logging.getLogger(__name__)

NONE = Usage()


class Admission:
    """Each limited account's room: what is known to be stored, being sent, waiting.

    ``request(provider)`` queues a retention pass (set by ``RemoteSide``; None: no passes run
    in this process, so nothing waits for one). Passes report through ``pass_started`` and
    ``pass_ended``.
    """

    def __init__(self, limits: Mapping[str, RetentionLimits]) -> None:
        self.limits = limits  # read at each upload: a reload may change it
        self.request: Callable[[str], bool] | None = None
        self.known: dict[str, Usage] = {}
        self.sending: dict[str, Usage] = {}
        self.waiting: dict[str, Usage] = {}
        self._started: dict[str, int] = {}
        self._since: dict[str, dict[int, Usage]] = {}  # pass -> stored since it began
        self._last: dict[str, tuple[int, PassOutcome]] = {}  # the last pass that ended
        self._ended: dict[str, anyio.Event] = {}
        self._settled: dict[str, anyio.Event] = {}
        self._warned: dict[str, int] = {}

    def wanted(self, provider: str) -> Usage:
        """The room a pass makes now: every upload being sent or waiting for room."""
        return self.sending.get(provider, NONE) + self.waiting.get(provider, NONE)

    def pass_started(self, provider: str) -> int:
        """A pass over ``provider`` begins (before it lists); its number."""
        seq = self._started.get(provider, 0) + 1
        self._started[provider] = seq
        self._since.setdefault(provider, {})[seq] = NONE
        return seq

    def pass_ended(
        self, provider: str, seq: int, after: Usage | None, *, freed: bool, short: bool
    ) -> None:
        """Pass ``seq`` ended: the account holds ``after`` (None: not listed), it deleted
        something (``freed``), it fell short of its target (``short``); every upload
        waiting for room looks again."""
        since = self._since.get(provider, {}).pop(seq, NONE)
        if after is not None:
            self.known[provider] = after + since
        last = self._last.get(provider)
        if last is None or seq >= last[0]:
            self._last[provider] = (seq, PassOutcome(freed, short))
        ended = self._ended.pop(provider, None)
        if ended is not None:
            ended.set()

    async def reserve(self, provider: str, nbytes: int) -> Usage | None:
        """Room for one upload of ``nbytes``, waiting for passes to make it; None: no limit."""
        if not limited(self.limits.get(provider, RetentionLimits())):
            return None
        wanted = Usage(1, nbytes)
        asked = self._started.get(provider, 0)
        self.waiting[provider] = self.waiting.get(provider, NONE) + wanted
        try:
            while True:
                limits = self.limits.get(provider, RetentionLimits())  # a reload may change it
                last = self._last.get(provider)
                fresh = last[1] if last is not None and last[0] > asked else None
                verdict = admit(
                    self.known.get(provider),
                    self.sending.get(provider, NONE),
                    wanted,
                    limits,
                    passes=self.request is not None,
                    fresh=fresh,
                )
                if verdict == "settle":
                    await self._settled.setdefault(provider, anyio.Event()).wait()
                    asked = self._started.get(provider, 0)  # a pass from now on may help
                    continue
                if verdict != "pass":
                    break
                ended = self._ended.setdefault(provider, anyio.Event())
                assert self.request is not None
                self.request(provider)
                await ended.wait()
        finally:
            self.waiting[provider] = self.waiting[provider] - wanted
        if verdict == "send_anyway":
            self._warn(provider, limits)
        self.sending[provider] = self.sending.get(provider, NONE) + wanted
        return wanted

    def wake(self) -> None:
        """Every upload waiting for room looks again (a reload changed the limits)."""
        for events in (self._ended, self._settled):
            for event in events.values():
                event.set()
            events.clear()

    def settle(self, provider: str, held: Usage | None, *, stored: bool) -> None:
        """An upload admitted with ``held`` ended; ``stored``: the account may hold it now."""
        if held is None:
            return
        self.sending[provider] = self.sending[provider] - held
        settled = self._settled.pop(provider, None)
        if settled is not None:
            settled.set()
        if not stored:
            return
        if provider in self.known:
            self.known[provider] = self.known[provider] + held
        since = self._since.get(provider, {})
        for seq in since:
            since[seq] = since[seq] + held

    def _warn(self, provider: str, limits: RetentionLimits) -> None:
        seq = self._started.get(provider, 0)
        if self._warned.get(provider) == seq:
            return  # once per pass, not once per file
        self._warned[provider] = seq
        logger.warning(
            "%s: a retention pass made no room (max_files %s, max_bytes %s): the account "
            "holds too many files inboxd did not upload; uploads go on and the provider's "
            "answer decides (delete some of those files, or raise the limits)",
            provider,
            limits.max_files,
            limits.max_bytes,
        )


class AdmittedClient:
    """An UploadClient whose uploads first reserve room in ``admission``."""

    def __init__(self, inner: UploadClient, admission: Admission) -> None:
        self.inner = inner
        self.name = inner.name
        self.admission = admission

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult:
        held = await self.admission.reserve(self.name, size)
        stored = True  # cancelled mid-send: it may be stored, count it until a pass lists
        try:
            return await self.inner.upload(
                filename=filename,
                fileobj=fileobj,
                size=size,
                purpose=purpose,
                content_type=content_type,
            )
        except ProviderError as exc:
            stored = isinstance(exc, Retryable) and exc.ambiguous
            raise
        finally:
            self.admission.settle(self.name, held, stored=stored)

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        return await self.inner.list_files(purpose)

    async def delete(self, file_id: str) -> None:
        await self.inner.delete(file_id)

    async def aclose(self) -> None:
        await self.inner.aclose()

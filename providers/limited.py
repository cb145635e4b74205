"""``LimitedClient``: one provider account's client behind its adaptive limiter.

The async shell of ``providers.pacing``: every upload of the account, from every worker, asks
the one :class:`~providers.pacing.Pacer` when it may start, waits (on the injected clock and
sleep) and tells it how the call ended. A ``Throttled`` answer pauses the whole provider and
is re-raised: the dispatcher calls again, and that call waits here until the pause ends and
the window has room. Listing, deleting and extracting are not paced (the emulator limits
uploads only; whether the real services count them is not documented).

Several hosts on one account (a fleet) share one budget: with ``send_slots`` (the shared
store's ``reserve_send``), each upload the local Pacer admits also asks it for a slot in the
account's rolling window while an rpm is known (configured or learned), waits the seconds it
answers and asks again, so the sum over hosts stays under the account's rate.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import BinaryIO, Protocol

import anyio

from providers.client import usage_of
from providers.errors import Throttled, TransportUnavailable
from providers.pacing import Pacer, PacingConfig
from providers.types import Extracted, Extractor, RemoteFile, UploadClient, UploadResult

__all__ = ["LimitedClient", "NullPacingEvents", "PacingEvents", "SendSlots"]

logger = logging.getLogger(__name__)


class PacingEvents(Protocol):
    """What the limiter reports (``daemon.ops.metrics.Metrics`` implements it)."""

    def pacing_limits(self, provider: str, rpm: float | None, concurrency: int) -> None:
        """The limits now in force (``rpm`` None: no rate limit known)."""

    def throttled(self, provider: str) -> None:
        """One rate-limit answer (429) from the provider."""


class SendSlots(Protocol):
    """The account's shared rate window (``daemon.state.store.Store.reserve_send``)."""

    async def __call__(self, provider: str, *, rpm: float, window: float, now: float) -> float:
        """0.0: a send slot at ``now`` is taken; else the seconds until one may be."""
        ...


class NullPacingEvents:
    """Reports nowhere."""

    def pacing_limits(self, provider: str, rpm: float | None, concurrency: int) -> None:
        pass

    def throttled(self, provider: str) -> None:
        pass


class LimitedClient:
    """An UploadClient whose uploads are paced to the account's rate and concurrency limits.

    ``concurrency`` and ``rpm`` are the configured ceilings (``rpm`` None: learned from the
    429s). ``config`` replaces the whole ``PacingConfig`` (tests set tiny durations); ``clock``
    is monotonic seconds and ``sleep`` waits that long: both injected by tests.
    ``send_slots``: the budget shared with other hosts (None: this host alone), asked with
    ``wall_clock`` time (unix seconds: every host's clock must agree on it).
    """

    def __init__(
        self,
        inner: UploadClient,
        concurrency: int,
        *,
        rpm: float | None = None,
        config: PacingConfig | None = None,
        events: PacingEvents | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        send_slots: SendSlots | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.pacer = Pacer(config or PacingConfig(concurrency=concurrency, rpm=rpm))
        self._events = events or NullPacingEvents()
        self._clock = clock
        self._sleep = sleep
        self._slots = send_slots
        self._wall = wall_clock
        self._changed: anyio.Event | None = None
        self._reported = (self.pacer.rpm, self.pacer.concurrency)
        self._events.pacing_limits(self.name, self.pacer.rpm, self.pacer.concurrency)

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult:
        sent_at = await self._admitted()
        try:
            await self._shared_slot()
            result = await self.inner.upload(
                filename=filename,
                fileobj=fileobj,
                size=size,
                purpose=purpose,
                content_type=content_type,
            )
        except Throttled as throttle:
            self._on_throttle(throttle, sent_at)
            raise
        except BaseException:
            self._finish(self.pacer.failed)
            raise
        self._finish(self.pacer.succeeded)
        return result

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        return await self.inner.list_files(purpose)

    async def usage(self) -> tuple[int, int]:
        return await usage_of(self.inner)

    async def delete(self, file_id: str) -> None:
        await self.inner.delete(file_id)

    async def extract(self, remote: RemoteFile, fileobj: BinaryIO | None) -> Extracted:
        """The inner client's ``extract`` (``providers.types.Extractor``), unpaced.

        An inner client that cannot extract raises ``TransportUnavailable``.
        """
        if not isinstance(self.inner, Extractor):
            raise TransportUnavailable(
                f"the {self.name} client cannot fetch extracted text", provider=self.name
            )
        return await self.inner.extract(remote, fileobj)

    async def aclose(self) -> None:
        await self.inner.aclose()

    # -- the shell around the pacer ----------------------------------------------------------

    async def _admitted(self) -> float:
        """Wait until the pacer lets a send start; the send's time."""
        while True:
            now = self._clock()
            # Take the event before asking: a change after the answer still wakes us.
            changed = self._event()
            wait = self.pacer.admit(now)
            if wait == 0.0:
                return now
            await self._wait(changed, wait)

    async def _shared_slot(self) -> None:
        """Wait for a slot in the account's window shared with other hosts (rpm known)."""
        while self._slots is not None and (rpm := self.pacer.rpm) is not None:
            window = self.pacer.config.window + self.pacer.config.margin
            wait = await self._slots(self.name, rpm=rpm, window=window, now=self._wall())
            if wait <= 0:
                return
            await self._sleep(wait)

    async def _wait(self, changed: anyio.Event, seconds: float | None) -> None:
        """Until ``changed`` is set or ``seconds`` have passed (None: only ``changed``)."""
        if seconds is None:
            await changed.wait()
            return
        async with anyio.create_task_group() as tg:

            async def timer() -> None:
                await self._sleep(seconds)
                tg.cancel_scope.cancel()

            tg.start_soon(timer)
            await changed.wait()
            tg.cancel_scope.cancel()

    def _event(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _finish(self, tell: Callable[[float], None]) -> None:
        tell(self._clock())
        self._report()
        # Wake every waiter: a slot is free, or a pause or limit changed.
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _on_throttle(self, exc: Throttled, sent_at: float) -> None:
        now = self._clock()
        self._events.throttled(self.name)
        self._finish(
            lambda now: self.pacer.throttled(
                now,
                sent_at=sent_at,
                scope=exc.scope,
                retry_after=exc.retry_after,
                limit=exc.limit,
            )
        )
        rpm = self.pacer.rpm
        logger.info(
            "%s: rate-limit answer (%s%s): uploads paused %.1f s; "
            "pacing at %s a minute, %d at once",
            self.name,
            exc.scope,
            "" if exc.limit is None else f", limit {exc.limit}",
            max(0.0, self.pacer.paused_until - now),
            "no limit" if rpm is None else f"{math.floor(rpm)}",
            self.pacer.concurrency,
        )

    def _report(self) -> None:
        current = (self.pacer.rpm, self.pacer.concurrency)
        if current != self._reported:
            self._reported = current
            self._events.pacing_limits(self.name, *current)

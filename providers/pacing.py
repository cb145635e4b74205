"""The provider limiter's decisions: how fast and how many at once, learned from the answers.

Pure: plain values in (``now`` included, monotonic seconds), waits out; no event loop. One
:class:`Pacer` per provider account, shared by every worker (``providers.limited`` is its
async shell). Two limits, both adaptive (AIMD, like Vector's adaptive request concurrency and
the AWS SDKs' adaptive retry mode):

- **rate**: at most ``rpm`` sends in any rolling ``window`` (60 s) of the account's own sends,
  plus a ``margin`` for the clock skew between us and the server. A call waits until the oldest
  send leaves the window, instead of knocking every second. ``rpm`` starts at the configured
  ceiling, or unknown (unlimited, learning) when none is configured.
- **concurrency**: at most ``concurrency`` calls in flight; starts at the configured value,
  which stays the ceiling.

On a rate-limit answer (``throttled``) the whole provider pauses for the wait it names (none
named: ``default_pause``; from the second throttle in a row without a success, at least
``default_pause`` doubled per throttle, up to the window), and the limit of its scope decreases:

- a limit the answer names (Kimi ``max RPM: 120``) becomes the ceiling and the limit, and the
  limit never goes below it: a refusal while our own use is under it (the server's window
  differs, another client shares the account) is answered by the pause alone;
- else the limit becomes what the server accepted: the sends in the window (rate) or the other
  calls in flight (concurrency), but one answer never cuts it below ``beta`` times its value
  (bounded multiplicative decrease). A rate answer with nothing accepted in the window (the
  server's window predates ours, e.g. after a restart) teaches nothing: only the pause grows.
  While no rate is known, an answer that names its wait but no limit (a Retry-After) only
  pauses: the few calls just sent are no measure of the limit (GLM's 1303 names neither, and
  teaches the rate).

Additive increase: after ``increase_interval`` without a decrease, a success raises a limit
by 1 if that limit held a call back meanwhile (an unused limit does not creep up), never above
its ceiling. A refused send leaves the window (the server did not count it); a send that failed
otherwise stays in it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["Pacer", "PacingConfig"]


@dataclass(frozen=True)
class PacingConfig:
    """One provider account's limiter settings; durations in seconds.

    ``concurrency`` and ``rpm`` are the configured ceilings (``rpm`` None: unknown, learned).
    """

    concurrency: int
    rpm: float | None = None
    window: float = 60.0
    margin: float = 0.5
    beta: float = 0.5
    increase_interval: float = 60.0
    default_pause: float = 1.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {self.concurrency}")
        if self.rpm is not None and not self.rpm > 0:
            raise ValueError(f"rpm must be > 0 when set, not {self.rpm}")
        if not 0 < self.beta < 1:
            raise ValueError(f"beta must be between 0 and 1, not {self.beta}")


class Pacer:
    """The adaptive rate and concurrency limits of one provider account.

    Call :meth:`admit` before each send; once it answers 0.0 the send is recorded and exactly
    one of :meth:`succeeded`, :meth:`throttled` or :meth:`failed` must follow.
    """

    def __init__(self, config: PacingConfig) -> None:
        self.config = config
        self.rpm: float | None = config.rpm
        self.rpm_ceiling: float | None = config.rpm
        self.concurrency = config.concurrency
        self.concurrency_ceiling = config.concurrency
        self.in_flight = 0
        self.paused_until = -math.inf
        self._sends: deque[float] = deque()
        self._streak = 0  # throttles in a row without a success
        self._rate_changed = self._conc_changed = -math.inf
        self._rate_bound = self._conc_bound = False

    @property
    def span(self) -> float:
        """How long a send counts against the rate: the window plus the margin."""
        return self.config.window + self.config.margin

    def admit(self, now: float) -> float | None:
        """0.0: go (the send is recorded); seconds: ask again after that long; None: ask again
        when a call in flight finishes."""
        while self._sends and self._sends[0] <= now - self.span:
            self._sends.popleft()
        if self.paused_until > now:
            return self.paused_until - now
        if self.in_flight >= self.concurrency:
            self._conc_bound = True
            return None
        if self.rpm is not None:
            allowed = max(1, math.floor(self.rpm))
            if len(self._sends) >= allowed:
                self._rate_bound = True
                return self._sends[len(self._sends) - allowed] + self.span - now
        self._sends.append(now)
        self.in_flight += 1
        return 0.0

    def succeeded(self, now: float) -> None:
        """A send was answered with success: additive increase where a limit bound."""
        self.in_flight -= 1
        self._streak = 0
        step = self.config.increase_interval
        if self._conc_bound and now - self._conc_changed >= step:
            self._conc_bound = False
            if self.concurrency < self.concurrency_ceiling:
                self.concurrency += 1
                self._conc_changed = now
        if self._rate_bound and self.rpm is not None and now - self._rate_changed >= step:
            self._rate_bound = False
            ceiling = math.inf if self.rpm_ceiling is None else self.rpm_ceiling
            if self.rpm < ceiling:
                self.rpm = min(self.rpm + 1, ceiling)
                self._rate_changed = now

    def failed(self, now: float) -> None:
        """A send failed otherwise (5xx, timeout, refusal): no limit changes."""
        self.in_flight -= 1

    def throttled(
        self,
        now: float,
        *,
        sent_at: float,
        scope: str,
        retry_after: float | None,
        limit: int | None,
    ) -> None:
        """A send (admitted at ``sent_at``) was answered with a rate-limit answer.

        ``scope`` is ``"rate"`` or ``"concurrency"``; ``retry_after`` the wait it names;
        ``limit`` the ceiling it names (both None when it names none).
        """
        self.in_flight -= 1
        self._streak += 1
        # The server refused this send: it does not count in its window.
        for i in range(len(self._sends) - 1, -1, -1):
            if self._sends[i] == sent_at:
                del self._sends[i]
                break
        backoff = min(self.config.default_pause * 2 ** (self._streak - 1), self.config.window)
        if retry_after is None:
            pause = backoff
        elif self._streak == 1:
            pause = retry_after
        else:
            pause = max(retry_after, backoff)
        self.paused_until = max(self.paused_until, now + pause)
        if scope == "concurrency":
            self._decrease_concurrency(now, limit)
        else:
            self._decrease_rate(now, limit, named_wait=retry_after is not None)

    def _decrease_concurrency(self, now: float, limit: int | None) -> None:
        if limit is not None:
            # The account's own limit: it is the ceiling and the limit. Refused below it, the
            # server counts calls we do not see; the pause answers that, not a smaller limit.
            named = max(1, limit)
            self.concurrency_ceiling = min(self.concurrency_ceiling, named)
            self.concurrency = min(self.concurrency, self.concurrency_ceiling)
        else:
            halved = math.floor(self.concurrency * self.config.beta)
            self.concurrency = max(1, self.in_flight, halved)
        self._conc_changed = now
        self._conc_bound = False

    def _decrease_rate(self, now: float, limit: int | None, *, named_wait: bool) -> None:
        accepted = len(self._sends)
        if limit is not None:
            # The account's own limit (Kimi "max RPM: N"): the ceiling and the limit, and never
            # less: our window of sends under it keeps to it, and a refusal below it (the
            # server's window, another client) is answered by the pause alone.
            named = float(max(1, limit))
            ceiling = math.inf if self.rpm_ceiling is None else self.rpm_ceiling
            self.rpm_ceiling = min(ceiling, named)
            self.rpm = self.rpm_ceiling
            self._rate_changed = now
            self._rate_bound = False
            return
        if accepted == 0:
            return  # the server's window predates ours: nothing to learn, the pause grows
        if self.rpm is None:
            if named_wait:
                return  # the server said when to come back: a stray 429 sets no rate
            self.rpm = float(accepted)
        else:
            self.rpm = max(1.0, float(accepted), self.rpm * self.config.beta)
        self._rate_changed = now
        self._rate_bound = False

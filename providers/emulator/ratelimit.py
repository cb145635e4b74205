"""Per-key RPM and concurrency limits of the emulator, as the real services answer them.

Pure: plain values in (``now`` included), a verdict out. One :class:`KeyLimiter` per provider
key keeps the times of the requests it admitted in a rolling 60 s window and the count of
requests in flight. Refused requests do not count toward the window (a client that keeps
knocking is never locked out by its own refusals). Concurrency is checked before the rate.

The refusals carry the real bodies (``shared/provider-facts.md``, "Real answers"): Kimi's
English ``rate_limit_reached_error`` naming the ceiling and a 1 s wait in the text only, GLM's
1302 (concurrency) and 1303 (frequency) in Chinese. No ``Retry-After`` header is sent.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from providers.emulator.state import ApiError

__all__ = ["WINDOW", "KeyLimiter", "Scope", "limit_error"]

WINDOW = 60.0
Scope = Literal["rate", "concurrency"]

# The org and key ids Kimi puts in its message; the real ones name the account. GLM's texts
# use full-width commas, as written by the service.
_KIMI_ACCOUNT = "org-emu<ak-emu>"
_GLM = {
    "concurrency": (
        "1302",
        "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。",
    ),
    "rate": (
        "1303",
        "您当前使用该API的频率过高，请降低频率，或联系客服增加限额。",
    ),
}


class KeyLimiter:
    """One key's admitted requests in the last 60 s and its requests in flight."""

    def __init__(self) -> None:
        self._sent: deque[float] = deque()
        self.in_flight = 0

    def admit(self, *, rpm: int | None, concurrency: int | None, now: float) -> Scope | None:
        """Admit one request at ``now`` (then call :meth:`finish`), or name the limit it hits."""
        while self._sent and self._sent[0] <= now - WINDOW:
            self._sent.popleft()
        if concurrency is not None and self.in_flight >= concurrency:
            return "concurrency"
        if rpm is not None and len(self._sent) >= rpm:
            return "rate"
        self._sent.append(now)
        self.in_flight += 1
        return None

    def forget_window(self) -> None:
        """Forget the admitted requests (an emulator reset); requests in flight stay counted."""
        self._sent.clear()

    def finish(self) -> None:
        """An admitted request has been answered (or aborted)."""
        self.in_flight -= 1


def limit_error(provider: str, scope: Scope | str, limit: int) -> ApiError:
    """The 429 the provider answers when ``scope`` is over ``limit``."""
    if provider == "kimi":
        what = "max RPM" if scope == "rate" else "max concurrency"
        return ApiError(
            429,
            "rate_limit_reached_error",
            f"Your account {_KIMI_ACCOUNT} request reached organization {what}: {limit}, "
            "please try again after 1 seconds",
        )
    code, message = _GLM["rate" if scope == "rate" else "concurrency"]
    return ApiError(429, code, message)

"""A file's one verdict once every provider has had its say: wait (``Parked``) or reject.

Pure: plain values in (``now`` included), an exception to raise out. A passing failure never
quarantines: transient failures, open breakers and rate limits make the file wait; only a file
every provider refused for good is rejected, or one that has failed for longer than the
operator's ``give_up_after`` (``upload_failed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from providers.errors import InboxdError, Parked, RejectedFile, is_reason
from providers.retry import gives_up

__all__ = ["Failure", "verdict"]

# Parks of these reasons are governed by the inbox's ``on_quota``, never by give_up_after.
_QUOTA_REASONS = frozenset({"quota", "quota_exhausted"})


@dataclass(frozen=True)
class Failure:
    """Why one provider gave up on one file.

    ``parked``: the provider cannot take it before ``until``; ``failed``/``deadline``: transient
    failures (the file waits and is tried again later); ``rejected``: never as sent;
    ``unsure``: an ambiguous attempt no listing settled yet (no other provider may be tried).
    """

    kind: Literal["rejected", "parked", "failed", "deadline", "unsure"]
    reason: str
    detail: str
    until: float | None = None


def verdict(
    failures: Sequence[Failure],
    blocked: Sequence[tuple[float, str]],
    *,
    now: float,
    later: float,
    give_up_after: float,
    first_tried: float,
) -> InboxdError:
    """The one error for the file once no provider is left to try.

    ``blocked``: (until, reason) of providers whose breaker let no call through; ``later``:
    the backoff before a file whose pass failed transiently is tried again. A file that may
    be stored already (``unsure``) waits for a listing and is never given up on; otherwise the
    file waits until the earliest time any provider may take it, unless ``give_up_after``
    passed since ``first_tried``; only a file every provider refused for good is rejected.
    """
    for failure in failures:
        if failure.kind == "unsure" and failure.until is not None:
            return Parked(failure.until, failure.reason, failure.detail)
    waits = [(f.until, f.reason, f.detail) for f in failures if f.until is not None]
    waits += [(until, reason, "") for until, reason in blocked]
    transient = [f for f in failures if f.kind in {"failed", "deadline"}]
    if transient or not (waits or failures):
        last = transient[-1] if transient else Failure("failed", "no_attempt", "")
        waits.append((now + later, last.reason, last.detail))
    if not waits:
        rejected = next(f for f in failures if f.kind == "rejected")
        assert is_reason(rejected.reason), rejected.reason  # a Permanent's reason, always
        return RejectedFile(rejected.reason, rejected.detail)
    until, reason, detail = min(waits)
    if reason not in _QUOTA_REASONS and gives_up(give_up_after, first_tried=first_tried, now=now):
        last_error = f"{reason}: {detail}" if detail else reason
        return RejectedFile(
            "upload_failed",
            f"failing for {now - first_tried:.0f} s, past give_up_after "
            f"({give_up_after:.0f} s); last: {last_error}",
        )
    return Parked(until, reason, detail)

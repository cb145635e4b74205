"""How long a provider asks us to wait, and until when a cap holds (pure).

The wait may come from a header (``retry-after-ms``, ``Retry-After``, the OpenAI-style
``x-ratelimit-reset-requests: 6m0s``) or only from the message text, in English or Chinese
(Kimi: ``"... please try again after 1 seconds"``; provider-facts.md § Real answers). GLM's
usage caps name their reset time in China time (``"…将在 2026-12-01 00:00:00 重置"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

__all__ = [
    "CHINA_TZ",
    "header",
    "header_wait",
    "limit_in_message",
    "message_wait",
    "next_china_midnight",
    "parse_duration",
    "parse_retry_after",
    "reset_time_in_message",
]

CHINA_TZ = timezone(timedelta(hours=8))  # bigmodel.cn and moonshot.cn speak China time
_DAY = 86_400.0
_UNITS = {
    "ms": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "毫秒": 0.001,
    "秒": 1.0,
    "秒钟": 1.0,
    "分": 60.0,
    "分钟": 60.0,
    "小时": 3600.0,
}
_NUMBER = r"(\d+(?:\.\d+)?)"
_GO_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
# "try again after 1 seconds", "retry after 2s", "Please try again in 6m0s", "in 20ms".
_EN_WAIT_RE = re.compile(
    r"(?:try again|retry)\s+(?:after|in)\s+"
    r"(?P<go>(?:\d+(?:\.\d+)?(?:ms|h|m|s))+)\b"
    rf"|(?:try again|retry)\s+(?:after|in)\s+{_NUMBER}\s*"
    r"(milliseconds?|seconds?|secs?|minutes?|mins?|hours?|ms|s|m|h)\b",
    re.IGNORECASE,
)
# "请在 3 秒后重试", "请30秒后再试", "1 分钟后重试", "请于 5 秒之后再尝试".
_ZH_WAIT_RE = re.compile(
    rf"{_NUMBER}\s*(毫秒|秒钟|秒|分钟|分|小时)\s*(?:后|之后|以后)\s*(?:再|请)?\s*(?:重试|再试|尝试|试)"
)
_LIMIT_RE = re.compile(r"max\s+(rpm|concurrency)\s*[:=]\s*(\d+)", re.IGNORECASE)
_RESET_TIME_RE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?")
_RESET_HEADERS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens", "x-ratelimit-reset")
_EPOCH_FLOOR = 1e9  # a bare reset value above this is a Unix time, not seconds to wait


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, looked up case-insensitively."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def _seconds(text: str, scale: float) -> float | None:
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds the server asks us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be delta-seconds or an HTTP date (RFC 9110 § 10.2.3); a date in the
    past gives 0. Unparseable or negative values give None.
    """
    millis = header(headers, "retry-after-ms")
    if millis is not None and (value := _seconds(millis.strip(), 0.001)) is not None:
        return value
    raw = header(headers, "retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw[:1].isdigit() or raw[:1] in ("-", "+", "."):
        return _seconds(raw, 1.0)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1.5s"``), or None."""
    text = text.strip()
    if not text or _GO_DURATION_RE.sub("", text):
        return None
    return sum(float(n) * _UNITS[u] for n, u in _GO_DURATION_RE.findall(text))


def _reset_header(headers: Mapping[str, str], *, now: float) -> float | None:
    """The longest wait the rate-limit reset headers name (``6m0s``, seconds or a Unix time)."""
    waits: list[float] = []
    for name in _RESET_HEADERS:
        raw = header(headers, name)
        if raw is None:
            continue
        value = parse_duration(raw)
        if value is None and (plain := _seconds(raw.strip(), 1.0)) is not None:
            value = max(0.0, plain - now) if plain > _EPOCH_FLOOR else plain
        if value is not None:
            waits.append(value)
    return max(waits, default=None)


def header_wait(headers: Mapping[str, str], *, now: float) -> float | None:
    """The wait the headers name: Retry-After (ms or s or date) first, then reset headers."""
    retry_after = parse_retry_after(headers, now=now)
    return retry_after if retry_after is not None else _reset_header(headers, now=now)


def message_wait(message: str) -> float | None:
    """The wait a message names, in English or Chinese, or None."""
    match = _EN_WAIT_RE.search(message)
    if match is not None:
        if match.group("go") is not None:
            return parse_duration(match.group("go"))
        return float(match.group(2)) * _UNITS[match.group(3).lower()]
    match = _ZH_WAIT_RE.search(message)
    if match is not None:
        return float(match.group(1)) * _UNITS[match.group(2)]
    return None


def limit_in_message(message: str) -> tuple[str, int] | None:
    """``("rate", 3)`` for Kimi's ``max RPM: 3``, ``("concurrency", 4)`` for ``max
    concurrency: 4``; None otherwise (a TPM ceiling counts tokens, not requests)."""
    match = _LIMIT_RE.search(message)
    if match is None:
        return None
    scope = "rate" if match.group(1).lower() == "rpm" else "concurrency"
    return scope, int(match.group(2))


def reset_time_in_message(message: str) -> float | None:
    """The Unix time of a ``YYYY-MM-DD HH:MM[:SS]`` the message names, read as China time."""
    match = _RESET_TIME_RE.search(message)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g or 0) for g in match.groups())
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=CHINA_TZ)
    except ValueError:
        return None
    return when.timestamp()


def next_china_midnight(now: float) -> float:
    """The Unix time of the next midnight in China (UTC+8) after ``now``: daily caps reset then."""
    offset = 8 * 3600.0
    return (math.floor((now + offset) / _DAY) + 1) * _DAY - offset

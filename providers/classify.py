"""Turn a provider's error answer (status, body, headers) into one ``providers.errors`` class.

Pure: plain values in (``now`` included), an exception instance out; every transport calls it,
so a server answer is classified the same whichever client received it. The error BODY
decides, not the status alone (provider-facts.md § Errors): Moonshot sends
``{"error": {"type", "message"}}``, GLM ``{"error": {"code": "1214", "message"}}`` with the code
as a string, and both use HTTP 429 for conditions that retrying cannot fix.

Decision order (the first rule that matches wins):

1. 401/403/434, Moonshot auth/permission types, GLM codes 1000-1004 → ``AuthFailed``.
2. Moonshot ``exceeded_current_quota_error``, GLM 1110-1121 (1113 balance exhausted),
   a 400 saying the account's file count or total size is exceeded → ``QuotaExhausted``.
3. Moonshot ``rate_limit_reached_error`` / ``engine_overloaded_error``, GLM 1302-1305
   → ``Retryable`` with ``retry_after``.
4. 435, or a 400 saying the file is too large → ``Permanent(reason="too_large")``;
   a 400 saying the size is zero → ``Permanent(reason="empty")``.
5. Any other 429, 408, 5xx → ``Retryable`` (never ambiguous: the server answered).
6. 404 → ``Permanent(reason="not_found")``; any other 4xx (bad purpose included)
   → ``Permanent(reason="upload_rejected")``.

An ``x-should-retry: true|false`` header, when present, is attached to the returned error as
``ProviderError.should_retry`` (also read by ``should_retry(err)``); it never
changes the class. Messages are built from the status, code and the provider's own message,
with anything shaped like an API key redacted; request headers are never looked at.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from providers.errors import (
    AuthFailed,
    Permanent,
    ProviderError,
    QuotaExhausted,
    Retryable,
)
from providers.redaction import scrub

__all__ = [
    "classify",
    "error_fields",
    "parse_retry_after",
    "redact",
    "should_retry",
]


_AUTH_STATUSES = frozenset({401, 403, 434})
_KIMI_AUTH_TYPES = frozenset(
    {"invalid_authentication_error", "incorrect_api_key_error", "permission_denied_error"}
)
_KIMI_TRANSIENT_TYPES = frozenset({"rate_limit_reached_error", "engine_overloaded_error"})
_KIMI_QUOTA_TYPE = "exceeded_current_quota_error"
_GLM_AUTH_CODES = range(1000, 1005)
_GLM_QUOTA_CODES = range(1110, 1122)  # 1113 arrears / balance exhausted, 1110-1121 account locked
_GLM_TRANSIENT_CODES = range(1302, 1306)  # concurrency, frequency, daily limit, rate limit
_MAX_MESSAGE = 300

# Key shapes: OpenAI-style "sk-..." (Moonshot) and Zhipu "<32 hex>.<secret>"; bearer tokens.
_SECRET_RE = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{4,}|[0-9a-fA-F]{32}\.[A-Za-z0-9]{8,}|Bearer\s+\S+|eyJ[\w\-]+\.[\w\-.]+)"
)
_TOO_LARGE_RE = re.compile(r"too large|exceed[s]?\s+\d+\s*[mg]i?b|size exceeds|超过|过大")
_EMPTY_RE = re.compile(r"size is zero|empty file|file is empty|为空")
_FILE_COUNT_RE = re.compile(r"max(imum)? file count|number of files|total size of files")


def redact(text: str) -> str:
    """``text`` without any configured API key (by value, ``providers.redaction``) or anything
    shaped like a key or bearer token, and shortened."""
    cleaned = _SECRET_RE.sub("[redacted]", scrub(text))
    if len(cleaned) > _MAX_MESSAGE:
        cleaned = cleaned[: _MAX_MESSAGE - 1] + "…"
    return cleaned


def error_fields(body: object) -> tuple[str | None, str]:
    """``(code, message)`` from an error body: the full ``{"error": {...}}`` or the inner object.

    ``code`` is GLM's ``error.code`` (as a string) or else Moonshot's ``error.type``.
    A non-JSON body (a proxy's HTML page, say) becomes the message.
    """
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        return None, body.strip()
    if not isinstance(body, Mapping):
        return None, ""
    inner = body.get("error")
    err: Mapping[object, object] = inner if isinstance(inner, Mapping) else body
    raw_code = err.get("code")
    code = str(raw_code) if raw_code not in (None, "") else None
    raw_type = err.get("type")
    if code is None and isinstance(raw_type, str) and raw_type:
        code = raw_type
    message = err.get("message")
    if message is None and isinstance(inner, str):
        message = inner
    return code, "" if message is None else str(message)


def _header(headers: Mapping[str, str], name: str) -> str | None:
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
    millis = _header(headers, "retry-after-ms")
    if millis is not None and (value := _seconds(millis.strip(), 0.001)) is not None:
        return value
    raw = _header(headers, "retry-after")
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


def should_retry(error: ProviderError) -> bool | None:
    """The server's ``x-should-retry`` verdict attached by ``classify``, or None."""
    return error.should_retry


def _glm_code(code: str | None) -> int | None:
    if code is None or not code.isdigit():
        return None
    return int(code)


def classify(
    provider: str, status: int, body: object, headers: Mapping[str, str], *, now: float
) -> ProviderError:
    """The error a provider's non-2xx answer means (see the module docstring for the rules)."""
    code, raw_message = error_fields(body)
    message = redact(raw_message) or "no message in the error body"
    lowered = raw_message.lower()
    number = _glm_code(code)
    retry_after = parse_retry_after(headers, now=now)
    error: ProviderError
    if (
        status in _AUTH_STATUSES
        or code in _KIMI_AUTH_TYPES
        or (number is not None and number in _GLM_AUTH_CODES)
    ):
        error = AuthFailed(
            f"{message} (check the {provider} API key and that it belongs to this base_url's "
            "region; the breaker stays open until config is reloaded)",
            provider=provider,
            status=status,
            code=code,
        )
    elif (
        code == _KIMI_QUOTA_TYPE
        or (number is not None and number in _GLM_QUOTA_CODES)
        or (status == 400 and _FILE_COUNT_RE.search(lowered) is not None)
    ):
        error = QuotaExhausted(
            f"{message} (quota, balance or file-count cap reached: top up the account or "
            "delete old files; retrying will not help)",
            provider=provider,
            status=status,
            code=code,
        )
    elif code in _KIMI_TRANSIENT_TYPES or (number is not None and number in _GLM_TRANSIENT_CODES):
        error = Retryable(
            message, retry_after=retry_after, provider=provider, status=status, code=code
        )
    elif status == 435 or (status == 400 and _TOO_LARGE_RE.search(lowered) is not None):
        error = Permanent(message, reason="too_large", provider=provider, status=status, code=code)
    elif status == 400 and _EMPTY_RE.search(lowered) is not None:
        error = Permanent(message, reason="empty", provider=provider, status=status, code=code)
    elif status in (408, 429) or status >= 500:
        error = Retryable(
            message, retry_after=retry_after, provider=provider, status=status, code=code
        )
    elif status == 404:
        error = Permanent(message, reason="not_found", provider=provider, status=status, code=code)
    else:
        error = Permanent(
            message, reason="upload_rejected", provider=provider, status=status, code=code
        )
    verdict = _header(headers, "x-should-retry")
    if verdict is not None and verdict.strip().lower() in ("true", "false"):
        error.should_retry = verdict.strip().lower() == "true"
    return error

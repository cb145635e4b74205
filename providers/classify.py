"""Turn a provider's error answer (status, body, headers) into one ``providers.errors`` class.

Pure: plain values in (``now`` included), an exception instance out; every transport calls it,
so a server answer is classified the same whichever client received it. The error BODY
decides, not the status alone (provider-facts.md § Errors and § Real answers): Moonshot sends
``{"error": {"type", "message"}}``, GLM ``{"error": {"code": "1214", "message"}}`` with the code
as a string, and both use HTTP 429 for conditions that retrying cannot fix.

The decision is the table :data:`RULES`: one row per documented answer (provider, status,
code or type, message pattern → verdict); the first row that matches wins. The verdict says
which class is raised and how its fields are read (:func:`classify`):

- ``auth`` → ``AuthFailed``; ``balance`` → ``QuotaExhausted(balance=True)`` (top up);
- ``quota`` → ``QuotaExhausted`` (locked account, file-count cap: park for ``quota_park``);
  ``quota_daily`` → ``QuotaExhausted(until=`` the time named, else next midnight China time
  ``)``; ``quota_reset`` → ``QuotaExhausted(until=`` the "将在 … 重置" time ``)``;
- ``throttled`` / ``throttled_concurrency`` → ``Throttled(scope="rate"|"concurrency")``
  with ``retry_after`` from the headers or the message text and ``limit`` from Kimi's
  ``max RPM: N`` / ``max concurrency: N``;
- ``transient`` → ``Retryable`` (never ambiguous: the server answered);
- ``too_large``, ``empty``, ``extract_failed``, ``not_found``, ``upload_rejected``
  → ``Permanent(reason=...)``.

An ``x-should-retry: true|false`` header, when present, is attached to the returned error as
``ProviderError.should_retry`` (also read by ``should_retry(err)``); it never
changes the class. Messages are built from the status, code and the provider's own message,
with anything shaped like an API key redacted; request headers are never looked at.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

from providers.errors import (
    AuthFailed,
    Permanent,
    ProviderError,
    QuotaExhausted,
    Reason,
    Retryable,
    Throttled,
    is_reason,
)
from providers.redaction import scrub
from providers.waits import (
    header,
    header_wait,
    limit_in_message,
    message_wait,
    next_china_midnight,
    parse_retry_after,
    reset_time_in_message,
)

__all__ = [
    "RULES",
    "Rule",
    "classify",
    "error_fields",
    "parse_retry_after",
    "redact",
    "rule_for",
    "should_retry",
]

_MAX_MESSAGE = 300

# Key shapes: OpenAI-style "sk-..." (Moonshot) and Zhipu "<32 hex>.<secret>"; bearer tokens.
_SECRET_RE = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{4,}|[0-9a-fA-F]{32}\.[A-Za-z0-9]{8,}|Bearer\s+\S+|eyJ[\w\-]+\.[\w\-.]+)"
)


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


def should_retry(error: ProviderError) -> bool | None:
    """The server's ``x-should-retry`` verdict attached by ``classify``, or None."""
    return error.should_retry


def _codes(*ranges: range | str) -> frozenset[str]:
    """GLM's string codes for numeric ranges and single codes."""
    out: set[str] = set()
    for item in ranges:
        out.update([item] if isinstance(item, str) else (str(n) for n in item))
    return frozenset(out)


_SERVER_ERRORS = range(500, 600)
_TRANSIENT_STATUSES = frozenset({408, 429, *_SERVER_ERRORS})


@dataclass(frozen=True)
class Rule:
    """One row of the table: which answers it matches and what they mean.

    ``None`` matches anything; ``pattern`` is searched in the lower-cased message.
    """

    name: str
    verdict: str
    provider: str | None = None
    statuses: Container[int] | None = None
    codes: frozenset[str] | None = None
    pattern: re.Pattern[str] | None = None

    def matches(self, provider: str, status: int, code: str | None, message: str) -> bool:
        """Whether this row describes the answer."""
        return (
            (self.provider is None or self.provider == provider)
            and (self.statuses is None or status in self.statuses)
            and (self.codes is None or code in self.codes)
            and (self.pattern is None or self.pattern.search(message) is not None)
        )


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# provider-facts.md § Moonshot / Kimi, § Zhipu / Z.ai GLM, § Real answers. First match wins.
RULES: tuple[Rule, ...] = (
    # Kimi: {"error": {"type", "message"}}
    Rule("kimi-401", "auth", "kimi", statuses={401}),
    Rule(
        "kimi-auth-type",
        "auth",
        "kimi",
        codes=frozenset({"invalid_authentication_error", "incorrect_api_key_error"}),
    ),
    # Kimi's error-code page: 403 is "insufficient balance", not a key problem.
    Rule("kimi-403-balance", "balance", "kimi", statuses={403}),
    Rule("kimi-quota", "balance", "kimi", codes=frozenset({"exceeded_current_quota_error"})),
    Rule(
        "kimi-concurrency",
        "throttled_concurrency",
        "kimi",
        codes=frozenset({"rate_limit_reached_error"}),
        pattern=_re(r"max concurrency"),
    ),
    Rule("kimi-rate", "throttled", "kimi", codes=frozenset({"rate_limit_reached_error"})),
    Rule("kimi-overloaded", "transient", "kimi", codes=frozenset({"engine_overloaded_error"})),
    # "extract task failed: failed" with type "" (seen), "Failed to extract file: …" (documented).
    Rule(
        "kimi-extract",
        "extract_failed",
        "kimi",
        statuses=_SERVER_ERRORS,
        pattern=_re(r"extract task failed|failed to extract file"),
    ),
    # GLM: {"error": {"code": "1214", "message"}}, code a string.
    Rule("glm-auth-status", "auth", "glm", statuses={401, 403, 434}),
    Rule("glm-auth-code", "auth", "glm", codes=_codes(range(1000, 1005))),
    Rule("glm-1113-arrears", "balance", "glm", codes=_codes("1113")),
    Rule("glm-1120-unreachable", "transient", "glm", codes=_codes("1120")),
    Rule("glm-locked", "quota", "glm", codes=_codes(range(1110, 1122)) - {"1113", "1120"}),
    Rule("glm-1302-concurrency", "throttled_concurrency", "glm", codes=_codes("1302")),
    Rule("glm-rate", "throttled", "glm", codes=_codes("1303", "1305")),
    Rule("glm-1304-daily", "quota_daily", "glm", codes=_codes("1304")),
    Rule("glm-cap", "quota_reset", "glm", codes=_codes("1308", "1310")),
    Rule("glm-435", "too_large", "glm", statuses={435}),
    # The file parser refusing a type or a task (the emulator's 1214 answers naming 文件解析;
    # the live wording is unverified): no text will come for this file.
    Rule("glm-parser", "extract_failed", "glm", statuses={400, 404}, pattern=_re(r"文件解析")),
    # Either provider, by the message (an unknown code in a known shape).
    Rule(
        "file-count",
        "quota",
        statuses={400},
        pattern=_re(r"max(imum)? file count|number of files|total size of files"),
    ),
    Rule("balance-text", "balance", pattern=_re(r"insufficient balance|欠费|余额不足")),
    Rule("reset-text", "quota_reset", pattern=_re(r"将在.+重置")),
    Rule("daily-text", "quota_daily", pattern=_re(r"今日调用次数|已达.*今日.*限额")),
    Rule("concurrency-text", "throttled_concurrency", statuses={429}, pattern=_re(r"并发")),
    Rule("rate-text", "throttled", statuses={429}, pattern=_re(r"频率|rate limit")),
    Rule(
        "too-large-text",
        "too_large",
        statuses={400},
        # "超过" (exceeds) alone is not a size: it must name one, or come with 大小 (size).
        pattern=_re(
            r"too large|exceeds?\s+\d+\s*[mg]i?b|size exceeds|过大|大小超过|超过\s*\d+\s*[mg]i?b"
        ),
    ),
    Rule(
        "empty-text",
        "empty",
        statuses={400},
        pattern=_re(r"size is zero|empty file|file is empty|为空"),
    ),
    Rule("transient-status", "transient", statuses=_TRANSIENT_STATUSES),
    Rule("not-found", "not_found", statuses={404}),
    Rule("rejected", "upload_rejected"),
)

_PERMANENT: frozenset[Reason] = frozenset(
    {"too_large", "empty", "extract_failed", "not_found", "upload_rejected"}
)


def rule_for(provider: str, status: int, code: str | None, message: str) -> Rule:
    """The first row of :data:`RULES` that matches (the last row matches everything)."""
    lowered = message.lower()
    return next(r for r in RULES if r.matches(provider, status, code, lowered))


def _when(until: float) -> str:
    return datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def classify(
    provider: str, status: int, body: object, headers: Mapping[str, str], *, now: float
) -> ProviderError:
    """The error a provider's non-2xx answer means (the first matching row of RULES)."""
    code, raw_message = error_fields(body)
    message = redact(raw_message) or "no message in the error body"
    rule = rule_for(provider, status, code, raw_message)
    where: _Where = {"provider": provider, "status": status, "code": code}
    wait = header_wait(headers, now=now)
    if wait is None:
        wait = message_wait(raw_message)
    error = _build(rule.verdict, where, raw_message, message, wait=wait, now=now)
    verdict = header(headers, "x-should-retry")
    if verdict is not None and verdict.strip().lower() in ("true", "false"):
        error.should_retry = verdict.strip().lower() == "true"
    return error


class _Where(TypedDict):
    provider: str
    status: int
    code: str | None


def _build(  # noqa: PLR0911 - one return per verdict reads best
    verdict: str, where: _Where, raw: str, message: str, *, wait: float | None, now: float
) -> ProviderError:
    """The exception for ``verdict``; ``raw`` is the unredacted message (parsed, never shown)."""
    provider = where["provider"]
    if verdict == "auth":
        return AuthFailed(
            f"{message} (check the {provider} API key and that it belongs to this base_url's "
            "region; the breaker stays open until config is reloaded)",
            **where,
        )
    if verdict == "balance":
        return QuotaExhausted(
            f"{message} (the {provider} account's balance is exhausted: top up the account; "
            "the API key is fine. Uploads to it wait until then)",
            balance=True,
            **where,
        )
    if verdict in ("quota_daily", "quota_reset"):
        until = reset_time_in_message(raw)
        if until is None and verdict == "quota_daily":
            until = next_china_midnight(now)
        after = f"it resets at {_when(until)}" if until is not None else "it resets later"
        return QuotaExhausted(
            f"{message} ({provider} usage cap reached: {after}; uploads to it wait until then)",
            until=until,
            **where,
        )
    if verdict == "quota":
        return QuotaExhausted(
            f"{message} ({provider} quota, account lock or file-count cap reached: delete old "
            f"files, or contact {provider} support about the account; retrying will not help)",
            **where,
        )
    if verdict in ("throttled", "throttled_concurrency"):
        named = limit_in_message(raw)
        scope = "concurrency" if verdict == "throttled_concurrency" else "rate"
        return Throttled(
            message,
            retry_after=wait,
            scope=scope,
            limit=named[1] if named is not None and named[0] == scope else None,
            **where,
        )
    if verdict == "extract_failed":
        message = (
            f"{message} ({provider} could not extract this file; the same bytes fail again: "
            "check that the file opens, or send it to an inbox with another purpose)"
        )
    if is_reason(verdict) and verdict in _PERMANENT:
        return Permanent(message, reason=verdict, **where)
    return Retryable(message, retry_after=wait, **where)

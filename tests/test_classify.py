"""Table tests for providers.classify: the error body decides, Retry-After is parsed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from providers.classify import (
    RULES,
    classify,
    error_fields,
    parse_retry_after,
    redact,
    rule_for,
    should_retry,
)
from providers.errors import (
    AuthFailed,
    Permanent,
    ProviderError,
    QuotaExhausted,
    Retryable,
    Throttled,
)
from providers.waits import header_wait, message_wait, next_china_midnight

NOW = 1_700_000_000.0


def _kimi(etype: str, message: str = "m") -> dict[str, object]:
    return {"error": {"type": etype, "message": message}}


def _glm(code: str, message: str = "m") -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


KIMI_RPM = (
    "Your account org-abc123<ak-def456> request reached organization max RPM: 3, "
    "please try again after 1 seconds"
)
KIMI_TPM = (
    "Your account org-abc123<ak-def456> request reached organization TPM rate limit, "
    "current: 32556, max TPM: 32000, please try again after 2 seconds"
)
KIMI_CONCURRENCY = (
    "Your account org-abc123<ak-def456> request reached organization max concurrency: 4, "
    "please try again after 1 seconds"
)
GLM_1302 = "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"
GLM_1303 = "您当前使用该API的频率过高，请降低频率，或联系客服增加限额。"
GLM_1304 = "该 API 已达今日调用次数限额"
GLM_1308 = "已达到 5 小时的使用上限。您的限额将在 2026-12-01 00:00:00 重置。"
GLM_1113 = "您的账户已欠费，请充值后重试。"
# 2023-11-16 00:00:00 China time (UTC+8): the next midnight there after NOW.
NEXT_CHINA_MIDNIGHT = 1_700_064_000.0
CAP_RESET = 1_796_054_400.0  # 2026-12-01 00:00:00 UTC+8


@dataclass(frozen=True)
class Case:
    """One real answer, the table row it must hit and what it must become."""

    rule: str
    provider: str
    status: int
    body: object
    kind: type[ProviderError]
    fields: Mapping[str, object] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


CASES: list[Case] = [
    # Kimi (Moonshot)
    Case(
        "kimi-401",
        "kimi",
        401,
        _kimi("invalid_authentication_error", "Invalid Authentication"),
        AuthFailed,
    ),
    Case("kimi-auth-type", "kimi", 400, _kimi("incorrect_api_key_error"), AuthFailed),
    Case(
        "kimi-403-balance",
        "kimi",
        403,
        _kimi("permission_denied_error", "insufficient balance"),
        QuotaExhausted,
        {"balance": True, "until": None},
    ),
    Case(
        "kimi-quota",
        "kimi",
        429,
        _kimi(
            "exceeded_current_quota_error",
            "Your account org-abc<ak-def> is suspended, please check your plan and billing details",
        ),
        QuotaExhausted,
        {"balance": True, "until": None},
    ),
    Case(
        "kimi-concurrency",
        "kimi",
        429,
        _kimi("rate_limit_reached_error", KIMI_CONCURRENCY),
        Throttled,
        {"scope": "concurrency", "limit": 4, "retry_after": 1.0},
    ),
    Case(
        "kimi-rate",
        "kimi",
        429,
        _kimi("rate_limit_reached_error", KIMI_RPM),
        Throttled,
        {"scope": "rate", "limit": 3, "retry_after": 1.0},
    ),
    Case(
        "kimi-rate",
        "kimi",
        429,
        _kimi("rate_limit_reached_error", KIMI_TPM),
        Throttled,
        {"scope": "rate", "limit": None, "retry_after": 2.0},
    ),
    Case(
        "kimi-overloaded",
        "kimi",
        429,
        _kimi(
            "engine_overloaded_error",
            "The engine is currently overloaded, please try again later",
        ),
        Retryable,
        {"retry_after": None},
    ),
    Case(
        "kimi-extract",
        "kimi",
        500,
        {"error": {"message": "extract task failed: failed", "type": ""}},
        Permanent,
        {"reason": "extract_failed"},
    ),
    Case(
        "kimi-extract",
        "kimi",
        500,
        _kimi("server_error", "Failed to extract file: unsupported encryption"),
        Permanent,
        {"reason": "extract_failed"},
    ),
    # GLM (Zhipu / Z.ai), string codes
    Case(
        "glm-parser",
        "glm",
        400,
        _glm("1214", "文件解析不支持该文件类型: 'MP3' (tool_type lite)"),
        Permanent,
        {"reason": "extract_failed"},
    ),
    Case(
        "glm-parser",
        "glm",
        404,
        _glm("1214", "文件解析任务不存在: 9f2c"),
        Permanent,
        {"reason": "extract_failed"},
    ),
    Case(
        "glm-auth-status", "glm", 401, _glm("1001", "Header中未收到Authentication参数"), AuthFailed
    ),
    Case("glm-auth-status", "glm", 434, _glm("1220", "您无权访问该API"), AuthFailed),
    Case("glm-auth-code", "glm", 400, _glm("1002"), AuthFailed),
    Case("glm-1113-arrears", "glm", 429, _glm("1113", GLM_1113), QuotaExhausted, {"balance": True}),
    Case(
        "glm-1120-unreachable",
        "glm",
        429,
        _glm("1120", "您的账户当前无法访问，请稍后重试"),
        Retryable,
    ),
    Case(
        "glm-locked",
        "glm",
        429,
        _glm("1110", "您的账户当前处于非活动状态"),
        QuotaExhausted,
        {"balance": False, "until": None},
    ),
    Case("glm-locked", "glm", 429, _glm("1121"), QuotaExhausted, {"balance": False}),
    Case(
        "glm-1302-concurrency",
        "glm",
        429,
        _glm("1302", GLM_1302),
        Throttled,
        {"scope": "concurrency", "limit": None, "retry_after": None},
    ),
    Case("glm-rate", "glm", 429, _glm("1303", GLM_1303), Throttled, {"scope": "rate"}),
    Case(
        "glm-rate",
        "glm",
        429,
        _glm("1305", "请求过多，请在 3 秒后重试"),
        Throttled,
        {"scope": "rate", "retry_after": 3.0},
    ),
    Case(
        "glm-1304-daily",
        "glm",
        429,
        _glm("1304", GLM_1304),
        QuotaExhausted,
        {"until": NEXT_CHINA_MIDNIGHT, "balance": False},
    ),
    Case(
        "glm-cap",
        "glm",
        429,
        _glm("1308", GLM_1308),
        QuotaExhausted,
        {"until": CAP_RESET, "balance": False},
    ),
    Case(
        "glm-cap",
        "glm",
        429,
        _glm("1310", "已达到每周/每月的使用上限，将在 2026-12-01 00:00:00 重置"),
        QuotaExhausted,
        {"until": CAP_RESET},
    ),
    Case(
        "glm-435",
        "glm",
        435,
        _glm("1000435", "File size exceeds 100MB"),
        Permanent,
        {"reason": "too_large"},
    ),
    # Either provider, by the message
    Case(
        "file-count",
        "kimi",
        400,
        _kimi(
            "invalid_request_error",
            "The number of files you have uploaded exceeded the max file count 1000",
        ),
        QuotaExhausted,
        {"balance": False},
    ),
    Case(
        "file-count",
        "glm",
        400,
        _glm("1214", "The total size of files you have uploaded exceeded the max size 10GB"),
        QuotaExhausted,
    ),
    Case(
        "balance-text", "glm", 429, _glm("9999", "账户余额不足"), QuotaExhausted, {"balance": True}
    ),
    Case(
        "reset-text",
        "glm",
        429,
        _glm("1399", "您的限额将在 2026-12-01 00:00:00 重置"),
        QuotaExhausted,
        {"until": CAP_RESET},
    ),
    Case(
        "daily-text",
        "glm",
        429,
        _glm("1399", GLM_1304),
        QuotaExhausted,
        {"until": NEXT_CHINA_MIDNIGHT},
    ),
    Case(
        "concurrency-text", "glm", 429, _glm("1399", GLM_1302), Throttled, {"scope": "concurrency"}
    ),
    Case("rate-text", "glm", 429, _glm("1399", GLM_1303), Throttled, {"scope": "rate"}),
    Case(
        "too-large-text",
        "kimi",
        400,
        _kimi("invalid_request_error", "File size is too large, max file size is 100MB, please..."),
        Permanent,
        {"reason": "too_large"},
    ),
    Case(
        "too-large-text",
        "glm",
        400,
        _glm("1214", "File size exceeds 100MB"),
        Permanent,
        {"reason": "too_large"},
    ),
    Case(
        "too-large-text",
        "glm",
        400,
        _glm("1214", "文件大小超过限制"),
        Permanent,
        {"reason": "too_large"},
    ),
    Case(
        "empty-text",
        "kimi",
        400,
        _kimi("invalid_request_error", "File size is zero, please confirm the file"),
        Permanent,
        {"reason": "empty"},
    ),
    Case("transient-status", "kimi", 429, {"error": {"message": "slow down"}}, Retryable),
    Case("transient-status", "glm", 429, _glm("1306"), Retryable),
    Case("transient-status", "kimi", 500, _kimi("server_error", "boom"), Retryable),
    Case("transient-status", "glm", 500, _glm("500"), Retryable),
    Case("transient-status", "glm", 503, "<html>bad gateway</html>", Retryable),
    Case("transient-status", "kimi", 502, None, Retryable),
    Case("transient-status", "kimi", 408, None, Retryable),
    Case(
        "not-found", "glm", 404, _glm("1404", "file not found"), Permanent, {"reason": "not_found"}
    ),
    Case(
        "rejected",
        "kimi",
        400,
        _kimi("invalid_request_error", "Invalid purpose: only 'file-extract' accepted"),
        Permanent,
        {"reason": "upload_rejected"},
    ),
    Case(
        "rejected",
        "glm",
        400,
        _glm("1214", "purpose invalid"),
        Permanent,
        {"reason": "upload_rejected"},
    ),
    # "超过" (exceeds) alone is not "too large": a 1214 about a parameter out of range.
    Case(
        "rejected",
        "glm",
        400,
        _glm("1214", "limit 参数超过范围"),
        Permanent,
        {"reason": "upload_rejected"},
    ),
    Case(
        "rejected",
        "kimi",
        422,
        _kimi("invalid_request_error"),
        Permanent,
        {"reason": "upload_rejected"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}-{c.status}" for c in CASES])
def test_classify_table(case: Case) -> None:
    """Each real answer hits its own row and becomes exactly its class with its fields."""
    code, message = error_fields(case.body)
    assert rule_for(case.provider, case.status, code, message).name == case.rule
    error = classify(case.provider, case.status, case.body, case.headers, now=NOW)
    assert type(error) is case.kind
    assert (error.provider, error.status) == (case.provider, case.status)
    for name, value in case.fields.items():
        assert getattr(error, name) == value, name
    if isinstance(error, Retryable):
        assert error.ambiguous is False


def test_every_row_has_a_real_answer() -> None:
    """Every row of the table is proven by at least one real answer above."""
    assert {r.name for r in RULES} == {c.rule for c in CASES}


def test_balance_message_says_top_up_not_the_key() -> None:
    """Kimi's 403 tells the operator to top up the account, not to check the key."""
    error = classify(
        "kimi", 403, _kimi("permission_denied_error", "insufficient balance"), {}, now=NOW
    )
    assert "top up" in str(error)
    assert "check the" not in str(error)


def test_extract_failure_message_says_what_to_do() -> None:
    """An extraction failure names the cause and the operator's options."""
    body = {"error": {"message": "extract task failed: failed", "type": ""}}
    error = classify("kimi", 500, body, {}, now=NOW)
    assert str(error) == (
        "kimi HTTP 500: extract task failed: failed (kimi could not extract this file; the same "
        "bytes fail again: check that the file opens, or send it to an inbox with another "
        "purpose)"
    )


def test_cap_message_names_the_reset_time() -> None:
    """A GLM usage cap's message names when it resets, in UTC."""
    error = classify("glm", 429, _glm("1308", GLM_1308), {}, now=NOW)
    assert "it resets at 2026-11-30 16:00:00 UTC" in str(error)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("please try again after 1 seconds", 1.0),
        ("Please try again in 6m0s.", 360.0),
        ("Please try again in 20ms.", 0.02),
        ("retry after 2.5 s", 2.5),
        ("try again after 2 minutes", 120.0),
        ("请在 3 秒后重试", 3.0),
        ("请30秒后再试", 30.0),
        ("请 1 分钟后重试", 60.0),
        ("您当前使用该API的频率过高，请降低频率", None),
        ("slow down", None),
    ],
)
def test_message_wait(message: str, expected: float | None) -> None:
    """The wait named only in the message text is read in English and Chinese."""
    assert message_wait(message) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-reset-requests": "1s"}, 1.0),
        ({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "20ms"}, 360.0),
        ({"x-ratelimit-reset": "7"}, 7.0),
        ({"x-ratelimit-reset": str(int(NOW) + 30)}, 30.0),
        ({"x-ratelimit-reset-requests": "soon"}, None),
        ({"Retry-After": "4", "x-ratelimit-reset-requests": "6m0s"}, 4.0),
    ],
)
def test_header_wait(headers: Mapping[str, str], expected: float | None) -> None:
    """Retry-After wins; else the longest rate-limit reset header names the wait."""
    assert header_wait(headers, now=NOW) == expected


def test_header_wait_beats_message_wait() -> None:
    """A Retry-After header names the wait even when the message names another."""
    body = _kimi("rate_limit_reached_error", KIMI_RPM)
    error = classify("kimi", 429, body, {"Retry-After": "20"}, now=NOW)
    assert isinstance(error, Throttled)
    assert error.retry_after == 20.0


def test_daily_limit_at_china_midnight_rolls_to_next_day() -> None:
    """A 1304 exactly at China midnight parks until the following midnight, never now."""
    assert next_china_midnight(NEXT_CHINA_MIDNIGHT) == NEXT_CHINA_MIDNIGHT + 86_400


def test_inner_error_object_is_accepted() -> None:
    """The openai SDK's ``.body`` (the inner error object) classifies like the full body."""
    inner = {"type": "exceeded_current_quota_error", "message": "suspended"}
    error = classify("kimi", 429, inner, {}, now=NOW)
    assert type(error) is QuotaExhausted
    assert error.code == "exceeded_current_quota_error"


def test_glm_numeric_code_is_treated_as_string() -> None:
    """A GLM code sent as a JSON number is read like the documented string."""
    error = classify("glm", 429, {"error": {"code": 1113, "message": "x"}}, {}, now=NOW)
    assert type(error) is QuotaExhausted
    assert error.code == "1113"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER": "0"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"retry-after-ms": "nope", "Retry-After": "9"}, 9.0),
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "Tue, 14 Nov 2023 22:13:40 GMT"}, 20.0),
        ({"Retry-After": "Tue, 14 Nov 2023 22:00:00 GMT"}, 0.0),
    ],
)
def test_parse_retry_after(headers: Mapping[str, str], expected: float | None) -> None:
    """Retry-After is read from retry-after-ms first, then seconds or an HTTP date."""
    # NOW is 2023-11-14 22:13:20 UTC.
    assert parse_retry_after(headers, now=NOW) == expected


def test_retry_after_reaches_transient_errors() -> None:
    """A transient 429 carries the server's Retry-After."""
    error = classify("glm", 429, _glm("1303"), {"Retry-After": "12"}, now=NOW)
    assert isinstance(error, Retryable)
    assert error.retry_after == 12.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({}, None), ({"x-should-retry": "true"}, True), ({"X-Should-Retry": "false"}, False)],
)
def test_x_should_retry_is_attached(headers: Mapping[str, str], expected: bool | None) -> None:
    """The server's x-should-retry verdict is kept on the error without changing its class."""
    error = classify("kimi", 500, _kimi("server_error"), headers, now=NOW)
    assert type(error) is Retryable
    assert should_retry(error) is expected


def test_messages_never_carry_keys() -> None:
    """A provider message echoing a key is redacted before it reaches the exception text."""
    body = _kimi("incorrect_api_key_error", "Incorrect API key provided: sk-abcdef123456")
    error = classify("kimi", 401, body, {"Authorization": "Bearer sk-secret999"}, now=NOW)
    assert "sk-abcdef123456" not in str(error)
    assert "sk-secret999" not in str(error)
    assert "[redacted]" in str(error)
    glm_key = "0123456789abcdef0123456789abcdef.SeCrEtSeCrEt1234"
    assert redact(f"key {glm_key} bad") == "key [redacted] bad"


def test_error_fields_non_json() -> None:
    """A non-JSON body becomes the message and no code."""
    assert error_fields(b"  <html>oops</html> ") == (None, "<html>oops</html>")
    assert error_fields(None) == (None, "")
    assert error_fields({"error": {"code": "1214", "message": "bad"}}) == ("1214", "bad")

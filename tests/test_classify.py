"""Table tests for providers.classify: the error body decides, Retry-After is parsed."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from providers.classify import (
    classify,
    error_fields,
    parse_retry_after,
    redact,
    should_retry,
)
from providers.errors import (
    AuthFailed,
    Permanent,
    ProviderError,
    QuotaExhausted,
    Retryable,
)

NOW = 1_700_000_000.0


def _kimi(etype: str, message: str = "m") -> dict[str, object]:
    return {"error": {"type": etype, "message": message}}


def _glm(code: str, message: str = "m") -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


# (provider, status, body, expected class, expected reason for Permanent or None)
CASES: list[tuple[str, int, object, type[ProviderError], str | None]] = [
    ("kimi", 401, _kimi("invalid_authentication_error"), AuthFailed, None),
    ("kimi", 401, _kimi("incorrect_api_key_error"), AuthFailed, None),
    ("kimi", 403, _kimi("permission_denied_error"), AuthFailed, None),
    ("glm", 401, _glm("1001"), AuthFailed, None),
    ("glm", 400, _glm("1002"), AuthFailed, None),
    ("glm", 434, _glm("1220", "no permission for the files API"), AuthFailed, None),
    ("kimi", 429, _kimi("exceeded_current_quota_error"), QuotaExhausted, None),
    ("glm", 429, _glm("1113", "balance exhausted"), QuotaExhausted, None),
    ("glm", 429, _glm("1110"), QuotaExhausted, None),
    ("glm", 429, _glm("1121"), QuotaExhausted, None),
    (
        "kimi",
        400,
        _kimi(
            "invalid_request_error",
            "The number of files you have uploaded exceeded the max file count 1000",
        ),
        QuotaExhausted,
        None,
    ),
    (
        "glm",
        400,
        _glm("1214", "The total size of files you have uploaded exceeded the max size 10GB"),
        QuotaExhausted,
        None,
    ),
    ("kimi", 429, _kimi("rate_limit_reached_error"), Retryable, None),
    ("kimi", 429, _kimi("engine_overloaded_error"), Retryable, None),
    ("glm", 429, _glm("1302"), Retryable, None),
    ("glm", 429, _glm("1303", "File upload frequency too fast"), Retryable, None),
    ("glm", 429, _glm("1304"), Retryable, None),
    ("glm", 429, _glm("1305"), Retryable, None),
    ("glm", 429, _glm("1306"), Retryable, None),
    ("kimi", 429, {"error": {"message": "slow down"}}, Retryable, None),
    (
        "kimi",
        400,
        _kimi("invalid_request_error", "File size is too large, max file size is 100MB, please..."),
        Permanent,
        "too_large",
    ),
    ("glm", 435, _glm("1000435", "File size exceeds 100MB"), Permanent, "too_large"),
    ("glm", 400, _glm("1214", "File size exceeds 100MB"), Permanent, "too_large"),
    (
        "kimi",
        400,
        _kimi("invalid_request_error", "File size is zero, please confirm the file"),
        Permanent,
        "empty",
    ),
    (
        "kimi",
        400,
        _kimi("invalid_request_error", "Invalid purpose: only 'file-extract' accepted"),
        Permanent,
        "upload_rejected",
    ),
    ("glm", 400, _glm("1214", "purpose invalid"), Permanent, "upload_rejected"),
    ("glm", 404, _glm("1404", "file not found"), Permanent, "not_found"),
    ("kimi", 422, _kimi("invalid_request_error"), Permanent, "upload_rejected"),
    ("kimi", 500, _kimi("server_error", "Failed to extract file: boom"), Retryable, None),
    ("glm", 500, _glm("500"), Retryable, None),
    ("glm", 503, "<html>bad gateway</html>", Retryable, None),
    ("kimi", 502, None, Retryable, None),
    ("kimi", 408, None, Retryable, None),
]


@pytest.mark.parametrize(("provider", "status", "body", "kind", "reason"), CASES)
def test_classify_table(
    provider: str, status: int, body: object, kind: type[ProviderError], reason: str | None
) -> None:
    """Each documented error body maps to exactly one class (and quarantine reason)."""
    error = classify(provider, status, body, {}, now=NOW)
    assert type(error) is kind
    assert error.provider == provider
    assert error.status == status
    if reason is not None:
        assert isinstance(error, Permanent)
        assert error.reason == reason
    if isinstance(error, Retryable):
        assert error.ambiguous is False


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

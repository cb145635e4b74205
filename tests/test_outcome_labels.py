"""The daemon's pre-created upload outcomes are the ones the dispatcher really reports."""

from __future__ import annotations

import pytest

from daemon.runtime.daemon import OUTCOMES
from providers.errors import (
    AuthFailed,
    Permanent,
    ProviderError,
    QuotaExhausted,
    Retryable,
    TransportUnavailable,
)
from providers.retry import error_kind


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (Retryable("x", status=500), "http_500"),
        (Retryable("x", status=502), "http_502"),
        (Retryable("x", status=503), "http_503"),
        (Retryable("x", status=504), "http_504"),
        (Retryable("x", status=429), "http_429"),
        (Retryable("x", ambiguous=True), "ambiguous"),
        (Retryable("x"), "connection"),
        (Permanent("x", status=400), "permanent"),
        (AuthFailed("x", status=401), "auth_failed"),
        (QuotaExhausted("x", status=429), "quota"),
        (TransportUnavailable("x"), "transport_unavailable"),
    ],
)
def test_common_error_kinds_exist_from_start(error: ProviderError, kind: str) -> None:
    """Each common failure's outcome label is among those the metrics create at 0."""
    assert error_kind(error) == kind
    assert kind in OUTCOMES


def test_success_labels_exist_from_start() -> None:
    """Both success labels the dispatcher reports are created at 0."""
    assert {"success", "reconciled"} <= set(OUTCOMES)

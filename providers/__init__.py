"""Kimi and GLM: limits tables, transports, error translation, retries, breakers, router.

This package imports nothing from ``daemon`` or ``handlers``. Its contract — the error tree,
the shared values and Protocols, the limits tables — is re-exported here; the rest lives in
its modules (``providers.dispatch`` with ``providers.retry_loop``, ``providers.gate`` and
``providers.events``, ``providers.factory``, ``providers.emulator``, …).
"""

from __future__ import annotations

from providers.errors import (
    AuthFailed,
    ConfigError,
    InboxdError,
    Permanent,
    ProviderError,
    QuotaExhausted,
    RejectedFile,
    Retryable,
    StateError,
    Throttled,
    TransportUnavailable,
)
from providers.limits import LIMITS, ProviderLimits, PurposeLimits
from providers.types import (
    BreakerRecord,
    BreakerStore,
    RemoteFile,
    Transport,
    UploadClient,
    UploadResult,
)

__all__ = [
    "LIMITS",
    "AuthFailed",
    "BreakerRecord",
    "BreakerStore",
    "ConfigError",
    "InboxdError",
    "Permanent",
    "ProviderError",
    "ProviderLimits",
    "PurposeLimits",
    "QuotaExhausted",
    "RejectedFile",
    "RemoteFile",
    "Retryable",
    "StateError",
    "Throttled",
    "Transport",
    "TransportUnavailable",
    "UploadClient",
    "UploadResult",
]

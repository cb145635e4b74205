"""Each provider's stored files and bytes (its quota use), listed at start and every 10 minutes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from daemon.ops.metrics import Metrics
from providers.client import usage_of
from providers.errors import ProviderError
from providers.types import UploadClient

__all__ = ["REMOTE_USAGE_INTERVAL", "refresh_remote_usage"]

logger = logging.getLogger(__name__)

REMOTE_USAGE_INTERVAL = 600.0


async def refresh_remote_usage(
    providers: Iterable[str], clients: Mapping[str, UploadClient], metrics: Metrics
) -> dict[str, tuple[int, int]]:
    """Count each provider in use once; a failure is a warning, never a crash.

    Counted page by page (``usage_of``): a 100,000-file GLM listing is never held at once.
    """
    usage: dict[str, tuple[int, int]] = {}
    for provider in providers:
        client = clients.get(provider)
        if client is None:
            continue
        try:
            usage[provider] = await usage_of(client)
        except ProviderError as exc:
            logger.warning("%s: cannot list remote files for quota use: %s", provider, exc)
            continue
        metrics.remote_usage(provider, *usage[provider])
    return usage

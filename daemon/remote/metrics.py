"""``inboxd_remote_deletions_total{provider,reason}``, every series present at 0 from start."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter

from daemon.remote.plan import DELETION_REASONS

__all__ = ["RemoteMetrics"]


class RemoteMetrics:
    """The remote side's series on the daemon's registry (``DeletionEvents``)."""

    def __init__(self, registry: CollectorRegistry, *, providers: Sequence[str]) -> None:
        self._deletions = Counter(
            "inboxd_remote_deletions",
            "Remote files inboxd deleted (or found already gone), by provider and reason.",
            ["provider", "reason"],
            registry=registry,
        )
        for provider in providers:
            self.add_provider(provider)

    def add_provider(self, provider: str) -> None:
        """Create ``provider``'s series at 0 (at start, or when a reload brings it in)."""
        for reason in DELETION_REASONS:
            self._deletions.labels(provider, reason)

    def remote_deleted(self, provider: str, reason: str) -> None:
        """One recorded deletion reached its outcome."""
        self._deletions.labels(provider, reason).inc()

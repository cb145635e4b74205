"""The resilience layer's instrumentation hooks, and a recorder that records nothing."""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullEvents", "ResilienceEvents"]


class ResilienceEvents(Protocol):
    """Instrumentation hooks (the Prometheus wiring lives in ``daemon.ops.metrics``).

    Every label is low-cardinality: provider names, states, stable reason codes.
    """

    def retry(self, provider: str, reason: str) -> None:
        """A retry of the same provider is about to sleep (reason: ``http_503``, …)."""

    def breaker_transition(self, provider: str, to_state: str) -> None:
        """The provider's breaker changed state (as this process observed it)."""

    def breaker_state(self, provider: str, state: str) -> None:
        """The provider's current breaker state (a gauge: set after every load or change)."""

    def upload_outcome(self, provider: str, transport: str, outcome: str) -> None:
        """One call ended: ``success``, ``reconciled`` or an error kind (transport ``none``)."""

    def give_up(self, provider: str, reason: str) -> None:
        """This file stops calling this provider (``attempts_exhausted``, ``quota``, …)."""


class NullEvents:
    """ResilienceEvents that record nothing."""

    def retry(self, provider: str, reason: str) -> None: ...
    def breaker_transition(self, provider: str, to_state: str) -> None: ...
    def breaker_state(self, provider: str, state: str) -> None: ...
    def upload_outcome(self, provider: str, transport: str, outcome: str) -> None: ...
    def give_up(self, provider: str, reason: str) -> None: ...

"""The router: which providers may take a file, in which order, and why the others may not.

Pure. Eligibility is the provider's limits for the inbox's purpose on it (size and type);
availability is the breaker's answer. Order is the inbox's preference among the eligible and
available providers — never size-based selection. A file no provider in the list can ever
accept is rejected with a reason naming every limit; a file whose eligible providers are all
unavailable is parked until the earliest reopening, not failed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from providers.errors import Reason, Refusal
from providers.limits import ProviderLimits

__all__ = ["Route", "route"]


@dataclass(frozen=True)
class Route:
    """The router's answer for one file.

    ``candidates`` are the providers to try, in order. ``excluded`` maps every other provider
    in the preference list to why (``"too_large: …"``, ``"unavailable until …"``).
    ``rejection`` is ``(reason, detail)`` when no provider in the list can ever accept the
    file; ``park_until`` is the earliest reopening (wall clock, ``math.inf`` when only a reset
    helps) when every eligible provider is unavailable now. ``purposes`` is the purpose used on
    each eligible provider.
    """

    candidates: tuple[str, ...] = ()
    excluded: dict[str, str] = field(default_factory=dict)
    rejection: Refusal | None = None
    park_until: float | None = None
    purposes: dict[str, str] = field(default_factory=dict)


def _refusal(
    provider: str,
    *,
    size: int,
    extension: str,
    purpose: str,
    limits: ProviderLimits | None,
) -> Refusal | None:
    if limits is None:
        return "unknown_provider", f"{provider}: no limits table for this provider"
    rules = limits.purposes.get(purpose)
    if rules is None:
        known = ", ".join(sorted(limits.purposes))
        return "unknown_purpose", f"{provider} ({purpose}): purpose not in {known}"
    refused = rules.refusal(size, extension)
    if refused is None:
        return None
    return refused[0], f"{provider} ({purpose}): {refused[1]}"


def _rejection(refusals: list[Refusal]) -> Refusal:
    # A provider that says "too large" accepted the type: size is the fixable problem.
    reasons = [reason for reason, _ in refusals]
    reason: Reason
    if "too_large" in reasons:
        reason = "too_large"
    elif "type_not_allowed" in reasons:
        reason = "type_not_allowed"
    else:
        reason = reasons[0] if reasons else "no_provider"
    detail = "; ".join(detail for _, detail in refusals) or "the inbox names no provider"
    return reason, detail


def route(
    *,
    preference: Sequence[str],
    size: int,
    extension: str,
    purposes: Mapping[str, str],
    limits: Mapping[str, ProviderLimits],
    availability: Mapping[str, float | None],
) -> Route:
    """Route a file of ``size`` bytes and ``extension`` (lower case, no dot) over ``preference``.

    ``purposes`` maps a provider to the inbox's purpose on it (absent: the provider's default
    purpose); ``availability`` is ``providers.breaker.availability`` per provider (absent or
    None: may be called now).
    """
    candidates: list[str] = []
    excluded: dict[str, str] = {}
    refusals: list[Refusal] = []
    chosen: dict[str, str] = {}
    reopen: list[float] = []
    for provider in dict.fromkeys(preference):
        table = limits.get(provider)
        purpose = purposes.get(provider) or (table.default_purpose if table else "")
        refused = _refusal(provider, size=size, extension=extension, purpose=purpose, limits=table)
        if refused is not None:
            refusals.append(refused)
            excluded[provider] = f"{refused[0]}: {refused[1]}"
            continue
        chosen[provider] = purpose
        until = availability.get(provider)
        if until is None:
            candidates.append(provider)
            continue
        reopen.append(until)
        excluded[provider] = (
            "unavailable until reset" if math.isinf(until) else f"unavailable until {until:.0f}"
        )
    if not chosen:
        return Route(excluded=excluded, rejection=_rejection(refusals))
    park_until = min(reopen) if not candidates else None
    return Route(
        candidates=tuple(candidates), excluded=excluded, park_until=park_until, purposes=chosen
    )

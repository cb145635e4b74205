"""The remote side's settings as plain values, and the ``check-config`` (and start-up)
warnings about it: an account that will fill up, a limit above the account's own cap."""

from __future__ import annotations

from daemon.config.settings import Settings
from daemon.remote.plan import RetentionLimits

__all__ = ["limits_for", "retention_limits", "retention_warnings"]

_GIB = 1024**3


def _cap(files: int | None, nbytes: int | None) -> str:
    parts = []
    if files is not None:
        parts.append(f"{files:,} files")
    if nbytes is not None:
        parts.append(f"{nbytes / _GIB:g} GB" if nbytes % _GIB == 0 else f"{nbytes:,} bytes")
    return " / ".join(parts)


def retention_warnings(settings: Settings) -> list[str]:
    """One line per provider in use whose account will fill up, or whose retention limit is
    above the account's own cap (uploads would hit the cap before retention acts)."""
    lines: list[str] = []
    for name in settings.providers_in_use():
        section = settings.providers.get(name)
        limits = section.effective_limits(name)
        retention = section.retention
        cap = _cap(limits.max_files, limits.max_total_bytes)
        if not retention.configured:
            held = f"holds at most {cap}" if cap else "has per-purpose file caps"
            lines.append(
                f"providers.{name}.retention: not set; the {name} account {held} and inboxd "
                "only adds files, so it will fill up and uploads will stop; set "
                f"[providers.{name}.retention] max_files, max_bytes or max_age_days"
            )
            continue
        lines += _not_below(name, "max_files", retention.max_files, limits.max_files, "files")
        lines += _not_below(name, "max_bytes", retention.max_bytes, limits.max_total_bytes, "bytes")
    return lines


def _not_below(name: str, key: str, limit: int | None, cap: int | None, unit: str) -> list[str]:
    if limit is None or cap is None or limit < cap:
        return []
    return [
        f"providers.{name}.retention.{key}: {limit} is not below the account's cap of "
        f"{cap:,} {unit}; uploads hit the cap first (files wait until a pass makes room); "
        f"set it lower, e.g. {cap * 9 // 10}"
    ]


def retention_limits(settings: Settings) -> dict[str, RetentionLimits]:
    """``[providers.<name>.retention]`` of every provider in use; ``max_files`` at most one
    under the account's file cap (``max_files = 1000`` on Kimi keeps 999)."""
    return {name: limits_for(settings, name) for name in settings.providers_in_use()}


def limits_for(settings: Settings, provider: str) -> RetentionLimits:
    """``[providers.<provider>.retention]`` as a pass applies it."""
    section = settings.providers.get(provider)
    retention = section.retention
    return RetentionLimits(
        _below(retention.max_files, section.effective_limits(provider).max_files),
        retention.max_bytes,
        retention.max_age_days,
    )


def _below(limit: int | None, cap: int | None) -> int | None:
    """A count limit kept one under the account's cap: the next upload must find room."""
    if limit is None or cap is None:
        return limit
    return min(limit, cap - 1)

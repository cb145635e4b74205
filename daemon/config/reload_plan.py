"""SIGHUP reload, the pure part: what changed between two settings and what the daemon must do.

``plan_reload(old, new)`` compares two already-validated settings. The daemon applies the
plan (``daemon.runtime.daemon.Daemon.reload``): restart the watcher with the new inbox
set, swap rebuilt provider clients into the shared mapping, rebuild the dispatcher for new
limits and retry/breaker knobs, re-run ``setup_logging``. Keys listed in ``restart_needed``
cannot change in a running process; they are logged and take effect at the next start.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config.settings import ProviderSettings, Settings

__all__ = ["CLIENT_FIELDS", "RESTART_FIELDS", "ReloadPlan", "plan_reload"]

# A change to any of these needs a new client (connection pool, transport chain, key).
CLIENT_FIELDS = (
    "base_url",
    "transports",
    "timeout",
    "connect_timeout",
    "api_key",
    "concurrency",
)
# Top-level keys a running daemon cannot change (listener bound, state file open, ...).
RESTART_FIELDS = (
    "state_dir",
    "state_url",
    "host_id",
    "metrics",
    "settle_seconds",
    "max_inflight_bytes",
    "reconcile_skew",
)


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload changes; every tuple is sorted (inboxes, providers) or in key order."""

    added_inboxes: tuple[str, ...] = ()
    removed_inboxes: tuple[str, ...] = ()
    changed_inboxes: tuple[str, ...] = ()
    new_clients: tuple[str, ...] = ()
    unused_providers: tuple[str, ...] = ()
    limits_changed: bool = False
    resilience_changed: bool = False
    logging_changed: bool = False
    restart_watcher: bool = False
    restart_needed: tuple[str, ...] = ()

    @property
    def rebuild_dispatcher(self) -> bool:
        """New clients, limits or retry/breaker knobs all reach uploads through a new dispatcher."""
        return bool(self.new_clients) or self.limits_changed or self.resilience_changed

    def summary(self) -> str:
        """One log line saying what the reload changed ("nothing changed" when nothing did)."""
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("inboxes added:", self.added_inboxes),
                ("inboxes removed:", self.removed_inboxes),
                ("inboxes changed:", self.changed_inboxes),
                ("new clients for:", self.new_clients),
                ("providers no longer used:", self.unused_providers),
            )
            if names
        ]
        parts += [
            label
            for label, flag in (
                ("limits changed", self.limits_changed),
                ("retry/breaker settings changed", self.resilience_changed),
                ("logging changed", self.logging_changed),
            )
            if flag
        ]
        return "; ".join(parts) or "nothing changed"


def _client_changed(old: ProviderSettings, new: ProviderSettings) -> bool:
    return any(getattr(old, f) != getattr(new, f) for f in CLIENT_FIELDS)


def plan_reload(old: Settings, new: Settings) -> ReloadPlan:
    """The steps that take a daemon running ``old`` to ``new``."""
    old_inboxes = {i.name: i for i in old.inbox}
    new_inboxes = {i.name: i for i in new.inbox}
    added = tuple(sorted(set(new_inboxes) - set(old_inboxes)))
    removed = tuple(sorted(set(old_inboxes) - set(new_inboxes)))
    changed = tuple(
        sorted(n for n in set(old_inboxes) & set(new_inboxes) if old_inboxes[n] != new_inboxes[n])
    )
    old_used, new_used = set(old.providers_in_use()), set(new.providers_in_use())
    new_clients = tuple(
        sorted(
            p
            for p in new_used
            if p not in old_used or _client_changed(old.providers.get(p), new.providers.get(p))
        )
    )
    limits_changed = any(
        old.providers.get(p).effective_limits(p) != new.providers.get(p).effective_limits(p)
        for p in new_used
    )
    resilience_changed = any(
        (old.providers.get(p).retry, old.providers.get(p).breaker, old.providers.get(p).timeout)
        != (new.providers.get(p).retry, new.providers.get(p).breaker, new.providers.get(p).timeout)
        for p in new_used
    )
    return ReloadPlan(
        added_inboxes=added,
        removed_inboxes=removed,
        changed_inboxes=changed,
        new_clients=new_clients,
        unused_providers=tuple(sorted(old_used - new_used)),
        limits_changed=limits_changed,
        resilience_changed=resilience_changed,
        logging_changed=old.log != new.log,
        restart_watcher=bool(added or removed or changed)
        or old.rescan_interval != new.rescan_interval,
        restart_needed=tuple(f for f in RESTART_FIELDS if getattr(old, f) != getattr(new, f)),
    )

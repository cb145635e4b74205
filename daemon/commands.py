"""The operator commands behind ``inboxd status``, ``requeue`` and ``breaker reset``.

They open the state store beside a running daemon (SQLite WAL with a busy timeout: both may
hold it; or the fleet's PostgreSQL database, ``state_url``), as this host (``host_id``).
``status_report``/``render_status`` are pure; the ``run_*`` coroutines are the shell.
``inboxd demo`` is ``daemon.demo``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio

from daemon.config.folders import mixed_folders
from daemon.config.settings import Settings
from daemon.remote.config import limits_for
from daemon.remote.plan import RetentionLimits
from daemon.runtime.starting import state_target
from daemon.runtime.wiring import build_clients, build_plans
from daemon.state.store import Store
from handlers.archive import UPLOAD_SUFFIX
from handlers.ledger import QUARANTINED, REQUEUED, STATES, LedgerRow
from handlers.pipeline import InboxPlan
from handlers.quarantine import REASON_SUFFIX, iso_utc, reason_sidecar, requeue
from providers.breaker import FORCED_OPEN
from providers.errors import ConfigError
from providers.redaction import scrub
from providers.types import BreakerRecord

__all__ = [
    "HOUR",
    "AccountStatus",
    "Requeued",
    "StoreStatus",
    "find_quarantined",
    "render_status",
    "run_breaker_reset",
    "run_requeue",
    "run_status",
    "status_report",
]

logger = logging.getLogger(__name__)

HOUR = 3600.0
DAY = 24 * HOUR
FAILURES_SHOWN = 10


@dataclass(frozen=True)
class AccountStatus:
    """One provider's stored files against its quota (None: no documented limit)."""

    files: int
    bytes: int
    max_files: int | None
    max_total_bytes: int | None
    # [providers.<name>.retention] as a pass applies it (None: not set, nothing deleted).
    retention: RetentionLimits | None = None


@dataclass(frozen=True)
class StoreStatus:
    """The store this host opened and who works on it: ``fleet`` is owner host (``""``: rows
    no host owns) → (its active rows: pending, uploading, uploaded; whether its claims are
    live)."""

    host: str
    store: str
    schema_version: int
    fleet: Mapping[str, tuple[int, bool]]


def _open(settings: Settings) -> AbstractAsyncContextManager[Store]:
    """The store ``settings`` name, opened as this host."""
    return Store.open(state_target(settings), host=settings.host_id)


async def _store_status(store: Store, host: str) -> StoreStatus:
    return StoreStatus(host, store.describe(), await store.schema_version(), await store.fleet())


def _rate(counts: Mapping[str, int]) -> dict[str, Any]:
    total = counts.get("done", 0) + counts.get("quarantined", 0)
    rate = None if total == 0 else round(counts.get("done", 0) / total, 4)
    return {
        "done": counts.get("done", 0),
        "quarantined": counts.get("quarantined", 0),
        "rate": rate,
    }


def _iso(at: float | None) -> str | None:
    return None if at is None else iso_utc(at)


def status_report(
    *,
    state_file: Path,
    counts: Mapping[str, int],
    hour: Mapping[str, int],
    day: Mapping[str, int],
    breakers: Mapping[str, BreakerRecord],
    failures: Sequence[LedgerRow],
    usage: Mapping[str, AccountStatus] | None,
    where: StoreStatus,
) -> dict[str, Any]:
    """The status as plain JSON values (what ``status --json`` prints)."""
    return {
        "state_file": str(state_file),
        "host": where.host,
        "store": where.store,
        "schema_version": where.schema_version,
        "fleet": {
            owner: {"active": active, "live": live}
            for owner, (active, live) in sorted(where.fleet.items())
        },
        "ledger": {state: counts.get(state, 0) for state in STATES},
        "success_rate": {"hour": _rate(hour), "day": _rate(day)},
        "breakers": {
            name: {
                "state": rec.state,
                "open_until": _iso(rec.open_until),
                "reason": rec.reason,
                "consecutive_failures": rec.consecutive_failures,
            }
            for name, rec in sorted(breakers.items())
        },
        "failures": [
            {
                "id": row.id,
                "inbox": row.inbox,
                "relpath": row.relpath,
                "reason": row.reason,
                "detail": row.detail,
                "at": _iso(row.finished_at),
                "path": row.final_path,
            }
            for row in failures
        ],
        "remote": None
        if usage is None
        else {
            name: {
                "files": u.files,
                "bytes": u.bytes,
                "max_files": u.max_files,
                "max_total_bytes": u.max_total_bytes,
                "retention": None
                if u.retention is None
                else {
                    "max_files": u.retention.max_files,
                    "max_bytes": u.retention.max_bytes,
                    "max_age_days": u.retention.max_age_days,
                },
            }
            for name, u in sorted(usage.items())
        },
    }


def _pct(section: Mapping[str, Any]) -> str:
    done, total = section["done"], section["done"] + section["quarantined"]
    if section["rate"] is None:
        return "no files finished"
    return f"{section['rate'] * 100:.1f}% ({done} of {total})"


def _size(n: int | None) -> str:
    if n is None:
        return "no limit"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _retention(r: Mapping[str, Any]) -> str:
    files = "any number of files" if r["max_files"] is None else f"at most {r['max_files']} files"
    size = "any size" if r["max_bytes"] is None else f"at most {_size(r['max_bytes'])}"
    age = f", none older than {r['max_age_days']:g} days" if r["max_age_days"] else ""
    return f"{files}, {size}{age}"


def render_status(report: Mapping[str, Any]) -> str:
    """The human-readable status (every line ends with a newline)."""
    lines = [f"state file: {report['state_file']}", f"host: {report['host']}"]
    lines.append(f"store: {report['store']} (schema v{report['schema_version']})")
    shown = ", ".join(
        f"{owner or '(no host)'} {f['active']}{'' if f['live'] else ' (lease ran out)'}"
        for owner, f in report["fleet"].items()
    )
    lines.append(f"files in progress by host: {shown or 'none'}")
    lines.append("ledger: " + ", ".join(f"{k} {v}" for k, v in report["ledger"].items()))
    rates = report["success_rate"]
    lines.append(f"success rate: last hour {_pct(rates['hour'])}; last day {_pct(rates['day'])}")
    lines.append("breakers:" if report["breakers"] else "breakers: none recorded (all closed)")
    for name, b in report["breakers"].items():
        until = f" until {b['open_until']}" if b["open_until"] else ""
        reason = f" ({b['reason']})" if b["reason"] else ""
        lines.append(f"  {name}: {b['state']}{until}{reason}")
    lines.append("last failures:" if report["failures"] else "last failures: none")
    for f in report["failures"]:
        lines.append(f"  {f['at']} {f['inbox']}/{f['relpath']}: {f['reason']}: {f['detail']}")
    if report["remote"] is None:
        lines.append("remote usage: not listed (--remote lists it; needs API keys and network)")
    else:
        lines.append("remote usage:")
        for name, u in report["remote"].items():
            files = "no limit" if u["max_files"] is None else str(u["max_files"])
            lines.append(
                f"  {name}: {u['files']} files of {files}, "
                f"{_size(u['bytes'])} of {_size(u['max_total_bytes'])}"
            )
            if u.get("retention") is not None:
                lines.append(f"    retention: {_retention(u['retention'])}")
    return "".join(line + "\n" for line in lines)


async def _remote_usage(settings: Settings) -> dict[str, AccountStatus]:
    clients = build_clients(settings)
    usage: dict[str, AccountStatus] = {}
    try:
        for name, client in clients.items():
            limits = settings.providers.get(name).effective_limits(name)
            count, nbytes = await client.usage()  # page by page: no whole listing held
            keep = settings.providers.get(name).retention
            retention = limits_for(settings, name) if keep.configured else None
            usage[name] = AccountStatus(
                count, nbytes, limits.max_files, limits.max_total_bytes, retention
            )
    finally:
        for client in clients.values():
            await client.aclose()
    return usage


def _need_state_file(settings: Settings) -> None:
    if settings.state_url is None and not settings.state_file.exists():
        raise ConfigError(
            f"state_dir: no state file at {settings.state_file}; start inboxd once, or pass "
            "the --config/--state-dir the daemon runs with"
        )


async def run_status(
    settings: Settings, *, as_json: bool, remote: bool, out: TextIO, now: float
) -> int:
    """``inboxd status``: print the report; 0."""
    _need_state_file(settings)
    async with _open(settings) as store:
        breakers = {name: BreakerRecord() for name in settings.providers_in_use()}
        breakers.update(await store.all_breakers())
        report = status_report(
            state_file=settings.state_file,
            counts=await store.counts_by_state(),
            hour=await store.outcome_counts(now - HOUR),
            day=await store.outcome_counts(now - DAY),
            breakers=breakers,
            failures=await store.recent_failures(FAILURES_SHOWN),
            usage=await _remote_usage(settings) if remote else None,
            where=await _store_status(store, settings.host_id),
        )
    text = json.dumps(report, indent=2) + "\n" if as_json else render_status(report)
    # Rows written before a key was known (or by an older inboxd) may hold it: never print it.
    out.write(scrub(text))
    return 0


@dataclass(frozen=True)
class Requeued:
    """One file moved back into its inbox."""

    source: Path
    destination: Path
    row_id: int | None


def _sidecar_reason(qfile: Path) -> str | None:
    try:
        reason = json.loads(reason_sidecar(qfile).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    value = reason.get("reason") if isinstance(reason, dict) else None
    return value if isinstance(value, str) else None


def _requeueable(entry: Path) -> bool:
    """Not a sidecar, and not an uploaded file (a receipt beside it): never sent again."""
    name = entry.name
    if name.endswith((REASON_SUFFIX, UPLOAD_SUFFIX)):
        return False
    return not entry.with_name(name + UPLOAD_SUFFIX).exists()


def find_quarantined(
    plans: Mapping[str, InboxPlan], paths: Sequence[Path]
) -> list[tuple[InboxPlan, Path]]:
    """Each quarantined file to requeue with its inbox: ``paths``, or every one when empty."""
    if not paths:
        return [
            (plan, entry)
            for plan in plans.values()
            if plan.quarantine_dir.is_dir()
            for entry in sorted(plan.quarantine_dir.iterdir())
            if entry.is_file() and _requeueable(entry)
        ]
    found: list[tuple[InboxPlan, Path]] = []
    problems: list[str] = []
    for path in paths:
        owner = next(
            (p for p in plans.values() if path.absolute().parent == p.quarantine_dir.absolute()),
            None,
        )
        if owner is None:
            problems.append(
                f"{path}: not in any inbox's quarantine folder; pass a file from one of "
                + ", ".join(str(p.quarantine_dir) for p in plans.values())
            )
        else:
            found.append((owner, path.absolute()))
    if problems:
        raise ConfigError(problems)
    return found


async def run_requeue(
    settings: Settings, paths: Sequence[Path], *, reason: str | None, out: TextIO
) -> int:
    """``inboxd requeue``: move quarantined files back, mark their rows ``requeued``; 0.

    Refuses (ConfigError) when a quarantine folder is or overlaps a done folder: it would
    send uploaded files and their receipts again.
    """
    _need_state_file(settings)
    mixed = mixed_folders(settings.inbox)
    if mixed:
        raise ConfigError(mixed)
    plans = build_plans(settings)
    chosen = find_quarantined(plans, paths)
    moved: list[Requeued] = []
    async with _open(settings) as store:
        rows: dict[str, LedgerRow] = {}
        for quarantined in await store.rows_in_state(QUARANTINED):
            if quarantined.final_path is not None:
                rows[quarantined.final_path] = quarantined
        for plan, qfile in chosen:
            row = rows.get(str(qfile))
            why = row.reason if row is not None else _sidecar_reason(qfile)
            if reason is not None and why != reason:
                continue
            destination = await anyio.to_thread.run_sync(requeue, qfile, plan.path)
            if row is not None:
                await store.transition(row.id, REQUEUED)
            moved.append(Requeued(qfile, destination, None if row is None else row.id))
    for item in moved:
        note = f"ledger row {item.row_id} requeued" if item.row_id else "no ledger row"
        out.write(f"requeued {item.source} -> {item.destination} ({note})\n")
    out.write(f"{len(moved)} file(s) requeued\n")
    return 0


async def run_breaker_reset(settings: Settings, provider: str, *, out: TextIO) -> int:
    """``inboxd breaker reset``: close ``provider``'s breaker in the state file; 0.

    A running daemon reads the breaker from the state file before every upload decision, so
    it sees the reset at its next file; files parked until a reset (forced open) are released
    and go again at the daemon's next rescan (at once on ``systemctl reload``).
    """
    from daemon.runtime.reloading import unpark_forever  # the daemon's rule for forced-open parks

    _need_state_file(settings)
    async with _open(settings) as store:
        before = await store.load_breaker(provider)
        await store.reset_breaker(provider)
        released = await unpark_forever(store) if before and before.state == FORCED_OPEN else 0
    was = "closed" if before is None else before.state
    out.write(f"breaker of {provider} reset to closed (was {was})\n")
    if released:
        out.write(f"{released} file(s) waiting for this reset go again at the next rescan\n")
    return 0

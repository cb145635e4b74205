"""``inboxd remote prune PROVIDER [--dry-run]`` and ``inboxd remote list PROVIDER``.

They open the state file beside a running daemon (as ``inboxd status`` does) and talk to the
provider with the configured keys. ``render_*`` are pure; the ``run_*`` coroutines the shell.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TextIO

from daemon.config.settings import Settings
from daemon.remote.config import limits_for
from daemon.remote.ledger import DeletionRow, RemoteLedger
from daemon.remote.plan import Deletion, Owned
from daemon.remote.prune import PassReport, Pruner
from daemon.runtime.starting import state_target
from daemon.runtime.wiring import build_clients
from daemon.state.store import Store
from handlers.quarantine import iso_utc
from providers.errors import ConfigError, InboxdError
from providers.redaction import scrub
from providers.types import RemoteFile, UploadClient

__all__ = ["render_listing", "render_prune", "run_remote_list", "run_remote_prune"]

NOT_OURS = "not uploaded by inboxd"


def _file(f: RemoteFile) -> str:
    return f"{f.id} {f.filename!r} {f.bytes} bytes, created {iso_utc(f.created_at)}"


def _owner(owner: Owned | None) -> str:
    if owner is None:
        return NOT_OURS
    receipt = owner.receipt or "no receipt (deleted on success, or not finished)"
    return f"inbox {owner.inbox}: {owner.relpath}; receipt {receipt}"


def _deletion(d: Deletion) -> str:
    if d.owner is not None:
        view = _owner(d.owner)
    else:
        view = f"left by an interrupted upload (ledger row {d.ledger_id}), no receipt"
    return f"{_file(d.file)}: {d.reason} ({view})"


def render_prune(report: PassReport) -> str:
    """What a pass deleted (or would delete), one line each, then the account after it."""
    verb = "would delete" if report.dry_run else "deleted"
    shown = report.deletions if report.dry_run else report.done
    lines = [f"{verb} {_deletion(d)}" for d in shown]
    summary, holds = ("would be deleted", "would hold") if report.dry_run else ("deleted", "holds")
    lines.append(
        f"{report.provider}: {len(shown)} file(s) {summary}; the account {holds} "
        f"{report.files} file(s), {report.bytes} bytes"
    )
    if report.error is not None:
        lines.append(f"stopped early: {report.error}; run it again")
    return "".join(line + "\n" for line in lines)


def render_listing(
    provider: str,
    files: Sequence[RemoteFile],
    owned: Mapping[str, Owned],
    deleted: Mapping[str, DeletionRow],
) -> str:
    """Every file on the account with the ledger's view of it, oldest first."""
    lines = []
    for f in sorted(files, key=lambda f: (f.created_at, f.id)):
        view = _owner(owned.get(f.id))
        row = deleted.get(f.id)
        if row is not None:
            view += f"; deletion recorded ({row.reason}, {row.outcome or 'not confirmed yet'})"
        lines.append(f"{_file(f)}: {view}")
    ours = sum(1 for f in files if f.id in owned)
    total = sum(f.bytes for f in files)
    lines.append(
        f"{provider}: {len(files)} file(s), {total} bytes; {ours} uploaded by inboxd, "
        f"{len(files) - ours} not"
    )
    return "".join(line + "\n" for line in lines)


@asynccontextmanager
async def _opened(settings: Settings, provider: str) -> AsyncIterator[tuple[Store, UploadClient]]:
    if not settings.state_file.exists():
        raise ConfigError(
            f"state_dir: no state file at {settings.state_file}; start inboxd once, or pass "
            "the --config/--state-dir the daemon runs with"
        )
    clients = build_clients(settings)
    try:
        client = clients.get(provider)
        if client is None:
            raise ConfigError(
                f"providers.{provider}: no client (no API key?); set its key as for `inboxd run`"
            )
        async with Store.open(state_target(settings), host=settings.host_id) as store:
            yield store, client
    finally:
        for each in clients.values():
            await each.aclose()


async def run_remote_prune(settings: Settings, provider: str, *, dry_run: bool, out: TextIO) -> int:
    """``inboxd remote prune``: one retention pass now; 0, or 1 when a DELETE failed."""
    async with _opened(settings, provider) as (store, client):
        pruner = Pruner(
            store=store,
            clients={provider: client},
            limits={provider: limits_for(settings, provider)},
            skew=settings.reconcile_skew,
        )
        try:
            report = await pruner.run(provider, dry_run=dry_run)
        except InboxdError as exc:
            raise InboxdError(f"{provider}: cannot list the account: {exc}") from exc
    out.write(scrub(render_prune(report)))
    return 0 if report.error is None else 1


async def run_remote_list(settings: Settings, provider: str, *, out: TextIO) -> int:
    """``inboxd remote list``: the account's files with the ledger's view of each; 0."""
    async with _opened(settings, provider) as (store, client):
        files = await client.list_files()
        ledger = RemoteLedger(store)
        owned = await ledger.owners(provider, [f.id for f in files])
        deleted = await ledger.deletions(provider)
    out.write(scrub(render_listing(provider, files, owned, deleted)))
    return 0

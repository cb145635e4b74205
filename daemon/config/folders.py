"""Config checks of the folders the daemon writes: kept apart, and writable.

``daemon.config.check`` runs these with its other checks (``inboxd check-config``, ``run``,
reload); ``inboxd requeue`` runs ``mixed_folders`` itself before moving anything. Paths are
compared resolved (symlinks followed) and shown as configured. The defaults
``<inbox>.done`` and ``<inbox>.quarantine`` sit beside their inbox and pass.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from daemon.config.settings import InboxSettings, MetricsSettings, Settings

__all__ = [
    "folder_verdict",
    "inbox_write_check",
    "metrics_warning",
    "mixed_folders",
    "state_dir_problem",
    "target_write_problem",
]

_SEPARATE = (
    "give each its own folder (the defaults <path>.done and <path>.quarantine sit beside the inbox)"
)
_STATE_FIX = (
    "the daemon would take its own state file for a file to upload: keep state_dir out of every "
    "inbox, done and quarantine folder (the default is /var/lib/inboxd)"
)


def _folders(inbox: InboxSettings) -> list[tuple[str, Path]]:
    """The folders an inbox owns, as configured: the inbox, its quarantine, its done folder."""
    folders = [("path", inbox.path), ("quarantine_dir", inbox.quarantine_path)]
    if inbox.on_success == "archive":
        folders.append(("done_dir", inbox.done_path))
    return folders


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def state_dir_problem(settings: Settings) -> str | None:
    """The first inbox, done or quarantine folder that holds (or is) ``state_dir``, as a line.

    The daemon would offer its own state file for upload from an inbox, and ``inboxd
    requeue`` would move it out of a quarantine folder.
    """
    state = settings.state_dir.resolve()
    for i, inbox in enumerate(settings.inbox):
        for label, folder in _folders(inbox):
            real = folder.resolve()
            if _inside(state, real):
                what = "the same folder as" if state == real else "inside"
                return (
                    f"state_dir: {settings.state_dir} is {what} inbox[{i}].{label} {folder}; "
                    + _STATE_FIX
                )
    return None


def mixed_folders(inboxes: Sequence[InboxSettings]) -> list[str]:
    """One line per done folder that is, contains or sits inside a quarantine folder.

    Uploaded files and their receipts must never be taken for quarantined files: ``inboxd
    requeue`` would put them back in an inbox and upload them (and the receipts) again.
    """
    problems: list[str] = []
    for i, owner in enumerate(inboxes):
        if owner.on_success != "archive":
            continue
        done = owner.done_path.resolve()
        for j, other in enumerate(inboxes):
            quarantine = other.quarantine_path.resolve()
            if done == quarantine:
                what = "is the same folder as"
            elif _inside(quarantine, done):
                what = "contains"
            elif _inside(done, quarantine):
                what = "is inside"
            else:
                continue
            problems.append(
                f"inbox[{i}].done_dir: {owner.done_path} {what} inbox[{j}].quarantine_dir "
                f"{other.quarantine_path}; uploaded and quarantined files must not mix (inboxd "
                f"requeue would send uploaded files and receipts again): {_SEPARATE}"
            )
    return problems


def folder_verdict(*, exists: bool, writable: bool, read_only_fs: bool, uid: int) -> str | None:
    """Why the daemon cannot write into an existing folder (completes "X is ..."), or None.

    A read-only filesystem comes first: it stops root too, which permissions do not.
    """
    if not exists:
        return None
    if read_only_fs:
        return "on a read-only filesystem"
    if not writable:
        return f"not writable by the daemon's user (uid {uid})"
    return None


def _probe(folder: Path) -> str | None:
    """``folder_verdict`` for a real folder (statvfs for the mount, access for permissions)."""
    try:
        flags = os.statvfs(folder).f_flag
    except OSError:
        return None  # gone or not a folder: the other checks say so
    mode = os.W_OK | os.X_OK
    if os.access in os.supports_effective_ids:
        writable = os.access(folder, mode, effective_ids=True)
    else:
        writable = os.access(folder, mode)
    return folder_verdict(
        exists=True,
        writable=writable,
        read_only_fs=bool(flags & os.ST_RDONLY),
        uid=os.geteuid(),
    )


def _nearest_existing(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def target_write_problem(key: str, label: str, target: Path) -> str | None:
    """A done or quarantine folder the daemon could not write into (or create), as a line."""
    existing = _nearest_existing(target)
    if existing is None:
        return None
    why = _probe(existing)
    if why is None:
        return None
    if existing == target:
        return (
            f"{key}.{label}: {target} is {why}; make it writable by the daemon's user, or "
            f"point {label} elsewhere"
        )
    return (
        f"{key}.{label}: {target} does not exist and cannot be created: {existing} is {why}; "
        f"create it writable by the daemon's user, or point {label} elsewhere"
    )


def inbox_write_check(key: str, inbox: InboxSettings) -> tuple[str | None, str | None]:
    """``(problem, warning)`` for an inbox the daemon may only read.

    Its files can still be uploaded (a warning), but ``on_success = "delete"`` there is a
    promise the daemon cannot keep (a problem).
    """
    why = _probe(inbox.path)
    if why is None:
        return None, None
    if inbox.on_success == "delete":
        return (
            f'{key}.on_success: "delete" but {inbox.path} is {why}; the daemon could not '
            "delete its files: make it writable by the daemon's user, or use "
            'on_success = "archive"',
            None,
        )
    return None, (
        f"{key}.path: {inbox.path} is {why}; its files can be uploaded but not moved out of it "
        "(archived or deleted): make it writable by the daemon's user"
    )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def metrics_warning(metrics: MetricsSettings) -> str | None:
    """A warning when the metrics listener is enabled on an address other than loopback."""
    if not metrics.enabled or _loopback(metrics.host):
        return None
    return (
        f"metrics.listen: {metrics.listen} is not a loopback address; /metrics, /healthz and "
        "/readyz are reachable from the network there: use 127.0.0.1:PORT, or firewall the port"
    )

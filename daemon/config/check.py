"""Semantic checks of a loaded configuration: one line per problem, naming the key and the fix.

``problems`` make ``inboxd run`` and ``inboxd check-config`` refuse to start; ``warnings`` are
logged and printed but do not stop anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from daemon.config.folders import (
    inbox_write_check,
    metrics_warning,
    mixed_folders,
    state_dir_problem,
    target_write_problem,
)
from daemon.config.keys import KEY_CREDENTIAL, KEY_ENV
from daemon.config.settings import InboxSettings, Settings
from daemon.remote.config import retention_warnings
from daemon.state.probe import probe_state
from daemon.state.url import state_target
from providers.limits import extract_supported

__all__ = ["Report", "check", "state_line"]

_PRETTY = {"kimi": "Kimi", "glm": "GLM"}
_TRANSPORTS = {"kimi": ("openai", "http"), "glm": ("zhipuai", "openai", "http")}


@dataclass
class Report:
    """What ``check`` found."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check(settings: Settings, *, need_keys: bool = True) -> Report:
    """Check everything a loaded config cannot say about itself (folders, overlaps, purposes, keys).

    ``need_keys=False`` skips the API-key check (``--emulator`` supplies its own keys).
    """
    report = Report()
    if not settings.inbox:
        report.problems.append(
            "inbox: no [[inbox]] is configured; add one (config.example.toml shows how)"
        )
    _check_providers(settings, report, need_keys=need_keys)
    names: dict[str, int] = {}
    for i, inbox in enumerate(settings.inbox):
        key = f"inbox[{i}]"
        if inbox.name in names:
            report.problems.append(
                f"{key}.name: {inbox.name!r} is also the name of inbox[{names[inbox.name]}]; "
                "give each inbox its own name"
            )
        names.setdefault(inbox.name, i)
        _check_inbox_folder(key, inbox, report)
        _check_purposes(key, inbox, settings, report)
    _check_overlaps(settings.inbox, report)
    report.problems.extend(mixed_folders(settings.inbox))
    if (state := state_dir_problem(settings)) is not None:
        report.problems.append(state)
    if (listen := metrics_warning(settings.metrics)) is not None:
        report.warnings.append(listen)
    report.warnings.extend(retention_warnings(settings))
    return report


def state_line(settings: Settings) -> str:
    """``state: <engine> <where>: schema vN (this inboxd: vM)``, read without changing anything
    (``inboxd check-config``). Raises StateUnavailable when the database does not answer,
    ConfigError when the state cannot be read."""
    return "state: " + anyio.run(probe_state, state_target(settings))


def _check_providers(settings: Settings, report: Report, *, need_keys: bool) -> None:
    for name in settings.providers_in_use():
        section = settings.providers.get(name)
        url = urlsplit(section.base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            report.problems.append(
                f"providers.{name}.base_url: {section.base_url!r} is not an http(s) URL; "
                "use e.g. "
                + (
                    "https://api.moonshot.ai/v1"
                    if name == "kimi"
                    else "https://api.z.ai/api/paas/v4"
                )
            )
        for transport in section.transports:
            if transport not in _TRANSPORTS[name]:
                report.problems.append(
                    f"providers.{name}.transports: {transport!r} cannot talk to {_PRETTY[name]}; "
                    f"use some of {', '.join(_TRANSPORTS[name])}"
                )
        if need_keys and section.api_key is None:
            report.problems.append(
                f"providers.{name}: no API key; set {' or '.join(KEY_ENV[name])}, or "
                f"providers.{name}.api_key_file, or systemd LoadCredential={KEY_CREDENTIAL[name]}"
            )


def _check_inbox_folder(key: str, inbox: InboxSettings, report: Report) -> None:
    if not inbox.path.is_absolute():
        report.problems.append(f"{key}.path: {inbox.path} is relative; use an absolute path")
        return
    if not inbox.path.exists():
        report.problems.append(
            f"{key}.path: {inbox.path} does not exist; create it (mkdir -p {inbox.path}) "
            "or fix the path"
        )
        return
    if not inbox.path.is_dir():
        report.problems.append(f"{key}.path: {inbox.path} is not a folder; point it at a folder")
        return
    problem, warning = inbox_write_check(key, inbox)
    report.problems.extend([problem] if problem else [])
    report.warnings.extend([warning] if warning else [])
    for label, target in (("done_dir", inbox.done_path), ("quarantine_dir", inbox.quarantine_path)):
        if inbox.on_success == "delete" and label == "done_dir":
            continue
        if (unwritable := target_write_problem(key, label, target)) is not None:
            report.problems.append(unwritable)
            continue
        existing = _nearest_existing(target)
        if existing is not None and existing.stat().st_dev != inbox.path.stat().st_dev:
            report.warnings.append(
                f"{key}.{label}: {target} is on another filesystem than {inbox.path}; moves "
                "there copy, fsync and delete instead of an atomic rename"
            )


def _nearest_existing(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def _check_purposes(key: str, inbox: InboxSettings, settings: Settings, report: Report) -> None:
    for name in inbox.providers:
        limits = settings.providers.get(name).effective_limits(name)
        purpose = inbox.purpose_for(name)
        if purpose not in limits.purposes:
            valid = ", ".join(sorted(limits.purposes))
            report.problems.append(
                f"{key}.purpose.{name}: {purpose!r} is not a purpose {_PRETTY[name]} accepts "
                f"for inbox {inbox.name!r}; use one of {valid}"
            )
    if inbox.extract:
        _check_extract(key, inbox, settings, report)
    for name in inbox.purpose:
        if name not in inbox.providers:
            report.warnings.append(
                f"{key}.purpose.{name}: {name} is not in {key}.providers, so this purpose is unused"
            )


def _check_extract(key: str, inbox: InboxSettings, settings: Settings, report: Report) -> None:
    for name in inbox.providers:
        purpose = inbox.purpose_for(name)
        if extract_supported(name, purpose):
            continue
        accepted = settings.providers.get(name).effective_limits(name).purposes
        with_text = ", ".join(sorted(p for p in accepted if extract_supported(name, p)))
        report.problems.append(
            f"{key}.extract: inbox {inbox.name!r} uploads to {_PRETTY[name]} with purpose "
            f"{purpose!r}, which has no extracted text; set extract = false, or use a purpose "
            f"with text ({with_text})"
        )


def _owned_dirs(inbox: InboxSettings) -> list[tuple[str, Path]]:
    dirs = [("path", inbox.path), ("quarantine_dir", inbox.quarantine_path)]
    if inbox.on_success == "archive":
        dirs.append(("done_dir", inbox.done_path))
    return [(label, p.resolve()) for label, p in dirs]


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_overlaps(inboxes: list[InboxSettings], report: Report) -> None:
    """No inbox may share or nest with another inbox, or with any done/quarantine folder.

    Each pair is reported once, on the later inbox (the one most likely just added).
    """
    owned = [_owned_dirs(inbox) for inbox in inboxes]
    for i in range(len(inboxes)):
        for j in range(i + 1):
            clash = _first_clash(owned[i], owned[j], same=i == j)
            if clash is None:
                continue
            (mine_label, mine), (label, folder) = clash
            what = "the same folder as" if mine == folder else "nested with"
            report.problems.append(
                f"inbox[{i}].{mine_label}: {mine} is {what} inbox[{j}].{label} {folder}; inboxes "
                "must not overlap each other or any done/quarantine folder: give each its own "
                "folder (the defaults <path>.done and <path>.quarantine sit beside the inbox)"
            )


def _first_clash(
    mine: list[tuple[str, Path]], theirs: list[tuple[str, Path]], *, same: bool
) -> tuple[tuple[str, Path], tuple[str, Path]] | None:
    """The first inbox folder of one side nested with any folder of the other side."""
    pairs = [(mine[0], t) for t in theirs] + [(m, theirs[0]) for m in mine[1:]]
    for (a_label, a), (b_label, b) in pairs:
        if same and a_label == b_label:
            continue
        if _inside(a, b) or _inside(b, a):
            return (a_label, a), (b_label, b)
    return None

"""The ``inboxd`` command line (also ``python -m daemon``).

Exit codes: 0 success, 1 runtime failure, 2 configuration or usage error.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon.config.check import check, state_line
from daemon.config.settings import DEFAULT_CONFIG, Settings, load_settings
from daemon.ops.version import package_version
from providers.errors import ConfigError, InboxdError
from providers.redaction import scrub

__all__ = ["main", "package_version"]

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
DEV_WORKSPACE = Path("inboxd-dev")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inboxd",
        description="Watch inbox folders and upload every file to Kimi or GLM file storage.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c",
            "--config",
            type=Path,
            default=None,
            help=f"the TOML config file (default: {DEFAULT_CONFIG}, if it exists)",
        )
        p.add_argument("--state-dir", type=Path, help="override state_dir")
        p.add_argument("--settle-seconds", type=float, help="override settle_seconds")
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
        p.add_argument("--log-format", choices=["text", "json"])
        p.add_argument("--metrics-listen", metavar="HOST:PORT", help="override metrics.listen")
        return p

    run = with_config(sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT"))
    run.add_argument(
        "--emulator",
        action="store_true",
        help="start the bundled provider emulator on loopback and point every provider at it "
        f"(no API key needed; without a config file, uses ./{DEV_WORKSPACE}/ as a workspace)",
    )
    with_config(sub.add_parser("check-config", help="validate the config and exit"))
    status = with_config(
        sub.add_parser(
            "status",
            help="ledger counts, last failures, breakers, success rates (reads the state file)",
        )
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--remote",
        action="store_true",
        help="also list each provider's stored files against its quota (needs keys and network)",
    )
    requeue = with_config(
        sub.add_parser(
            "requeue", help="move quarantined files back into their inbox to be tried again"
        )
    )
    requeue.add_argument("--reason", help="only files quarantined for this reason, e.g. too_large")
    requeue.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="quarantined files (default: every quarantined file of every inbox)",
    )
    breaker = with_config(sub.add_parser("breaker", help="circuit breaker operations"))
    breaker.add_argument("action", choices=["reset"], help="reset: close the breaker now")
    breaker.add_argument("provider", choices=["kimi", "glm"], metavar="PROVIDER")
    remote = with_config(
        sub.add_parser("remote", help="the provider accounts: list files, apply retention now")
    )
    remote.add_argument(
        "action",
        choices=["prune", "list"],
        help="prune: delete what [providers.NAME.retention] calls for now (and orphans); "
        "list: every file on the account with the ledger's view of it",
    )
    remote.add_argument("provider", choices=["kimi", "glm"], metavar="PROVIDER")
    remote.add_argument(
        "--dry-run", action="store_true", help="prune: print what would be deleted, delete none"
    )
    sub.add_parser(
        "demo",
        help="run the daemon against the bundled emulator on a temporary workspace with "
        "three sample files, print what happened to each, and exit",
    )
    sub.add_parser("version", help="print the version")
    # `inboxd emulator ...` is handed whole to the emulator's own parser (see main()).
    sub.add_parser("emulator", help="run the Kimi + GLM files API emulator on loopback")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.state_dir is not None:
        out["state_dir"] = args.state_dir
    if args.settle_seconds is not None:
        out["settle_seconds"] = args.settle_seconds
    log = {k: v for k, v in (("level", args.log_level), ("format", args.log_format)) if v}
    if log:
        out["log"] = log
    if args.metrics_listen:
        out["metrics"] = {"listen": args.metrics_listen}
    return out


def dev_overrides(workspace: Path) -> dict[str, Any]:
    """Built-in defaults for ``run --emulator`` with no config file: a workspace under cwd."""
    root = workspace.resolve()
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    return {
        "state_dir": root / "state",
        "inbox": [{"name": "default", "path": inbox, "providers": ["kimi", "glm"]}],
    }


def load_for(args: argparse.Namespace, *, emulator: bool = False) -> Settings:
    """Load settings for a command; ``--emulator`` without any config uses the dev workspace."""
    overrides = _overrides(args)
    if emulator and args.config is None and not DEFAULT_CONFIG.exists():
        overrides = {**dev_overrides(DEV_WORKSPACE), **overrides}
    return load_settings(args.config, overrides)


def _cmd_version(_args: argparse.Namespace) -> int:
    print(f"inboxd {package_version()}")
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_for(args)
    report = check(settings)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if report.problems:
        raise ConfigError(report.problems)
    print(
        f"config OK: {len(settings.inbox)} inbox(es), providers in use: "
        f"{', '.join(settings.providers_in_use()) or 'none'}"
    )
    print(state_line(settings))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from daemon.ops.logs import logging_to
    from daemon.runtime.main import run_daemon  # the whole daemon only for `run`

    settings = load_for(args, emulator=args.emulator)
    return run_daemon(
        settings,
        emulator=args.emulator,
        loader=lambda: load_for(args, emulator=args.emulator),
        configure_logging=logging_to(sys.stderr),
    )


def _cmd_ops(args: argparse.Namespace) -> int:
    import anyio

    if args.command == "demo":
        from daemon.demo import run_demo  # the emulator and the daemon only for the demo

        return anyio.run(lambda: run_demo(out=sys.stdout))

    from daemon import commands

    settings = load_for(args)
    if args.command == "status":
        return anyio.run(
            lambda: commands.run_status(
                settings, as_json=args.json, remote=args.remote, out=sys.stdout, now=time.time()
            )
        )
    if args.command == "remote":
        from daemon.remote import commands as remote

        if args.action == "list":
            return anyio.run(
                lambda: remote.run_remote_list(settings, args.provider, out=sys.stdout)
            )
        return anyio.run(
            lambda: remote.run_remote_prune(
                settings, args.provider, dry_run=args.dry_run, out=sys.stdout
            )
        )
    if args.command == "requeue":
        return anyio.run(
            lambda: commands.run_requeue(settings, args.paths, reason=args.reason, out=sys.stdout)
        )
    return anyio.run(lambda: commands.run_breaker_reset(settings, args.provider, out=sys.stdout))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one inboxd command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        from providers.emulator.cli import main as emulator_main

        return emulator_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        handlers = {"version": _cmd_version, "check-config": _cmd_check_config, "run": _cmd_run}
        return handlers.get(args.command, _cmd_ops)(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except InboxdError as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE

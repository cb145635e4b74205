"""``inboxd emulator``: run the provider emulator on loopback until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from providers.emulator.faults import parse_faults
from providers.emulator.server import DEFAULT_KEYS, Emulator
from providers.errors import ConfigError

__all__ = ["build_parser", "main"]

_FAULT_HELP = """\
fault spec, per provider: 'kimi:500@0.3,429:2@0.1;glm:seq=500/500/ok,latency=20+10'.
Faults: 500 502 503, 429[:RETRY_AFTER_S], quota, 401, reset (connection aborted, nothing
stored), drop (file stored, then connection aborted); the real answers: 429msg[:S] (rate
limit, wait only in the message: Kimi "max RPM: 3, please try again after S seconds", GLM
1303), 429conc[:S] (Kimi "max concurrency: 1", GLM 1302), balance (Kimi 403 insufficient
balance, GLM 1113), daily (GLM 1304), cap (GLM 1308 "...将在 <time> 重置"), extract (Kimi
500 "extract task failed"), parsefail (the GLM parser task it creates ends "failed");
'@P' = probability (default 1).
Also seq=STEP/STEP/... (scripted first requests; 'ok' = no fault), latency=MS[+JITTER_MS],
slow=MS (per 64 KiB of request body). Limits per key, uploads only: rpm=N (at most N admitted
in any rolling 60 s) and concurrency=N (at most N in flight), e.g. 'kimi:rpm=120,concurrency=4';
over a limit → 429 at once with the real body (Kimi rate_limit_reached_error "max RPM: N" /
"max concurrency: N", GLM 1303 / 1302 in Chinese), no Retry-After. Target 'all' = every
provider. Change at run time with PUT /_emulator/faults (body: a spec)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``inboxd emulator`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="inboxd emulator",
        description="A local Moonshot (Kimi) + Z.ai (GLM) files API for tests and demos. "
        "Admin: GET /_emulator/files, GET /_emulator/counts, PUT /_emulator/faults, "
        "POST /_emulator/reset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    parser.add_argument("--port", type=int, default=8765, help="listen port; 0 = any free one")
    parser.add_argument("--faults", default="", help=_FAULT_HELP)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault decisions")
    parser.add_argument("--kimi-key", default=DEFAULT_KEYS["kimi"], help="accepted Kimi key")
    parser.add_argument("--glm-key", default=DEFAULT_KEYS["glm"], help="accepted GLM key")
    return parser


def main(argv: Sequence[str], *, out: TextIO | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM; 0 on a clean stop, 2 on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    try:
        parse_faults(args.faults)
    except ConfigError as exc:
        parser.error(str(exc))
    emulator = Emulator(
        host=args.host,
        port=args.port,
        keys={"kimi": args.kimi_key, "glm": args.glm_key},
        faults=args.faults or None,
        seed=args.seed,
    )
    asyncio.run(_serve(emulator, out or sys.stdout))
    return 0


async def _serve(emulator: Emulator, out: TextIO) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with emulator:
        # Config lines to paste; the emulator's keys are not secrets. Keys never go in the
        # config file, so they are printed as the environment variables inboxd reads.
        print("# inboxd emulator: put these in your config (inboxd.toml)", file=out)
        for provider in ("kimi", "glm"):
            print(f"[providers.{provider}]", file=out)
            print(f'base_url = "{emulator.base_url(provider)}"', file=out)
        print("# ...and these in the environment", file=out)
        for provider, env in (("kimi", "MOONSHOT_API_KEY"), ("glm", "ZHIPUAI_API_KEY")):
            print(f"{env}={emulator.key(provider)}", file=out)
        print(f"# admin: http://{emulator.host}:{emulator.port}/_emulator/files", file=out)
        out.flush()
        await stop.wait()

"""Throughput against the limit: N files of 16 KiB dropped at once, inboxd vs a direct uploader.

In one run, against one emulator (quotas lifted): first the limit — a bare httpx uploader,
``--concurrency`` workers (inboxd's Kimi concurrency), the same files read from disk, no
watching, no ledger; then inboxd (a subprocess, ``settle_seconds = 0.5``) with the files
moved into its inbox at once, timed from the first move until all are archived. Prints
``ratio = direct_time / inboxd_time`` per run and the median (target >= 0.8).

    .venv/bin/python bench/throughput.py [--files 5000] [--runs 3] [--faults SPEC] [--smoke]

``--faults`` is an emulator fault spec for both loops, e.g. ``kimi:latency=100`` (a round trip
like the real services' from outside China).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import EmulatorProc, inboxd_drop, machine

SIZE = 16 * 1024


def make_files(folder: Path, count: int, prefix: str = "f") -> list[Path]:
    """``count`` distinct 16 KiB .txt files of hex text (distinct: dedupe never skips one)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i:06d}.txt"
        path.write_bytes(os.urandom(SIZE // 2).hex().encode())
        paths.append(path)
    return paths


async def direct_upload(url: str, key: str, paths: list[Path], concurrency: int) -> float:
    """Upload every path with ``concurrency`` httpx workers; returns the wall time."""
    queue = list(reversed(paths))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            while queue:
                path = queue.pop()
                with path.open("rb") as fh:
                    resp = await client.post(
                        f"{url}/files",
                        headers={"Authorization": f"Bearer {key}"},
                        files={"file": (path.name, fh, "text/plain")},
                        data={"purpose": "file-extract"},
                    )
                resp.raise_for_status()

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.monotonic() - start


def one_run(
    emu: EmulatorProc, root: Path, count: int, concurrency: int
) -> tuple[float, float, float, float]:
    """(direct s, inboxd s, direct CPU s, inboxd CPU s) for one set of ``count`` files."""
    staging = root / "staging"
    paths = make_files(staging, count)
    cpu0 = time.process_time()
    direct = asyncio.run(direct_upload(emu.urls["kimi"], emu.keys["kimi"], paths, concurrency))
    direct_cpu = time.process_time() - cpu0
    httpx.post(emu.admin + "/_emulator/reset", timeout=30).raise_for_status()
    drop = inboxd_drop(emu, root, paths, timeout=max(60.0, count / 10), concurrency=concurrency)
    httpx.post(emu.admin + "/_emulator/reset", timeout=30).raise_for_status()
    return direct, drop.seconds, direct_cpu, drop.cpu


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--faults", default="", help="emulator fault spec, e.g. kimi:latency=100")
    parser.add_argument("--smoke", action="store_true", help="200 files, one run")
    args = parser.parse_args()
    count, runs = (200, 1) if args.smoke else (args.files, args.runs)
    print(machine())
    ratios = []
    if args.faults:
        print(f"emulator faults: {args.faults}")
    with EmulatorProc(faults=args.faults) as emu:
        for n in range(runs):
            with tempfile.TemporaryDirectory(prefix="inboxd-bench-tp-") as tmp:
                direct, took, d_cpu, i_cpu = one_run(emu, Path(tmp), count, args.concurrency)
            ratios.append(direct / took)
            print(
                f"run {n + 1}: {count} files; direct {direct:.2f} s ({count / direct:.0f}/s), "
                f"inboxd {took:.2f} s ({count / took:.0f}/s), ratio {direct / took:.2f}; "
                f"CPU per file: direct {d_cpu / count * 1000:.2f} ms, "
                f"inboxd {i_cpu / count * 1000:.2f} ms"
            )
    print(machine())
    print(f"throughput_ratio_median: {statistics.median(ratios):.2f} (target >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

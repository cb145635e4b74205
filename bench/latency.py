"""Latency: files dropped at a steady rate → drop-to-archived p50/p95/p99 minus the settle time.

inboxd runs as a subprocess against the emulator (``settle_seconds`` = ``--settle``). The
bench drops one 16 KiB text file every 1/``--rate`` s for ``--seconds`` s (written beside
the inbox, then renamed in: one atomic appearance, its ``time.time()`` recorded). After the
last file is archived the daemon is stopped and each file's ``finished_at`` is read from
the ledger; latency = finished_at - drop time - settle. Targets: p50 <= 50 ms, p99 <= 250 ms.

    .venv/bin/python bench/latency.py [--rate 20] [--seconds 60] [--runs 3] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DaemonProc,
    EmulatorProc,
    count_archived,
    machine,
    percentile,
    wait_until,
    write_config,
)


def one_run(
    emu: EmulatorProc, root: Path, rate: float, seconds: float, settle: float
) -> list[float]:
    """Latencies (seconds, settle subtracted) of every file of one run."""
    inbox, staging = root / "inbox", root / "staging"
    inbox.mkdir()
    staging.mkdir()
    cfg = write_config(
        root / "inboxd.toml",
        state_dir=root / "state",
        inboxes={"bench": inbox},
        urls=emu.urls,
        settle=settle,
    )
    daemon = DaemonProc(cfg, emu.keys, root / "inboxd.log")
    daemon.start()
    dropped: dict[str, float] = {}
    count = int(rate * seconds)
    try:
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the drop schedule itself, not a wait for the daemon
            name = f"l{i:05d}.txt"
            (staging / name).write_bytes(os.urandom(8 * 1024).hex().encode())
            dropped[name] = time.time()
            (staging / name).rename(inbox / name)
        done = root / "inbox.done"
        if not wait_until(lambda: count_archived(done) >= count, timeout=60 + settle):
            raise RuntimeError(f"only {count_archived(done)}/{count} archived")
    finally:
        daemon.stop()
    with sqlite3.connect(root / "state" / "inboxd.sqlite3") as db:
        rows = db.execute("SELECT relpath, finished_at FROM ledger WHERE state = 'done'")
        finished = dict(rows.fetchall())
    return [finished[name] - at - settle for name, at in dropped.items()]


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="files per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="2 s, one run")
    args = parser.parse_args()
    seconds, runs = (2.0, 1) if args.smoke else (args.seconds, args.runs)
    print(machine())
    figures: dict[str, list[float]] = {"p50": [], "p95": [], "p99": [], "max": []}
    with EmulatorProc() as emu:
        for n in range(runs):
            with tempfile.TemporaryDirectory(prefix="inboxd-bench-lat-") as tmp:
                lat = one_run(emu, Path(tmp), args.rate, seconds, args.settle)
            ms = {
                "p50": percentile(lat, 0.50) * 1000,
                "p95": percentile(lat, 0.95) * 1000,
                "p99": percentile(lat, 0.99) * 1000,
                "max": max(lat) * 1000,
            }
            for key, value in ms.items():
                figures[key].append(value)
            print(
                f"run {n + 1}: {len(lat)} files at {args.rate:g}/s, settle {args.settle:g} s: "
                + ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items())
            )
    print(machine())
    med = {k: statistics.median(v) for k, v in figures.items()}
    print(
        f"latency_minus_settle_ms_median: p50 {med['p50']:.0f} p95 {med['p95']:.0f} "
        f"p99 {med['p99']:.0f} max {med['max']:.0f} (targets p50 <= 50, p99 <= 250)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

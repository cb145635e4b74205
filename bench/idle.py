"""Idle cost: CPU seconds inboxd uses in 60 s of idling with 10 inboxes, and its idle RSS.

inboxd (a subprocess, 10 empty inboxes, Kimi via the emulator) is started; once READY=1 has
come and 2 s have passed, utime + stime of the whole process (every thread) is read from
/proc/<pid>/stat, again ``--seconds`` later. Target: at most 0.3 s per 60 s.

    .venv/bin/python bench/idle.py [--seconds 60] [--inboxes 10] [--runs 3] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DaemonProc,
    EmulatorProc,
    cpu_seconds,
    machine,
    vm_kib,
    write_config,
)


def one_run(emu: EmulatorProc, root: Path, inboxes: int, seconds: float) -> tuple[float, float]:
    """(CPU seconds over ``seconds``, idle VmRSS MiB) for one fresh daemon."""
    folders = {f"in{i:02d}": root / f"in{i:02d}" for i in range(inboxes)}
    for folder in folders.values():
        folder.mkdir()
    cfg = write_config(
        root / "inboxd.toml",
        state_dir=root / "state",
        inboxes=folders,
        urls=emu.urls,
        settle=2.0,
    )
    daemon = DaemonProc(cfg, emu.keys, root / "inboxd.log")
    daemon.start()
    try:
        time.sleep(2.0)  # start-up work (first scan, imports) is not idling
        before = cpu_seconds(daemon.pid)
        time.sleep(seconds)  # the measured idle period itself
        used = cpu_seconds(daemon.pid) - before
        rss = vm_kib(daemon.pid, "VmRSS") / 1024
    finally:
        daemon.stop()
    return used, rss


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--inboxes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="2 s, one run")
    args = parser.parse_args()
    seconds, runs = (2.0, 1) if args.smoke else (args.seconds, args.runs)
    print(machine())
    cpu, rss = [], []
    with EmulatorProc() as emu:
        for n in range(runs):
            with tempfile.TemporaryDirectory(prefix="inboxd-bench-idle-") as tmp:
                used, idle_rss = one_run(emu, Path(tmp), args.inboxes, seconds)
            cpu.append(used)
            rss.append(idle_rss)
            print(f"run {n + 1}: {used:.2f} CPU s in {seconds:g} s; idle RSS {idle_rss:.1f} MiB")
    print(machine())
    per60 = statistics.median(cpu) * 60 / seconds
    print(
        f"idle_cpu_seconds_per_60s_median: {per60:.2f} with {args.inboxes} inboxes "
        f"(target <= 0.3); idle_rss_MiB_median: {statistics.median(rss):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hashing: inboxd's sha256 (``handlers.hashing.sha256_fd``) against ``sha256sum`` on 1 GiB.

One file of random bytes is written in a temporary folder under /tmp (deleted at the end),
read once to warm the page cache, then hashed alternately by ``sha256sum`` (a subprocess) and
by ``sha256_fd`` in this process, ``--runs`` times each. Both digests must agree. Prints the
ratio ``sha256sum_time / inboxd_time`` per pair and its median; target >= 0.9.

    .venv/bin/python bench/hashing.py [--mib 1024] [--runs 3] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import machine

from handlers.hashing import sha256_fd


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="64 MiB, one run")
    args = parser.parse_args()
    mib, runs = (64, 1) if args.smoke else (args.mib, args.runs)
    print(machine())
    ratios = []
    with tempfile.TemporaryDirectory(prefix="inboxd-bench-hash-", dir="/tmp") as tmp:
        path = Path(tmp) / "big.bin"
        with path.open("wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(1 << 20))
        with path.open("rb") as fh:
            while fh.read(1 << 24):  # warm the page cache: both sides then read from memory
                pass
        for n in range(runs):
            start = time.perf_counter()
            out = subprocess.run(
                ["sha256sum", str(path)], check=True, capture_output=True, text=True
            ).stdout
            tool = time.perf_counter() - start
            fd = os.open(path, os.O_RDONLY)
            try:
                start = time.perf_counter()
                ours_hex = sha256_fd(fd)
                ours = time.perf_counter() - start
            finally:
                os.close(fd)
            if out.split()[0] != ours_hex:
                raise RuntimeError("sha256sum and sha256_fd disagree")
            ratios.append(tool / ours)
            print(
                f"run {n + 1}: {mib} MiB; sha256sum {tool:.2f} s ({mib / tool:.0f} MiB/s), "
                f"inboxd {ours:.2f} s ({mib / ours:.0f} MiB/s), ratio {tool / ours:.2f}"
            )
    print(machine())
    print(f"hash_ratio_median: {statistics.median(ratios):.2f} (target >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

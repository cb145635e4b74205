"""The emulator's own ceiling: 16 KiB uploads/s at concurrency 8, and peak RSS for 100 MB.

The emulator runs in a subprocess (``providers.emulator.cli``, port 0) so its memory is its
own; the client is one tight httpx loop with 8 workers in this process. Peak RSS is VmHWM
from /proc/<pid>/status (psutil is not installed).

    .venv/bin/python bench/emulator_bench.py [--seconds 10] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

_CODE = "import sys; from providers.emulator.cli import main; sys.exit(main(sys.argv[1:]))"
_KEY = "sk-emulator-kimi"


def _vm(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in KiB (VmHWM = peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing for pid {pid}")


async def _throughput(base: str, seconds: float, concurrency: int) -> tuple[int, float]:
    payload = os.urandom(16 * 1024)
    done = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker(n: int) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < deadline:
                resp = await client.post(
                    f"{base}/files",
                    headers={"Authorization": f"Bearer {_KEY}"},
                    files={"file": (f"w{n}-{i}.txt", payload, "text/plain")},
                    data={"purpose": "file-extract"},
                )
                if resp.status_code == 400 and "max file count" in resp.text:
                    # The 1,000-file quota is faithful: make room and keep measuring.
                    await client.post(base.rsplit("/v1", 1)[0] + "/_emulator/reset")
                    continue
                resp.raise_for_status()
                done += 1
                i += 1

        start = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        return done, time.monotonic() - start


async def _big_upload(base: str, size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.pdf"
        path.touch()
        os.truncate(path, size)  # sparse: no disk, and the client streams it
        async with httpx.AsyncClient(timeout=300) as client:
            start = time.monotonic()
            with path.open("rb") as fh:
                resp = await client.post(
                    f"{base}/files",
                    headers={"Authorization": f"Bearer {_KEY}"},
                    files={"file": ("big.pdf", fh, "application/pdf")},
                    data={"purpose": "file-extract"},
                )
            resp.raise_for_status()
            return time.monotonic() - start


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all")
    args = parser.parse_args()
    seconds = 1.0 if args.smoke else args.seconds
    big = (10 if args.smoke else 100) * 1024 * 1024
    proc = subprocess.Popen(
        [sys.executable, "-c", _CODE, "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        base = ""
        while not base:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the emulator exited before printing its URLs")
            if line.startswith("base_url") and line.rstrip().endswith('/v1"'):
                base = line.split('"')[1]
        idle_rss = _vm(proc.pid, "VmRSS")
        done, elapsed = asyncio.run(_throughput(base, seconds, args.concurrency))
        after_small = _vm(proc.pid, "VmHWM")
        big_s = asyncio.run(_big_upload(base, big))
        peak = _vm(proc.pid, "VmHWM")
        print(
            f"uploads_16KiB: {done} in {elapsed:.2f} s = {done / elapsed:.0f}/s "
            f"(concurrency {args.concurrency})"
        )
        print(f"emulator_rss_idle_MiB: {idle_rss / 1024:.1f}")
        print(f"emulator_peak_rss_after_small_MiB: {after_small / 1024:.1f}")
        print(f"big_upload: {big // (1024 * 1024)} MiB in {big_s:.2f} s")
        print(
            f"emulator_peak_rss_after_big_MiB: {peak / 1024:.1f} "
            f"(+{(peak - after_small) / 1024:.1f} for the big upload)"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak RSS rise while one 100 MB file is uploaded through each transport of each provider.

The emulator runs in its own process (``providers.emulator.cli``, port 0). Every measurement
runs in a fresh child process, because VmHWM (peak resident set, from /proc/self/status) only
ever grows: the child builds the client, does a 1 MiB warm-up upload (so imports, the SDK and
the connection pool are in the baseline), reads VmHWM, uploads a sparse 100,000,000-byte file
(``os.truncate``; under both providers' 100 MiB cap) from an open file object, reads VmHWM
again and prints the difference. Target: at most 16 MiB for every transport. The
``http+control`` row reads the file whole first (what an SDK given a Path does), to show the
measurement would catch it.

    .venv/bin/python bench/memory_transports.py [--runs 3] [--size 100000000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

_EMULATOR = "import sys; from providers.emulator.cli import main; sys.exit(main(sys.argv[1:]))"
CASES = [
    ("kimi", "openai"),
    ("kimi", "http"),
    ("glm", "zhipuai"),
    ("glm", "openai"),
    ("glm", "http"),
    ("kimi", "http+control"),
]
PURPOSE = {"kimi": ("file-extract", "big.pdf"), "glm": ("batch", "big.jsonl")}
KEYS_ENV = {"kimi": "MOONSHOT_API_KEY", "glm": "ZHIPUAI_API_KEY"}


def _vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("VmHWM missing from /proc/self/status")


async def _measure(
    provider: str, transport: str, base_url: str, key: str, size: int
) -> dict[str, float]:
    from providers.factory import build_client

    purpose, name = PURPOSE[provider]
    control = transport.endswith("+control")
    transport = transport.removesuffix("+control")
    client = build_client(
        provider,
        base_url=base_url,
        api_key=key,
        transports=[transport],
        timeout=300.0,
        connect_timeout=10.0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / f"warm{Path(name).suffix}"
        big = Path(tmp) / name
        for path, length in ((warm, 1024 * 1024), (big, size)):
            path.touch()
            os.truncate(path, length)  # sparse: no disk; the bytes are streamed as zeros
        try:
            with warm.open("rb") as fh:
                done = await client.upload(
                    filename=warm.name,
                    fileobj=fh,
                    size=1024 * 1024,
                    purpose=purpose,
                    content_type="application/octet-stream",
                )
            await client.delete(done.remote.id)
            before = _vm_hwm_kib()
            start = time.monotonic()
            with big.open("rb") as opened:
                # The control reads the file whole, as an SDK given a Path does: it proves
                # the measurement sees a whole-file read.
                source: BinaryIO = io.BytesIO(opened.read()) if control else opened
                done = await client.upload(
                    filename=big.name,
                    fileobj=source,
                    size=size,
                    purpose=purpose,
                    content_type="application/octet-stream",
                )
            elapsed = time.monotonic() - start
            after = _vm_hwm_kib()
            await client.delete(done.remote.id)
        finally:
            await client.aclose()
    return {"before_kib": before, "rise_kib": after - before, "seconds": elapsed}


def _child(args: argparse.Namespace) -> int:
    figures = asyncio.run(
        _measure(args.provider, args.transport, args.base_url, os.environ["BENCH_KEY"], args.size)
    )
    print(json.dumps(figures))
    return 0


def _start_emulator() -> tuple[subprocess.Popen[str], dict[str, str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _EMULATOR, "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    keys: dict[str, str] = {}
    section = ""
    while len(keys) < 2:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator exited before printing its URLs")
        line = line.strip()
        if line.startswith("[providers."):
            section = line[len("[providers.") : -1]
        elif line.startswith("base_url"):
            urls[section] = line.split('"')[1]
        for provider, env in KEYS_ENV.items():
            if line.startswith(env + "="):
                keys[provider] = line.split("=", 1)[1]
    return proc, urls, keys


def main() -> int:
    """Measure every transport ``--runs`` times and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=100_000_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--provider", help=argparse.SUPPRESS)
    parser.add_argument("--transport", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    proc, urls, keys = _start_emulator()
    here = str(Path(__file__).resolve().parent.parent)
    try:
        print(f"nproc {os.cpu_count()}, size {args.size} bytes, runs {args.runs}")
        print(f"{'provider':8} {'transport':9} {'rise MiB (runs)':28} {'median':>7} {'s':>6}")
        worst = 0.0
        for provider, transport in CASES:
            rises: list[float] = []
            seconds: list[float] = []
            for _ in range(args.runs):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        "--provider",
                        provider,
                        "--transport",
                        transport,
                        "--base-url",
                        urls[provider],
                        "--size",
                        str(args.size),
                    ],
                    env={**os.environ, "BENCH_KEY": keys[provider], "PYTHONPATH": here},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                rises.append(figures["rise_kib"] / 1024)
                seconds.append(figures["seconds"])
            median = statistics.median(rises)
            if not transport.endswith("+control"):
                worst = max(worst, median)
            runs = ", ".join(f"{r:.1f}" for r in rises)
            print(
                f"{provider:8} {transport:9} {runs:28} {median:7.1f} "
                f"{statistics.median(seconds):6.2f}"
            )
        print(f"worst median rise over the real transports: {worst:.1f} MiB (target <= 16)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

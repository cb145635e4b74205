"""The daemon's idle RSS, and its peak RSS while uploading one 100 MB file, per transport.

For each provider/transport pair a fresh inboxd subprocess (that provider only, that transport
only) is started against the emulator. After READY=1 and a 1 s pause it reads VmRSS (idle),
uploads a 1 MiB warm-up file (first-use imports and the connection pool land in the
baseline), resets the peak with ``echo 5 > /proc/<pid>/clear_refs`` after reading VmRSS, drops
one 100,000,000-byte text file (real bytes: the type check reads them) and reads VmHWM once it
is archived. Rise = VmHWM - VmRSS before the drop; target: at most 16 MiB.

    .venv/bin/python bench/memory_daemon.py [--runs 3] [--smoke]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    GLM_AGENT_100MB,
    DaemonProc,
    EmulatorProc,
    count_archived,
    machine,
    vm_kib,
    wait_until,
    write_config,
)

PAIRS = [
    ("kimi", "openai"),
    ("kimi", "http"),
    ("glm", "zhipuai"),
    ("glm", "openai"),
    ("glm", "http"),
]
_LINE = b"inboxd memory benchmark: plain text, so the content check accepts it.\n"


def _text_file(path: Path, size: int) -> None:
    block = _LINE * (1024 * 1024 // len(_LINE) + 1)
    with path.open("wb") as fh:
        left = size
        while left:
            chunk = block[: min(left, 1024 * 1024)]
            fh.write(chunk)
            left -= len(chunk)


def measure(
    emu: EmulatorProc, root: Path, provider: str, transport: str, big: Path
) -> tuple[float, float, float]:
    """(idle RSS MiB, RSS before the big drop MiB, rise MiB) for one fresh daemon."""
    inbox = root / "inbox"
    inbox.mkdir()
    cfg = write_config(
        root / "inboxd.toml",
        state_dir=root / "state",
        inboxes={"bench": inbox},
        urls=emu.urls,
        settle=0.2,
        providers=[provider],
        transports={provider: [transport]},
        extra=GLM_AGENT_100MB,
    )
    daemon = DaemonProc(cfg, emu.keys, root / "inboxd.log")
    daemon.start()
    done = root / "inbox.done"
    try:
        time.sleep(1.0)  # let start-up garbage settle before the idle reading
        idle = vm_kib(daemon.pid, "VmRSS")
        _text_file(inbox / "warmup.txt", 1024 * 1024)
        if not wait_until(lambda: count_archived(done) >= 1, timeout=60):
            raise RuntimeError(f"warm-up not archived; see {daemon.log}")
        before = vm_kib(daemon.pid, "VmRSS")
        Path(f"/proc/{daemon.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        shutil.move(big, inbox / big.name)
        if not wait_until(lambda: count_archived(done) >= 2, timeout=300):
            raise RuntimeError(f"100 MB file not archived; see {daemon.log}")
        peak = vm_kib(daemon.pid, "VmHWM")
        shutil.move(done / big.name, big)  # reused by the next measurement
    finally:
        daemon.stop()
    return idle / 1024, before / 1024, (peak - before) / 1024


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=100_000_000)
    parser.add_argument("--smoke", action="store_true", help="10 MB, kimi/http only, one run")
    args = parser.parse_args()
    pairs, runs, size = (PAIRS[1:2], 1, 10_000_000) if args.smoke else (PAIRS, args.runs, args.size)
    print(machine())
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {p: [] for p in pairs}
    with tempfile.TemporaryDirectory(prefix="inboxd-bench-mem-") as tmp, EmulatorProc() as emu:
        big = Path(tmp) / "big.txt"
        _text_file(big, size)
        for _ in range(runs):
            for provider, transport in pairs:
                root = Path(tmp) / f"{provider}-{transport}"
                root.mkdir()
                results[(provider, transport)].append(measure(emu, root, provider, transport, big))
                shutil.rmtree(root)
                httpx_reset(emu)
    for (provider, transport), rows in results.items():
        idle = statistics.median(r[0] for r in rows)
        rise = statistics.median(r[2] for r in rows)
        print(
            f"daemon_rss {provider}/{transport}: idle {idle:.1f} MiB, "
            f"rise for {size / 1e6:.0f} MB {rise:.1f} MiB (runs: "
            + ", ".join(f"{r[2]:.1f}" for r in rows)
            + ") (target <= 16)"
        )
    print(machine())
    return 0


def httpx_reset(emu: EmulatorProc) -> None:
    """Empty the emulator between measurements (its spool files would pile up)."""
    import httpx

    httpx.post(emu.admin + "/_emulator/reset", timeout=30).raise_for_status()


if __name__ == "__main__":
    sys.exit(main())

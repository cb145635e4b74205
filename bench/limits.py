"""Pacing to the account's limits: N files of 16 KiB against an emulator that limits like the
real services (rolling 60 s RPM window, concurrency, the real 429 bodies, no Retry-After).

For each provider, in one run against one emulator process (quotas lifted):

1. the reference: a direct httpx loop that KNOWS the limits (``concurrency`` workers, each
   send scheduled against a rolling 60 s window of its own sends, margin 0.25 s), the same
   files read from disk, no watching, no ledger;
2. inboxd (a subprocess, ``settle_seconds = 0.5``) with ``rpm`` unset: it learns the limits
   from the 429s (``learned``);
3. inboxd with ``rpm`` and ``concurrency`` set to the emulator's limits (``configured``).

The emulator is reset (files, counts, window) between runs. Each inboxd run is timed from
the first file moved into its inbox until all are archived. Figures per run: time, the
achieved rate against the allowed rate, ``ratio = reference_time / inboxd_time`` (target
>= 0.9), the same ratio from the first file stored/archived to the last (the pacing alone,
without inboxd's start: watch, settle, hash, intent), 429s as a share of upload calls (target
<= 10 %), files quarantined (target 0) and files stored twice (target 0).

    .venv/bin/python bench/limits.py [--files 200] [--providers kimi,glm] [--smoke]

A full run takes ~13 minutes (Kimi 120/min: ~62 s a run; GLM 60/min: ~3 min a run).
``--smoke``: 40 files, limits high enough that it takes seconds (concurrency still binds).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DaemonProc,
    EmulatorProc,
    count_archived,
    machine,
    wait_until,
    write_config,
)
from throughput import make_files

WINDOW = 60.0
PURPOSE = {"kimi": "file-extract", "glm": "agent"}


@dataclass(frozen=True)
class Scenario:
    """One provider's emulator limits."""

    provider: str
    rpm: int
    concurrency: int
    latency_ms: int

    @property
    def faults(self) -> str:
        return (
            f"{self.provider}:rpm={self.rpm},concurrency={self.concurrency},"
            f"latency={self.latency_ms}"
        )

    def ideal_seconds(self, count: int) -> float:
        """The least time the limits allow: full windows, then the rest at full concurrency."""
        windows, rest = divmod(count, self.rpm)
        if rest == 0:
            windows, rest = windows - 1, self.rpm
        per_call = self.latency_ms / 1000
        return windows * WINDOW + math.ceil(rest / self.concurrency) * per_call


@dataclass(frozen=True)
class Result:
    """One run's figures."""

    seconds: float
    span: float  # from the first file archived to the last
    ok: int
    throttled: int
    quarantined: int
    stored: int
    unique: int


async def reference(emu: EmulatorProc, sc: Scenario, paths: list[Path]) -> tuple[float, float, int]:
    """The direct loop that knows the limits: (seconds, first-to-last stored, 429s it got)."""
    url, key = emu.urls[sc.provider], emu.keys[sc.provider]
    queue = list(reversed(paths))
    sends: collections.deque[float] = collections.deque()
    lock = asyncio.Lock()
    throttled = 0
    stored: list[float] = []
    span = WINDOW + 0.25
    limits = httpx.Limits(max_connections=sc.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def slot() -> None:
            async with lock:
                while True:
                    now = time.monotonic()
                    while sends and sends[0] <= now - span:
                        sends.popleft()
                    if len(sends) < sc.rpm:
                        sends.append(now)
                        return
                    await asyncio.sleep(sends[0] + span - now)

        async def worker() -> None:
            nonlocal throttled
            while queue:
                path = queue.pop()
                while True:
                    await slot()
                    with path.open("rb") as fh:
                        resp = await client.post(
                            f"{url}/files",
                            headers={"Authorization": f"Bearer {key}"},
                            files={"file": (path.name, fh, "text/plain")},
                            data={"purpose": PURPOSE[sc.provider]},
                        )
                    if resp.status_code != 429:
                        resp.raise_for_status()
                        stored.append(time.monotonic())
                        break
                    throttled += 1
                    await asyncio.sleep(1.0)

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(sc.concurrency)))
        return time.monotonic() - start, max(stored) - min(stored), throttled


def counts(emu: EmulatorProc, provider: str) -> tuple[int, int]:
    """(uploads answered 200, uploads answered 429) since the last reset."""
    c = emu.get("/_emulator/counts")[provider]
    return c.get("upload.200", 0), c.get("upload.429", 0)


def reset(emu: EmulatorProc) -> None:
    httpx.post(emu.admin + "/_emulator/reset", timeout=30).raise_for_status()


def run_inboxd(
    emu: EmulatorProc, root: Path, sc: Scenario, paths: list[Path], *, configured: bool
) -> Result:
    """inboxd uploading every path; ``configured``: rpm and concurrency set to the limits."""
    inbox = root / "inbox"
    inbox.mkdir()
    cfg = write_config(
        root / "inboxd.toml",
        state_dir=root / "state",
        inboxes={"bench": inbox},
        urls=emu.urls,
        settle=0.5,
        providers=(sc.provider,),
        concurrency=sc.concurrency if configured else 4,
        # GLM agent's documented 100-file count would stop a 200-file run (lifted here too).
        extra="[providers.glm.limits.agent]\nmax_count = 100000000",
        provider_extra=f"rpm = {sc.rpm}" if configured else "",
    )
    daemon = DaemonProc(cfg, emu.keys, root / "inboxd.log")
    daemon.start()
    count = len(paths)
    done_dir, quarantine = root / "inbox.done", root / "inbox.quarantine"
    first: list[float] = []

    def finished() -> bool:
        archived = count_archived(done_dir)
        if archived and not first:
            first.append(time.monotonic())
        return archived + _quarantined(quarantine) >= count

    try:
        start = time.monotonic()
        for path in paths:
            path.rename(inbox / path.name)
        ok = wait_until(finished, timeout=sc.ideal_seconds(count) * 3 + 120, interval=0.05)
        end = time.monotonic()
        took = end - start
    finally:
        daemon.stop()
    if not ok:
        raise RuntimeError(
            f"{count_archived(done_dir)}/{count} archived, {_quarantined(quarantine)} "
            f"quarantined; see {root / 'inboxd.log'}"
        )
    stored = [f["filename"] for f in emu.stored() if f["provider"] == sc.provider]
    good, throttled = counts(emu, sc.provider)
    span = end - first[0]
    return Result(
        took, span, good, throttled, _quarantined(quarantine), len(stored), len(set(stored))
    )


def _quarantined(folder: Path) -> int:
    if not folder.exists():
        return 0
    return sum(1 for p in folder.iterdir() if not p.name.endswith(".reason.json"))


def scenario_runs(emu: EmulatorProc, sc: Scenario, count: int) -> list[str]:
    """The three runs of one scenario; the figure lines."""
    emu.set_faults(sc.faults)
    reset(emu)
    allowed = sc.rpm
    lines = [
        f"{sc.provider}: {count} files of 16 KiB, emulator {sc.faults}; "
        f"least time the limits allow {sc.ideal_seconds(count):.1f} s"
    ]
    with tempfile.TemporaryDirectory(prefix="inboxd-bench-limits-") as tmp:
        paths = make_files(Path(tmp) / "staging", count)
        ref, ref_span, ref_429 = asyncio.run(reference(emu, sc, paths))
        lines.append(
            f"{sc.provider} reference (direct, knows the limits): {ref:.1f} s, "
            f"first to last stored {ref_span:.1f} s, 429s {ref_429}"
        )
    reset(emu)
    for mode in ("learned", "configured"):
        with tempfile.TemporaryDirectory(prefix="inboxd-bench-limits-") as tmp:
            root = Path(tmp)
            paths = make_files(root / "staging", count, prefix=f"{mode[0]}")
            r = run_inboxd(emu, root, sc, paths, configured=mode == "configured")
        reset(emu)
        calls = r.ok + r.throttled
        rate = count / r.seconds * 60
        lines.append(
            f"{sc.provider} {mode}: {r.seconds:.1f} s, {rate:.0f}/min (allowed {allowed}/min "
            f"over a rolling window), ratio {ref / r.seconds:.2f} (target >= 0.9); "
            f"first to last archived {r.span:.1f} s, ratio {ref_span / r.span:.2f}; "
            f"429s {r.throttled}/{calls} = {r.throttled / calls:.1%} (target <= 10%); "
            f"quarantined {r.quarantined}; stored {r.stored}, twice {r.stored - r.unique}"
        )
    return lines


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--providers", default="kimi,glm")
    parser.add_argument("--smoke", action="store_true", help="40 files, high limits: seconds")
    args = parser.parse_args()
    if args.smoke:
        count = 40
        scenarios = {
            "kimi": Scenario("kimi", rpm=600, concurrency=2, latency_ms=20),
            "glm": Scenario("glm", rpm=600, concurrency=2, latency_ms=20),
        }
    else:
        count = args.files
        scenarios = {
            "kimi": Scenario("kimi", rpm=120, concurrency=4, latency_ms=100),
            "glm": Scenario("glm", rpm=60, concurrency=2, latency_ms=100),
        }
    print(machine())
    with EmulatorProc() as emu:
        for name in args.providers.split(","):
            for line in scenario_runs(emu, scenarios[name.strip()], count):
                print(line, flush=True)
    print(machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale: N small files already in the inbox when inboxd starts → time, peak RSS, state size.

``--files`` distinct 200-byte text files are written into the inbox first; then inboxd (a
subprocess, one provider via the emulator, ``settle_seconds = 0.5``) is started and timed from
its launch until every file is archived. Peak RSS is its VmHWM (target <= 200 MB); the state
file size is ``inboxd.sqlite3`` plus its ``-wal`` after a clean stop.

``--provider kimi`` (default) uploads ``.txt`` files as ``file-extract`` (the bench emulator
lifts Kimi's 1,000-file account cap, so this long a listing cannot happen on a real account).
``--provider glm`` uploads ``.jsonl`` files as ``fine-tune``, the one GLM purpose for text
with no documented file count: the realistic provider for a 100,000-file listing, whose
pages (100 files each) the remote-usage count walks every 10 minutes.

    .venv/bin/python bench/scale.py [--files 100000] [--runs 1] [--provider kimi|glm] [--smoke]
"""

from __future__ import annotations

import argparse
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
    vm_kib,
    wait_until,
    write_config,
)


def one_run(
    emu: EmulatorProc, root: Path, count: int, provider: str
) -> tuple[float, float, float, float]:
    """(seconds to READY, seconds until all archived, peak RSS MiB, state MiB)."""
    inbox = root / "inbox"
    inbox.mkdir()
    for i in range(count):
        if provider == "glm":
            (inbox / f"s{i:06d}.jsonl").write_text(f'{{"scale benchmark file": {i}}}\n' * 7)
        else:
            (inbox / f"s{i:06d}.txt").write_text(f"scale benchmark file {i}\n" * 8)
    cfg = write_config(
        root / "inboxd.toml",
        state_dir=root / "state",
        inboxes={"bench": inbox},
        urls=emu.urls,
        settle=0.5,
        providers=(provider,),
    )
    if provider == "glm":
        # Appended to the last (only) [[inbox]] table: GLM's purpose without a file count.
        with cfg.open("a") as out:
            out.write('purpose = { glm = "fine-tune" }\n')
    daemon = DaemonProc(cfg, emu.keys, root / "inboxd.log")
    start = time.monotonic()
    ready = daemon.start(timeout=600)
    peak = 0
    done = root / "inbox.done"

    def finished() -> bool:
        nonlocal peak
        peak = max(peak, vm_kib(daemon.pid, "VmHWM"))
        return count_archived(done) >= count

    try:
        if not wait_until(finished, timeout=max(60.0, count / 5), interval=1.0):
            raise RuntimeError(f"only {count_archived(done)}/{count} archived; see log")
        took = time.monotonic() - start
    finally:
        daemon.stop()
    state = sum(p.stat().st_size for p in (root / "state").glob("inboxd.sqlite3*"))
    return ready, took, peak / 1024, state / 2**20


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--provider", choices=("kimi", "glm"), default="kimi")
    parser.add_argument("--smoke", action="store_true", help="300 files, one run")
    args = parser.parse_args()
    count, runs = (300, 1) if args.smoke else (args.files, args.runs)
    print(machine())
    with EmulatorProc() as emu:
        for n in range(runs):
            with tempfile.TemporaryDirectory(prefix="inboxd-bench-scale-") as tmp:
                ready, took, peak, state = one_run(emu, Path(tmp), count, args.provider)
            print(
                f"run {n + 1}: scale_files {count}: {args.provider}, ready after {ready:.1f} s, "
                f"all archived after {took:.1f} s ({count / took:.0f}/s), peak RSS {peak:.1f} MiB "
                f"(target <= 200 MB), state file {state:.1f} MiB"
            )
            stored = len(emu.stored())
            if stored != count:
                raise RuntimeError(f"emulator holds {stored} files, expected {count}")
            emu_reset(emu)
    print(machine())
    return 0


def emu_reset(emu: EmulatorProc) -> None:
    """Empty the emulator between runs."""
    import httpx

    httpx.post(emu.admin + "/_emulator/reset", timeout=60).raise_for_status()


if __name__ == "__main__":
    sys.exit(main())

"""The remote side (issue 14): a retention pass over a 1,000-file account, and extraction for
1,000 files, each beside the upload of the same files alone, in one run.

Per run, against one emulator process (``bench/_common.py``: quotas lifted, loopback), with
``--files`` distinct 16 KiB ``.txt`` files (Kimi, ``file-extract``; ``settle_seconds = 0.5``):

1. **upload alone** (the reference): inboxd (a subprocess) with ``extract = false`` and no
   retention, the files moved into its inbox at once, timed until all are archived; its CPU
   over that time and its peak RSS (VmHWM) at the end.
2. **retention pass**: inboxd stopped, the account now holds the N files inboxd uploaded;
   ``inboxd remote prune kimi --dry-run`` (list the account, plan from the ledger, delete
   nothing), then ``inboxd remote prune kimi`` with ``[providers.kimi.retention] max_files =
   --keep``: N - keep recorded deletions (intent, DELETE, outcome). Each is a fresh process:
   wall time from launch to exit (interpreter start-up included), CPU and peak RSS from
   ``wait4``'s rusage. Checked: the command printed N - keep deletions and the emulator holds
   ``--keep`` files after it.
3. **extraction**: the emulator reset, a fresh state directory, the same N files (rewritten)
   into inboxd with ``extract = true``: every file's text fetched (``GET /files/{id}/content``)
   and written as ``<name>.extracted.txt`` before the file is archived. Timed as in 1. Checked:
   N ``.extracted.txt`` files and N content calls answered 200.

Every figure is printed with its ratio to the reference of the same run (upload alone), and
the median ratio over ``--runs``.

    .venv/bin/python bench/remote.py [--files 1000] [--keep 100] [--runs 3] [--faults SPEC]
        [--smoke]

``--faults`` is an emulator fault spec for every part, e.g. ``kimi:latency=100`` (a round trip
like the real services' from outside China: a pass deletes one file at a time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Drop, EmulatorProc, inboxd_drop, machine, write_config
from throughput import make_files

MIB_KIB = 1024


class Command(NamedTuple):
    """One CLI command run to its end in a fresh process."""

    seconds: float  # wall time, launch to exit
    cpu: float  # user + system CPU seconds
    peak_kib: int  # ru_maxrss: its peak resident set
    stdout: str


def run_command(args: list[str], keys: Mapping[str, str], log: Path) -> Command:
    """``python -m daemon ARGS`` with the providers' keys; raises if it does not exit 0."""
    env = {**os.environ, "MOONSHOT_API_KEY": keys["kimi"], "ZHIPUAI_API_KEY": keys["glm"]}
    out = log.with_suffix(".out")
    start = time.monotonic()
    with out.open("wb") as stdout, log.open("ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", *args], cwd=REPO, env=env, stdout=stdout, stderr=stderr
        )
        # wait4, not Popen.wait: the rusage of this one child (ru_maxrss in KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"inboxd {' '.join(args)} exited {proc.returncode}; see {log}")
    return Command(took, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out.read_text())


def daemon_run(emu: EmulatorProc, root: Path, count: int, *, extract: bool) -> Drop:
    """inboxd over ``count`` fresh files (Kimi, a fresh state dir under ``root``)."""
    paths = make_files(root / "staging", count)
    extra = "extract = true" if extract else ""
    return inboxd_drop(emu, root, paths, timeout=max(60.0, count / 5), inbox_extra=extra)


def prune_runs(emu: EmulatorProc, root: Path, count: int, keep: int) -> tuple[Command, Command]:
    """(dry run, real pass) of ``inboxd remote prune kimi`` with ``max_files = keep``."""
    cfg = write_config(
        root / "prune.toml",
        state_dir=root / "state",
        inboxes={"bench": root / "inbox"},
        urls=emu.urls,
        settle=0.5,
        extra=f"[providers.kimi.retention]\nmax_files = {keep}",
    )
    log = root / "prune.log"
    dry = run_command(["remote", "prune", "kimi", "--dry-run", "-c", str(cfg)], emu.keys, log)
    real = run_command(["remote", "prune", "kimi", "-c", str(cfg)], emu.keys, log)
    for what, cmd, verb in (("dry run", dry, "would delete "), ("pass", real, "deleted ")):
        listed = sum(1 for line in cmd.stdout.splitlines() if line.startswith(verb))
        if listed != count - keep:
            raise RuntimeError(f"prune {what} printed {listed} deletions, expected {count - keep}")
    held = len(emu.stored())
    if held != keep:
        raise RuntimeError(f"the account holds {held} files after the pass, expected {keep}")
    return dry, real


def _row(name: str, cmd: Command, count: int, ref: Drop) -> str:
    """A command's figures, each with its ratio to upload alone's."""
    return (
        f"{name}: {cmd.seconds:.2f} s (x{cmd.seconds / ref.seconds:.2f}), "
        f"CPU {cmd.cpu:.2f} s = {cmd.cpu / count * 1000:.2f} ms/file (x{cmd.cpu / ref.cpu:.2f}), "
        f"peak RSS {cmd.peak_kib / MIB_KIB:.1f} MiB (x{cmd.peak_kib / ref.peak_kib:.2f})"
    )


def one_run(emu: EmulatorProc, n: int, count: int, keep: int) -> dict[str, float]:
    """One run's three parts; prints its lines, returns its ratios to upload alone."""
    with tempfile.TemporaryDirectory(prefix="inboxd-bench-remote-") as tmp:
        root = Path(tmp)
        ref = daemon_run(emu, root, count, extract=False)
        dry, real = prune_runs(emu, root, count, keep)
    httpx.post(emu.admin + "/_emulator/reset", timeout=60).raise_for_status()
    with tempfile.TemporaryDirectory(prefix="inboxd-bench-remote-") as tmp:
        root = Path(tmp)
        ext = daemon_run(emu, root, count, extract=True)
        texts = sum(1 for p in (root / "inbox.done").glob("*.extracted.txt"))
    content = emu.get("/_emulator/counts")["kimi"].get("content.200", 0)
    httpx.post(emu.admin + "/_emulator/reset", timeout=60).raise_for_status()
    if texts != count or content != count:
        raise RuntimeError(f"{texts} .extracted.txt files, {content} content calls; want {count}")
    print(
        f"run {n}: upload alone (reference): {count} files in {ref.seconds:.2f} s "
        f"({count / ref.seconds:.0f} files/s), CPU {ref.cpu / count * 1000:.2f} ms/file, "
        f"peak RSS {ref.peak_kib / MIB_KIB:.1f} MiB"
    )
    print(f"run {n}: " + _row(f"prune --dry-run over {count} files", dry, count, ref))
    pass_name = f"prune pass, {count} -> {keep} files ({count - keep} deleted)"
    print(f"run {n}: " + _row(pass_name, real, count, ref))
    print(
        f"run {n}: extract = true: {count} files in {ext.seconds:.2f} s "
        f"({count / ext.seconds:.0f} files/s, x{ref.seconds / ext.seconds:.2f} of upload "
        f"alone's rate), CPU {ext.cpu / count * 1000:.2f} ms/file (x{ext.cpu / ref.cpu:.2f}), "
        f"peak RSS {ext.peak_kib / MIB_KIB:.1f} MiB (x{ext.peak_kib / ref.peak_kib:.2f}); "
        f"{texts} texts written"
    )
    return {
        "prune_time": real.seconds / ref.seconds,
        "prune_rss": real.peak_kib / ref.peak_kib,
        "extract_time": ext.seconds / ref.seconds,
        "extract_cpu": ext.cpu / ref.cpu,
        "extract_rss": ext.peak_kib / ref.peak_kib,
    }


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--keep", type=int, default=100, help="retention max_files for the pass")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--faults", default="", help="emulator fault spec, e.g. kimi:latency=100")
    parser.add_argument("--smoke", action="store_true", help="60 files, keep 10, one run")
    args = parser.parse_args()
    count, keep, runs = (60, 10, 1) if args.smoke else (args.files, args.keep, args.runs)
    if not 0 < keep < count:
        parser.error("--keep must be between 1 and --files - 1")
    print(machine())
    if args.faults:
        print(f"emulator faults: {args.faults}")
    ratios: list[dict[str, float]] = []
    with EmulatorProc(faults=args.faults) as emu:
        for n in range(1, runs + 1):
            ratios.append(one_run(emu, n, count, keep))
    print(machine())
    medians = {k: statistics.median(r[k] for r in ratios) for k in ratios[0]}
    print(
        "remote_ratio_median (to upload alone): "
        + ", ".join(f"{k} x{v:.2f}" for k, v in medians.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

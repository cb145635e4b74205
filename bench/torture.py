"""Torture: SIGKILLs during a run with faults on, and a fault storm; nothing lost, nothing twice.

(a) ``kills``: ``--files`` distinct text files sit in the inbox; inboxd (a subprocess, Kimi via
the emulator with ``KILL_FAULTS``) is started and SIGKILLed ``--kills`` times, each at a
random moment 0.3-2 s after READY=1, then left to finish. (b) ``storm``: one uninterrupted
run with ``STORM_FAULTS`` (30 % 5xx, 10 % 429 with Retry-After 1 s, 5 % resets, 5 %
accept-then-drop). (c) ``rate_storm``: the same with ``RATE_STORM_FAULTS``, a third of the
calls answered with Kimi's real rate-limit 429 (the wait only in its message, no Retry-After).
Ground truth is the emulator's ``/_emulator/files``: lost = a file whose sha256 the emulator
does not hold or that is not archived; twice = a sha256 held more than once. Attempts per file
come from the ledger's ``attempts`` column; request outcomes from
``/_emulator/counts``. Backoff and the rescan interval are shortened, retries raised and the
breaker kept shut (see ``_TUNING``) so a storm takes seconds, not the production minutes.

    .venv/bin/python bench/torture.py [--files 2000] [--kills 25] [--seed 1] [--smoke]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import random
import sqlite3
import sys
import tempfile
import time
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

KILL_FAULTS = "kimi:500@0.1,429:1@0.05,reset@0.03,drop@0.03"
STORM_FAULTS = "kimi:500@0.15,502@0.08,503@0.07,429:1@0.1,reset@0.05,drop@0.05"
# A third of the calls refused as Kimi refuses them: the account's limit (the plan's rpm) and a
# wait of 1 s named only in the message text. 600 a minute is above what the run reaches.
RATE_STORM_FAULTS = "kimi:rpm=600,429msg:1@0.34"
# The breaker is kept shut (it can never trip): with it on, a file that finds another worker's
# half-open probe in flight is parked until the probe's lease ends (2 x timeout + 60 s = 300 s
# by default) even when the probe succeeds at once, which stalls a storm for minutes (see
# bench/README.md, "Torture"). Attempts are raised so 50 % faults rarely exhaust them.
_TUNING = """
[providers.kimi.retry]
attempts = 20
base = 0.05
cap = 1.0
budget_ratio = 1.0
budget_floor = 100000.0
"""
_BREAKER_SHUT = """
[providers.kimi.breaker]
window = 1000
min_calls = 1000
consecutive_failures = 1000
"""


def _files(inbox: Path, count: int) -> dict[str, str]:
    """Write ``count`` distinct text files; returns name → sha256."""
    inbox.mkdir()
    digests = {}
    for i in range(count):
        data = f"torture file {i} {random.random()}\n".encode() * 20
        (inbox / f"t{i:05d}.txt").write_bytes(data)
        digests[f"t{i:05d}.txt"] = hashlib.sha256(data).hexdigest()
    return digests


def _daemon(emu: EmulatorProc, root: Path, inbox: Path, breaker: bool) -> DaemonProc:
    cfg = write_config(
        root / "inboxd.toml",
        state_dir=root / "state",
        inboxes={"bench": inbox},
        urls=emu.urls,
        settle=0.2,
        extra="rescan_interval = 3.0",
        provider_extra="",
    )
    cfg.write_text(cfg.read_text() + _TUNING + ("" if breaker else _BREAKER_SHUT))
    return DaemonProc(cfg, emu.keys, root / "inboxd.log")


def _verdict(emu: EmulatorProc, root: Path, digests: dict[str, str]) -> tuple[int, int]:
    held = collections.Counter(f["sha256"] for f in emu.stored())
    done = root / "inbox.done"
    lost = sum(1 for n, d in digests.items() if held[d] == 0 or not (done / n).exists())
    twice = sum(1 for d in digests.values() if held[d] > 1)
    return lost, twice


def _attempts(root: Path) -> dict[int, int]:
    with sqlite3.connect(root / "state" / "inboxd.sqlite3") as db:
        rows = db.execute("SELECT attempts, COUNT(*) FROM ledger GROUP BY attempts")
        return dict(sorted(rows.fetchall()))


def kills(
    emu: EmulatorProc, root: Path, count: int, n_kills: int, rng: random.Random, *, breaker: bool
) -> None:
    """Run (a) and print its figures."""
    emu.set_faults(KILL_FAULTS)
    inbox = root / "inbox"
    digests = _files(inbox, count)
    start = time.monotonic()
    for _ in range(n_kills):
        daemon = _daemon(emu, root, inbox, breaker)
        daemon.start()
        time.sleep(rng.uniform(0.3, 2.0))  # the random moment of the kill
        daemon.kill()
    daemon = _daemon(emu, root, inbox, breaker)
    daemon.start()
    try:
        done = root / "inbox.done"
        wait_until(lambda: count_archived(done) >= count, timeout=60 + count / 5, interval=0.2)
    finally:
        daemon.stop()
    lost, twice = _verdict(emu, root, digests)
    print(
        f"torture_kills: {count} files, {n_kills} SIGKILLs, faults {KILL_FAULTS!r}: "
        f"lost {lost}, uploaded twice {twice}, archived {count_archived(root / 'inbox.done')}, "
        f"{time.monotonic() - start:.1f} s"
    )
    print(f"torture_kills_attempts_per_file: {_attempts(root)}")
    print(f"torture_kills_emulator_counts: {emu.get('/_emulator/counts')['kimi']}")


def storm(
    emu: EmulatorProc,
    root: Path,
    count: int,
    breaker: bool,
    *,
    label: str = "torture_storm",
    faults: str = STORM_FAULTS,
    per_file: float = 0.2,
) -> None:
    """Run (b), or (c) with its label and faults, and print its figures.

    The run may take ``60 + count * per_file`` seconds; what is not archived by then counts
    as lost.
    """
    emu.set_faults(faults)
    inbox = root / "inbox"
    digests = _files(inbox, count)
    start = time.monotonic()
    daemon = _daemon(emu, root, inbox, breaker)
    daemon.start()
    try:
        done = root / "inbox.done"
        wait_until(
            lambda: count_archived(done) >= count, timeout=60 + count * per_file, interval=0.2
        )
    finally:
        daemon.stop()
    lost, twice = _verdict(emu, root, digests)
    print(
        f"{label}: {count} files, faults {faults!r}: lost {lost}, "
        f"uploaded twice {twice}, archived {count_archived(root / 'inbox.done')}, "
        f"quarantined {_quarantined(root)}, {time.monotonic() - start:.1f} s"
    )
    print(f"{label}_attempts_per_file: {_attempts(root)}")
    print(f"{label}_emulator_counts: {emu.get('/_emulator/counts')['kimi']}")


def _quarantined(root: Path) -> int:
    """Files in the quarantine folder (not their ``.reason.json`` sidecars)."""
    folder = root / "inbox.quarantine"
    if not folder.exists():
        return 0
    return sum(1 for p in folder.iterdir() if not p.name.endswith(".reason.json"))


def main() -> int:
    """Run both torture runs and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--smoke", action="store_true", help="60 files (20 in the rate-limit storm), 2 kills"
    )
    parser.add_argument(
        "--breaker", action="store_true", help="keep the default breaker (shows the probe stall)"
    )
    args = parser.parse_args()
    count, n_kills = (60, 2) if args.smoke else (args.files, args.kills)
    # Each refusal of the rate-limit storm pauses the provider for its 1 s: the smoke keeps it
    # short (the whole smoke stays well inside the suite's bound on a slow, busy machine).
    rate_count = 20 if args.smoke else count
    rng = random.Random(args.seed)
    print(machine())
    with EmulatorProc(seed=args.seed) as emu:
        with tempfile.TemporaryDirectory(prefix="inboxd-bench-kill-") as tmp:
            kills(emu, Path(tmp), count, n_kills, rng, breaker=args.breaker)
        httpx.post(emu.admin + "/_emulator/reset", timeout=60).raise_for_status()
        with tempfile.TemporaryDirectory(prefix="inboxd-bench-storm-") as tmp:
            storm(emu, Path(tmp), count, args.breaker)
        httpx.post(emu.admin + "/_emulator/reset", timeout=60).raise_for_status()
        with tempfile.TemporaryDirectory(prefix="inboxd-bench-rate-storm-") as tmp:
            storm(
                emu,
                Path(tmp),
                rate_count,
                args.breaker,
                label="torture_rate_storm",
                faults=RATE_STORM_FAULTS,
                # Each refusal pauses the whole provider for the 1 s it names, and a file meets
                # about half a refusal: ~0.5 s a file however fast inboxd is.
                per_file=1.0,
            )
    print(machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale: N small files already in the inbox when inboxd starts → time, peak RSS, state size.

``--files`` distinct 200-byte text files are written into the inbox first; then inboxd (a
subprocess, one provider via the emulator, ``settle_seconds = 0.5``) is started and timed from
its launch until every file is archived. Peak RSS is its VmHWM (target <= 200 MB), sampled
every second; the state file size is ``inboxd.sqlite3`` plus its ``-wal`` after a clean stop.

``--provider kimi`` (default) uploads ``.txt`` files as ``file-extract`` (the bench emulator
lifts Kimi's 1,000-file account cap, so this long a listing cannot happen on a real account).
``--provider glm`` uploads ``.jsonl`` files as ``fine-tune``, the one GLM purpose for text
with no documented file count: the realistic provider for a 100,000-file listing, whose
pages (100 files each) the remote-usage count walks every 10 minutes.

``--through-refresh``: after every file is archived the daemon keeps running (VmHWM still
sampled every second) until its first periodic remote-usage count (``REMOTE_USAGE_INTERVAL``,
600 s after the start-up count) has counted all N files, so the peak RSS includes a full
listing. The count is read from the ``inboxd_remote_files{provider=...}`` gauge on the
daemon's ``/metrics`` (its port found in ``/proc``: the bench config listens on port 0); a
reading of N is accepted only from ``REMOTE_USAGE_INTERVAL`` after READY on, so the start-up
count cannot pass for it. A run that does not see N by ``REMOTE_USAGE_INTERVAL + 300`` s after
launch (e.g. the upload took longer than 600 s, so the first refresh counted fewer) fails with
the last reading and the peak so far. A run takes at least 10 minutes.

    .venv/bin/python bench/scale.py [--files 100000] [--runs 1] [--provider kimi|glm]
        [--through-refresh] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import (
    DaemonProc,
    EmulatorProc,
    count_archived,
    machine,
    vm_kib,
    wait_until,
    write_config,
)

from daemon.runtime.remote_usage import REMOTE_USAGE_INTERVAL

# How long past the refresh's due time (600 s after start) it may take to show all N files.
_REFRESH_SLACK = 300.0
_TCP_LISTEN = "0A"  # the LISTEN state in /proc/net/tcp


class RunFigures(NamedTuple):
    """One run's figures; times from the daemon's launch, sizes in MiB."""

    ready: float
    archived: float
    peak_archived: float
    state: float
    refresh: float | None  # when the periodic count showing N was seen (--through-refresh)
    peak_total: float  # peak RSS over the whole run, the listing included


def _listen_port(pid: int) -> int:
    """The one TCP port ``pid`` listens on: the metrics listener the bench config binds to :0."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except FileNotFoundError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == _TCP_LISTEN and fields[9] in inodes:
            ports.add(int(fields[1].rpartition(":")[2], 16))
    if len(ports) != 1:
        raise RuntimeError(f"inboxd (pid {pid}) listens on {sorted(ports)}, expected one port")
    return ports.pop()


def _remote_files(page: str, provider: str) -> int | None:
    """The ``inboxd_remote_files`` sample for ``provider`` in a ``/metrics`` page, if any."""
    prefix = f'inboxd_remote_files{{provider="{provider}"}} '
    for line in page.splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix) :].split()[0]))
    return None


def wait_remote_files(
    port: int,
    provider: str,
    want: int,
    *,
    not_before: float,
    until: float,
    tick: Callable[[], None],
) -> float:
    """Poll ``/metrics`` every second until the gauge shows ``want``; returns when it was seen.

    ``not_before`` and ``until`` are ``time.monotonic()`` values: a reading before
    ``not_before`` does not count; none by ``until`` raises. ``tick()`` runs before each poll.
    """
    url = f"http://127.0.0.1:{port}/metrics"
    last = "no reading"
    while True:
        tick()
        try:
            resp = httpx.get(url, timeout=10)
            resp.raise_for_status()
            files = _remote_files(resp.text, provider)
            last = f"{files} file(s)" if files is not None else "no inboxd_remote_files sample"
        except httpx.HTTPError as exc:
            files, last = None, f"scrape failed: {exc!r}"
        seen = time.monotonic()
        if files == want and seen >= not_before:
            return seen
        if seen >= until:
            raise TimeoutError(
                f"inboxd_remote_files{{provider={provider!r}}} did not show {want} in time; "
                f"last reading: {last}"
            )
        time.sleep(1.0)


def one_run(
    emu: EmulatorProc, root: Path, count: int, provider: str, *, through_refresh: bool = False
) -> RunFigures:
    """Fill the inbox, run inboxd until all is archived (and, if asked, the refresh); stop it."""
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

    def sample() -> None:
        nonlocal peak
        peak = max(peak, vm_kib(daemon.pid, "VmHWM"))

    def finished() -> bool:
        sample()
        return count_archived(done) >= count

    refresh: float | None = None
    try:
        port = _listen_port(daemon.pid) if through_refresh else 0
        if not wait_until(finished, timeout=max(60.0, count / 5), interval=1.0):
            raise RuntimeError(f"only {count_archived(done)}/{count} archived; see log")
        took = time.monotonic() - start
        peak_archived = peak
        if through_refresh:
            try:
                seen = wait_remote_files(
                    port,
                    provider,
                    count,
                    # The periodic count starts REMOTE_USAGE_INTERVAL after the start-up one.
                    not_before=start + ready + REMOTE_USAGE_INTERVAL,
                    until=start + REMOTE_USAGE_INTERVAL + _REFRESH_SLACK,
                    tick=sample,
                )
            except TimeoutError as exc:
                raise RuntimeError(
                    f"--through-refresh: no periodic remote-usage count of all {count} files "
                    f"within {REMOTE_USAGE_INTERVAL + _REFRESH_SLACK:.0f} s of launch (all "
                    f"archived after {took:.1f} s; peak RSS so far {peak / 1024:.1f} MiB): {exc}"
                ) from exc
            refresh = seen - start
    finally:
        daemon.stop()
    state = sum(p.stat().st_size for p in (root / "state").glob("inboxd.sqlite3*"))
    return RunFigures(ready, took, peak_archived / 1024, state / 2**20, refresh, peak / 1024)


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--provider", choices=("kimi", "glm"), default="kimi")
    parser.add_argument(
        "--through-refresh",
        action="store_true",
        help="keep the daemon running until its 10-minute remote-usage count shows all files",
    )
    parser.add_argument("--smoke", action="store_true", help="300 files, one run")
    args = parser.parse_args()
    count, runs = (300, 1) if args.smoke else (args.files, args.runs)
    print(machine())
    with EmulatorProc() as emu:
        for n in range(runs):
            with tempfile.TemporaryDirectory(prefix="inboxd-bench-scale-") as tmp:
                fig = one_run(
                    emu, Path(tmp), count, args.provider, through_refresh=args.through_refresh
                )
            print(
                f"run {n + 1}: scale_files {count}: {args.provider}, ready after "
                f"{fig.ready:.1f} s, all archived after {fig.archived:.1f} s "
                f"({count / fig.archived:.0f}/s), peak RSS {fig.peak_archived:.1f} MiB "
                f"(target <= 200 MB), state file {fig.state:.1f} MiB"
            )
            if fig.refresh is not None:
                print(
                    f"run {n + 1}: periodic remote-usage count showed all {count} files "
                    f"{fig.refresh:.1f} s after launch (polled every 1 s); peak RSS over the "
                    f"whole run, that listing included: {fig.peak_total:.1f} MiB "
                    "(target <= 200 MB)"
                )
            stored = len(emu.stored())
            if stored != count:
                raise RuntimeError(f"emulator holds {stored} files, expected {count}")
            emu_reset(emu)
    print(machine())
    return 0


def emu_reset(emu: EmulatorProc) -> None:
    """Empty the emulator between runs."""
    httpx.post(emu.admin + "/_emulator/reset", timeout=60).raise_for_status()


if __name__ == "__main__":
    sys.exit(main())

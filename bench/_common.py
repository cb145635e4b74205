"""Shared plumbing of the inboxd benchmarks: machine line, emulator and daemon subprocesses.

The emulator runs in its own process with the account quotas lifted (the faithful 1,000-file
Kimi quota would stop a 5,000-file run); inboxd runs as ``python -m daemon run -c CONFIG`` in
another, and says READY=1 on a unix datagram socket the bench binds as ``$NOTIFY_SOCKET``.
Figures come from ``/proc/<pid>/status`` (VmRSS, VmHWM) and ``/proc/<pid>/stat``
(utime + stime). Every wait here is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import httpx

__all__ = [
    "GLM_AGENT_100MB",
    "REPO",
    "DaemonProc",
    "Drop",
    "EmulatorProc",
    "count_archived",
    "cpu_seconds",
    "drop_and_wait",
    "inboxd_drop",
    "machine",
    "percentile",
    "vm_kib",
    "wait_until",
    "write_config",
]

REPO = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")

# Quotas lifted (None = not enforced; GLM agent's 100-file count raised) so thousands of files
# fit, and GLM's agent purpose takes 100 MB (the z.ai figure, as GLM_AGENT_100MB in
# write_config); everything else is faithful.
_EMULATOR_CODE = """
import asyncio, json, signal, sys
from dataclasses import replace
from providers.limits import LIMITS, MIB, PurposeOverride
from providers.emulator.server import Emulator

async def main() -> None:
    faults, seed = sys.argv[1] or None, int(sys.argv[2])
    limits = {p: replace(l, max_files=None, max_total_bytes=None) for p, l in LIMITS.items()}
    agent = PurposeOverride(max_bytes=100 * MIB, max_count=10**8)
    limits["glm"] = limits["glm"].with_overrides({"agent": agent})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Emulator(port=0, faults=faults, seed=seed, limits=limits) as emu:
        urls = {p: emu.base_url(p) for p in ("kimi", "glm")}
        keys = {p: emu.key(p) for p in ("kimi", "glm")}
        admin = f"http://{emu.host}:{emu.port}"
        print(json.dumps({"urls": urls, "keys": keys, "admin": admin}), flush=True)
        await stop.wait()

asyncio.run(main())
"""


GLM_AGENT_100MB = "[providers.glm.limits.agent]\nmax_bytes = 104857600"


def machine() -> str:
    """One line: nproc, total/available memory and the load average, for every figure."""
    mem = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        mem[key] = int(rest.split()[0])
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"machine: nproc={os.cpu_count()} mem_total={mem['MemTotal'] / 2**20:.1f}GiB "
        f"mem_available={mem['MemAvailable'] / 2**20:.1f}GiB loadavg={load}"
    )


def vm_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in KiB (VmHWM = peak resident set, VmRSS = now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; ``values`` need not be sorted."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


_SIDECARS = (".upload.json", ".extracted.txt")


def count_archived(done_dir: Path) -> int:
    """Archived files in ``done_dir``: neither their ``.upload.json`` and ``.extracted.txt``
    sidecars nor the hidden ``.<name>.inboxd-XXXXXXXX.tmp`` a sidecar is written to first."""
    try:
        with os.scandir(done_dir) as it:
            return sum(
                1 for e in it if not e.name.endswith(_SIDECARS) and not e.name.startswith(".")
            )
    except FileNotFoundError:
        return 0


class EmulatorProc:
    """The provider emulator in a child process; a context manager."""

    def __init__(self, *, faults: str = "", seed: int = 0) -> None:
        self._args = [sys.executable, "-c", _EMULATOR_CODE, faults, str(seed)]
        self.proc: subprocess.Popen[str] | None = None
        self.urls: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.admin = ""

    def __enter__(self) -> EmulatorProc:
        self.proc = subprocess.Popen(self._args, stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator exited before printing its URLs")
        info = json.loads(line)
        self.urls, self.keys, self.admin = info["urls"], info["keys"], info["admin"]
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def get(self, path: str) -> Any:
        """GET an admin endpoint (``/_emulator/files`` or ``/_emulator/counts``) as JSON."""
        resp = httpx.get(self.admin + path, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def set_faults(self, spec: str) -> None:
        """Replace the fault plans at run time (``PUT /_emulator/faults``)."""
        resp = httpx.put(self.admin + "/_emulator/faults", content=spec, timeout=10)
        resp.raise_for_status()

    def stored(self) -> list[dict[str, Any]]:
        """Every file the emulator holds."""
        files: list[dict[str, Any]] = self.get("/_emulator/files")["files"]
        return files


def write_config(
    path: Path,
    *,
    state_dir: Path,
    inboxes: Mapping[str, Path],
    urls: Mapping[str, str],
    settle: float,
    providers: Iterable[str] = ("kimi",),
    transports: Mapping[str, Iterable[str]] | None = None,
    concurrency: int = 4,
    extra: str = "",
    provider_extra: str = "",
) -> Path:
    """Write an inboxd TOML config for the bench; metrics on an ephemeral loopback port."""
    default_t = {"kimi": ["openai", "http"], "glm": ["zhipuai", "openai", "http"]}
    chosen = {**default_t, **{k: list(v) for k, v in (transports or {}).items()}}
    names = list(providers)
    lines = [
        f'state_dir = "{state_dir}"',
        f"settle_seconds = {settle}",
        extra,
        "[metrics]",
        'listen = "127.0.0.1:0"',
        "[log]",
        'level = "warning"',
    ]
    for name in ("kimi", "glm"):
        lines += [
            f"[providers.{name}]",
            f'base_url = "{urls[name]}"',
            f"transports = {json.dumps(chosen[name])}",
            f"concurrency = {concurrency}",
            "max_files = 100000000",
            provider_extra,
        ]
    for inbox, folder in inboxes.items():
        lines += [
            "[[inbox]]",
            f'name = "{inbox}"',
            f'path = "{folder}"',
            f"providers = {json.dumps(names)}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProc:
    """``python -m daemon run -c CONFIG`` in a child process; ``start()`` waits for READY=1."""

    def __init__(self, config: Path, keys: Mapping[str, str], log: Path) -> None:
        self.config = config
        self.keys = keys
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, timeout: float = 60.0) -> float:
        """Start the daemon; returns seconds until READY=1 (raises if it never comes)."""
        addr = str(self.log.with_suffix(".notify"))
        Path(addr).unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(addr)
        self._sock.settimeout(0.2)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": addr,
            "MOONSHOT_API_KEY": self.keys["kimi"],
            "ZHIPUAI_API_KEY": self.keys["glm"],
        }
        start = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "-c", str(self.config)],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"inboxd exited with {self.proc.returncode}; see {self.log}")
            try:
                msg = self._sock.recv(4096).decode()
            except TimeoutError:
                continue
            if "READY=1" in msg.splitlines():
                return time.monotonic() - start
        raise RuntimeError(f"inboxd not ready after {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL, no grace."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close()

    def stop(self, *, timeout: float = 60.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in ``timeout`` seconds."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Drop(NamedTuple):
    """One drop of files into a running daemon's inbox, until all were archived."""

    seconds: float  # from the first move until the last file was archived
    cpu: float  # the daemon's CPU seconds over that time
    peak_kib: int  # the daemon's VmHWM at the end: its peak resident set since launch


def drop_and_wait(
    daemon: DaemonProc, paths: list[Path], inbox: Path, done_dir: Path, *, timeout: float
) -> Drop:
    """Move every path into ``inbox`` at once and wait until ``done_dir`` holds them all;
    raises (archived and quarantined counts) if they are not all there in ``timeout`` s."""
    count = len(paths)
    cpu0 = cpu_seconds(daemon.pid)
    start = time.monotonic()
    for path in paths:
        path.rename(inbox / path.name)
    ok = wait_until(lambda: count_archived(done_dir) >= count, timeout=timeout, interval=0.05)
    took = time.monotonic() - start
    cpu = cpu_seconds(daemon.pid) - cpu0
    if not ok:
        quarantined = count_archived(inbox.parent / f"{inbox.name}.quarantine")
        raise RuntimeError(
            f"{count_archived(done_dir)}/{count} archived, {quarantined} quarantined; "
            f"see {daemon.log}"
        )
    return Drop(took, cpu, vm_kib(daemon.pid, "VmHWM"))


def inboxd_drop(
    emu: EmulatorProc,
    root: Path,
    paths: list[Path],
    *,
    timeout: float,
    concurrency: int = 4,
    inbox_extra: str = "",
) -> Drop:
    """inboxd over ``paths`` from start to stop: a fresh state dir under ``root``, one Kimi
    inbox ``root/inbox`` (settle 0.5 s; ``inbox_extra``: lines for its table), the paths
    dropped at once (``drop_and_wait``); then checks the emulator holds exactly that many."""
    inbox = root / "inbox"
    inbox.mkdir()
    cfg = write_config(
        root / "inboxd.toml",
        state_dir=root / "state",
        inboxes={"bench": inbox},
        urls=emu.urls,
        settle=0.5,
        concurrency=concurrency,
    )
    if inbox_extra:
        with cfg.open("a") as out:  # the last (only) [[inbox]] table
            out.write(inbox_extra + "\n")
    daemon = DaemonProc(cfg, emu.keys, root / "inboxd.log")
    daemon.start()
    try:
        drop = drop_and_wait(daemon, paths, inbox, root / "inbox.done", timeout=timeout)
    finally:
        daemon.stop()
    stored = len(emu.stored())
    if stored != len(paths):
        raise RuntimeError(f"emulator holds {stored} files, expected {len(paths)}")
    return drop

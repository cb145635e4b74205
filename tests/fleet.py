"""A fleet of real ``inboxd run`` subprocesses sharing one inbox and one state (issue 16).

Not a test module: ``tests/test_fleet_e2e.py`` and ``bench/fleet.py`` use it. ``Fleet``
writes one config per host (same inbox folder, so the same done and quarantine folders; its
own ``host_id``, ``state_dir`` and metrics port (a free one); the shared ``state_url``, or,
without one, ONE SQLite file in a shared ``state_dir``), all pointed at ONE emulator on
loopback that the caller runs. Waits are points of progress (receipts in the done folder,
checked at each change and every 0.5 s), never a guess of time; a failed run prints every
host's log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import watchfiles
from anyio.abc import Process

from handlers.archive import UPLOAD_SUFFIX
from providers.emulator.server import Emulator
from tests.harness import start_inboxd

__all__ = ["Fleet", "Host", "fleet", "ledger_owners", "problems", "sha"]


def sha(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Host:
    """One daemon of the fleet: its id, config, log and process once started."""

    host_id: str
    config: Path
    log: Path
    proc: Process | None = None

    def metrics_port(self) -> int:
        """The port its metrics listener took (``127.0.0.1:0``: a free one; from its log)."""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        found = re.findall(r"/readyz on 127\.0\.0\.1:(\d+)", text)
        assert found, f"{self.host_id} logged no metrics listener"
        return int(found[-1])

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class Fleet:
    """Hosts sharing ``inbox`` (and so ``done`` and ``quarantine``) and one state."""

    root: Path
    emu: Emulator
    hosts: list[Host]
    state_url: str | None
    env: dict[str, str]
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    @property
    def inbox(self) -> Path:
        return self.root / "in"

    @property
    def done(self) -> Path:
        return self.root / "in.done"

    @property
    def quarantine(self) -> Path:
        return self.root / "in.quarantine"

    @property
    def state_file(self) -> Path:
        """The shared SQLite file (fleets without ``state_url``)."""
        return self.root / "state" / "inboxd.sqlite3"

    def host(self, host_id: str) -> Host:
        return next(h for h in self.hosts if h.host_id == host_id)

    def receipts(self) -> list[Path]:
        """The receipts in the done folder (written just before each file is moved there)."""
        if not self.done.is_dir():
            return []
        return [
            p
            for p in self.done.iterdir()
            if p.name.endswith(UPLOAD_SUFFIX) and not p.name.startswith(".")
        ]

    def archived(self) -> int:
        """How many files are archived so far (receipts in the done folder)."""
        return len(self.receipts())

    async def start(self) -> None:
        """Start every host at once; return when each has said READY=1."""
        async with anyio.create_task_group() as tg:
            for host in self.hosts:
                tg.start_soon(self.start_host, host)

    async def start_host(self, host: Host) -> None:
        """Start one host (again); return once it has said READY=1 on its own socket."""
        path = self.root / "notify" / host.host_id
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(str(path))
        procs: list[Process] = []
        try:
            env = {**self.env, "NOTIFY_SOCKET": str(path)}
            host.proc = await start_inboxd(host.config, env, sock, host.log, procs)
        finally:
            sock.close()
            if host.proc is None and procs:
                host.proc = procs[0]  # not ready in time: still stopped (and logged) at the end

    async def until_archived(self, n: int, *, limit: float = 300.0) -> None:
        """Return once ``n`` files are archived (checked at each change and every 0.5 s);
        fail early when every host has exited."""
        self.done.mkdir(parents=True, exist_ok=True)
        with anyio.fail_after(limit):
            if self.archived() >= n:
                return
            async for _ in watchfiles.awatch(self.done, rust_timeout=500, yield_on_timeout=True):
                if self.archived() >= n:
                    return
                if not any(h.alive for h in self.hosts):
                    raise AssertionError(f"every host exited with {self.archived()}/{n} archived")

    async def until_settled(self, *, limit: float = 300.0) -> dict[str, str | None]:
        """Return once no ledger row is active (every host's work recorded as finished: a dead
        host's rows closed by a survivor's takeover pass, within about two leases); on
        ``limit``, fail naming the rows still active and their owners."""
        left: dict[str, str | None] = {}
        with anyio.move_on_after(limit):
            while True:
                left = {
                    relpath: owner
                    for state in ("pending", "uploading", "uploaded")
                    for relpath, owner in (
                        await anyio.to_thread.run_sync(ledger_owners, self, state)
                    ).items()
                }
                if not left:
                    return left
                await anyio.sleep(0.5)
        raise AssertionError(f"rows still active after {limit:.0f} s: {left}")

    async def kill(self, host_id: str) -> None:
        """SIGKILL one host and wait until it is gone."""
        proc = self.host(host_id).proc
        assert proc is not None, f"{host_id} was never started"
        assert proc.returncode is None, f"{host_id} is not running"
        proc.send_signal(signal.SIGKILL)
        with anyio.fail_after(60):
            assert await proc.wait() == -signal.SIGKILL

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM every running host, wait for each; the exit codes by host id (None: the
        host was never started)."""
        for host in self.hosts:
            if host.alive:
                assert host.proc is not None
                host.proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for host in self.hosts:
            if host.proc is None:
                codes[host.host_id] = None
                continue
            with anyio.fail_after(120):
                codes[host.host_id] = await host.proc.wait()
        return codes

    def logs(self) -> str:
        """Every host's log (their tails when long)."""
        out = []
        for host in self.hosts:
            exists = host.log.exists()
            text = host.log.read_text(encoding="utf-8", errors="replace") if exists else ""
            out.append(f"--- {host.host_id} ({host.log}) ---\n{text[-8000:]}")
        return "\n".join(out)

    async def metric(self, name: str) -> float:
        """The sum over the running hosts of the unlabelled metric ``name`` (/metrics)."""
        total = 0.0
        async with httpx.AsyncClient(timeout=30) as client:
            for host in self.hosts:
                if host.alive:
                    url = f"http://127.0.0.1:{host.metrics_port()}/metrics"
                    text = (await client.get(url)).text
                    total += sum(
                        float(line.split()[-1])
                        for line in text.splitlines()
                        if line.split(" ", 1)[0] == name
                    )
        return total

    def pids(self) -> list[int]:
        """The pids of the running hosts."""
        return [h.proc.pid for h in self.hosts if h.proc is not None and h.alive]


def _config(
    root: Path,
    host_id: str,
    *,
    emu: Emulator,
    state_url: str | None,
    extra: str,
    kimi: str,
) -> Path:
    state_dir = root / "state" if state_url is None else root / "hosts" / host_id / "state"
    url_line = f'state_url = "{state_url}"' if state_url is not None else ""
    text = f"""
state_dir = "{state_dir}"
{url_line}
host_id = "{host_id}"
settle_seconds = 0.05
rescan_interval = 2.0
shutdown_grace = 5.0
{extra}

[metrics]
listen = "127.0.0.1:0"

[providers.kimi]
base_url = "{emu.base_url("kimi")}"
transports = ["openai", "http"]
timeout = 20
{kimi}

[providers.kimi.retry]
attempts = 12
base = 0.01
cap = 0.05
budget_ratio = 1.0
budget_floor = 10000

[providers.kimi.breaker]
consecutive_failures = 10000
min_calls = 10000

[[inbox]]
name = "in"
path = "{root / "in"}"
providers = ["kimi"]
"""
    path = root / "hosts" / host_id / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@asynccontextmanager
async def fleet(
    root: Path,
    emu: Emulator,
    n: int = 3,
    *,
    state_url: str | None = None,
    extra: str = "",
    kimi: str = "",
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Fleet]:
    """``n`` hosts (``h1`` .. ``hn``, not started: call ``start()``) on ``root`` against ``emu``;
    on exit every host still running is SIGTERMed (SIGKILLed if it hangs), and a failure
    prints every host's log. ``extra``: more top-level TOML; ``kimi``: more
    ``[providers.kimi]`` keys; ``env``: the daemons' environment (default ``os.environ``,
    which carries the test's PGPASSWORD)."""
    (root / "in").mkdir(parents=True, exist_ok=True)
    (root / "state").mkdir(parents=True, exist_ok=True)
    (root / "notify").mkdir(parents=True, exist_ok=True)
    hosts = []
    for i in range(1, n + 1):
        host_id = f"h{i}"
        cfg = _config(
            root,
            host_id,
            emu=emu,
            state_url=state_url,
            extra=extra,
            kimi=kimi,
        )
        hosts.append(Host(host_id, cfg, root / "hosts" / host_id / "daemon.log"))
    base_env = dict(os.environ if env is None else env)
    base_env["MOONSHOT_API_KEY"] = emu.key("kimi")
    crew = Fleet(root, emu, hosts, state_url, base_env)
    try:
        yield crew
    except BaseException:
        print(crew.logs())
        raise
    finally:
        for host in hosts:  # a failed run must not leave a daemon behind
            if host.alive:
                assert host.proc is not None
                host.proc.send_signal(signal.SIGTERM)
        for host in hosts:
            if host.alive:
                assert host.proc is not None
                with anyio.move_on_after(30, shield=True):
                    await host.proc.wait()
                if host.proc.returncode is None:
                    host.proc.kill()
                    with anyio.move_on_after(10, shield=True):
                        await host.proc.wait()


def ledger_owners(crew: Fleet, state: str = "done") -> dict[str, str | None]:
    """relpath -> owner of each ledger row in ``state``, read from the shared state."""
    query = f"SELECT relpath, owner FROM ledger WHERE state = '{state}'"
    if crew.state_url is None:
        with sqlite3.connect(crew.state_file) as conn:
            rows = conn.execute(query).fetchall()
    else:
        import psycopg

        with psycopg.connect(crew.state_url) as conn:
            rows = conn.execute(query).fetchall()
    out: dict[str, str | None] = {}
    for relpath, owner in rows:  # PostgreSQL keeps a path as its bytes (bytea)
        name = relpath.decode("utf-8", "surrogateescape") if isinstance(relpath, bytes) else relpath
        out[str(name)] = owner
    return out


def problems(
    crew: Fleet, contents: Mapping[str, bytes], *, dead: Collection[str] = ()
) -> list[str]:
    """What breaks "every file archived exactly once with a true receipt, the emulator holds
    each sha256 exactly once, nothing left in the inbox or quarantine"; [] when all holds.
    The temp files of the ``dead`` hosts (killed mid-write, not restarted: only a host's own
    start removes them) are allowed in the done folder, nobody else's."""
    found: list[str] = []
    theirs = tuple(f".inboxd-{host}-" for host in dead)
    by_id = {f.id: f for f in crew.emu.files()}
    for name, data in contents.items():
        copy = crew.done / name
        if not copy.is_file() or copy.read_bytes() != data:
            found.append(f"{name}: not archived with its bytes")
            continue
        receipt = json.loads((crew.done / f"{name}{UPLOAD_SUFFIX}").read_text(encoding="utf-8"))
        stored = by_id.get(str(receipt.get("file_id")))
        if stored is None or stored.sha256 != sha(data) or receipt.get("sha256") != sha(data):
            found.append(f"{name}: receipt {receipt} names no stored file with its sha256")
    extra = sorted(
        p.name
        for p in crew.done.iterdir()
        if not p.name.endswith(UPLOAD_SUFFIX)
        and p.name not in contents
        and not (
            p.name.startswith(".") and p.name.endswith(".tmp") and any(t in p.name for t in theirs)
        )
    )
    if extra:
        found.append(f"archived more than once or unknown: {extra[:10]} ({len(extra)})")
    history = Counter(f.sha256 for f in crew.emu.stored_ever("kimi"))
    twice = [digest for digest, count in history.items() if count != 1]
    if twice:
        found.append(f"{len(twice)} contents stored more than once on the emulator")
    if set(history) != {sha(d) for d in contents.values()}:
        found.append(f"the emulator holds {len(history)} contents, not the {len(contents)} sent")
    left = sorted(p.name for p in crew.inbox.iterdir())
    if left:
        found.append(f"left in the inbox: {left[:10]} ({len(left)})")
    if crew.quarantine.exists() and any(crew.quarantine.iterdir()):
        found.append(f"quarantined: {sorted(p.name for p in crew.quarantine.iterdir())[:10]}")
    return found

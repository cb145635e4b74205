"""One host on SQLite vs one host on PostgreSQL vs three hosts on PostgreSQL (issue 16).

Each setup is real ``inboxd run`` subprocesses (``tests/fleet.py``: one inbox folder, one
state, their own host ids) against ONE emulator in this process (account quotas lifted), and
for PostgreSQL a throwaway cluster (``tests/pg_cluster.py``, fsync on, with
``pg_stat_statements`` preloaded when the server has it) and a fresh database per setup. Once
every host said READY=1, ``--files`` small distinct files are renamed into the inbox; the run
ends when each has its receipt in the done folder. Figures, each also as a ratio to the
one-host-SQLite reference of the same run:

- files/s: files / (last receipt - first drop);
- CPU per file: utime + stime of the daemons (``/proc/<pid>/stat``) plus, on PostgreSQL, of the
  postmaster and its backends (exited ones through its cutime), over the run;
- database round trips per file: ``pg_stat_statements`` calls (each statement, BEGIN and
  COMMIT included, is one round trip), else ``pg_stat_database`` xact_commit + xact_rollback
  (transactions, fewer than round trips); SQLite has none (in-process) and no counter;
- takeover (three hosts only): after the main run, ``--files`` more files; once a tenth is
  archived one host is SIGKILLed, and the time from the kill until the first file it had
  claimed (its active ledger rows at the kill) is closed ``done`` by another host (polled
  every 0.1 s).

    .venv/bin/python bench/fleet.py [--files 1000] [--smoke]

``--smoke``: 60 files, no takeover (a lease is 30 s).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_seconds, machine
from pg_driver import server_cpu

from providers.emulator.server import Emulator
from providers.limits import LIMITS
from tests.fleet import Fleet, fleet
from tests.harness import drop
from tests.pg_cluster import Cluster, find_bindir


@dataclass(frozen=True)
class Figures:
    """One setup's run."""

    files: int
    seconds: float
    cpu: float
    round_trips: int | None
    what: str  # what round_trips counts
    takeover: float | None = None


def _contents(prefix: str, n: int) -> dict[str, bytes]:
    return {f"{prefix}{i:05}.txt": f"{prefix} bench file {i}\n".encode() for i in range(n)}


def _stats(cluster: Cluster, url: str, statements: bool) -> int:
    """This database's statements run (pg_stat_statements calls) or transactions so far."""
    import psycopg

    with psycopg.connect(url, password=cluster.password, autocommit=True) as conn:
        if statements:
            row = conn.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
            ).fetchone()
        else:
            conn.execute("SELECT pg_stat_force_next_flush()")
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            ).fetchone()
    assert row is not None
    return int(row[0])


def _has_statements(cluster: Cluster, url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, password=cluster.password, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
    except psycopg.Error:
        return False
    return True


def _claimed_by(crew: Fleet, host_id: str) -> set[str]:
    import psycopg

    assert crew.state_url is not None
    with psycopg.connect(crew.state_url) as conn:
        rows = conn.execute(
            "SELECT relpath FROM ledger WHERE owner = %s "
            "AND state IN ('pending', 'uploading', 'uploaded')",
            (host_id,),
        ).fetchall()
    return {  # PostgreSQL keeps a path as its bytes (bytea)
        r[0].decode("utf-8", "surrogateescape") if isinstance(r[0], bytes) else str(r[0])
        for r in rows
    }


async def _takeover(crew: Fleet, n: int) -> float:
    """Seconds from SIGKILLing h2 (a tenth of ``n`` new files archived) to the first of its
    claimed files archived by another host."""
    base = crew.archived()
    for name, data in _contents("t", n).items():
        drop(crew.inbox, name, data)
    await crew.until_archived(base + n // 10)
    claimed: set[str] = set()
    while not claimed:  # h2 holds some file at almost every moment of a busy run
        claimed = _claimed_by(crew, "h2")
    killed = time.monotonic()
    await crew.kill("h2")
    while not _done_elsewhere(crew, claimed, "h2"):  # noqa: ASYNC110
        await anyio.sleep(0.1)  # a bench, not a test: polling the clock is the measurement
    return time.monotonic() - killed


def _done_elsewhere(crew: Fleet, names: set[str], host_id: str) -> bool:
    """Whether another host than ``host_id`` has closed one of ``names`` as done."""
    import psycopg

    assert crew.state_url is not None
    with psycopg.connect(crew.state_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger WHERE state = 'done' AND owner <> %s "
            "AND relpath = ANY(%s)",
            (host_id, [n.encode("utf-8", "surrogateescape") for n in names]),
        ).fetchone()
    return row is not None and int(row[0]) > 0


@dataclass(frozen=True)
class Setup:
    """One side of the comparison."""

    name: str
    hosts: int
    postgres: bool
    takeover: bool = False


async def run_setup(
    setup: Setup, emu: Emulator, cluster: Cluster, root: Path, files: int
) -> Figures:
    url = None
    statements = False
    if setup.postgres:
        url = cluster.create_database(f"bench_{setup.name}_{os.getpid()}")
        statements = _has_statements(cluster, url)
    postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])

    def cpu(pids: list[int]) -> float:
        server = server_cpu(postmaster) if url is not None else 0.0
        return sum(cpu_seconds(p) for p in pids) + server

    def trips() -> int:
        return _stats(cluster, url, statements) if url is not None else 0

    emu.reset()
    contents = _contents("f", files)
    async with fleet(root / setup.name, emu, setup.hosts, state_url=url) as crew:
        await crew.start()
        pids = crew.pids()
        cpu0, trips0, t0 = cpu(pids), trips(), time.perf_counter()
        for fname, data in contents.items():
            drop(crew.inbox, fname, data)
        await crew.until_archived(files)
        seconds = time.perf_counter() - t0
        used, trips1 = cpu(pids) - cpu0, trips()
        taken = await _takeover(crew, files) if setup.takeover else None
        await crew.stop()
    what = "statements" if statements else "transactions"
    return Figures(files, seconds, used, trips1 - trips0 if url else None, what, taken)


def _line(name: str, f: Figures, ref: Figures) -> str:
    rate, ref_rate = f.files / f.seconds, ref.files / ref.seconds
    ms, ref_ms = 1000 * f.cpu / f.files, 1000 * ref.cpu / ref.files
    trips = (
        "db round trips n/a (SQLite, in-process)"
        if f.round_trips is None
        else f"db {f.what} {f.round_trips / f.files:.1f}/file"
    )
    return (
        f"{name}: {f.files} files in {f.seconds:.2f} s = {rate:.1f} files/s "
        f"({rate / ref_rate:.2f}x ref); CPU {ms:.2f} ms/file ({ms / ref_ms:.2f}x ref); {trips}"
    )


async def main_async(files: int, smoke: bool) -> None:
    bindir = find_bindir()
    if bindir is None:
        sys.exit(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        )
    print(machine())
    limits = {p: replace(lim, max_files=None, max_total_bytes=None) for p, lim in LIMITS.items()}
    cluster = Cluster.create(bindir, settings={"shared_preload_libraries": "pg_stat_statements"})
    try:
        try:
            cluster.start()
        except RuntimeError:  # no pg_stat_statements in this server: count transactions
            cluster.remove()
            cluster = Cluster.create(bindir)
            cluster.start()
        os.environ["PGPASSWORD"] = cluster.password  # the daemons' and this process's
        with TemporaryDirectory(prefix="inboxd-bench-fleet-") as tmp:
            root = Path(tmp)
            async with Emulator(limits=limits) as emu:
                ref = await run_setup(Setup("sqlite1", 1, False), emu, cluster, root, files)
                pg1 = await run_setup(Setup("pg1", 1, True), emu, cluster, root, files)
                pg3 = await run_setup(Setup("pg3", 3, True, not smoke), emu, cluster, root, files)
    finally:
        cluster.remove()
    print(_line("1 host SQLite (ref)", ref, ref))
    print(_line("1 host PostgreSQL", pg1, ref))
    print(_line("3 hosts PostgreSQL", pg3, ref))
    if pg3.takeover is None:
        print("takeover: not measured with --smoke (a lease is 30 s)")
    else:
        print(f"takeover after SIGKILL (3 hosts PostgreSQL): {pg3.takeover:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="60 files, no takeover")
    args = parser.parse_args()
    anyio.run(main_async, 60 if args.smoke else args.files, args.smoke)


if __name__ == "__main__":
    main()

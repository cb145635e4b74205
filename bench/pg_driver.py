"""The PostgreSQL driver behind the fleet store (issue 16): three ways, one store pattern.

A throwaway cluster (``tests/pg_cluster.py``: initdb + pg_ctl on a free loopback port, fsync
and synchronous_commit on, as shipped) serves a ledger-like table. Each file goes through
what the store does for it, each step one transaction on a pooled connection (autocommit
connections; explicit BEGIN/COMMIT around the writes):

- claim: read the active row for (inbox, relpath), then ``INSERT … ON CONFLICT (inbox,
  relpath) WHERE state IN (active) DO NOTHING RETURNING *`` (owner, lease_until set);
- intent: ``SELECT … FOR UPDATE`` of the row, then ``UPDATE`` to ``uploading`` (sha256,
  provider, purpose, intent_at) ``RETURNING *``;
- uploaded: the same read, then ``UPDATE`` to ``uploaded`` (file_id, remote_bytes,
  uploaded_at) ``RETURNING *``;
- a short read of the row by id (one autocommit statement).

That is 13 round trips per file (3 x BEGIN, read, write, COMMIT; 1 read), rows mapped to
dicts. ``--workers`` tasks (8) share ``--files`` files (3,000) on one asyncio loop, through:

- ``psycopg-thread``: psycopg 3's sync ``ConnectionPool``, each transaction run whole in
  ``anyio.to_thread.run_sync`` (the chosen design: the SQLite store's shape, one thread hop);
- ``psycopg-async``: psycopg 3's ``AsyncConnectionPool``, one await per statement;
- ``asyncpg``: an asyncpg pool, one await per statement (its statements prepared and cached);
- ``sqlite-store`` (the reference): ``daemon.state.store.Store`` on a temporary file, the same
  four steps as ``begin``, ``transition`` twice and ``get`` (group commit, one fsync per batch).

Each way runs on a fresh database after 200 warm-up files. Figures: files/s, the bench
process's CPU per file (``time.process_time``: every thread), the server's CPU per file (the
postmaster and its children from /proc, exited backends through the postmaster's cutime),
and each as a ratio to the reference measured in the same run.

    .venv/bin/python bench/pg_driver.py [--files 3000] [--workers 8] [--runs 3] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, NamedTuple

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import machine

from daemon.state.store import Store
from tests.pg_cluster import Cluster, find_bindir

WAYS = ("psycopg-thread", "psycopg-async", "asyncpg", "sqlite-store")
WARMUP = 200
_TICKS = os.sysconf("SC_CLK_TCK")

ACTIVE = "('pending', 'uploading', 'uploaded')"
DDL = (
    """
    CREATE TABLE ledger (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        inbox TEXT NOT NULL, relpath TEXT NOT NULL, size BIGINT NOT NULL,
        mtime_ns BIGINT NOT NULL, sha256 TEXT, state TEXT NOT NULL, provider TEXT,
        purpose TEXT, file_id TEXT, remote_bytes BIGINT, intent_at DOUBLE PRECISION,
        uploaded_at DOUBLE PRECISION, owner TEXT, lease_until DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL
    )
    """,
    f"CREATE UNIQUE INDEX ledger_active ON ledger (inbox, relpath) WHERE state IN {ACTIVE}",
)
ACTIVE_ROW = f"SELECT * FROM ledger WHERE inbox = %s AND relpath = %s AND state IN {ACTIVE}"
INSERT = (
    "INSERT INTO ledger (inbox, relpath, size, mtime_ns, state, owner, lease_until,"
    " created_at, updated_at) VALUES (%s, %s, %s, %s, 'pending', %s, %s, %s, %s)"
    f" ON CONFLICT (inbox, relpath) WHERE state IN {ACTIVE} DO NOTHING RETURNING *"
)
LOCK = "SELECT * FROM ledger WHERE id = %s FOR UPDATE"
INTENT = (
    "UPDATE ledger SET state = 'uploading', sha256 = %s, provider = %s, purpose = %s,"
    " intent_at = %s, updated_at = %s WHERE id = %s RETURNING *"
)
UPLOADED = (
    "UPDATE ledger SET state = 'uploaded', file_id = %s, remote_bytes = %s,"
    " uploaded_at = %s, updated_at = %s WHERE id = %s RETURNING *"
)
READ = "SELECT * FROM ledger WHERE id = %s"


def dollars(query: str) -> str:
    """psycopg's ``%s`` placeholders as asyncpg's ``$1, $2, …``."""
    parts = query.split("%s")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]


def claim_params(i: int) -> tuple[Any, ...]:
    now = time.time()
    return (
        "in",
        f"f{i:06d}.txt",
        16384,
        1_700_000_000_000_000_000 + i,
        "bench",
        now + 30,
        now,
        now,
    )


def intent_params(row_id: int) -> tuple[Any, ...]:
    now = time.time()
    return (f"{row_id:064x}", "kimi", "file-extract", now, now, row_id)


def uploaded_params(row_id: int) -> tuple[Any, ...]:
    now = time.time()
    return (f"file-{row_id}", 16384, now, now, row_id)


class Figures(NamedTuple):
    files: int
    seconds: float
    cpu: float  # the bench process, all threads
    server_cpu: float | None  # the PostgreSQL server, all processes


# -- one file, each way ------------------------------------------------------------------------

OneFile = Callable[[int], Awaitable[None]]


def _thread_way(pool: Any) -> OneFile:
    def write(first: str, first_params: tuple[Any, ...], second: str, params: Any) -> Any:
        with pool.connection() as conn, conn.transaction():
            conn.execute(first, first_params).fetchone()
            return conn.execute(second, params).fetchone()

    def read(row_id: int) -> Any:
        with pool.connection() as conn:
            return conn.execute(READ, (row_id,)).fetchone()

    async def one(i: int) -> None:
        params = claim_params(i)
        row = await anyio.to_thread.run_sync(write, ACTIVE_ROW, params[:2], INSERT, params)
        await anyio.to_thread.run_sync(write, LOCK, (row["id"],), INTENT, intent_params(row["id"]))
        await anyio.to_thread.run_sync(
            write, LOCK, (row["id"],), UPLOADED, uploaded_params(row["id"])
        )
        dict(await anyio.to_thread.run_sync(read, row["id"]))

    return one


def _async_way(pool: Any) -> OneFile:
    async def write(first: str, first_params: tuple[Any, ...], second: str, params: Any) -> Any:
        async with pool.connection() as conn, conn.transaction():
            await (await conn.execute(first, first_params)).fetchone()
            return await (await conn.execute(second, params)).fetchone()

    async def one(i: int) -> None:
        params = claim_params(i)
        row = await write(ACTIVE_ROW, params[:2], INSERT, params)
        await write(LOCK, (row["id"],), INTENT, intent_params(row["id"]))
        await write(LOCK, (row["id"],), UPLOADED, uploaded_params(row["id"]))
        async with pool.connection() as conn:
            dict(await (await conn.execute(READ, (row["id"],))).fetchone())

    return one


def _asyncpg_way(pool: Any) -> OneFile:
    active_row, insert, lock = dollars(ACTIVE_ROW), dollars(INSERT), dollars(LOCK)
    intent, uploaded, read = dollars(INTENT), dollars(UPLOADED), dollars(READ)

    async def write(first: str, first_params: tuple[Any, ...], second: str, params: Any) -> Any:
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchrow(first, *first_params)
            return dict(await conn.fetchrow(second, *params))

    async def one(i: int) -> None:
        params = claim_params(i)
        row = await write(active_row, params[:2], insert, params)
        await write(lock, (row["id"],), intent, intent_params(row["id"]))
        await write(lock, (row["id"],), uploaded, uploaded_params(row["id"]))
        dict(await pool.fetchrow(read, row["id"]))

    return one


def _store_way(store: Store) -> OneFile:
    async def one(i: int) -> None:
        row = await store.begin("in", f"f{i:06d}.txt", size=16384, mtime_ns=i)
        await store.transition(
            row.id, "uploading", sha256=f"{row.id:064x}", provider="kimi", purpose="file-extract"
        )
        await store.transition(row.id, "uploaded", file_id=f"file-{row.id}", remote_bytes=16384)
        await store.get(row.id)

    return one


async def _open_way(
    way: str, url: str, password: str, workers: int, stack: AsyncExitStack
) -> OneFile:
    """The way's pool (``workers`` connections, opened now) on ``stack``; its per-file step."""
    if way == "sqlite-store":
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="pg-driver-"))
        return _store_way(await stack.enter_async_context(Store.open(Path(folder) / "state.db")))
    if way == "asyncpg":
        import asyncpg

        pool = await asyncpg.create_pool(url, password=password, min_size=workers, max_size=workers)
        stack.push_async_callback(pool.close)
        return _asyncpg_way(pool)
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    kwargs = {"password": password, "autocommit": True, "row_factory": dict_row}
    if way == "psycopg-thread":
        sync_pool = ConnectionPool(
            url, kwargs=kwargs, min_size=workers, max_size=workers, open=False
        )
        sync_pool.open(wait=True)
        stack.callback(sync_pool.close)
        return _thread_way(sync_pool)
    async_pool = AsyncConnectionPool(
        url, kwargs=kwargs, min_size=workers, max_size=workers, open=False
    )
    await async_pool.open(wait=True)
    stack.push_async_callback(async_pool.close)
    return _async_way(async_pool)


async def _drive(one: OneFile, first: int, count: int, workers: int) -> None:
    """Files ``first`` … ``first + count - 1`` through ``one``, ``workers`` at a time."""
    numbers = iter(range(first, first + count))

    async def worker() -> None:
        for i in numbers:  # one shared iterator: each file taken once
            await one(i)

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster, its live children and its exited (reaped) ones."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rpartition(")")[2].split()
    total = sum(int(fields[k]) for k in (11, 12, 13, 14))  # utime stime cutime cstime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            child = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile: counted in the postmaster's cutime once reaped
        if int(child[1]) == postmaster:
            total += int(child[11]) + int(child[12])
    return total / _TICKS


async def measure(way: str, cluster: Cluster, files: int, workers: int, run: int) -> Figures:
    url = (
        ""
        if way == "sqlite-store"
        else cluster.create_database(f"bench_{way.replace('-', '_')}_{run}")
    )
    if url:
        import psycopg

        with psycopg.connect(url, password=cluster.password, autocommit=True) as conn:
            for statement in DDL:
                conn.execute(statement)
    postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    async with AsyncExitStack() as stack:
        one = await _open_way(way, url, cluster.password, workers, stack)
        await _drive(one, 0, WARMUP, workers)
        server0, cpu0, t0 = server_cpu(postmaster), time.process_time(), time.perf_counter()
        await _drive(one, WARMUP, files, workers)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        server = server_cpu(postmaster) - server0
    return Figures(files, seconds, cpu, None if way == "sqlite-store" else server)


def _line(way: str, f: Figures, ref: Figures) -> str:
    rate, ref_rate = f.files / f.seconds, ref.files / ref.seconds
    cpu_ms, ref_ms = 1000 * f.cpu / f.files, 1000 * ref.cpu / ref.files
    server = ""
    if f.server_cpu is not None:
        server_ms = 1000 * f.server_cpu / f.files
        server = f"; server CPU {server_ms:.3f} ms/file; total {cpu_ms + server_ms:.3f} ms/file"
    return (
        f"{way}: {f.files} files in {f.seconds:.2f} s = {rate:.0f} files/s"
        f" ({rate / ref_rate:.2f}x ref); bench CPU {cpu_ms:.3f} ms/file"
        f" ({cpu_ms / ref_ms:.2f}x ref){server}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="200 files, one run")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.runs = 200, 1
    bindir = find_bindir()
    if bindir is None:
        sys.exit(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        )
    print(machine())
    print(f"python {platform.python_version()} on {platform.machine()}; PostgreSQL {bindir}")
    cluster = Cluster.create(bindir)
    results: dict[str, list[Figures]] = {way: [] for way in WAYS}
    try:
        cluster.start()
        for run in range(1, args.runs + 1):
            # Rotate the order so no way always runs first (or last) on a busy machine.
            order = WAYS[run - 1 :] + WAYS[: run - 1]
            for way in order:
                figures = anyio.run(measure, way, cluster, args.files, args.workers, run)
                results[way].append(figures)
            ref = results["sqlite-store"][-1]
            for way in WAYS:
                print(f"run {run} {_line(way, results[way][-1], ref)}")
    finally:
        cluster.remove()
    for way in WAYS:
        print(f"median {_line(way, _median(results[way]), _median(results['sqlite-store']))}")


def _median(runs: list[Figures]) -> Figures:
    """Each figure's median over the runs (files/s through the median time)."""
    servers = [f.server_cpu for f in runs if f.server_cpu is not None]
    return Figures(
        runs[0].files,
        statistics.median(f.seconds for f in runs),
        statistics.median(f.cpu for f in runs),
        statistics.median(servers) if servers else None,
    )


if __name__ == "__main__":
    main()

"""Group commit on a real SQLite file: batching, per-operation undo, durability, cancellation."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from daemon.state._group_commit import GroupCommit

pytestmark = pytest.mark.anyio


def _connect(path: Path, busy_ms: int = 5000) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    return conn


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    return path


@pytest.fixture
async def group(db_path: Path) -> AsyncIterator[GroupCommit]:
    gc = GroupCommit(_connect(db_path))
    yield gc
    await gc.close()


def _committed(path: Path) -> list[tuple[int, str]]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(path) as other:
        return other.execute("SELECT id, v FROM t ORDER BY id").fetchall()


def _insert(row_id: int, fail: bool = False) -> Callable[[sqlite3.Connection], int]:
    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (id, v) VALUES (?, ?)", (row_id, f"v{row_id}"))
        if fail:
            raise ValueError(f"op {row_id} failed after writing")
        return row_id

    return op


class Gate:
    """An operation that blocks the connection's thread until ``release()``: while it runs,
    everything submitted queues up for the next batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def op(self, conn: sqlite3.Connection) -> str:
        self.entered.set()
        self.go.wait(10)
        return "gate"

    async def wait_entered(self) -> None:
        await anyio.to_thread.run_sync(self.entered.wait, 10)

    def release(self) -> None:
        self.go.set()


async def test_writes_queued_together_share_one_batch_and_are_committed(
    group: GroupCommit, db_path: Path
) -> None:
    """Twenty writes queued behind a running batch commit as one batch, all durable."""
    gate = Gate()
    results: dict[int, int] = {}

    async def write(row_id: int) -> None:
        results[row_id] = await group.write(_insert(row_id))

    async with anyio.create_task_group() as tg:
        tg.start_soon(group.write, gate.op)
        await gate.wait_entered()
        for row_id in range(1, 21):
            tg.start_soon(write, row_id)
        await anyio.wait_all_tasks_blocked()
        gate.release()
    assert results == {row_id: row_id for row_id in range(1, 21)}
    assert group.batches == 2  # the gate's batch, then the twenty together
    assert _committed(db_path) == [(row_id, f"v{row_id}") for row_id in range(1, 21)]


async def test_a_failing_write_is_undone_alone(group: GroupCommit, db_path: Path) -> None:
    """In one batch, the op that raises loses its own writes; its neighbours are kept."""
    gate = Gate()
    outcomes: dict[int, object] = {}

    async def write(row_id: int, fail: bool) -> None:
        try:
            outcomes[row_id] = await group.write(_insert(row_id, fail))
        except ValueError as exc:
            outcomes[row_id] = str(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(group.write, gate.op)
        await gate.wait_entered()
        tg.start_soon(write, 1, False)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(write, 2, True)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(write, 3, False)
        await anyio.wait_all_tasks_blocked()
        gate.release()
    assert group.batches == 2
    assert outcomes == {1: 1, 2: "op 2 failed after writing", 3: 3}
    assert _committed(db_path) == [(1, "v1"), (3, "v3")]


async def test_a_failed_begin_fails_the_batchs_writes_and_the_connection_recovers(
    db_path: Path,
) -> None:
    """A write lock held elsewhere past busy_timeout fails the writes (and what follows them
    in the batch) with the sqlite3 error; reads queued before them keep their results."""
    group = GroupCommit(_connect(db_path, busy_ms=10))
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        gate = Gate()
        outcomes: dict[str, object] = {}

        async def run(name: str, fn: Callable[[sqlite3.Connection], object], write: bool) -> None:
            try:
                outcomes[name] = await (group.write(fn) if write else group.read(fn))
            except sqlite3.OperationalError as exc:
                outcomes[name] = f"error: {exc}"

        def count(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])

        async with anyio.create_task_group() as tg:
            tg.start_soon(group.read, gate.op)
            await gate.wait_entered()
            other.execute("BEGIN IMMEDIATE")
            for name, fn, write in (
                ("read-before", count, False),
                ("write", _insert(1), True),
                ("read-after", count, False),
            ):
                tg.start_soon(run, name, fn, write)
                await anyio.wait_all_tasks_blocked()
            gate.release()
        assert outcomes == {
            "read-before": 0,
            "write": "error: database is locked",
            "read-after": "error: database is locked",
        }
        other.execute("ROLLBACK")
        assert await group.write(_insert(2)) == 2
        assert _committed(db_path) == [(2, "v2")]
    finally:
        other.close()
        await group.close()


async def test_a_cancelled_caller_still_gets_its_write_whole(
    group: GroupCommit, db_path: Path
) -> None:
    """Cancelled while its write waits in the queue, the write still commits whole; cancelled
    before submitting, nothing is written."""
    gate = Gate()
    async with anyio.create_task_group() as tg:
        tg.start_soon(group.write, gate.op)
        await gate.wait_entered()
        async with anyio.create_task_group() as inner:
            inner.start_soon(group.write, _insert(1))
            await anyio.wait_all_tasks_blocked()
            inner.cancel_scope.cancel()
            gate.release()
    assert _committed(db_path) == [(1, "v1")]
    with anyio.CancelScope() as scope:
        scope.cancel()
        await group.write(_insert(2))
    assert _committed(db_path) == [(1, "v1")]


async def test_the_next_batch_is_handed_to_a_waiter_after_the_leaders(
    group: GroupCommit, db_path: Path
) -> None:
    """Ops queued while each batch runs are run by a waiting caller, batch after batch,
    until none is left; the results reach each caller."""
    seen: list[int] = []

    async def write(row_id: int) -> None:
        seen.append(await group.write(_insert(row_id)))

    async with anyio.create_task_group() as tg:
        for row_id in range(1, 101):
            tg.start_soon(write, row_id)
            if row_id % 10 == 0:
                await anyio.lowlevel.checkpoint()
    assert sorted(seen) == list(range(1, 101))
    assert 1 < group.batches < 100
    assert len(_committed(db_path)) == 100
    assert await group.read(lambda conn: conn.execute("SELECT max(id) FROM t").fetchone()[0]) == (
        100
    )


class _Boom(BaseException):
    """Not an Exception: what the per-op handler does not catch (like MemoryError's kin)."""


async def test_a_base_exception_rolls_back_and_leaves_no_transaction_open(
    group: GroupCommit, db_path: Path
) -> None:
    """An op raising a BaseException fails its whole batch, which is rolled back; the next
    write starts a transaction of its own and commits."""

    def boom(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (id, v) VALUES (1, 'half')")
        raise _Boom

    with pytest.raises(_Boom):
        await group.write(boom)
    assert _committed(db_path) == []
    assert await group.write(_insert(2)) == 2
    assert _committed(db_path) == [(2, "v2")]

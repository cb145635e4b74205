"""One SQLite connection, driven from a worker thread, with group commit.

Each operation is a plain function of the connection, run whole on a worker thread in one hop
(not one hop per statement). Operations queued while a batch runs make up the next batch; its
writes share one ``BEGIN IMMEDIATE ... COMMIT`` (one fsync under ``synchronous=FULL``), each
inside a ``SAVEPOINT`` so a failing one is undone alone. A caller's ``await`` returns only after
its batch has committed: a write is durable on return, as if it had its own transaction.

No background task: the caller that finds no batch running runs one (everything queued,
its own operation included), then hands the next batch to the first caller still waiting.
The waiting is shielded, so a cancelled caller's operation still happens whole, never half.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["GroupCommit"]

T = TypeVar("T")


class _Op(Generic[T]):
    __slots__ = ("error", "finished", "fn", "ran", "value", "wake", "write")

    def __init__(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> None:
        self.fn = fn
        self.write = write
        self.wake = anyio.Event()  # finished, or handed the next batch to run
        self.finished = False
        self.ran = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # set by a successful run


class GroupCommit:
    """Serialises operations on ``conn`` and commits concurrent writes together."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        """``conn`` must be in autocommit mode (``isolation_level=None``) and opened with
        ``check_same_thread=False``: it is only ever used by one thread at a time."""
        self._conn = conn
        self._queue: list[_Op[Any]] = []
        self._running = False
        self.batches = 0  # batches run so far (for tests and benchmarks)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` (statements that only read) and return its result."""
        return await self._submit(_Op(fn, write=False))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a transaction, committed before this returns; an exception raised by
        ``fn`` undoes everything it did and is raised here."""
        return await self._submit(_Op(fn, write=True))

    async def _submit(self, op: _Op[T]) -> T:
        await anyio.lowlevel.checkpoint_if_cancelled()  # cancelled before it is queued: absent
        self._queue.append(op)
        with anyio.CancelScope(shield=True):
            if self._running:
                await op.wake.wait()
            else:
                self._running = True
            if not op.finished:
                await self._run_queued()
        return op.outcome()

    async def _run_queued(self) -> None:
        batch, self._queue = self._queue, []
        try:
            await anyio.to_thread.run_sync(_run_batch, self._conn, batch)
        except BaseException as exc:  # the thread hop itself failed: no op ran to its end
            for op in batch:
                if not op.finished and op.error is None:
                    op.error = exc
            raise
        finally:
            self.batches += 1
            for op in batch:
                op.finished = True
                op.wake.set()
            if self._queue:
                self._queue[0].wake.set()  # the first waiter runs the next batch
            else:
                self._running = False

    async def close(self) -> None:
        """Close the connection (no operation may follow)."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._conn.close)


def _run_batch(conn: sqlite3.Connection, batch: list[_Op[Any]]) -> None:
    """Run ``batch`` in order; writes in one transaction, each in a savepoint of its own."""
    in_transaction: list[_Op[Any]] = []
    try:
        for op in batch:
            if op.write and not in_transaction:
                conn.execute("BEGIN IMMEDIATE")
            if in_transaction or op.write:
                in_transaction.append(op)
                _run_in_savepoint(conn, op)
            else:
                _run_alone(conn, op)
        if in_transaction:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        # BEGIN, a savepoint or COMMIT failed: nothing of this transaction is kept, and every
        # op that ran in it (or had yet to run) gets the error.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for op in batch:
            if op in in_transaction or not op.ran:
                op.value, op.error = None, exc
    except BaseException:
        # Not SQLite's doing (MemoryError, say): never leave the next batch a transaction.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _run_alone(conn: sqlite3.Connection, op: _Op[Any]) -> None:
    op.ran = True
    try:
        op.value = op.fn(conn)
    except Exception as exc:
        op.error = exc


def _run_in_savepoint(conn: sqlite3.Connection, op: _Op[Any]) -> None:
    conn.execute("SAVEPOINT op")
    op.ran = True
    try:
        op.value = op.fn(conn)
    except Exception as exc:
        op.error = exc
        conn.execute("ROLLBACK TO op")
    conn.execute("RELEASE op")

"""Waiting rows whose file left its inbox are closed (``daemon.runtime.vanished``).

On a real SQLite state file and real folders: a ``pending`` row whose file an operator
deleted or moved away is closed as ``done`` with reason ``vanished`` (so
``inboxd_oldest_pending_seconds`` and its alert come down); rows whose file is still there,
rows a worker holds, rows in other states and rows of inboxes no longer configured stay.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.runtime.vanished import close_vanished
from daemon.state.store import Store
from handlers.ledger import PENDING, UPLOADING
from handlers.outcomes import InboxPlan

pytestmark = pytest.mark.anyio


def _plan(tmp_path: Path, name: str) -> InboxPlan:
    path = tmp_path / name
    path.mkdir()
    return InboxPlan(
        name=name,
        path=path,
        providers=("kimi",),
        purposes={"kimi": "file-extract"},
        done_dir=tmp_path / f"{name}.done",
        quarantine_dir=tmp_path / f"{name}.quarantine",
    )


async def test_pending_rows_of_gone_files_are_closed(tmp_path: Path) -> None:
    """Only the waiting rows whose file is gone, not held by a worker, of a configured inbox
    are closed (done, reason vanished, no file id); the oldest-waiting view drops them."""
    plan = _plan(tmp_path, "in")
    async with Store.open(tmp_path / "state.sqlite3") as store:
        rows = {}
        for name in ("gone.txt", "here.txt", "held.txt", "sending.txt"):
            rows[name] = await store.begin("in", name, size=1, mtime_ns=1)
        other = await store.begin("removed-inbox", "x.txt", size=1, mtime_ns=1)
        (plan.path / "here.txt").write_bytes(b"x")
        await store.transition(rows["sending.txt"].id, UPLOADING, provider="kimi")

        closed = await close_vanished(store, {"in": plan}, busy=lambda key: key == "in:held.txt")

        assert closed == 1
        gone = next(r for r in await store.rows_in_state("done") if r.relpath == "gone.txt")
        assert (gone.reason, gone.file_id, gone.final_path) == ("vanished", None, None)
        still = {r.relpath for r in await store.rows_in_state(PENDING)}
        assert still == {"here.txt", "held.txt", "x.txt"}
        assert {r.relpath for r in await store.rows_in_state(UPLOADING)} == {"sending.txt"}
        assert other.inbox == "removed-inbox"


async def test_an_inbox_whose_waiting_files_are_all_gone_stops_waiting(tmp_path: Path) -> None:
    """Once every waiting file of an inbox is gone, the inbox has no oldest waiting row (the
    gauge reads 0 and the alert on it clears)."""
    plan = _plan(tmp_path, "in")
    async with Store.open(tmp_path / "state.sqlite3") as store:
        await store.begin("in", "a.txt", size=1, mtime_ns=1)
        await store.begin("in", "b.txt", size=1, mtime_ns=1)
        assert set(await store.oldest_waiting()) == {"in"}
        assert await close_vanished(store, {"in": plan}, busy=lambda key: False) == 2
        assert await store.oldest_waiting() == {}

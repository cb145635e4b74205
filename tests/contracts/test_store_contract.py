"""The store's contract, run on both engines (SQLite file, PostgreSQL database): breakers,
ledger rows, transitions, dedupe, counts, pruning, migrations, cancellation."""

from __future__ import annotations

import sqlite3

import anyio
import psycopg
import pytest

from daemon.state import _ledger_sql
from daemon.state.schema import ACTIVE_STATES_SQL, MIGRATIONS, SCHEMA_VERSION
from daemon.state.store import Store
from handlers.ledger import ACTIVE_STATES, STATES, Ledger
from providers.errors import InvalidTransition
from providers.types import BreakerRecord, BreakerStore
from tests.conftest import StoreFactory
from tests.fakes import FakeClock

pytestmark = pytest.mark.anyio


async def _done_as_duplicate(store: Store, row_id: int, *, of: int) -> None:
    """Finish ``row_id`` as a duplicate of row ``of`` (Kimi file-extract, file id f-1)."""
    await store.transition(
        row_id, "done", provider="kimi", purpose="file-extract", file_id="f-1", dedupe_of=of
    )


async def test_breaker_round_trips_every_field(store_factory: StoreFactory) -> None:
    """A saved record loads back equal, window included; an unknown provider loads None."""
    record = BreakerRecord(
        state="half_open",
        open_until=1234.5,
        consecutive_opens=3,
        consecutive_failures=7,
        window=(True, False, True, True, False),
        probe_until=1250.25,
        reason="HTTP 503",
        updated_at=1200.0,
    )
    async with store_factory() as store:
        assert await store.load_breaker("glm") is None
        await store.save_breaker("glm", record)
        assert await store.load_breaker("glm") == record
        await store.save_breaker("glm", BreakerRecord())
        assert await store.load_breaker("glm") == BreakerRecord()
        assert [row[0] for row in await store.fetch("SELECT window_bits FROM breakers")] == [""]


@pytest.mark.parametrize("state_name", ["open", "half_open"])
async def test_restart_resumes_breaker_exactly(
    store_factory: StoreFactory, state_name: str
) -> None:
    """Closing and reopening the store gives back an open/half-open breaker unchanged."""
    record = BreakerRecord(
        state=state_name,
        open_until=2000.0,
        consecutive_opens=2,
        window=(True,) * 5,
        probe_until=1990.0 if state_name == "half_open" else None,
        reason="5 consecutive failures",
        updated_at=1500.0,
    )
    async with store_factory() as store:
        await store.save_breaker("kimi", record)
    async with store_factory() as store:
        assert await store.load_breaker("kimi") == record


@pytest.mark.parametrize(
    ("record", "now", "claimed"),
    [
        (BreakerRecord(state="open", open_until=100.0), 100.0, True),
        (BreakerRecord(state="open", open_until=100.0), 99.9, False),
        (BreakerRecord(state="half_open", probe_until=None), 0.0, True),
        (BreakerRecord(state="half_open", probe_until=100.0), 100.0, True),
        (BreakerRecord(state="half_open", probe_until=100.0), 99.0, False),
        (BreakerRecord(state="closed"), 100.0, False),
        (BreakerRecord(state="forced_open", open_until=1.0), 100.0, False),
    ],
)
async def test_claim_probe_conditions(
    store_factory: StoreFactory, record: BreakerRecord, now: float, claimed: bool
) -> None:
    """claim_probe succeeds only for an expired open or an unleased half-open breaker."""
    async with store_factory(clock=FakeClock(7.0)) as store:
        await store.save_breaker("kimi", record)
        assert await store.claim_probe("kimi", now=now, lease_until=now + 30) is claimed
        after = await store.load_breaker("kimi")
    if claimed:
        assert after == BreakerRecord(
            state="half_open",
            open_until=record.open_until,
            probe_until=now + 30,
            updated_at=7.0,
        )
    else:
        assert after == record


async def test_claim_probe_unknown_provider_is_false(store_factory: StoreFactory) -> None:
    """A provider with no persisted breaker has no probe to claim (Store fits both Protocols)."""
    async with store_factory() as store:
        breakers: BreakerStore = store
        ledger: Ledger = store
        assert await breakers.claim_probe("kimi", now=1.0, lease_until=2.0) is False
        assert await ledger.counts_by_state() == dict.fromkeys(STATES, 0)
        assert await store.all_breakers() == {}


async def test_two_stores_racing_claim_exactly_one_probe(store_factory: StoreFactory) -> None:
    """Two Store instances on one file (as two processes would) race; exactly one claim wins."""
    async with store_factory() as first, store_factory() as second:
        await first.save_breaker("glm", BreakerRecord(state="open", open_until=10.0))
        results: list[bool] = []

        async def claim(store: Store) -> None:
            for _ in range(20):
                results.append(await store.claim_probe("glm", now=11.0, lease_until=41.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim, first)
            tg.start_soon(claim, second)
    assert sorted(results) == [False] * 39 + [True]


async def test_reset_breaker_closes_and_lists(store_factory: StoreFactory) -> None:
    """reset_breaker leaves a closed, clean record; all_breakers lists every provider."""
    async with store_factory(clock=FakeClock(77.0)) as store:
        await store.save_breaker("kimi", BreakerRecord(state="forced_open", reason="HTTP 401"))
        await store.save_breaker("glm", BreakerRecord(state="open", open_until=5.0))
        await store.reset_breaker("kimi")
        assert await store.all_breakers() == {
            "glm": BreakerRecord(state="open", open_until=5.0),
            "kimi": BreakerRecord(reason="reset by operator", updated_at=77.0),
        }


async def test_begin_creates_then_returns_the_active_row(store_factory: StoreFactory) -> None:
    """begin makes and returns one pending row per file; a changed pending file drops its hash."""
    clock = FakeClock(10.0)
    async with store_factory(clock=clock) as store:
        row = await store.begin("docs", "a.pdf", size=3, mtime_ns=1)
        assert (row.id, row.state, row.size, row.mtime_ns, row.attempts) == (1, "pending", 3, 1, 0)
        assert (row.created_at, row.updated_at, row.sha256) == (10.0, 10.0, None)
        await store.set_sha256(row.id, "h1")
        clock.now = 11.0
        same = await store.begin("docs", "a.pdf", size=3, mtime_ns=1)
        assert same == (await store.get(row.id))
        assert same.sha256 == "h1"
        changed = await store.begin("docs", "a.pdf", size=5, mtime_ns=2)
        assert (changed.id, changed.size, changed.mtime_ns, changed.sha256) == (1, 5, 2, None)
        assert changed.updated_at == 11.0
        other = await store.begin("mail", "a.pdf", size=3, mtime_ns=1)
        assert other.id == 2


async def test_begin_leaves_an_uploading_row_alone(store_factory: StoreFactory) -> None:
    """An uploading row is returned unchanged by begin, even if the stat differs."""
    async with store_factory(clock=FakeClock(10.0)) as store:
        row = await store.begin("docs", "a.pdf", size=3, mtime_ns=1)
        uploading = await store.transition(row.id, "uploading", provider="kimi", attempts=1)
        assert await store.begin("docs", "a.pdf", size=9, mtime_ns=9) == uploading


async def test_full_lifecycle_and_new_row_after_done(store_factory: StoreFactory) -> None:
    """A full lifecycle records every field; the same path then starts a new row."""
    clock = FakeClock(100.0)
    async with store_factory(clock=clock) as store:
        row = await store.begin("docs", "a.pdf", size=3, mtime_ns=1)
        clock.now = 101.0
        up = await store.transition(row.id, "uploading", provider="glm", purpose="file-extract")
        assert (up.state, up.intent_at, up.provider, up.purpose) == (
            "uploading",
            101.0,
            "glm",
            "file-extract",
        )
        clock.now = 102.0
        ok = await store.transition(
            row.id, "uploaded", file_id="f-9", remote_bytes=3, transport="zhipuai"
        )
        assert (ok.state, ok.file_id, ok.remote_bytes, ok.transport, ok.uploaded_at) == (
            "uploaded",
            "f-9",
            3,
            "zhipuai",
            102.0,
        )
        clock.now = 103.0
        done = await store.transition(row.id, "done", final_path="/done/a.pdf")
        assert (done.state, done.finished_at, done.final_path, done.updated_at) == (
            "done",
            103.0,
            "/done/a.pdf",
            103.0,
        )
        assert await store.active_for("docs", "a.pdf") is None
        again = await store.begin("docs", "a.pdf", size=3, mtime_ns=1)
        assert (again.id, again.state) == (2, "pending")
        assert await store.active_for("docs", "a.pdf") == again


async def test_invalid_transition_raises_and_changes_nothing(store_factory: StoreFactory) -> None:
    """A transition outside the table raises InvalidTransition and leaves the row as it was."""
    async with store_factory(clock=FakeClock(5.0)) as store:
        row = await store.begin("docs", "a.pdf", size=3, mtime_ns=1)
        with pytest.raises(InvalidTransition, match="pending → uploaded"):
            await store.transition(row.id, "uploaded", file_id="f-1")
        with pytest.raises(InvalidTransition, match="unknown field"):
            await store.transition(row.id, "uploading", inbox="elsewhere")
        assert await store.get(row.id) == row
        # The store still works after the rolled-back transactions.
        moved = await store.transition(row.id, "quarantined", reason="empty", detail="0 bytes")
        assert (moved.state, moved.reason, moved.detail) == ("quarantined", "empty", "0 bytes")
        with pytest.raises(KeyError):
            await store.get(999)
        with pytest.raises(KeyError):
            await store.transition(999, "done")


async def test_one_active_row_per_path_is_enforced_by_the_schema(
    store_factory: StoreFactory,
) -> None:
    """The partial unique index refuses a second active row for a path, and allows history."""
    insert = (
        "INSERT INTO ledger (inbox, relpath, size, mtime_ns, state, created_at, updated_at)"
        " VALUES ('docs', ?, 1, 1, ?, 0, 0)"
    )
    async with store_factory() as store:
        row = await store.begin("docs", "a.pdf", size=3, mtime_ns=1)
        await store.transition(row.id, "quarantined", reason="empty")
        await store.begin("docs", "a.pdf", size=4, mtime_ns=2)
        with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation)):
            await store.write(lambda db: db.execute(insert, (db.path("a.pdf"), "uploading")))
        await store.write(lambda db: db.execute(insert, (db.path("a.pdf"), "done")))
        assert [row[0] for row in await store.fetch("SELECT count(*) FROM ledger")] == [3]
    assert ACTIVE_STATES_SQL in _ledger_sql.ACTIVE_ROW
    assert set(ACTIVE_STATES_SQL.strip("()").replace("'", "").split(", ")) == ACTIVE_STATES


async def test_dedupe_finds_the_original_upload_only(store_factory: StoreFactory) -> None:
    """find_uploaded returns the original upload of the same sha256, provider and purpose."""
    async with store_factory() as store:
        assert await store.find_uploaded("h", "kimi", "file-extract") is None
        first = await store.begin("docs", "a.pdf", size=3, mtime_ns=1)
        await store.set_sha256(first.id, "h")
        await store.transition(first.id, "uploading", provider="kimi", purpose="file-extract")
        assert await store.find_uploaded("h", "kimi", "file-extract") is None
        original = await store.transition(first.id, "uploaded", file_id="f-1", remote_bytes=3)
        assert await store.find_uploaded("h", "kimi", "file-extract") == original
        dup = await store.begin("docs", "b.pdf", size=3, mtime_ns=1)
        await store.set_sha256(dup.id, "h")
        await _done_as_duplicate(store, dup.id, of=first.id)
        assert await store.find_uploaded("h", "kimi", "file-extract") == original
        assert await store.find_uploaded("h", "glm", "file-extract") is None
        assert await store.find_uploaded("h", "kimi", "batch") is None
        assert await store.find_uploaded("other", "kimi", "file-extract") is None


async def test_counts_failures_and_outcomes(store_factory: StoreFactory) -> None:
    """counts_by_state, rows_in_state, recent_failures and outcome_counts report the rows."""
    clock = FakeClock(100.0)
    async with store_factory(clock=clock) as store:
        assert await store.counts_by_state() == dict.fromkeys(
            ["pending", "uploading", "uploaded", "done", "quarantined", "requeued"], 0
        )
        rows = [await store.begin("docs", f"{n}.pdf", size=n + 1, mtime_ns=n) for n in range(5)]
        clock.now = 200.0
        await store.transition(rows[0].id, "quarantined", reason="empty")
        clock.now = 300.0
        await store.transition(rows[1].id, "quarantined", reason="too_large")
        await store.transition(rows[2].id, "done", dedupe_of=None)
        clock.now = 400.0
        await store.transition(rows[0].id, "requeued")
        await store.begin("mail", "x.pdf", size=1, mtime_ns=1)
        assert await store.counts_by_state() == {
            "pending": 3,
            "uploading": 0,
            "uploaded": 0,
            "done": 1,
            "quarantined": 1,
            "requeued": 1,
        }
        assert [r.relpath for r in await store.rows_in_state("pending")] == [
            "3.pdf",
            "4.pdf",
            "x.pdf",
        ]
        assert [r.relpath for r in await store.rows_in_state("pending", inbox="mail")] == ["x.pdf"]
        assert [r.relpath for r in await store.rows_in_state("pending", limit=1)] == ["3.pdf"]
        failures = await store.recent_failures(10)
        assert [(r.relpath, r.reason, r.finished_at) for r in failures] == [
            ("1.pdf", "too_large", 300.0)
        ]
        assert await store.outcome_counts(since=0.0) == {"done": 1, "quarantined": 2}
        assert await store.outcome_counts(since=250.0) == {"done": 1, "quarantined": 1}
        assert await store.outcome_counts(since=301.0) == {"done": 0, "quarantined": 0}


async def test_undecodable_filename_round_trips(store_factory: StoreFactory) -> None:
    """A filename with undecodable bytes is stored and found again exactly (name_invalid files)."""
    name = b"bad\xff\xfename.pdf".decode("utf-8", "surrogateescape")
    async with store_factory() as store:
        row = await store.begin("docs", name, size=1, mtime_ns=1)
        assert row.relpath == name
        assert await store.active_for("docs", name) == row
        assert await store.active_for("docs", "badname.pdf") is None
        moved = await store.transition(
            row.id,
            "quarantined",
            reason="name_invalid",
            detail=f"undecodable: {name}",
            final_path=f"/q/{name}",
        )
        assert moved.final_path == f"/q/{name}"
        assert moved.detail == "undecodable: bad\\udcff\\udcfename.pdf"


async def test_cancelled_write_is_whole_or_absent(store_factory: StoreFactory) -> None:
    """A write cancelled before it starts is absent; cancelled mid-way it commits whole."""
    async with store_factory() as store:
        row = await store.begin("docs", "a.pdf", size=1, mtime_ns=1)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await store.transition(row.id, "uploading", provider="kimi")
        assert await store.get(row.id) == row
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.transition, row.id, "uploading")
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        assert (await store.get(row.id)).state == "uploading"
        assert (await store.transition(row.id, "pending")).state == "pending"


async def test_two_processes_opening_a_new_store_migrate_once(
    store_factory: StoreFactory,
) -> None:
    """Two stores opening one fresh store at once both work; each migration ran exactly once."""
    opened: list[int] = []

    async def open_one() -> None:
        async with store_factory() as store:
            opened.append(await store.schema_version())

    async with anyio.create_task_group() as tg:
        tg.start_soon(open_one)
        tg.start_soon(open_one)
    assert opened == [SCHEMA_VERSION, SCHEMA_VERSION]
    async with store_factory() as store:
        history = await store.fetch("SELECT version, summary FROM schema_history ORDER BY version")
    assert [(row[0], row[1]) for row in history] == [(m.version, m.summary) for m in MIGRATIONS]


async def test_prune_deletes_old_finished_rows_only(store_factory: StoreFactory) -> None:
    """Finished rows older than the cutoff go, a chunk at a time; active rows, newer rows and
    an original that a kept duplicate points at stay (the original goes once it is alone)."""
    clock = FakeClock(100.0)
    async with store_factory(clock=clock) as store:
        old_done = await store.begin("docs", "old.txt", size=1, mtime_ns=1)
        await store.transition(old_done.id, "quarantined", reason="empty")
        original = await store.begin("docs", "orig.txt", size=1, mtime_ns=1)
        original = await store.transition(original.id, "uploading", provider="kimi")
        original = await store.transition(
            original.id, "uploaded", provider="kimi", purpose="file-extract", file_id="f-1"
        )
        await store.transition(original.id, "done")
        active = await store.begin("docs", "still-pending.txt", size=1, mtime_ns=1)
        clock.now = 200.0
        dup = await store.begin("docs", "dup.txt", size=1, mtime_ns=1)
        await _done_as_duplicate(store, dup.id, of=original.id)
        newer = await store.begin("docs", "newer.txt", size=1, mtime_ns=1)
        await store.transition(newer.id, "quarantined", reason="empty")

        assert await store.prune(before=150.0) == 1  # old_done; the original is still named
        ids = {r.id for state_ in STATES for r in await store.rows_in_state(state_)}
        assert ids == {original.id, active.id, dup.id, newer.id}
        assert await store.prune(before=250.0, limit=1) == 1  # the duplicate (oldest first)
        assert await store.prune(before=250.0) == 2  # the newer one, and the original: alone now
        assert await store.prune(before=250.0) == 0
        assert [r.id for r in await store.rows_in_state("pending")] == [active.id]


async def test_oldest_waiting_is_the_first_take_up_of_each_inboxs_unfinished_files(
    store_factory: StoreFactory,
) -> None:
    """oldest_waiting answers, per inbox, the created_at of its oldest pending, uploading or
    uploaded row; finished rows and inboxes with nothing waiting are left out."""
    clock = FakeClock(100.0)
    async with store_factory(clock=clock) as store:
        finished = await store.begin("a", "old.txt", size=1, mtime_ns=1)
        await store.transition(finished.id, "quarantined", reason="empty")
        clock.now = 200.0
        waiting = await store.begin("a", "waiting.txt", size=1, mtime_ns=1)
        await store.transition(waiting.id, "pending", not_before=900.0)
        clock.now = 300.0
        sending = await store.begin("b", "sending.txt", size=1, mtime_ns=1)
        await store.transition(sending.id, "uploading", provider="kimi", purpose="file-extract")
        await store.begin("a", "newer.txt", size=1, mtime_ns=1)
        done = await store.begin("c", "done.txt", size=1, mtime_ns=1)
        await store.transition(done.id, "quarantined", reason="empty")
        assert await store.oldest_waiting() == {"a": 200.0, "b": 300.0}

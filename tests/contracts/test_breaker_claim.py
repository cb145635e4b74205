"""The half-open claim rule, one table run against ``breaker.claim``, the SQLite store and the fake.

``providers.breaker.CLAIM_RULE`` says when the one half-open probe may be claimed; ``claim`` and
the fake use it, the store's conditional UPDATE implements it in SQL (which cannot import Python):
every case the table speaks of is run against all three, the store on a real SQLite file.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import get_args

import pytest

from daemon.state.store import Store
from providers.breaker import (
    CLOSED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    STATES,
    BreakerConfig,
    VsNow,
    claim,
    claim_decision,
)
from providers.types import BreakerRecord
from tests.fakes import FakeBreakerStore

NOW = 1_000.0
LEASE = NOW + 600.0
VS_NOW: tuple[VsNow, ...] = get_args(VsNow)
AT: dict[VsNow, float | None] = {"unset": None, "passed": NOW - 1.0, "now": NOW, "ahead": NOW + 1.0}


# Every concrete case the table speaks of: each state, each deadline against now.
EXPECTED = {
    (state, opens, probe): claim_decision(state, opens, probe)
    for state, opens, probe in itertools.product(STATES, VS_NOW, VS_NOW)
}
Case = tuple[str, VsNow, VsNow]
ROWS = [pytest.param(key, granted, id="-".join(key)) for key, granted in EXPECTED.items()]


def _record(state: str, opens: VsNow, probe: VsNow) -> BreakerRecord:
    return BreakerRecord(
        state=state,
        open_until=AT[opens],
        probe_until=AT[probe],
        consecutive_opens=2,
        reason="failure_ratio",
        updated_at=NOW - 30.0,
    )


Claim = Callable[[BreakerRecord, Path | str], Awaitable[tuple[bool, BreakerRecord | None]]]


async def _pure(rec: BreakerRecord, tmp_path: Path | str) -> tuple[bool, BreakerRecord | None]:
    got = claim(BreakerConfig(), rec, now=NOW, lease_until=LEASE)
    return got is not None, got if got is not None else rec


async def _store(rec: BreakerRecord, target: Path | str) -> tuple[bool, BreakerRecord | None]:
    async with Store.open(target, clock=lambda: NOW) as store:
        await store.save_breaker("kimi", rec)
        granted = await store.claim_probe("kimi", now=NOW, lease_until=LEASE)
        return granted, await store.load_breaker("kimi")


async def _fake(rec: BreakerRecord, tmp_path: Path | str) -> tuple[bool, BreakerRecord | None]:
    store = FakeBreakerStore()
    await store.save_breaker("kimi", rec)
    granted = await store.claim_probe("kimi", now=NOW, lease_until=LEASE)
    return granted, await store.load_breaker("kimi")


IMPLEMENTATIONS: dict[str, Claim] = {
    "breaker.claim": _pure,
    "sqlite": _store,
    "postgresql": _store,
    "fake": _fake,
}


@pytest.mark.anyio
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(("case", "granted"), ROWS)
async def test_claim_follows_the_table(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    implementation: str,
    case: Case,
    granted: bool,
) -> None:
    """Each implementation grants the probe exactly where the table does, and the claimed
    record is HALF_OPEN with the lease (everything else kept); a refused one is unchanged."""
    rec = _record(*case)
    target: Path | str = tmp_path / "state.sqlite3"
    if implementation == "postgresql":
        target = request.getfixturevalue("pg_url")
    got, after = await IMPLEMENTATIONS[implementation](rec, target)
    assert got is granted
    if granted:
        assert after is not None
        assert replace(after, updated_at=rec.updated_at) == replace(
            rec, state=HALF_OPEN, probe_until=LEASE
        )
    else:
        assert after == rec


def test_the_table_grants_exactly_the_due_open_and_the_unleased_half_open() -> None:
    """The table's decisions, spelled out: a due OPEN (open_until set and <= now) or a HALF_OPEN
    without a live lease; never CLOSED, FORCED_OPEN, or an OPEN with no open_until."""
    granted = {key for key, g in EXPECTED.items() if g}
    assert granted == {
        (state, opens, probe)
        for state, opens, probe in EXPECTED
        if (state == OPEN and opens in ("passed", "now"))
        or (state == HALF_OPEN and probe in ("unset", "passed", "now"))
    }
    assert not any(state in (CLOSED, FORCED_OPEN) for state, _, _ in granted)
    assert not any((state, opens) == (OPEN, "unset") for state, opens, _ in granted)

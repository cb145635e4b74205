"""The async dispatcher with hand-written fakes: retries, reconcile, failover, breakers, parking."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import anyio
import pytest

from providers.breaker import CLOSED, FORCED_OPEN, HALF_OPEN, OPEN, BreakerConfig
from providers.dispatch import Dispatcher, NullEvents
from providers.errors import (
    AuthFailed,
    Parked,
    Permanent,
    ProviderError,
    QuotaExhausted,
    RejectedFile,
    Retryable,
    Throttled,
)
from providers.limits import LIMITS, MIB
from providers.retry import RetryPolicy
from providers.types import BreakerRecord, RemoteFile, UploadResult
from tests.fakes import FakeBreakerStore, FakeClient, FakeClock, ResilienceLog, Step

T0 = 1_000_000.0


def _remote(provider: str, name: str = "a.pdf", size: int = 3) -> RemoteFile:
    return RemoteFile(provider, f"{provider}-id", name, size, T0, "file-extract")


@dataclass
class Rig:
    """One Dispatcher with its fakes."""

    kimi: FakeClient
    glm: FakeClient
    store: FakeBreakerStore
    events: ResilienceLog
    clock: FakeClock
    dispatcher: Dispatcher
    reconciled: list[tuple[str, str]] = field(default_factory=list)
    found: RemoteFile | None = None
    opened: list[io.BytesIO] = field(default_factory=list)
    intents: list[tuple[str, str]] = field(default_factory=list)

    def open_file(self) -> BinaryIO:
        handle = io.BytesIO(b"pdf")
        self.opened.append(handle)
        return handle

    async def reconcile(self, provider: str, purpose: str) -> RemoteFile | None:
        self.reconciled.append((provider, purpose))
        return self.found

    async def before_attempt(self, provider: str, purpose: str) -> None:
        self.intents.append((provider, purpose))

    async def upload(
        self,
        preference: Sequence[str] = ("kimi", "glm"),
        *,
        name: str = "a.pdf",
        size: int = 3,
        first_tried: float | None = None,
        attempts: int = 0,
    ) -> UploadResult:
        return await self.dispatcher.upload(
            preference=preference,
            purposes={},
            filename=name,
            size=size,
            content_type="application/pdf",
            open_file=self.open_file,
            reconcile=self.reconcile,
            before_attempt=self.before_attempt,
            first_tried=first_tried,
            attempts=attempts,
        )


def _rig(
    kimi: list[Step] | None = None,
    glm: list[Step] | None = None,
    *,
    records: dict[str, BreakerRecord] | None = None,
    policy: RetryPolicy | None = None,
    config: BreakerConfig | None = None,
    store: FakeBreakerStore | None = None,
) -> Rig:
    clients = {"kimi": FakeClient("kimi", kimi or []), "glm": FakeClient("glm", glm or [])}
    store, events, clock = store or FakeBreakerStore(records), ResilienceLog(), FakeClock(T0)
    dispatcher = Dispatcher(
        clients,
        LIMITS,
        store,
        {name: policy or RetryPolicy() for name in clients},
        {name: config or BreakerConfig() for name in clients},
        events,
        clock=clock,
        sleep=clock.sleep,
        rand=lambda: 0.5,
    )
    return Rig(clients["kimi"], clients["glm"], store, events, clock, dispatcher)


def _err503() -> Retryable:
    return Retryable("unavailable", provider="kimi", status=503)


@pytest.mark.anyio
async def test_first_try_success_records_a_closed_window() -> None:
    """A clean upload returns the client's result and saves one success to the breaker."""
    rig = _rig()
    result = await rig.upload()
    assert result == UploadResult(_remote("kimi"), transport="http")
    assert rig.kimi.calls == [("a.pdf", "file-extract", b"pdf")]
    assert rig.store.records["kimi"].window == (False,)
    assert rig.events.of("outcome") == [("outcome", "kimi", "http", "success")]
    assert all(handle.closed for handle in rig.opened)


@pytest.mark.anyio
async def test_retries_with_full_jitter_then_succeeds() -> None:
    """Two 503s are retried after full-jitter delays 0.5 and 1.0 (rand 0.5), with fresh files."""
    rig = _rig(kimi=[_err503(), _err503()])
    result = await rig.upload()
    assert result.remote.provider == "kimi"
    assert rig.clock.slept == [0.5, 1.0]
    assert [call[2] for call in rig.kimi.calls] == [b"pdf"] * 3
    assert len(rig.opened) == 3
    assert rig.events.of("retry") == [("retry", "kimi", "http_503")] * 2
    assert rig.glm.calls == []


@pytest.mark.anyio
async def test_retry_after_within_cap_is_slept_exactly() -> None:
    """A 429 with Retry-After 7 s waits exactly 7 s before the retry."""
    rig = _rig(kimi=[Retryable("slow down", status=429, retry_after=7.0)])
    await rig.upload()
    assert rig.clock.slept == [7.0]
    assert rig.events.of("retry") == [("retry", "kimi", "retry_after")]


@pytest.mark.anyio
async def test_long_retry_after_parks_provider_and_fails_over() -> None:
    """A Retry-After beyond the cap opens kimi until then and the file goes to glm at once."""
    rig = _rig(kimi=[Retryable("later", status=429, retry_after=600.0)])
    result = await rig.upload()
    assert result.remote.provider == "glm"
    assert rig.clock.slept == []
    rec = rig.store.records["kimi"]
    assert (rec.state, rec.open_until, rec.reason) == (OPEN, T0 + 600.0, "retry_after")


@pytest.mark.anyio
async def test_ambiguous_failure_reconciled_is_the_result() -> None:
    """An ambiguous timeout whose upload actually landed returns the remote copy: no resend."""
    rig = _rig(kimi=[Retryable("timeout", ambiguous=True)])
    rig.found = _remote("kimi")
    result = await rig.upload()
    assert result == UploadResult(_remote("kimi"), transport="reconcile")
    assert len(rig.kimi.calls) == 1
    assert rig.reconciled == [("kimi", "file-extract")]
    assert rig.clock.slept == []
    assert rig.events.of("outcome") == [("outcome", "kimi", "reconcile", "reconciled")]


@pytest.mark.anyio
async def test_ambiguous_failure_not_found_is_retried() -> None:
    """An ambiguous failure that did not land is sent again after reconcile answered None."""
    rig = _rig(kimi=[Retryable("timeout", ambiguous=True)])
    result = await rig.upload()
    assert result.transport == "http"
    assert len(rig.kimi.calls) == 2
    assert rig.reconciled == [("kimi", "file-extract")]


@pytest.mark.anyio
async def test_unreconcilable_ambiguity_lists_again_before_resending() -> None:
    """When the listing fails after an ambiguous attempt, the next attempt lists before sending."""
    rig = _rig(kimi=[Retryable("timeout", ambiguous=True)])
    outcomes: list[RemoteFile | ProviderError | None] = [Retryable("list failed"), _remote("kimi")]

    async def flaky(provider: str, purpose: str) -> RemoteFile | None:
        rig.reconciled.append((provider, purpose))
        step = outcomes.pop(0)
        if isinstance(step, ProviderError):
            raise step
        return step

    rig.reconcile = flaky  # type: ignore[method-assign]
    result = await rig.upload()
    assert result.transport == "reconcile"
    assert len(rig.kimi.calls) == 1
    assert len(rig.reconciled) == 2
    assert rig.intents == [("kimi", "file-extract")]  # the listing-only attempt sends nothing


@pytest.mark.anyio
async def test_exhausted_attempts_fail_over_to_next_provider() -> None:
    """Three 503s on kimi move the file to glm, which succeeds."""
    rig = _rig(kimi=[_err503()] * 3)
    result = await rig.upload()
    assert result.remote.provider == "glm"
    assert len(rig.kimi.calls) == 3
    assert rig.events.of("give_up") == [("give_up", "kimi", "attempts_exhausted")]
    assert rig.intents == [("kimi", "file-extract")] * 3 + [("glm", "agent")]


@pytest.mark.anyio
async def test_every_provider_exhausted_waits_instead_of_quarantine() -> None:
    """Retries exhausted everywhere (breakers still closed) park the file for a later try:
    30 s doubled once for its 6 sends (2 passes' worth), full jitter at rand 0.5, after the
    3 s of retry sleeps — never upload_failed while give_up_after is unset."""
    rig = _rig(kimi=[_err503()] * 3, glm=[_err503()] * 3)
    with pytest.raises(Parked) as info:
        await rig.upload()
    assert (info.value.until, info.value.reason) == (T0 + 3.0 + 30.0, "attempts_exhausted")
    assert "HTTP 503" in info.value.detail
    assert len(rig.kimi.calls) == len(rig.glm.calls) == 3


@pytest.mark.parametrize(
    ("earlier", "wait"), [(0, 15.0), (3, 30.0), (6, 60.0), (30, 450.0), (3000, 450.0)]
)
@pytest.mark.anyio
async def test_wait_grows_with_the_files_earlier_attempts(earlier: int, wait: float) -> None:
    """The wait before the next pass doubles per pass of attempts the ledger row counts, to
    a 15 min ceiling (full jitter: half the ceiling at rand 0.5)."""
    rig = _rig(kimi=[_err503()] * 3)
    with pytest.raises(Parked) as info:
        await rig.upload(["kimi"], attempts=earlier)
    assert info.value.until == T0 + 1.5 + wait


@pytest.mark.anyio
async def test_give_up_after_passed_is_upload_failed() -> None:
    """With give_up_after set, a file failing transiently for longer is quarantined
    upload_failed, naming how long it failed and the last error."""
    rig = _rig(kimi=[_err503()] * 3, policy=RetryPolicy(give_up_after=100.0))
    with pytest.raises(RejectedFile) as info:
        await rig.upload(["kimi"], first_tried=T0 - 200.0)
    assert info.value.reason == "upload_failed"
    assert info.value.detail.startswith("failing for 202 s, past give_up_after (100 s)")
    assert "attempts_exhausted" in info.value.detail


@pytest.mark.anyio
async def test_give_up_after_not_yet_passed_waits() -> None:
    """give_up_after not yet reached: the file waits like any other."""
    rig = _rig(kimi=[_err503()] * 3, policy=RetryPolicy(give_up_after=100.0))
    with pytest.raises(Parked) as info:
        await rig.upload(["kimi"], first_tried=T0 - 50.0)
    assert info.value.reason == "attempts_exhausted"


@pytest.mark.anyio
async def test_give_up_after_never_quarantines_a_quota_wait() -> None:
    """A quota park is governed by on_quota, not by give_up_after."""
    rig = _rig(kimi=[QuotaExhausted("balance")], policy=RetryPolicy(give_up_after=1.0))
    with pytest.raises(Parked) as info:
        await rig.upload(name="a.py", first_tried=T0 - 10_000.0)
    assert info.value.reason == "quota"


@pytest.mark.anyio
async def test_breaker_opening_mid_retries_fails_over_and_parks() -> None:
    """When kimi's breaker opens during the retries, kimi stops and glm takes the file."""
    rig = _rig(kimi=[_err503()] * 2, config=BreakerConfig(consecutive_failures=2))
    result = await rig.upload()
    assert result.remote.provider == "glm"
    assert len(rig.kimi.calls) == 2
    assert rig.events.of("give_up") == [("give_up", "kimi", "breaker_open")]
    assert ("transition", "kimi", OPEN) in rig.events.log


@pytest.mark.anyio
async def test_breaker_open_everywhere_after_failures_parks_not_fails() -> None:
    """If the failures opened the only provider's breaker, the file is parked, not quarantined."""
    rig = _rig(kimi=[_err503()] * 2, config=BreakerConfig(consecutive_failures=2))
    with pytest.raises(Parked) as info:
        await rig.upload(["kimi"])
    assert (info.value.until, info.value.reason) == (T0 + 0.5 + 30.0, "consecutive_failures")


@pytest.mark.anyio
async def test_permanent_moves_on_only_if_next_is_eligible() -> None:
    """A Permanent on kimi goes on to glm for a pdf, but not for a .py glm cannot take."""
    rig = _rig(kimi=[Permanent("bad", reason="upload_rejected")])
    assert (await rig.upload()).remote.provider == "glm"
    rig = _rig(kimi=[Permanent("bad file", reason="upload_rejected")])
    with pytest.raises(RejectedFile) as info:
        await rig.upload(name="a.py")
    assert info.value.reason == "upload_rejected"
    assert rig.glm.calls == []
    assert "kimi" not in rig.store.records  # neutral: nothing counted, nothing to save


@pytest.mark.anyio
async def test_quota_parks_provider_and_moves_on() -> None:
    """QuotaExhausted opens kimi for quota_park; glm takes the file."""
    rig = _rig(kimi=[QuotaExhausted("balance")])
    assert (await rig.upload()).remote.provider == "glm"
    rec = rig.store.records["kimi"]
    assert (rec.state, rec.open_until, rec.reason) == (OPEN, T0 + 3600.0, "quota")


@pytest.mark.anyio
async def test_quota_with_no_eligible_alternative_parks_file() -> None:
    """Quota on the only provider that can take the file parks it for quota_park."""
    rig = _rig(kimi=[QuotaExhausted("balance")])
    with pytest.raises(Parked) as info:
        await rig.upload(name="a.py")
    assert (info.value.until, info.value.reason) == (T0 + 3600.0, "quota")


@pytest.mark.anyio
async def test_auth_failed_forces_open_and_parks_until_reset() -> None:
    """AuthFailed forces kimi open; alone, the file parks until a reset (inf); reset closes it."""
    rig = _rig(kimi=[AuthFailed("bad key", status=401)])
    with pytest.raises(Parked) as info:
        await rig.upload(["kimi"])
    assert (info.value.until, info.value.reason) == (math.inf, "auth_failed")
    assert rig.store.records["kimi"].state == FORCED_OPEN
    await rig.dispatcher.reset_breaker("kimi")
    states = await rig.dispatcher.breaker_states()
    assert states["kimi"] == BreakerRecord(state=CLOSED, reason="reset", updated_at=T0)
    assert (await rig.upload(["kimi"])).remote.provider == "kimi"


@pytest.mark.anyio
async def test_preferred_open_is_skipped_without_a_call() -> None:
    """An open kimi in the store is not called; glm takes the file."""
    rig = _rig(records={"kimi": BreakerRecord(state=OPEN, open_until=T0 + 100)})
    assert (await rig.upload()).remote.provider == "glm"
    assert rig.kimi.calls == []


@pytest.mark.anyio
async def test_all_open_parks_until_earliest_reopening() -> None:
    """Both providers open: parked until the earliest open_until, with that breaker's reason."""
    rig = _rig(
        records={
            "kimi": BreakerRecord(state=OPEN, open_until=T0 + 500, reason="quota"),
            "glm": BreakerRecord(state=OPEN, open_until=T0 + 90, reason="failure_ratio"),
        }
    )
    with pytest.raises(Parked) as info:
        await rig.upload()
    assert (info.value.until, info.value.reason) == (T0 + 90, "failure_ratio")
    assert rig.kimi.calls == rig.glm.calls == []


@pytest.mark.anyio
async def test_router_rejection_never_calls_a_provider() -> None:
    """A file too large for every provider is rejected with the limits named."""
    rig = _rig()
    with pytest.raises(RejectedFile) as info:
        await rig.upload(size=200 * MIB)
    assert info.value.reason == "too_large"
    assert "kimi (file-extract)" in info.value.detail
    assert "glm (agent)" in info.value.detail
    assert rig.kimi.calls == rig.glm.calls == []


@pytest.mark.anyio
async def test_due_breaker_probes_through_the_store_and_closes() -> None:
    """An OPEN breaker past open_until is probed once via claim_probe; success closes it."""
    rig = _rig(records={"kimi": BreakerRecord(state=OPEN, open_until=T0, consecutive_opens=2)})
    assert (await rig.upload()).remote.provider == "kimi"
    assert rig.store.claims == [("kimi", True)]
    assert rig.store.records["kimi"] == BreakerRecord(
        state=CLOSED, consecutive_opens=2, updated_at=T0
    )
    transitions = rig.events.of("transition")
    assert transitions == [("transition", "kimi", HALF_OPEN), ("transition", "kimi", CLOSED)]


@pytest.mark.anyio
async def test_failed_probe_reopens_longer_and_fails_over() -> None:
    """A failed probe is not retried: kimi reopens for the next, longer period; glm uploads."""
    rig = _rig(
        kimi=[_err503()],
        records={"kimi": BreakerRecord(state=OPEN, open_until=T0, consecutive_opens=1)},
    )
    assert (await rig.upload()).remote.provider == "glm"
    rec = rig.store.records["kimi"]
    assert (rec.state, rec.open_until, rec.consecutive_opens) == (OPEN, T0 + 60.0, 2)
    assert len(rig.kimi.calls) == 1


@pytest.mark.anyio
async def test_probe_held_elsewhere_skips_provider() -> None:
    """A half-open breaker whose probe another process holds is skipped; a file with nowhere
    else to go parks for a short re-check (the probe may answer any moment), not the lease."""
    held = BreakerRecord(state=HALF_OPEN, open_until=T0 - 5, probe_until=T0 + 40)
    rig = _rig(records={"kimi": held})
    assert (await rig.upload()).remote.provider == "glm"
    with pytest.raises(Parked) as info:
        await rig.upload(["kimi"])
    assert info.value.until == T0 + 5.0
    assert rig.kimi.calls == []


@pytest.mark.anyio
async def test_probe_lease_ending_sooner_than_recheck_is_kept() -> None:
    """A probe lease ending before the re-check interval parks the file only until then."""
    held = BreakerRecord(state=HALF_OPEN, open_until=T0 - 5, probe_until=T0 + 2)
    rig = _rig(records={"kimi": held})
    with pytest.raises(Parked) as info:
        await rig.upload(["kimi"])
    assert info.value.until == T0 + 2


@pytest.mark.anyio
async def test_two_workers_never_both_probe() -> None:
    """Two concurrent uploads on a due breaker: one probes kimi, the other goes to glm."""
    rig = _rig(records={"kimi": BreakerRecord(state=OPEN, open_until=T0)})
    rig.kimi.gate = anyio.Event()
    results: list[str] = []

    async def one() -> None:
        results.append((await rig.upload()).remote.provider)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        await rig.kimi.entered.wait()
        assert rig.store.records["kimi"].state == HALF_OPEN
        await one()  # the second worker runs while the probe is in flight
        rig.kimi.gate.set()
    assert sorted(results) == ["glm", "kimi"]
    assert len(rig.kimi.calls) == 1
    assert rig.store.claims == [("kimi", True)]
    assert rig.store.records["kimi"].state == CLOSED


class StaleStore(FakeBreakerStore):
    """A store whose first loads answer an old row: the window in which two workers race."""

    def __init__(self, stale: BreakerRecord, records: dict[str, BreakerRecord]) -> None:
        super().__init__(records)
        self.stale_loads = 2
        self.stale = stale

    async def load_breaker(self, provider: str) -> BreakerRecord | None:
        if provider == "kimi" and self.stale_loads:
            self.stale_loads -= 1
            return self.stale
        return await super().load_breaker(provider)


@pytest.mark.anyio
async def test_lost_claim_race_skips_provider() -> None:
    """A worker that saw a due breaker but lost the conditional claim does not call kimi."""
    held = BreakerRecord(state=HALF_OPEN, open_until=T0 - 5, probe_until=T0 + 40)
    store = StaleStore(BreakerRecord(state=OPEN, open_until=T0), {"kimi": held})
    rig = _rig(store=store)
    assert (await rig.upload()).remote.provider == "glm"
    assert store.claims == [("kimi", False)]
    assert rig.kimi.calls == []
    assert store.records["kimi"] == held


@pytest.mark.anyio
async def test_deadline_stops_retrying() -> None:
    """A retry that would end past the pass's deadline is not made; the file waits (parked
    with reason deadline), it is not quarantined."""
    rig = _rig(
        kimi=[Retryable("slow", status=429, retry_after=50.0)] * 2,
        policy=RetryPolicy(deadline=60.0),
    )
    with pytest.raises(Parked) as info:
        await rig.upload()
    assert info.value.reason == "deadline"
    assert info.value.detail.startswith("deadline passed")
    assert info.value.until == T0 + 50.0 + 15.0  # 2 sends: half the first 30 s ceiling
    assert rig.glm.calls == []


@pytest.mark.anyio
async def test_empty_budget_gives_up_without_retrying() -> None:
    """With no retry budget, a 503 is not retried on that provider."""
    rig = _rig(kimi=[_err503()], policy=RetryPolicy(budget_floor=0.0, budget_ratio=0.0))
    assert (await rig.upload()).remote.provider == "glm"
    assert rig.clock.slept == []
    assert rig.events.of("give_up") == [("give_up", "kimi", "budget_exhausted")]


@pytest.mark.anyio
async def test_absurd_record_is_clamped_and_saved_on_load() -> None:
    """A record pushed far into the future by a clock jump is clamped and written back."""
    rig = _rig(records={"kimi": BreakerRecord(state=OPEN, open_until=T0 + 10**7)})
    states = await rig.dispatcher.breaker_states()
    assert states["kimi"].open_until == T0 + 4320.0
    assert rig.store.records["kimi"].open_until == T0 + 4320.0


@pytest.mark.anyio
async def test_null_events_satisfies_the_protocol() -> None:
    """A Dispatcher wired with NullEvents retries, trips and uploads without any hook failing."""
    clock = FakeClock(T0)
    store = FakeBreakerStore()
    dispatcher = Dispatcher(
        {"kimi": FakeClient("kimi", [_err503(), _err503()])},
        LIMITS,
        store,
        {},
        {"kimi": BreakerConfig(consecutive_failures=3)},
        NullEvents(),
        clock=clock,
        sleep=clock.sleep,
        rand=lambda: 0.5,
    )
    result = await dispatcher.upload(
        preference=["kimi"],
        purposes={"kimi": "file-extract"},
        filename="a.pdf",
        size=3,
        content_type="application/pdf",
        open_file=lambda: io.BytesIO(b"pdf"),
        reconcile=lambda provider, purpose: _none(),
    )
    assert result.remote.provider == "kimi"
    assert clock.slept == [0.5, 1.0]
    assert store.records["kimi"].window == (True, True, False)


async def _none() -> RemoteFile | None:
    return None


def test_parked_message_names_when() -> None:
    """Parked says until when, or that only a reset helps."""
    assert str(Parked(math.inf, "auth_failed")) == "parked until a breaker reset: auth_failed"
    assert str(Parked(1234.4, "quota")) == "parked until 1234: quota"


@pytest.mark.anyio
async def test_cancelled_probe_frees_its_lease() -> None:
    """A probe cancelled mid-flight (shutdown) frees the lease at once instead of holding it."""
    rig = _rig(records={"kimi": BreakerRecord(state=OPEN, open_until=T0)})
    rig.kimi.gate = anyio.Event()  # never set: the probe hangs until cancelled
    async with anyio.create_task_group() as tg:
        tg.start_soon(rig.upload)
        await rig.kimi.entered.wait()
        assert rig.store.records["kimi"].probe_until == T0 + BreakerConfig().probe_lease
        tg.cancel_scope.cancel()
    rec = rig.store.records["kimi"]
    assert (rec.state, rec.probe_until) == (HALF_OPEN, None)
    rig.kimi.gate = None
    assert (await rig.upload()).remote.provider == "kimi"  # the next worker may probe now


@pytest.mark.anyio
async def test_provider_without_client_is_excluded_not_crashed() -> None:
    """A provider with limits but no client (not configured) is skipped; kimi takes the file."""
    clock = FakeClock(T0)
    kimi = FakeClient("kimi")
    dispatcher = Dispatcher(
        {"kimi": kimi},
        LIMITS,
        FakeBreakerStore(),
        {},
        {},
        ResilienceLog(),
        clock=clock,
        sleep=clock.sleep,
    )
    result = await dispatcher.upload(
        preference=["glm", "kimi"],
        purposes={},
        filename="a.pdf",
        size=3,
        content_type="application/pdf",
        open_file=lambda: io.BytesIO(b"pdf"),
        reconcile=lambda provider, purpose: _none(),
    )
    assert result.remote.provider == "kimi"
    assert len(kimi.calls) == 1


class CountingStore(FakeBreakerStore):
    """A FakeBreakerStore that records every load, by provider."""

    def __init__(self, records: dict[str, BreakerRecord] | None = None) -> None:
        super().__init__(records)
        self.loads: list[str] = []

    async def load_breaker(self, provider: str) -> BreakerRecord | None:
        self.loads.append(provider)
        return await super().load_breaker(provider)


_CLEAN = BreakerRecord(window=(False,) * 10, updated_at=T0 - 60)


@pytest.mark.anyio
async def test_closed_breaker_is_reused_within_the_ttl_and_reread_after_it() -> None:
    """Within closed_ttl a CLOSED breaker is not re-read; another process's OPEN is seen after."""
    store = CountingStore({"kimi": _CLEAN})
    rig = _rig(store=store)
    for _ in range(3):
        assert (await rig.upload(["kimi"])).remote.provider == "kimi"
    assert store.loads == ["kimi"]
    assert store.saves == []  # a success on an all-success window changes nothing to save
    assert store.records["kimi"] == _CLEAN
    store.records["kimi"] = BreakerRecord(state=OPEN, open_until=T0 + 600, reason="elsewhere")
    rig.clock.now += 1.0
    assert (await rig.upload()).remote.provider == "glm"
    assert store.loads.count("kimi") == 2
    assert len(rig.kimi.calls) == 3


@pytest.mark.anyio
async def test_open_breaker_is_reread_at_every_decision() -> None:
    """An OPEN breaker is never served from memory: a reset in the store is seen at once."""
    store = CountingStore({"kimi": BreakerRecord(state=OPEN, open_until=T0 + 600)})
    rig = _rig(store=store)
    for _ in range(2):
        assert (await rig.upload()).remote.provider == "glm"
    assert store.loads.count("kimi") == 2  # one routing look per file, none from memory
    store.records["kimi"] = BreakerRecord(reason="reset by operator", updated_at=T0)
    assert (await rig.upload()).remote.provider == "kimi"
    # The routing look reads the reset; the success (a new window entry) re-reads before saving.
    assert store.loads.count("kimi") == 4


@pytest.mark.anyio
async def test_a_failure_on_a_cached_closed_breaker_is_recorded_on_a_fresh_read() -> None:
    """A failure is never recorded onto the cached record: the store's newer row is the base."""
    store = CountingStore({"kimi": _CLEAN})
    rig = _rig(kimi=[_err503()], store=store)
    newer = BreakerRecord(window=(True,) * 3 + (False,) * 7, consecutive_failures=3)
    await rig.dispatcher.breaker_states()  # caches the clean record
    store.records["kimi"] = newer  # another process recorded failures meanwhile
    await rig.upload(["kimi"])
    first = store.saves[0][1]
    assert (first.window, first.consecutive_failures) == ((*newer.window[1:], True), 4)


def _throttled(retry_after: float | None = None) -> Throttled:
    return Throttled("max RPM: 3", provider="kimi", status=429, retry_after=retry_after)


@pytest.mark.anyio
async def test_throttled_spends_no_attempt_nor_budget_nor_breaker() -> None:
    """Five rate-limit answers on a provider allowed 1 attempt and no retry budget, whose
    breaker opens after 2 failures: each wait named is slept, the same provider is called
    again, and the breaker only sees the final success."""
    rig = _rig(
        kimi=[_throttled(2.0)] * 5,
        policy=RetryPolicy(attempts=1, budget_floor=0.0, budget_ratio=0.0),
        config=BreakerConfig(consecutive_failures=2),
    )
    result = await rig.upload(["kimi"])
    assert result.remote.provider == "kimi"
    assert rig.clock.slept == [2.0] * 5
    assert len(rig.kimi.calls) == 6
    assert rig.store.records["kimi"].window == (False,)
    assert rig.events.of("retry") == [("retry", "kimi", "throttled")] * 5
    assert rig.events.of("outcome")[0] == ("outcome", "kimi", "none", "throttled")


@pytest.mark.anyio
async def test_throttled_without_a_wait_backs_off() -> None:
    """A rate-limit answer naming no wait is retried after a growing full-jitter backoff."""
    rig = _rig(kimi=[_throttled(), _throttled()])
    assert (await rig.upload(["kimi"])).remote.provider == "kimi"
    assert rig.clock.slept == [0.5, 1.0]


@pytest.mark.anyio
async def test_long_throttle_parks_the_file_not_the_breaker() -> None:
    """A rate-limit wait past retry_after_cap parks the file until then (alone on kimi);
    the breaker is not opened."""
    rig = _rig(kimi=[_throttled(120.0)])
    with pytest.raises(Parked) as info:
        await rig.upload(["kimi"])
    assert (info.value.until, info.value.reason) == (T0 + 120.0, "throttled")
    assert rig.store.records.get("kimi", BreakerRecord()).state == CLOSED
    assert len(rig.kimi.calls) == 1


@pytest.mark.anyio
async def test_long_throttle_fails_over_to_the_next_provider() -> None:
    """A long rate-limit wait on kimi sends the file to glm at once."""
    rig = _rig(kimi=[_throttled(120.0)])
    assert (await rig.upload()).remote.provider == "glm"
    assert rig.clock.slept == []


@pytest.mark.anyio
async def test_throttled_past_the_deadline_waits_not_quarantined() -> None:
    """Rate-limit answers until the pass's deadline: the file is parked (deadline)."""
    rig = _rig(kimi=[_throttled(40.0)] * 3, policy=RetryPolicy(deadline=100.0))
    with pytest.raises(Parked) as info:
        await rig.upload(["kimi"])
    assert info.value.reason == "deadline"
    assert rig.clock.slept == [40.0, 40.0]


@pytest.mark.anyio
async def test_quota_until_parks_the_provider_until_the_reset() -> None:
    """A usage cap naming its reset time parks kimi exactly until then, and the file too."""
    rig = _rig(kimi=[QuotaExhausted("daily limit", until=T0 + 500.0)])
    with pytest.raises(Parked) as info:
        await rig.upload(name="a.py")
    assert (info.value.until, info.value.reason) == (T0 + 500.0, "quota")
    rec = rig.store.records["kimi"]
    assert (rec.state, rec.open_until, rec.reason) == (OPEN, T0 + 500.0, "quota")


@pytest.mark.anyio
async def test_balance_exhausted_tells_the_operator_to_top_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exhausted balance is logged as an error telling the operator to top up the account."""
    rig = _rig(kimi=[QuotaExhausted("insufficient balance", status=403, balance=True)])
    with pytest.raises(Parked):
        await rig.upload(name="a.py")
    [line] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "top up the account" in line.getMessage()
    assert "the API key is fine" in line.getMessage()


def _extract_failed() -> Permanent:
    return Permanent("extract task failed: failed", reason="extract_failed", status=500)


@pytest.mark.anyio
async def test_extract_failed_twice_is_quarantined_and_its_copies_deleted() -> None:
    """A file Kimi cannot extract is tried once more, then rejected as extract_failed; the
    copy each failed try left (found through the reconcile listing) is deleted."""
    rig = _rig(kimi=[_extract_failed(), _extract_failed()])
    rig.found = _remote("kimi", "a.py")
    with pytest.raises(RejectedFile) as info:
        await rig.upload(name="a.py")
    assert info.value.reason == "extract_failed"
    assert len(rig.kimi.calls) == 2
    assert rig.kimi.deleted == ["kimi-id", "kimi-id"]
    assert rig.reconciled == [("kimi", "file-extract")] * 2


@pytest.mark.anyio
async def test_extract_failed_once_then_success_uploads() -> None:
    """One extraction failure followed by a good try is an upload."""
    rig = _rig(kimi=[_extract_failed()])
    result = await rig.upload(name="a.py")
    assert result.transport == "http"
    assert len(rig.kimi.calls) == 2


@pytest.mark.anyio
async def test_unsure_ambiguity_never_fails_over_to_another_provider() -> None:
    """An ambiguous attempt on kimi that no listing can settle parks the file (unsure):
    glm, healthy, is never sent a second copy meanwhile."""
    rig = _rig(kimi=[Retryable("reset", ambiguous=True), _err503(), _err503()])

    async def unlistable(provider: str, purpose: str) -> RemoteFile | None:
        rig.reconciled.append((provider, purpose))
        raise Retryable("list failed", status=503)

    rig.reconcile = unlistable  # type: ignore[method-assign]
    with pytest.raises(Parked) as info:
        await rig.upload()
    assert (info.value.reason, info.value.until) == ("unsure", T0 + 1.5 + 5.0)
    assert rig.glm.calls == []
    assert len(rig.kimi.calls) == 1  # every later attempt only tried to list


@pytest.mark.anyio
async def test_an_unsure_file_is_never_given_up_on() -> None:
    """give_up_after passed long ago: a file whose attempt may be stored still only waits."""
    rig = _rig(kimi=[Retryable("reset", ambiguous=True)], policy=RetryPolicy(give_up_after=1.0))

    async def unlistable(provider: str, purpose: str) -> RemoteFile | None:
        raise Retryable("list failed", status=503)

    rig.reconcile = unlistable  # type: ignore[method-assign]
    with pytest.raises(Parked) as info:
        await rig.upload(["kimi"], first_tried=T0 - 86_400.0)
    assert info.value.reason == "unsure"


@pytest.mark.anyio
async def test_refused_by_one_failing_on_the_other_waits() -> None:
    """Kimi refuses the file for good, GLM fails transiently: GLM may take it later, so the
    file waits instead of being quarantined."""
    rig = _rig(kimi=[Permanent("no", reason="upload_rejected")], glm=[_err503()] * 3)
    with pytest.raises(Parked) as info:
        await rig.upload()
    assert info.value.reason == "attempts_exhausted"

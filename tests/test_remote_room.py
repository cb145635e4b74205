"""The account never above max_files / max_bytes: the admission rule (pure) and its async gate."""

from __future__ import annotations

import io
from typing import BinaryIO

import anyio
import pytest

from daemon.remote.admission import Admission, AdmittedClient
from daemon.remote.plan import RetentionLimits
from daemon.remote.room import PassOutcome, Usage, Verdict, admit, pass_room
from providers.errors import Retryable
from providers.types import RemoteFile, UploadResult

FILES3 = RetentionLimits(max_files=3)
BYTES100 = RetentionLimits(max_bytes=100)


# (known, sending, wanted, limits, passes here, fresh pass freed, expected verdict)
Case = tuple[Usage | None, Usage, Usage, RetentionLimits, bool, PassOutcome | None, Verdict]
FREED = PassOutcome(freed=True, short=False)
SHORT = PassOutcome(freed=False, short=True)
REACHED = PassOutcome(freed=False, short=False)


@pytest.mark.parametrize(
    "case",
    [
        # Room: known + sending + this one within both limits.
        (Usage(1, 10), Usage(1, 10), Usage(1, 10), FILES3, True, None, "send"),
        (Usage(2, 10), Usage(1, 10), Usage(1, 10), FILES3, True, None, "pass"),
        (Usage(1, 50), Usage(0, 0), Usage(1, 50), BYTES100, True, None, "send"),
        (Usage(1, 50), Usage(1, 1), Usage(1, 50), BYTES100, True, None, "pass"),
        # No pass has counted the account yet: wait for one.
        (None, Usage(0, 0), Usage(1, 1), FILES3, True, None, "pass"),
        # A pass that started after the upload began waiting freed something: another one.
        (Usage(3, 3), Usage(0, 0), Usage(1, 1), FILES3, True, FREED, "pass"),
        # It freed nothing while uploads are in flight: wait for one to end (then a pass).
        (Usage(0, 0), Usage(3, 3), Usage(1, 1), FILES3, True, REACHED, "settle"),
        (Usage(2, 2), Usage(1, 1), Usage(1, 1), FILES3, True, SHORT, "settle"),
        # It reached its target but the room was taken meanwhile: another pass.
        (Usage(3, 3), Usage(0, 0), Usage(1, 1), FILES3, True, REACHED, "pass"),
        # It fell short, none in flight (a full account of files inboxd did not upload).
        (Usage(3, 3), Usage(0, 0), Usage(1, 1), FILES3, True, SHORT, "send_anyway"),
        (None, Usage(0, 0), Usage(1, 1), FILES3, True, SHORT, "send_anyway"),
        # No passes run in this process: never wait for one.
        (Usage(3, 3), Usage(0, 0), Usage(1, 1), FILES3, False, None, "send_anyway"),
        # No count or size limit (age only, or nothing): no gate at all.
        (None, Usage(0, 0), Usage(1, 1), RetentionLimits(max_age_days=3), True, None, "send"),
        (Usage(10**6, 0), Usage(0, 0), Usage(1, 1), RetentionLimits(), False, None, "send"),
    ],
)
def test_admit(case: Case) -> None:
    """An upload is sent only when the known usage, the uploads in flight and itself fit the
    limits; otherwise it waits for a pass, or (a fresh pass freed nothing) for an upload in
    flight to end; it goes anyway only when a pass fell short with none in flight, or no
    passes run here."""
    known, sending, wanted, limits, passes, fresh, expected = case
    assert admit(known, sending, wanted, limits, passes=passes, fresh=fresh) == expected


class Account:
    """A fake provider account: a file count whose peak the test reads; ``foreign`` of the
    files are not inboxd's (a pass never deletes them)."""

    name = "kimi"

    def __init__(self, files: int, *, foreign: int = 0) -> None:
        self.files = files
        self.foreign = foreign
        self.peak = files
        self.uploads = 0
        self.fail_next: Exception | None = None
        self.gate = anyio.Event()  # uploads hold here until the test opens it

    async def upload(
        self, *, filename: str, fileobj: BinaryIO, size: int, purpose: str, content_type: str
    ) -> UploadResult:
        await self.gate.wait()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.files += 1
        self.uploads += 1
        self.peak = max(self.peak, self.files)
        remote = RemoteFile("kimi", f"file-{self.uploads}", filename, size, 0, purpose)
        return UploadResult(remote=remote, transport="fake")

    async def list_files(self, purpose: str | None = None) -> list[RemoteFile]:
        raise AssertionError("not listed in this test")

    async def delete(self, file_id: str) -> None:
        raise AssertionError("not deleted in this test")

    async def aclose(self) -> None:
        return None


class FakePruner:
    """Runs a 'pass' per request: frees room for what the admission wants, own files only."""

    def __init__(self, account: Account, admission: Admission, limits: RetentionLimits) -> None:
        self.account = account
        self.admission = admission
        self.limits = limits
        self.passes = 0
        self.tasks: anyio.abc.TaskGroup | None = None

    def request(self, provider: str) -> bool:
        assert self.tasks is not None
        self.tasks.start_soon(self.run, provider)
        return True

    async def run(self, provider: str) -> None:
        seq = self.admission.pass_started(provider)
        await anyio.lowlevel.checkpoint()
        self.passes += 1
        assert self.limits.max_files is not None
        target = max(self.limits.max_files - self.admission.wanted(provider).files, 0)
        own = self.account.files - self.account.foreign
        freed = min(max(self.account.files - target, 0), own)
        self.account.files -= freed
        after = Usage(self.account.files, self.account.files)
        short = self.account.files > target
        self.admission.pass_ended(provider, seq, after, freed=freed > 0, short=short)


async def _send(client: AdmittedClient, n: int) -> None:
    await client.upload(
        filename=f"f{n}.txt",
        fileobj=io.BytesIO(b"x"),
        size=1,
        purpose="file-extract",
        content_type="text/plain",
    )


@pytest.mark.parametrize(
    ("wanted", "limits", "room"),
    [
        # no upload wants room (a periodic pass): the pass keeps the account at the limits
        (Usage(0, 0), RetentionLimits(max_files=900), (0, 0)),
        # one upload waits: the pass frees 5 % of max_files (45), not just the one
        (Usage(1, 10), RetentionLimits(max_files=900), (45, 10)),
        # more waiting than the slack: what they need
        (Usage(60, 600), RetentionLimits(max_files=900), (60, 600)),
        # a byte limit: 5 % of it (rounded up), and the files they need
        (Usage(2, 10), RetentionLimits(max_bytes=1001), (2, 51)),
        # both limits
        (Usage(1, 10), RetentionLimits(max_files=10, max_bytes=100), (1, 10)),
    ],
)
def test_pass_room_frees_a_slack_for_waiting_uploads(
    wanted: Usage, limits: RetentionLimits, room: tuple[int, int]
) -> None:
    """A pass asked for by uploads leaves at least 5 % of each limit free (so a busy account
    is listed once per ~5 % of uploads), a periodic one none beyond the limits."""
    assert pass_room(wanted, limits) == room


@pytest.mark.anyio
async def test_concurrent_uploads_never_take_the_account_over_max_files() -> None:
    """Twenty uploads at once on an account of 3 files with max_files = 3: passes make room
    before them, the account never holds more than 3 files and every upload is sent once."""
    limits = RetentionLimits(max_files=3)
    account = Account(3)
    admission = Admission({"kimi": limits})
    pruner = FakePruner(account, admission, limits)
    client = AdmittedClient(account, admission)
    async with anyio.create_task_group() as tg:
        pruner.tasks = tg
        admission.request = pruner.request
        await pruner.run("kimi")  # the start pass counts the account
        async with anyio.create_task_group() as uploads:
            for n in range(20):
                uploads.start_soon(_send, client, n)
            await anyio.wait_all_tasks_blocked()
            account.gate.set()
    assert (account.uploads, account.peak, account.files) == (20, 3, 3)
    assert admission.sending["kimi"] == Usage(0, 0)
    assert admission.known["kimi"] == Usage(3, 3)


@pytest.mark.anyio
async def test_an_account_full_of_foreign_files_lets_the_upload_go() -> None:
    """When a pass frees nothing (every file is someone else's), the waiting upload is sent
    anyway after exactly one pass (the provider's quota answer parks it): no deadlock."""
    limits = RetentionLimits(max_files=3)
    account = Account(3, foreign=3)
    admission = Admission({"kimi": limits})
    pruner = FakePruner(account, admission, limits)
    client = AdmittedClient(account, admission)
    account.gate.set()
    async with anyio.create_task_group() as tg:
        pruner.tasks = tg
        admission.request = pruner.request
        await pruner.run("kimi")
        with anyio.fail_after(10):
            await _send(client, 0)
    assert (pruner.passes, account.uploads) == (2, 1)


@pytest.mark.anyio
async def test_a_failed_upload_gives_its_room_back_an_ambiguous_one_keeps_it() -> None:
    """A refused upload frees its reservation; one of unknown outcome counts as stored (the
    next pass's listing settles it); a stored one is counted once."""
    limits = RetentionLimits(max_files=10)
    account = Account(0)
    account.gate.set()
    admission = Admission({"kimi": limits})
    admission.pass_ended(
        "kimi", admission.pass_started("kimi"), Usage(0, 0), freed=False, short=False
    )
    client = AdmittedClient(account, admission)
    account.fail_next = Retryable("bad gateway", provider="kimi", status=502)
    with pytest.raises(Retryable):
        await _send(client, 0)
    assert admission.known["kimi"] == Usage(0, 0)
    account.fail_next = Retryable("reset after the body", provider="kimi", ambiguous=True)
    with pytest.raises(Retryable):
        await _send(client, 1)
    assert admission.known["kimi"] == Usage(1, 1)
    await _send(client, 2)
    assert admission.known["kimi"] == Usage(2, 2)
    assert admission.sending["kimi"] == Usage(0, 0)


@pytest.mark.anyio
async def test_a_reload_that_drops_the_limit_lets_waiting_uploads_go() -> None:
    """An upload waiting for room (no pass answers) goes once a reload removes max_files
    and wakes the waiters: nothing waits on a limit that is gone."""
    limits = {"kimi": RetentionLimits(max_files=3)}
    account = Account(3)
    account.gate.set()
    admission = Admission(limits)
    admission.pass_ended(
        "kimi", admission.pass_started("kimi"), Usage(3, 3), freed=False, short=False
    )
    requested: list[str] = []

    def request(provider: str) -> bool:
        requested.append(provider)  # no pass runs: only the reload can let it go
        return True

    admission.request = request
    client = AdmittedClient(account, admission)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_send, client, 0)
            await anyio.wait_all_tasks_blocked()
            assert (requested, account.uploads) == (["kimi"], 0)
            limits["kimi"] = RetentionLimits()
            admission.wake()
    assert account.uploads == 1

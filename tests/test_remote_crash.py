"""A retention pass killed between its steps: the next pass finishes it, nothing twice.

The crash is a failing step injected after a durable write (the intent, or the DELETE
before its outcome), or a pass process SIGKILLed there; the next pass opens the state file
afresh, as a restarted daemon does.
Real emulator on loopback, real SQLite state file, real receipts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from daemon.config.settings import Settings
from daemon.remote.deletions import Checkpoint, no_checkpoint
from daemon.remote.ledger import RemoteLedger
from daemon.remote.plan import RetentionLimits
from daemon.remote.prune import Pruner
from daemon.runtime.wiring import build_clients
from daemon.state.store import Store
from handlers.archive import receipt_path
from providers.emulator.server import Emulator
from tests.harness import running

pytestmark = pytest.mark.anyio

NAMES = [f"f{n}.txt" for n in range(4)]
REPO = Path(__file__).resolve().parent.parent


class Crash(Exception):
    """The process dies here (everything committed before it stays)."""


def crash_at(step: str, nth: int) -> Checkpoint:
    """A checkpoint that crashes at the ``nth`` time ``step`` is reached."""
    seen = 0

    async def checkpoint(reached: str) -> None:
        nonlocal seen
        if reached == step:
            seen += 1
            if seen == nth:
                raise Crash(f"killed after {step} #{nth}")

    return checkpoint


@dataclass
class Account:
    emu: Emulator
    settings: Settings
    done: Path


@asynccontextmanager
async def uploaded(tmp_path: Path) -> AsyncIterator[Account]:
    """Four files uploaded and archived one by one (oldest f0), then the daemon stopped."""
    async with Emulator() as emu:
        async with running(tmp_path, emulator=emu) as run:
            for name in NAMES:
                (run.inbox() / name).write_bytes(name.encode() * 3)
                [seen] = await run.wait_for(1)
                assert seen.result.outcome == "uploaded"
            settings, done = run.settings, run.done()
        yield Account(emu, settings, done)


async def pass_over(account: Account, checkpoint: Checkpoint = no_checkpoint) -> None:
    """One pass with max_files = 2 on a freshly opened state file (a started daemon)."""
    clients = build_clients(account.settings)
    try:
        async with Store.open(account.settings.state_file) as store:
            pruner = Pruner(
                store=store,
                clients=clients,
                limits={"kimi": RetentionLimits(max_files=2)},
                skew=account.settings.reconcile_skew,
                checkpoint=checkpoint,
            )
            await pruner.run("kimi")
    finally:
        for client in clients.values():
            await client.aclose()


def receipts(account: Account) -> dict[str, dict[str, object]]:
    out = {}
    for name in NAMES:
        data = json.loads(receipt_path(account.done / name).read_text("utf-8"))
        assert isinstance(data, dict)
        out[name] = data
    return out


async def assert_consistent(account: Account) -> None:
    """Receipts say remote_deleted_at exactly for the copies gone; no DELETE was sent twice
    nor to a missing file; no deletion is left open."""
    on_account = {f.id for f in account.emu.files()}
    for name, data in receipts(account).items():
        assert ("remote_deleted_at" in data) == (data["file_id"] not in on_account), name
    counts = account.emu.counts()["kimi"]
    assert (counts.get("delete.200", 0), counts.get("delete.404", 0)) == (2, 0)
    async with Store.open(account.settings.state_file) as store:
        assert await RemoteLedger(store).open_intents("kimi") == []


@pytest.mark.parametrize(("step", "nth"), [("intent", 1), ("intent", 2), ("deleted", 1)])
async def test_a_pass_killed_between_steps_is_finished_by_the_next(
    tmp_path: Path, step: str, nth: int
) -> None:
    """Killed after an intent or after a DELETE, the next pass deletes exactly the two
    oldest copies, each once, and every receipt tells the truth about its copy."""
    async with uploaded(tmp_path) as account:
        with pytest.raises(Crash):
            await pass_over(account, crash_at(step, nth))
        await pass_over(account)
        kept = {f.filename for f in account.emu.files()}
        assert kept == {"f2.txt", "f3.txt"}
        await assert_consistent(account)


async def test_a_crash_after_the_delete_records_gone_without_a_second_delete(
    tmp_path: Path,
) -> None:
    """A DELETE whose outcome was never written is settled from the listing: the copy is
    gone, so the deletion is recorded ``gone`` and no second DELETE is sent."""
    async with uploaded(tmp_path) as account:
        with pytest.raises(Crash):
            await pass_over(account, crash_at("deleted", 1))
        assert account.emu.counts()["kimi"].get("delete.200", 0) == 1
        await pass_over(account)
        async with Store.open(account.settings.state_file) as store:
            recorded = await RemoteLedger(store).deletions("kimi")
        outcomes = sorted((d.reason, d.outcome) for d in recorded.values())
        assert outcomes == [("max_files", "deleted"), ("max_files", "gone")]
        await assert_consistent(account)


# A separate process runs one pass and SIGKILLs itself at the named step: no cleanup at all,
# only what SQLite made durable and what the emulator received survives.
_KILLED_PASS = """
import os, signal, sys
from pathlib import Path

import anyio

from daemon.config.settings import load_settings
from daemon.remote.config import limits_for
from daemon.remote.prune import Pruner
from daemon.runtime.wiring import build_clients
from daemon.state.store import Store

step, nth = sys.argv[2], int(sys.argv[3])


async def main() -> None:
    settings = load_settings(Path(sys.argv[1]))
    seen = 0

    async def checkpoint(reached: str) -> None:
        nonlocal seen
        if reached == step:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    async with Store.open(settings.state_file) as store:
        pruner = Pruner(
            store=store,
            clients=build_clients(settings),
            limits={"kimi": limits_for(settings, "kimi")},
            skew=settings.reconcile_skew,
            checkpoint=checkpoint,
        )
        await pruner.run("kimi")


anyio.run(main)
"""


async def _pass_in_process(account: Account, config: Path, step: str, nth: int) -> int:
    env = {**os.environ, "MOONSHOT_API_KEY": account.emu.key("kimi")}
    env["PYTHONPATH"] = str(REPO)
    done = await anyio.run_process(
        [sys.executable, "-c", _KILLED_PASS, str(config), step, str(nth)],
        env=env,
        check=False,
    )
    return done.returncode


@pytest.mark.parametrize(("step", "nth"), [("intent", 2), ("deleted", 2)])
async def test_a_pass_sigkilled_mid_deletion_is_finished_by_the_next_process(
    tmp_path: Path, step: str, nth: int
) -> None:
    """A pass process SIGKILLed after its second intent or second DELETE: the next process
    deletes exactly the two oldest copies, each once, and every receipt tells the truth."""
    async with uploaded(tmp_path) as account:
        settings = account.settings
        config = tmp_path / "config.toml"
        config.write_text(
            f'state_dir = "{settings.state_dir}"\n'
            f"reconcile_skew = {settings.reconcile_skew}\n"
            f'[[inbox]]\nname = "in"\npath = "{settings.inbox[0].path}"\nproviders = ["kimi"]\n'
            f'[providers.kimi]\nbase_url = "{settings.providers.kimi.base_url}"\n'
            'transports = ["openai", "http"]\n'
            "[providers.kimi.retention]\nmax_files = 2\n"
        )
        assert await _pass_in_process(account, config, step, nth) == -signal.SIGKILL
        assert await _pass_in_process(account, config, "never", 1) == 0
        assert {f.filename for f in account.emu.files()} == {"f2.txt", "f3.txt"}
        await assert_consistent(account)

"""Retention passes SIGKILLed in a real ``inboxd run``, restarted: nothing deleted twice,
nothing deleted that a receipt still claims.

The daemon is a real subprocess (``python -m daemon run``); the emulator runs in the test
process and outlives every daemon. The kill moments are points of progress: right after the
emulator received the k-th DELETE (so k deletion intents are in the ledger, and the k-th
outcome may not be), never a wall-clock guess.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections import Counter
from pathlib import Path

import anyio
import pytest
import watchfiles
from anyio.abc import Process

from daemon.remote.ledger import RemoteLedger
from daemon.state.store import Store
from handlers.archive import receipt_path
from providers.emulator.server import Emulator
from tests.harness import start_inboxd

# Four starts of a real process (imports, recovery listings) take a while on a loaded
# machine: the bounds below only stop a hung run, they time nothing.
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(900)]

FILES = 150
MAX_FILES = 40
KILL_AT = (5, 30, 62)  # cumulative DELETEs received by the emulator when each SIGKILL lands


def _config(tmp: Path, url: str) -> Path:
    text = f"""
state_dir = "{tmp / "state"}"
settle_seconds = 0.05
rescan_interval = 2.0
shutdown_grace = 5.0

[metrics]
enabled = false

[providers.kimi]
base_url = "{url}"
transports = ["openai", "http"]
timeout = 20

[providers.kimi.retention]
max_files = {MAX_FILES}

[providers.kimi.retry]
base = 0.01
cap = 0.05

[[inbox]]
name = "in"
path = "{tmp / "in"}"
providers = ["kimi"]
"""
    path = tmp / "cfg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _empty(folder: Path) -> bool:
    return not any(folder.iterdir())


async def _inbox_empty(folder: Path) -> None:
    """Return once no file is left in ``folder`` (checked at every change, and every 0.5 s)."""
    async for _ in watchfiles.awatch(folder, rust_timeout=500, yield_on_timeout=True):
        if _empty(folder):
            return


async def test_sigkill_during_retention_passes(tmp_path: Path) -> None:
    """150 files through max_files = 40, the daemon SIGKILLed three times while passes
    delete: no file is deleted twice, every receipt without remote_deleted_at names a file
    the account still holds, every file is archived once, and the account never held more
    than 40 files."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    contents = {f"f{i:03}.txt": f"file {i}\n".encode() for i in range(FILES)}
    for name, data in contents.items():
        (inbox / name).write_bytes(data)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(str(tmp_path / "notify"))
    log = tmp_path / "daemon.log"
    async with Emulator() as emu:
        cfg = _config(tmp_path, emu.base_url("kimi"))
        env = {
            **os.environ,
            "MOONSHOT_API_KEY": emu.key("kimi"),
            "NOTIFY_SOCKET": str(tmp_path / "notify"),
        }
        procs: list[Process] = []
        try:
            for k in KILL_AT:
                proc = await start_inboxd(cfg, env, sock, log, procs)
                with anyio.fail_after(300):
                    await emu.wait_count("kimi", "delete.200", k)
                proc.send_signal(signal.SIGKILL)
                with anyio.fail_after(120):
                    assert await proc.wait() == -signal.SIGKILL
            proc = await start_inboxd(cfg, env, sock, log, procs)
            with anyio.fail_after(300):
                await _inbox_empty(inbox)
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(120):
                assert await proc.wait() == 0
        except BaseException:
            print(log.read_text(encoding="utf-8", errors="replace")[-20000:])
            raise
        finally:
            sock.close()
            for leftover in procs:  # a failed run must not leave a daemon behind
                if leftover.returncode is None:
                    leftover.kill()
                    with anyio.move_on_after(10, shield=True):
                        await leftover.wait()
        on_account = {f.id for f in emu.files()}
        deletes = Counter(emu.delete_log("kimi"))
        peak = emu.peak_files("kimi")
        stored = emu.stored_ever("kimi")
    assert deletes.most_common(1)[0][1] == 1  # no file deleted twice
    assert sum(deletes.values()) >= KILL_AT[-1]  # the kills fell while passes deleted
    done = tmp_path / "in.done"
    wrong = []
    for name, data in contents.items():
        assert (done / name).read_bytes() == data
        receipt = json.loads(receipt_path(done / name).read_text(encoding="utf-8"))
        # kept: still on the account; marked deleted: gone from it
        if ("remote_deleted_at" in receipt) == (receipt["file_id"] in on_account):
            wrong.append((name, receipt["file_id"], "remote_deleted_at" in receipt))
    if wrong:
        print(log.read_text(encoding="utf-8", errors="replace")[-20000:])
        async with Store.open(tmp_path / "state" / "inboxd.sqlite3") as store:
            for name, file_id, _ in wrong:
                print(
                    name,
                    [
                        dict(r)
                        for r in await store.fetch(
                            "SELECT * FROM ledger WHERE relpath = ?", (name,)
                        )
                    ],
                )
                print(
                    file_id,
                    [
                        dict(r)
                        for r in await store.fetch(
                            "SELECT * FROM remote_deletions WHERE file_id = ?", (file_id,)
                        )
                    ],
                )
    assert wrong == []
    assert len(stored) == len({f.sha256 for f in stored}) == FILES  # each uploaded once
    assert peak <= MAX_FILES
    assert not (tmp_path / "in.quarantine").exists() or not any(
        (tmp_path / "in.quarantine").iterdir()
    )
    async with Store.open(tmp_path / "state" / "inboxd.sqlite3") as store:
        assert await RemoteLedger(store).open_intents("kimi") == []

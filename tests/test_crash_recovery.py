"""Crash recovery: the daemon as a real subprocess, SIGKILLed at random moments and restarted.

The emulator runs in the test process (it outlives every daemon), with accept-then-drop and
reset faults on. The kill moments are points of progress (after the emulator holds k more
files, k seeded-random), never wall-clock guesses, so the chaos lands mid-run on any machine.
Whatever the kill moments, every file must end up stored exactly once (the emulator's ground
truth, by sha256), archived with its receipt, and nothing may be left in the inboxes or in
quarantine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import signal
import socket
from pathlib import Path

import anyio
import pytest
import watchfiles
from anyio.abc import Process

from providers.emulator.server import Emulator
from tests.harness import ledger_rows, read_sidecar, sha, start_inboxd

# Eight starts (imports, recovery listings) take minutes on a loaded 2-core machine: the
# bounds below only stop a hung run, they time nothing.
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(900)]

# Six SIGKILLs, and one graceful SIGTERM among them (in-flight uploads finish, exit 0).
STOPS = (signal.SIGKILL,) * 3 + (signal.SIGTERM,) + (signal.SIGKILL,) * 3
# Another seed replays other kill moments: INBOXD_CRASH_SEED=7 pytest tests/test_crash_recovery.py
SEED = int(os.environ.get("INBOXD_CRASH_SEED", "20261125"))
# GLM keeps at most 100 files per purpose (provider-facts.md): 410 + 90 = 500 files; each
# stop comes after 1..STEP more files are stored, so all seven fall before the last file.
INBOXES = {"kin": "kimi", "gin": "glm"}
FILES = {"kin": 410, "gin": 90}
STEP = 60


def _config(tmp: Path, urls: dict[str, str]) -> Path:
    sections = []
    for provider, transports in (("kimi", '["openai", "http"]'), ("glm", '["zhipuai", "http"]')):
        sections.append(
            f"""
[providers.{provider}]
base_url = "{urls[provider]}"
transports = {transports}
timeout = 20

[providers.{provider}.retry]
attempts = 12
base = 0.01
cap = 0.05
budget_ratio = 1.0
budget_floor = 10000

[providers.{provider}.breaker]
consecutive_failures = 10000
min_calls = 10000
"""
        )
    inboxes = "".join(
        f"""
[[inbox]]
name = "{name}"
path = "{tmp / name}"
providers = ["{provider}"]
"""
        for name, provider in INBOXES.items()
    )
    text = f"""
state_dir = "{tmp / "state"}"
settle_seconds = 0.05
rescan_interval = 2.0
shutdown_grace = 5.0

[metrics]
enabled = false

[log]
level = "info"
{"".join(sections)}
{inboxes}
"""
    path = tmp / "cfg.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def _stored(emu: Emulator, at_least: int, proc: Process) -> int:
    """Return the emulator's file count once it is ``at_least`` (polled: the emulator has no
    event to wait on); fails if the daemon exits first."""
    while (count := len(emu.files())) < at_least:
        assert proc.returncode is None, f"daemon exited ({proc.returncode}) before the kill"
        await anyio.sleep(0.005)
    return count


async def _inboxes_empty(tmp: Path) -> None:
    """Return once no file is left in any inbox (checked at every change, and every 0.5 s)."""
    folders = [tmp / name for name in INBOXES]
    async for _ in watchfiles.awatch(*folders, rust_timeout=500, yield_on_timeout=True):
        if not any(any(folder.iterdir()) for folder in folders):
            return


async def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    """500 files, 6 SIGKILLs (and a SIGTERM) at seeded-random points of progress, restarts
    after each: every file is stored exactly once, archived with its receipt, none left behind."""
    rng = random.Random(SEED)
    contents: dict[Path, bytes] = {}
    for name in INBOXES:
        (tmp_path / name).mkdir()
        for i in range(FILES[name]):
            data = f"{name} file {i}\n".encode() * rng.randint(1, 400)
            path = tmp_path / name / f"{name}-{i:03}.txt"
            path.write_bytes(data)
            contents[path] = data
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(str(tmp_path / "notify"))
    log = tmp_path / "daemon.log"
    async with Emulator(faults="all:drop@0.05,reset@0.05", seed=SEED) as emu:
        cfg = _config(tmp_path, {p: emu.base_url(p) for p in ("kimi", "glm")})
        env = {
            **os.environ,
            "MOONSHOT_API_KEY": emu.key("kimi"),
            "ZHIPUAI_API_KEY": emu.key("glm"),
            "NOTIFY_SOCKET": str(tmp_path / "notify"),
        }
        procs: list[Process] = []
        try:
            stored_at_kill = []
            for signum in STOPS:
                proc = await start_inboxd(cfg, env, sock, log, procs)
                # The chaos schedule itself: stop after a seeded-random number of new files.
                target = len(emu.files()) + rng.randint(1, STEP)
                with anyio.fail_after(300):
                    await _stored(emu, target, proc)
                proc.send_signal(signum)
                with anyio.fail_after(120):
                    code = await proc.wait()
                assert code == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
                stored_at_kill.append(len(emu.files()))
            proc = await start_inboxd(cfg, env, sock, log, procs)
            with anyio.fail_after(300):
                await _inboxes_empty(tmp_path)
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
        files = emu.files()
    (tmp_path / "remote.json").write_text(
        json.dumps([dataclasses.asdict(f) for f in files], indent=1), encoding="utf-8"
    )  # kept beside the daemon's log for a post-mortem
    # The kills really fell in the middle of the work.
    assert stored_at_kill[0] < stored_at_kill[-1] < len(contents), stored_at_kill
    by_sha: dict[str, list[str]] = {}
    for f in files:
        by_sha.setdefault(f.sha256, []).append(f.id)
    twice = {k: v for k, v in by_sha.items() if len(v) > 1}
    assert twice == {}
    assert set(by_sha) == {sha(d) for d in contents.values()}
    assert len(files) == len(contents)
    remote_ids = {f.sha256: f.id for f in files}
    for path, data in contents.items():
        done = path.parent.with_name(path.parent.name + ".done") / path.name
        assert hashlib.sha256(done.read_bytes()).hexdigest() == sha(data)
        receipt = read_sidecar(done.with_name(done.name + ".upload.json"))
        assert receipt["file_id"] == remote_ids[sha(data)]
    for name in INBOXES:
        assert list((tmp_path / name).iterdir()) == []
        assert not (tmp_path / f"{name}.quarantine").exists() or not any(
            (tmp_path / f"{name}.quarantine").iterdir()
        )
        # A kill inside write_json_atomic may leave its hidden temp file (never a receipt).
        done_names = {
            p.name for p in (tmp_path / f"{name}.done").iterdir() if not p.name.startswith(".")
        }
        expected = {p.name for p in contents if p.parent.name == name}
        assert done_names == expected | {n + ".upload.json" for n in expected}
    rows = await ledger_rows(tmp_path / "state" / "inboxd.sqlite3")
    assert len(rows) == len(contents)
    assert {r.state for r in rows} == {"done"}
    assert {r.file_id for r in rows} == set(remote_ids.values())

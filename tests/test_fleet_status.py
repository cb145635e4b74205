"""``inboxd status`` names this host, the store it opened (and its schema) and the fleet: each
host's files in progress."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from daemon.commands import run_status
from daemon.config.settings import Settings
from daemon.state.store import Store


@pytest.mark.anyio
async def test_status_shows_host_store_and_fleet(tmp_path: Path) -> None:
    """Host a's status over a state file where a has one file in progress and b two (b's
    lease ran out): the JSON and the text name host a, the SQLite store with schema v5, and
    a 1 live, b 2 not live."""
    settings = Settings(state_dir=tmp_path, host_id="host-a")
    async with (
        Store.open(settings.state_file, host="host-a") as a,
        Store.open(settings.state_file, host="host-b", lease=-1.0) as b,
    ):
        await a.begin("in", "x.txt", size=1, mtime_ns=1)
        await b.begin("in", "y.txt", size=1, mtime_ns=1)
        row = await b.begin("in", "z.txt", size=1, mtime_ns=1)
        await b.transition(row.id, "uploading", provider="kimi", purpose="file-extract")
        done = await a.begin("in", "w.txt", size=1, mtime_ns=1)
        await a.transition(done.id, "done", provider="kimi", file_id="f1")
    out = io.StringIO()
    assert await run_status(settings, as_json=True, remote=False, out=out, now=0.0) == 0
    report = json.loads(out.getvalue())
    assert {k: report[k] for k in ("host", "store", "schema_version", "fleet")} == {
        "host": "host-a",
        "store": f"sqlite {settings.state_file}",
        "schema_version": 5,
        "fleet": {
            "host-a": {"active": 1, "live": True},
            "host-b": {"active": 2, "live": False},
        },
    }
    out = io.StringIO()
    await run_status(settings, as_json=False, remote=False, out=out, now=0.0)
    assert out.getvalue().splitlines()[1:4] == [
        "host: host-a",
        f"store: sqlite {settings.state_file} (schema v5)",
        "files in progress by host: host-a 1, host-b 2 (lease ran out)",
    ]

"""Ready means ready: once the daemon says READY, its first uploads import nothing more.

Run in a fresh interpreter (other tests' imports would mask a lazy import): the daemon runs
in-process against the emulator with one Kimi inbox (openai SDK) and one GLM inbox (zhipuai
SDK); the modules imported between READY and the first two archived files are reported.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from providers.emulator.server import Emulator
from tests.fakes import missing
from tests.rigs import chain_client, make_transport, upload

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = """
import json, sys, anyio
from pathlib import Path
from tests.harness import running

INBOXES = ({"name": "k", "providers": ["kimi"]}, {"name": "g", "providers": ["glm"]})

async def main(root):
    async with running(root, inboxes=INBOXES) as run:
        assert {m for m in ("openai", "zhipuai") if m in sys.modules} == {"openai", "zhipuai"}
        before = set(sys.modules)
        (run.inbox("k") / "a.txt").write_bytes(b"first kimi upload")
        (run.inbox("g") / "b.txt").write_bytes(b"first glm upload")
        outcomes = sorted(s.result.outcome for s in await run.wait_for(2, limit=120))
        new = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in SDKS)
        print(json.dumps({"outcomes": outcomes, "new": new}))

SDKS = {"openai", "zhipuai"}
anyio.run(main, Path(sys.argv[1]))
"""


def test_the_sdks_are_imported_and_built_before_ready(tmp_path: Path) -> None:
    """After READY the openai and zhipuai SDKs are already imported and no module of theirs is
    imported by the first Kimi and GLM uploads (a fresh interpreter, real emulator)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"outcomes": ["uploaded", "uploaded"], "new": []}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A fresh emulator."""
    async with Emulator() as running:
        yield running


@pytest.mark.anyio
async def test_prepare_with_a_missing_sdk_leaves_the_fallback_to_the_first_call(
    emu: Emulator,
) -> None:
    """prepare() with a missing zhipuai neither raises nor imports it again later: the first
    upload falls back to the next transport, exactly as if it had not been prepared."""
    async with chain_client(
        "glm",
        make_transport("glm", "zhipuai", emu, importer=missing("zhipuai")),
        make_transport("glm", "openai", emu, importer=importlib.import_module),
    ) as (client, fallbacks):
        client.prepare()
        assert fallbacks.hops() == []
        result = await upload(client)
        assert result.transport == "openai"
        assert fallbacks.hops() == [("glm", "zhipuai", "openai")]

"""Where inboxd's CPU per file goes: the throughput bench's work, taken apart.

Each part runs in a fresh child process (CPU = that process's user + sys, all threads) over
``--files`` distinct 16 KiB ``.txt`` files, ``--concurrency`` at a time, against the emulator
in another process (quotas lifted; loopback only):

- ``upload-openai`` / ``upload-http``: the bare Kimi client (``build_client``, one transport)
  uploading each file: the provider call alone.
- ``pipeline-local``: ``handlers.pipeline.Pipeline`` with a real state file, real folders
  and a stand-in uploader that records the intent and answers at once: open, validate,
  hash, four ledger writes, the archive move and receipt. No network.
- ``pipeline``: the same with the real dispatcher and the default Kimi chain (openai SDK):
  everything the daemon does for a file except watching and settling.

The daemon itself (``bench/throughput.py``) adds the watcher, the settle step and the
workers' bookkeeping; its CPU per file minus ``pipeline`` is their cost.

    .venv/bin/python bench/cpu_breakdown.py [--files 3000] [--runs 3] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import EmulatorProc, machine
from throughput import SIZE, make_files

PARTS = ("upload-openai", "upload-http", "pipeline-local", "pipeline")


class InstantUploader:
    """The dispatcher's place in the pipeline, minus the network: intent, then stored."""

    def __init__(self) -> None:
        self.count = 0

    async def upload(
        self,
        *,
        preference: Sequence[str],
        purposes: Mapping[str, str],
        filename: str,
        size: int,
        content_type: str,
        open_file: Callable[[], BinaryIO],
        before_attempt: Callable[[str, str], Awaitable[None]],
        reconcile: Callable[[str, str], Awaitable[object]],
        first_tried: float | None = None,
        attempts: int = 0,
    ) -> object:
        from providers.types import RemoteFile, UploadResult

        provider = preference[0]
        await before_attempt(provider, purposes[provider])
        self.count += 1
        remote = RemoteFile(
            provider, f"file-{self.count}", filename, size, time.time(), purposes[provider]
        )
        return UploadResult(remote=remote, transport="instant")


async def _run_part(spec: dict[str, Any], root: Path) -> tuple[float, float]:
    """(wall s, CPU s) of ``spec["part"]`` over ``spec["n"]`` files in this process."""
    import anyio

    part, n, concurrency = spec["part"], spec["n"], spec["concurrency"]
    urls, keys = spec["urls"], spec["keys"]

    from daemon.config.settings import InboxSettings, Settings
    from daemon.runtime.wiring import build_clients, build_dispatcher, build_plans
    from daemon.state.store import Store
    from handlers.budget import ByteBudget
    from handlers.pipeline import Pipeline, Uploader
    from providers.dispatch import NullEvents
    from providers.factory import build_client

    inbox = root / "in"
    paths = make_files(inbox, n)
    queue = list(reversed(paths))

    async def workers(job: Callable[[Path], Awaitable[object]]) -> tuple[float, float]:
        async def worker() -> None:
            while queue:
                await job(queue.pop())

        cpu0, start = time.process_time(), time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        return time.monotonic() - start, time.process_time() - cpu0

    if part.startswith("upload-"):
        client = build_client(
            "kimi",
            base_url=urls["kimi"],
            api_key=keys["kimi"],
            transports=[part.removeprefix("upload-")],
            timeout=60,
            connect_timeout=10,
        )

        async def upload(path: Path) -> None:
            with path.open("rb") as fh:
                await client.upload(
                    filename=path.name,
                    fileobj=fh,
                    purpose="file-extract",
                    size=SIZE,
                    content_type="text/plain",
                )

        try:
            return await workers(upload)
        finally:
            await client.aclose()

    settings = Settings(
        state_dir=root / "state",
        inbox=[InboxSettings(name="in", path=inbox, providers=["kimi"])],
        providers={
            "kimi": {"base_url": urls["kimi"], "api_key": keys["kimi"], "max_files": 100_000_000}
        },
    )
    plan = build_plans(settings)["in"]
    async with Store.open(root / "state" / "inboxd.sqlite3") as store:
        clients = build_clients(settings)
        limits = {"kimi": settings.providers.kimi.effective_limits("kimi")}
        uploader: Uploader
        if part == "pipeline":
            uploader = build_dispatcher(settings, clients, limits, store, NullEvents())
        else:
            uploader = InstantUploader()  # type: ignore[assignment]  # returns UploadResult

        class Events:
            def quarantined(self, reason: str) -> None:
                raise RuntimeError(f"quarantined: {reason}")

            def duplicate(self) -> None: ...
            def upload_stored(self, provider: str, nbytes: int, seconds: float) -> None: ...
            def inflight_bytes(self, n: int) -> None: ...

        pipeline = Pipeline(
            ledger=store,
            uploader=uploader,
            clients=clients,
            limits=limits,
            budget=ByteBudget(1 << 30),
            events=Events(),
        )

        async def process(path: Path) -> None:
            result = await pipeline.process(plan, path, path.name)
            if result.outcome != "uploaded":
                raise RuntimeError(f"{path.name}: {result.outcome}")

        try:
            return await workers(process)
        finally:
            for each in clients.values():
                await each.aclose()


def child(spec: dict[str, Any]) -> None:
    """Run one part in this (child) process and print its figures as JSON."""
    import anyio

    with tempfile.TemporaryDirectory(prefix="inboxd-bench-cpu-") as tmp:
        wall, cpu = anyio.run(_run_part, spec, Path(tmp))
    print(json.dumps({"wall": wall, "cpu": cpu}))


def main() -> int:
    """Run every part ``--runs`` times (alternated) and print CPU per file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="100 files, one run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    n, runs = (100, 1) if args.smoke else (args.files, args.runs)
    print(machine())
    cpu: dict[str, list[float]] = {part: [] for part in PARTS}
    with EmulatorProc() as emu:
        for run in range(runs):
            for part in PARTS:
                spec = {
                    "part": part,
                    "urls": emu.urls,
                    "keys": emu.keys,
                    "n": n,
                    "concurrency": args.concurrency,
                }
                out = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=600,
                )
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                cpu[part].append(figures["cpu"] / n * 1000)
                print(
                    f"run {run + 1} {part}: {n} files in {figures['wall']:.2f} s "
                    f"({n / figures['wall']:.0f}/s), CPU {figures['cpu'] / n * 1000:.2f} ms/file"
                )
                httpx.post(emu.admin + "/_emulator/reset", timeout=30).raise_for_status()
    print(machine())
    for part in PARTS:
        print(f"cpu_per_file_median {part}: {statistics.median(cpu[part]):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

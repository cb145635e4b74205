"""Every bench script's ``--smoke`` mode runs as a subprocess, exits 0 and prints its figures.

The benchmarks are run by hand, not as gates; this only keeps them from rotting. Each smoke
run takes seconds (loopback emulator, a few hundred small files at most).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._tools import missing_tool
from tests.pg_cluster import find_bindir

BENCH = Path(__file__).resolve().parent.parent / "bench"

# script → the figure lines its smoke run must print (each a line prefix).
FIGURES = {
    "throughput.py": ["machine: nproc=", "run 1: 200 files; direct", "throughput_ratio_median:"],
    "latency.py": ["machine: nproc=", "run 1: 40 files", "latency_minus_settle_ms_median:"],
    "memory_daemon.py": ["machine: nproc=", "daemon_rss kimi/http: idle"],
    "idle.py": ["machine: nproc=", "run 1:", "idle_cpu_seconds_per_60s_median:"],
    "hashing.py": ["machine: nproc=", "run 1: 64 MiB", "hash_ratio_median:"],
    "scale.py": ["machine: nproc=", "run 1: scale_files 300:"],
    "torture.py": [
        "machine: nproc=",
        "torture_kills: 60 files, 2 SIGKILLs",
        "torture_kills_attempts_per_file:",
        "torture_storm: 60 files",
        "torture_storm_attempts_per_file:",
        "torture_rate_storm: 20 files",
        "torture_rate_storm_attempts_per_file:",
    ],
    "emulator_bench.py": ["uploads_16KiB:", "emulator_peak_rss_after_big_MiB:"],
    "limits.py": [
        "machine: nproc=",
        "kimi reference (direct, knows the limits):",
        "kimi learned:",
        "kimi configured:",
        "glm learned:",
        "glm configured:",
    ],
    "remote.py": [
        "machine: nproc=",
        "run 1: upload alone (reference): 60 files",
        "run 1: prune --dry-run over 60 files:",
        "run 1: prune pass, 60 -> 10 files (50 deleted):",
        "run 1: extract = true: 60 files",
        "remote_ratio_median (to upload alone):",
    ],
    "memory_transports.py": ["nproc ", "worst median rise over the real transports:"],
    "cpu_breakdown.py": [
        "machine: nproc=",
        "run 1 upload-openai: 100 files",
        "cpu_per_file_median pipeline-local:",
        "cpu_per_file_median pipeline:",
    ],
    "fleet.py": [
        "machine: nproc=",
        "1 host SQLite (ref): 60 files",
        "1 host PostgreSQL: 60 files",
        "3 hosts PostgreSQL: 60 files",
        "takeover: not measured with --smoke",
    ],
    "pg_driver.py": [
        "machine: nproc=",
        "run 1 psycopg-thread: 200 files",
        "median psycopg-thread:",
        "median psycopg-async:",
        "median asyncpg:",
        "median sqlite-store:",
    ],
}
# memory_transports.py (another owner's) has no --smoke: a 10 MB, one-run call instead.
ARGS = {"memory_transports.py": ["--runs", "1", "--size", "10000000"]}
# A bound that only stops a hung run. The torture smoke waits out real pauses (each 429 of its
# storms pauses the provider for the 1 s it names): ~60 s on a quiet machine, more when busy.
SECONDS = {"torture.py": 240, "fleet.py": 240}
# Scripts that start a throwaway PostgreSQL cluster (tests/pg_cluster.py).
NEEDS_POSTGRES = {"fleet.py", "pg_driver.py"}


def test_every_bench_script_is_covered() -> None:
    """Each script in bench/ (helpers excepted) has an entry here, so none escapes the smoke."""
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(FIGURES)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", sorted(FIGURES))
def test_smoke_run_prints_its_figures(script: str) -> None:
    """``bench/SCRIPT --smoke`` (or its ARGS) exits 0 and prints every expected figure line."""
    if script in NEEDS_POSTGRES and find_bindir() is None:
        missing_tool(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        )
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *ARGS.get(script, ["--smoke"])],
        capture_output=True,
        text=True,
        timeout=SECONDS.get(script, 110),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    for prefix in FIGURES[script]:
        assert any(line.startswith(prefix) for line in lines), (prefix, proc.stdout)

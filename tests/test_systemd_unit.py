"""systemd/: the unit passes the real systemd tools; sysusers, tmpfiles and dashboard agree."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from daemon.config.settings import Settings
from daemon.ops.metrics import Metrics

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "inboxd.service"


def directives(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` → every value it is given, in order (comments and blanks skipped)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        name, _, value = line.partition("=")
        out.setdefault(f"{section}.{name.strip()}", []).append(value.strip())
    return out


@pytest.fixture
def testable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart names an executable that exists here.

    ``systemd-analyze verify`` fails when ExecStart's binary is missing, and /usr/bin/inboxd
    is not installed on a test machine; everything else in the copy is the shipped unit.
    """
    binary = tmp_path / "inboxd"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/inboxd run " in text
    copy = tmp_path / "inboxd.service"
    copy.write_text(text.replace("ExecStart=/usr/bin/inboxd ", f"ExecStart={binary} "))
    return copy


@pytest.mark.anyio
async def test_systemd_analyze_verify_passes(
    testable_unit: Path, need_tool: Callable[[str, str], str]
) -> None:
    """``systemd-analyze verify`` accepts the unit without a complaint about it."""
    tool = need_tool("systemd-analyze", "systemd")
    result = await anyio.run_process([tool, "verify", str(testable_unit)], check=False)
    complaints = [
        line for line in (result.stdout + result.stderr).decode().splitlines() if "inboxd" in line
    ]
    assert (result.returncode, complaints) == (0, [])


@pytest.mark.anyio
async def test_security_exposure_is_at_most_2(
    testable_unit: Path, need_tool: Callable[[str, str], str]
) -> None:
    """``systemd-analyze security --offline=true`` rates the unit's exposure 2.0 or lower."""
    tool = need_tool("systemd-analyze", "systemd")
    result = await anyio.run_process(
        [tool, "security", "--offline=true", "--no-pager", str(testable_unit)], check=False
    )
    text = result.stdout.decode()
    match = re.search(r"Overall exposure level for inboxd\.service: (\d+\.\d+)", text)
    assert match is not None, text
    assert float(match.group(1)) <= 2.0, text


def test_unit_carries_the_operational_contract() -> None:
    """Type=notify, watchdog, reload, restart, stop timeout beyond the grace, state, keys, user."""
    unit = directives(UNIT)
    settings = Settings()
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Service.WatchdogSec"] == ["30"]
    assert unit["Service.Restart"] == ["on-failure"]
    (stop,) = unit["Service.TimeoutStopSec"]
    assert float(stop.removesuffix("s")) > settings.shutdown_grace + 10
    assert unit["Service.StateDirectory"] == ["inboxd"]
    assert Path("/var/lib") / unit["Service.StateDirectory"][0] == settings.state_dir
    assert sorted(unit["Service.LoadCredential"]) == sorted(
        f"{name}:/etc/inboxd/credentials/{name}"
        # The names daemon.config.settings looks for in $CREDENTIALS_DIRECTORY.
        for name in ("moonshot_api_key", "zhipuai_api_key")
    )
    assert unit["Service.ProtectSystem"] == ["strict"]
    assert unit["Service.ReadWritePaths"] == ["/srv/inbox"]
    assert unit["Service.CapabilityBoundingSet"] == [""]
    assert unit["Service.MemoryDenyWriteExecute"] == ["yes"]
    # The user the unit runs as is the one the sysusers file creates.
    sysusers = [
        line.split()
        for line in (SYSTEMD / "inboxd.sysusers").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert [(row[0], row[1]) for row in sysusers] == [("u", "inboxd")]
    assert unit["Service.User"] == unit["Service.Group"] == ["inboxd"]


def test_tmpfiles_create_the_writable_inbox_tree() -> None:
    """Every folder the tmpfiles file creates for inboxd lies under the unit's ReadWritePaths."""
    rows = [
        line.split()
        for line in (SYSTEMD / "inboxd.tmpfiles").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    owned = [Path(row[1]) for row in rows if row[3] == "inboxd"]
    assert Path("/srv/inbox") in owned
    assert all(p.is_relative_to("/srv/inbox") for p in owned)


@pytest.mark.anyio
async def test_sysusers_and_tmpfiles_apply_to_a_fresh_root(
    tmp_path: Path, need_tool: Callable[[str, str], str]
) -> None:
    """systemd-sysusers and systemd-tmpfiles apply both files to an empty root as intended."""
    sysusers = need_tool("systemd-sysusers", "systemd")
    tmpfiles = need_tool("systemd-tmpfiles", "systemd")
    if os.geteuid() != 0:
        pytest.skip("creating folders owned by another user needs root")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    await anyio.run_process(
        [sysusers, f"--root={root}", "-"], input=(SYSTEMD / "inboxd.sysusers").read_bytes()
    )
    passwd = (root / "etc/passwd").read_text().splitlines()
    (entry,) = [line for line in passwd if line.startswith("inboxd:")]
    uid = int(entry.split(":")[2])
    await anyio.run_process(
        [tmpfiles, f"--root={root}", "--create", "-"],
        input=(SYSTEMD / "inboxd.tmpfiles").read_bytes(),
    )
    inbox = (root / "srv/inbox/reports").stat()
    assert (inbox.st_uid, oct(inbox.st_mode & 0o7777)) == (uid, "0o2770")
    creds = (root / "etc/inboxd/credentials").stat()
    assert (creds.st_uid, oct(creds.st_mode & 0o7777)) == (0, "0o700")


# -- the Grafana dashboard ------------------------------------------------------------------

DASHBOARD = SYSTEMD / "grafana-dashboard.json"


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in data["panels"] for target in panel["targets"]]


def test_dashboard_queries_only_series_inboxd_exports() -> None:
    """Every inboxd metric a dashboard query names is one a real Metrics scrape contains."""
    registry = CollectorRegistry()
    Metrics(
        registry,
        version="0",
        inboxes=["a"],
        providers=["kimi"],
        transports={"kimi": ["openai", "http"]},
        reasons=["empty"],
        outcomes=["success"],
    )
    exported = set(re.findall(r"^(inboxd_\w+)", generate_latest(registry).decode(), re.M))
    used = {name for expr in dashboard_exprs() for name in re.findall(r"inboxd_\w+", expr)}
    assert used - exported == set()
    # The panels the operations issue asks for are all there.
    assert {
        "inboxd_uploads_total",
        "inboxd_quarantined_total",
        "inboxd_breaker_state",
        "inboxd_queue_depth",
        "inboxd_inflight_bytes",
        "inboxd_upload_duration_seconds_bucket",
    } <= used
    assert sum("histogram_quantile" in expr for expr in dashboard_exprs()) == 3


@pytest.mark.anyio
async def test_dashboard_queries_are_valid_promql(
    tmp_path: Path, need_tool: Callable[[str, str], str]
) -> None:
    """promtool parses every dashboard query (as recording rules, Grafana variables filled in)."""
    promtool = need_tool("promtool", "prometheus")
    rules = [
        {
            "record": f"inboxd:dashboard_{i}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$instance", ".*"),
        }
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = await anyio.run_process([promtool, "check", "rules", str(path)], check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout.decode()


# Run in a child: PR_SET_MDWE (Linux 6.3+) is the kernel's own MemoryDenyWriteExecute, and
# systemd uses it when available. Then every third-party module inboxd loads is imported.
_MDWE_CHILD = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping allowed: MDWE not in force")
except PermissionError:
    pass
import hashlib, ssl
import tempfile, pathlib
import aiohttp, anyio, httpx, openai, prometheus_client, pydantic_settings
import watchfiles, zhipuai
import daemon.ops.http, daemon.ops.logs, daemon.ops.metrics, daemon.ops.notify
from daemon.state.store import Store

async def main():
    with tempfile.TemporaryDirectory() as tmp:
        async with Store.open(pathlib.Path(tmp) / "state.sqlite3") as store:
            row = await store.begin("inbox", "a.txt", size=1, mtime_ns=1)
            assert (await store.get(row.id)) == row
    ssl.create_default_context()
    hashlib.sha256(bytes(1 << 20)).hexdigest()

anyio.run(main)
print("ok")
"""


@pytest.mark.anyio
async def test_python_and_dependencies_run_with_memory_deny_write_execute() -> None:
    """CPython and every dependency import and run with W^X enforced (MemoryDenyWriteExecute)."""
    result = await anyio.run_process(
        [sys.executable, "-c", _MDWE_CHILD], check=False, cwd=SYSTEMD.parent
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"ok\n", b"")

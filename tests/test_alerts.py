"""systemd/inboxd-alerts.yml: valid for promtool, firing when it should, on real metric names."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry

from daemon.ops.metrics import Metrics
from tests._tools import need_tool

RULES = Path(__file__).resolve().parent.parent / "systemd" / "inboxd-alerts.yml"

# promtool unit tests: a file waiting 2 h fires InboxdFileWaiting, one waiting 10 min does
# not; a breaker open (or re-opening through half-open) 20 min fires InboxdBreakerOpen, one
# open 10 min does not; a forced-open breaker fires InboxdBreakerForcedOpen.
_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'inboxd_oldest_pending_seconds{{inbox="scans"}}'
        values: '7200+60x30'
      - series: 'inboxd_oldest_pending_seconds{{inbox="mail"}}'
        values: '600+60x30'
      - series: 'inboxd_breaker_state{{provider="kimi"}}'
        values: '1 2 1 2 1x30'
      - series: 'inboxd_breaker_state{{provider="glm"}}'
        values: '0x10 1x10 0x10'
      - series: 'inboxd_breaker_state{{provider="zai"}}'
        values: '3x30'
    alert_rule_test:
      - eval_time: 10m
        alertname: InboxdFileWaiting
        exp_alerts:
          - exp_labels: {{severity: warning, inbox: scans}}
            exp_annotations:
              summary: "inboxd: a file in inbox scans has waited over 1 h"
              description: >-
                The oldest file waiting in inbox scans was first taken up 2h 10m 0s ago.
                It stays in the inbox and is tried again; see `journalctl -u inboxd`
                ("file waits") and `inboxd status` for why.
      - eval_time: 20m
        alertname: InboxdBreakerOpen
        exp_alerts:
          - exp_labels: {{severity: warning, provider: kimi}}
            exp_annotations:
              summary: "inboxd: the kimi circuit breaker has been open for 15 min"
              description: >-
                Calls to kimi keep failing or its quota is exhausted; files wait.
                `inboxd status` shows the reason; the provider's status page may too.
      - eval_time: 5m
        alertname: InboxdBreakerForcedOpen
        exp_alerts:
          - exp_labels: {{severity: critical, provider: zai}}
            exp_annotations:
              summary: "inboxd: zai rejected the API key"
              description: >-
                The zai breaker is forced open by an authentication failure. Fix the key,
                then `systemctl reload inboxd` (or `inboxd breaker reset`).
"""


def test_alert_rules_pass_promtool_check() -> None:
    """promtool check rules accepts the shipped alert rules file."""
    promtool = need_tool("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 3 rules found" in done.stdout


def test_alerts_fire_exactly_when_they_should(tmp_path: Path) -> None:
    """promtool test rules: a file waiting over 1 h, a breaker open over 15 min and a breaker
    forced open each fire (with their text); shorter waits and opens do not."""
    promtool = need_tool("promtool")
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(_TESTS.format(rules=RULES), encoding="utf-8")
    done = subprocess.run(
        [promtool, "test", "rules", str(spec)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alert_rules_use_only_metrics_inboxd_exports() -> None:
    """Every inboxd_* name in the rules is a series the daemon's Metrics registers."""
    registry = CollectorRegistry()
    Metrics(
        registry,
        version="0",
        inboxes=["in"],
        providers=["kimi"],
        transports={"kimi": ["http"]},
        reasons=[],
        outcomes=[],
    )
    exported = {sample.name for family in registry.collect() for sample in family.samples}
    used = set(re.findall(r"\binboxd_[a-z_]+", RULES.read_text(encoding="utf-8")))
    assert used == {"inboxd_oldest_pending_seconds", "inboxd_breaker_state"}
    assert used <= exported

"""contrib/prometheus: the alert rules and the scrape config example are valid for
Prometheus (promtool from Debian's prometheus package), the alerts fire on the series
they are meant for (promtool's rule unit tests), and every meshraft metric a rule uses
is one the member exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ops_helpers import need_tool

from meshraft.ops.metrics import METRICS, PREFIX

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([need_tool("promtool"), *args], cwd=CONTRIB, capture_output=True,
                          text=True, timeout=120)


def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", "alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_rule_unit_tests() -> None:
    r = promtool("test", "rules", "alerts_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_scrape_config() -> None:
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_rules_cover_etcds_alerts_and_use_exported_metrics() -> None:
    text = (CONTRIB / "alerts.yml").read_text()
    alerts = set(re.findall(r"alert: (\w+)", text))
    for wanted in ("meshraftNoLeader", "meshraftHighNumberOfLeaderChanges",
                   "meshraftHighNumberOfFailedProposals", "meshraftHighFsyncDurations",
                   "meshraftMemberCommunicationSlow", "meshraftMembersDown",
                   "meshraftInsufficientMembers"):
        assert wanted in alerts
    exported = set()
    for short, (kind, _, _) in METRICS.items():
        exported.add(PREFIX + short)
        if kind == "histogram":
            exported |= {PREFIX + short + s for s in ("_bucket", "_sum", "_count")}
    used = set(re.findall(r"\b(meshraft_[a-z_]+)", text))
    assert used, "the rules use meshraft metrics"
    assert used <= exported, f"rules use metrics no member exports: {used - exported}"

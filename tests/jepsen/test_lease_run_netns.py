"""`jepsen-lite run --workload lease --net netns`: a real meshraft cluster in network
namespaces under each nemesis family, pause included; the lease checker must find the
promise kept ("a lease lives at least TTL seconds after its last acknowledged
keepalive", and lapsed leases' keys gone within TTL + the stated bound). Root only; CI
runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from jepsen_lite.history import read_history

pytestmark = pytest.mark.needs_root

FAMILIES = ["pause", "kill", "isolate-leader", "partition-halves", "partition-ring",
            "partition-bridge", "loss"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_lease_promise_holds_under_each_nemesis(family, tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "jepsen_lite.cli", "run", "--workload", "lease",
         "--lease-ttl", "2", "--net", "netns", "--nodes", "3", "--time", "20",
         "--quiet-period", "5", "--concurrency", "8", "--nemesis", family, "--seed", "5",
         "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300)
    results = json.loads((out / "results.json").read_text())
    check = results.get("check", {})
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{check.get('violations')}"
    assert results["valid"] is True and "lease promise kept" in res.stdout
    # not vacuous: the safety rule constrained many ops, and lapses were seen expire
    assert check["guarded_ops"] > 50, check
    assert check["checked_expiries"] >= 5 and check["revoked"] >= 1, check
    events = read_history(out / "history.jsonl")
    starts = [e for e in events if e["process"] == "nemesis" and e["f"] == f"start-{family}"]
    stops = [e for e in events if e["process"] == "nemesis" and e["f"] == f"stop-{family}"]
    assert starts and len(starts) == len(stops), "every fault was applied and healed"
    fs = {e["f"] for e in events if e["process"] != "nemesis"}
    assert {"grant", "put", "keepalive", "read", "lapse"} <= fs

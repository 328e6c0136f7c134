"""`jepsen-lite run --workload txn`: a real meshraft cluster runs conditional multi-key
transactions and multi-key reads under faults, and the history checks as linearizable
with the txn model (loopback with kill and pause; network namespaces with every fault
family, root only, as CI runs it). `jepsen-lite check --model txn` reads the history."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from jepsen_lite import netns
from jepsen_lite.history import read_history

TRANSPORT = os.environ.get("JL_TEST_TRANSPORT", "mesh")


def jl(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    if args and args[0] == "run":
        args = (*args, "--transport", TRANSPORT)
    try:
        return subprocess.run([sys.executable, "-m", "jepsen_lite.cli", *args],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run([sys.executable, "-m", "jepsen_lite.cli", "clean"],
                       capture_output=True, timeout=60)
        raise


def check_run(res: subprocess.CompletedProcess, out) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{results.get('error')}"
    assert results["valid"] is True and "linearizable" in res.stdout
    events = read_history(out / "history.jsonl")
    ops = [e for e in events if e["process"] != "nemesis" and e["type"] != "invoke"]
    assert {e["f"] for e in ops} == {"txn"}
    oks = [e["value"] for e in ops if e["type"] == "ok"]
    # both branches ran, multi-key reads returned values, and there were writes
    assert any(v[0] for v in oks) and any(not v[0] for v in oks)
    assert any(v is not None for o in oks for v in o[1])
    assert results["ops"] > 100
    return results


def test_local_txn_run_with_kill_and_pause_is_linearizable(tmp_path):
    out = tmp_path / "out"
    res = jl("run", "--workload", "txn", "--net", "local", "--nodes", "3", "--time", "12",
             "--quiet-period", "3", "--concurrency", "6", "--keys", "6", "--rate", "100",
             "--nemesis", "all", "--seed", "7", "--out", str(out))
    check_run(res, out)
    # the recorded history checks again, by itself
    r = jl("check", str(out / "history.jsonl"), "--model", "txn", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["valid"] is True
    # and it is not linearizable as a register history (the models differ)
    r = jl("check", str(out / "history.jsonl"), "--model", "cas-register")
    assert r.returncode == 2 and "no operation 'txn'" in r.stderr


@pytest.mark.needs_root
@pytest.mark.parametrize("nemesis", ["all", "pause"])
def test_netns_txn_run_stays_linearizable(nemesis, tmp_path):
    out = tmp_path / "out"
    res = jl("run", "--workload", "txn", "--net", "netns", "--nodes", "3", "--time", "15",
             "--quiet-period", "4", "--concurrency", "8", "--keys", "9", "--rate", "150",
             "--nemesis", nemesis, "--seed", "11", "--out", str(out))
    results = check_run(res, out)
    assert not [ns for ns in netns.list_netns() if results["run_id"] in ns]

"""`jepsen-lite run --net local` (no root): loopback, kill and pause only, and the
run's summary numbers (availability, failover) computed from a known history."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from jepsen_lite.history import read_history
from jepsen_lite.nemesis import Period
from jepsen_lite.runner import summarize

# the transport of every run here (default: the product's default, the mesh)
TRANSPORT = os.environ.get("JL_TEST_TRANSPORT", "mesh")


def jl(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    if args and args[0] == "run":
        args = (*args, "--transport", TRANSPORT)
    return subprocess.run([sys.executable, "-m", "jepsen_lite.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_local_run_with_kill_and_pause_is_linearizable(tmp_path):
    out = tmp_path / "out"
    res = jl("run", "--net", "local", "--nodes", "3", "--time", "12", "--quiet-period", "3",
             "--concurrency", "6", "--keys", "3", "--rate", "100", "--nemesis", "all",
             "--seed", "5", "--out", str(out))
    assert "only kill and pause" in res.stderr
    # the progress line (stderr is not a terminal here: a line now and then, and a last
    # one at the end of the workload, with the whole bar)
    progress = [ln for ln in res.stderr.splitlines() if ln.startswith("[")]
    assert len(progress) >= 2 and "ops" in progress[-1] and "nemesis:" in progress[-1]
    assert progress[-1].startswith("[" + "#" * 30 + "]"), progress[-1]
    results = json.loads((out / "results.json").read_text())
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{results.get('error')}"
    assert results["valid"] is True and "linearizable" in res.stdout
    events = read_history(out / "history.jsonl")
    kinds = {e["f"] for e in events if e["process"] == "nemesis"}
    assert kinds & {"start-kill", "start-pause"}
    assert not kinds & {"start-partition-halves", "start-loss"}
    assert results["ops"] == sum(results["ops_by_outcome"].values()) > 100
    assert set(results["ops_by_type"]) == {"read", "write", "cas"}
    assert results["seed"] == 5 and "--seed 5" in results["replay"]


def test_local_refuses_network_faults(tmp_path):
    res = jl("run", "--net", "local", "--nemesis", "partition-halves", "--time", "5",
             "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert "--net netns" in res.stderr


def test_bad_flags_are_usage_errors(tmp_path):
    res = jl("run", "--nemesis", "meteor", "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "meteor" in res.stderr
    res = jl("run", "--nodes", "0", "--out", str(tmp_path / "o"))
    assert res.returncode == 2


def ev(i, t, process, typ, f, key=None, value=None, error=None):
    e = {"index": i, "time": int(t * 1e9), "process": process, "type": typ, "f": f,
         "value": value}
    if key is not None:
        e["key"] = key
    if error is not None:
        e["error"] = error
    return e


def test_summary_availability_and_failover():
    events = [
        ev(0, 0.0, 0, "invoke", "write", 1, 1), ev(1, 0.1, 0, "ok", "write", 1, 1),
        ev(2, 1.0, "nemesis", "info", "start-kill", value={"nodes": ["1"]}),
        ev(3, 1.1, 0, "invoke", "write", 1, 2),
        ev(4, 3.1, 0, "info", "write", 1, 2, error="OutcomeUnknown"),
        ev(5, 3.2, 1, "invoke", "cas", 1, [1, 3]),
        ev(6, 3.3, 1, "fail", "cas", 1, [1, 3], error="cas-mismatch"),
        ev(7, 3.4, 1, "invoke", "write", 1, 4), ev(8, 3.5, 1, "ok", "write", 1, 4),
        ev(9, 4.0, "nemesis", "info", "stop-kill", value={"nodes": ["1"]}),
        ev(10, 4.5, 1, "invoke", "read", 1), ev(11, 4.6, 1, "ok", "read", 1, 4),
        ev(12, 4.7, 1, "invoke", "write", 1, 5), ev(13, 4.9, 1, "ok", "write", 1, 5),
    ]
    s = summarize(events, [Period("kill", 1.0, 4.0)], node_of=lambda p: str(p + 1))
    assert s["ops"] == 6
    assert s["ops_by_outcome"] == {"ok": 4, "fail": 1, "info": 1}
    assert s["ops_by_type"]["write"] == {"ok": 3, "fail": 0, "info": 1}
    a = s["availability"]
    assert a["ops_during_faults"] == {"ok": 1, "fail": 1, "info": 1}
    assert a["during_faults"] == round(1 / 3, 4)
    assert a["answered_during_faults"] == round(2 / 3, 4)
    assert a["without_faults"] == 1.0
    # client time: info write 2.0 s + cas 0.1 s + write 0.1 s; answered 0.2 s of 2.2 s
    assert a["answered_client_time_during_faults"] == round(0.2 / 2.2, 4)
    assert a["answered_client_time_without_faults"] == 1.0
    fo = s["failover"]["per_fault"][0]
    assert fo["write_outage_s"] == 2.5  # no ok write from the start (1.0) until 3.5
    assert fo["write_outage_after_stop_s"] == 0.9  # none from the heal (4.0) until 4.9
    assert s["failover"]["median_by_fault"] == {"kill": 2.5}
    # process 0 talks to node 1: stuck in an info write the whole fault
    by_node = s["availability_by_node"]
    assert by_node["1"]["answered_client_time_during_faults"] == 0.0
    assert by_node["2"]["answered_client_time_during_faults"] == 1.0
    assert fo["worst_node"] == "1" and fo["worst_node_answered_client_time"] == 0.0
    assert summarize(events, [])["availability"]["during_faults"] is None


def test_netns_without_root_says_what_to_do(monkeypatch, tmp_path):
    from jepsen_lite import netns

    monkeypatch.setattr(netns, "is_root", lambda: False)
    monkeypatch.setattr(netns, "STATE_ROOT", tmp_path)
    with pytest.raises(netns.NetError, match=r"needs root.*--net local"):
        netns.NetnsNet.create(3)
    assert not list(tmp_path.rglob("*.json")), "nothing recorded for a run that never started"

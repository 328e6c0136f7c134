"""`jepsen-lite run --workload watch`: real meshraft clusters, writers and watchers in
sessions, checked against etcd's watch guarantees. On loopback (kill and pause, no root)
and in network namespaces under the whole nemesis mix (root; CI runs it), and a 300 s
soak on demand (MESHRAFT_SOAK=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jepsen_lite import netns
from jepsen_lite.history import read_history
from jepsen_lite.watch_checker import check_watch

TRANSPORT = os.environ.get("JL_TEST_TRANSPORT", "mesh")


def jl(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    if args and args[0] == "run":
        args = (*args, "--transport", TRANSPORT)
    try:
        return subprocess.run([sys.executable, "-m", "jepsen_lite.cli", *args],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        # the runner was SIGKILLed and could not clean up: do it for it
        subprocess.run([sys.executable, "-m", "jepsen_lite.cli", "clean"],
                       capture_output=True, timeout=60)
        raise


def check_watch_run(out: Path, res: subprocess.CompletedProcess, min_sessions: int) -> dict:
    """The run passed, and it really watched: many sessions, the acknowledged writes
    delivered, the history re-checks the same, and the page and plots exist."""
    results = json.loads((out / "results.json").read_text())
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{results.get('error')}"
    assert results["valid"] is True and "watch guarantees hold" in res.stdout
    w = results["watch"]
    assert w["sessions"] >= min_sessions and w["watchers"] >= 2
    ok = w["writes_by_outcome"]["ok"]
    assert ok > 100
    # every acknowledged write but the last few (after the last session closed) was
    # delivered to some watcher
    assert w["acknowledged_writes_seen"] >= ok - 50, w
    assert w["events_delivered"] >= w["acknowledged_writes_seen"]
    assert set(results["ops_by_type"]) == {"write"}  # the summary counts writes
    events = read_history(out / "history.jsonl")
    assert check_watch(events).valid
    txns = {e["revision"] for e in events if e["f"] == "write" and e["type"] == "ok"
            and "key" not in e}
    assert len(txns) > 20, "a share of the writes are two-key transactions"
    delivered = {ev[0] for e in events if e["f"] == "watch" and e["type"] != "invoke"
                 for ev in e["events"]}
    assert len(txns & delivered) > 10  # ... whose events the atomic check looked at
    reopened = [e for e in events if e["f"] == "watch" and e["type"] == "invoke"
                and e["value"] > 1]
    assert reopened, "watchers reopened from their last revision + 1"
    page = (out / "report.html").read_text()
    assert "watch guarantees hold" in page and "sessions" in page
    for name in ("latency.png", "rate.png"):
        assert (out / name).stat().st_size > 0
    assert "--workload watch" in results["replay"]
    return results


def test_a_violating_watch_run_prints_its_violations_and_exits_1(monkeypatch, tmp_path):
    """What `run` prints once the checker found violations (the run itself replaced:
    a real cluster that breaks a guarantee on purpose does not exist)."""
    from click.testing import CliRunner
    from jepsen_lite import runner

    results = {"valid": False, "config": {"workload": "watch"}, "out_dir": str(tmp_path),
               "watch": {"watchers": 2, "sessions": 3, "events_delivered": 9},
               "check": {"violations": [
                   {"kind": "reliable", "message": "watcher p1 session #2 misses write ..."},
                   {"kind": "ordered", "message": "revision 7 (key 0) after revision 9"}]}}
    monkeypatch.setattr(runner, "run", lambda cfg: (runner.EXIT_INVALID, results))
    res = CliRunner().invoke(runner.run_cmd, ["--workload", "watch", "--net", "local",
                                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert lines[0].startswith("watch guarantees VIOLATED; 2 watchers, 3 sessions")
    assert lines[1:] == ["  [reliable] watcher p1 session #2 misses write ...",
                         "  [ordered] revision 7 (key 0) after revision 9"]


def test_local_watch_run_with_kill_and_pause(tmp_path):
    out = tmp_path / "out"
    res = jl("run", "--workload", "watch", "--net", "local", "--nodes", "3", "--time", "14",
             "--quiet-period", "3", "--concurrency", "6", "--keys", "3", "--rate", "100",
             "--nemesis", "all", "--seed", "5", "--out", str(out), "--no-progress")
    results = check_watch_run(out, res, min_sessions=6)
    kinds = {p["f"] for p in results["nemesis_periods"]}
    assert kinds and kinds <= {"kill", "pause"}
    # the history checks the same from the command line
    chk = jl("check", str(out / "history.jsonl"), "--model", "watch", timeout=120)
    assert chk.returncode == 0 and "watch guarantees hold" in chk.stdout


@pytest.mark.needs_root
def test_netns_watch_run_under_every_nemesis(tmp_path):
    out = tmp_path / "out"
    res = jl("run", "--workload", "watch", "--net", "netns", "--nodes", "5", "--time", "24",
             "--quiet-period", "4", "--concurrency", "8", "--keys", "3", "--rate", "150",
             "--nemesis", "all", "--seed", "11", "--out", str(out), "--no-progress")
    results = check_watch_run(out, res, min_sessions=12)
    assert len({p["f"] for p in results["nemesis_periods"]}) >= 2, "a mix of faults"
    run_id = results["run_id"]
    assert not [ns for ns in netns.list_netns() if run_id in ns]
    assert not [link for link in netns.list_root_links() if run_id in link]
    assert not (netns.runs_dir() / f"{run_id}.json").exists()


@pytest.mark.needs_root
@pytest.mark.soak
@pytest.mark.timeout(1500)  # 300 s of workload, the check, start-up and cleanup
@pytest.mark.skipif(os.environ.get("MESHRAFT_SOAK") != "1",
                    reason="soak: run with MESHRAFT_SOAK=1 (CI runs the short runs above)")
def test_soak_watch_all_nemeses_five_minutes(tmp_path):
    out = tmp_path / "out"
    res = jl("run", "--workload", "watch", "--net", "netns", "--nodes", "5", "--time", "300",
             "--nemesis", "all", "--seed", "42", "--out", str(out), "--no-progress",
             timeout=1200)
    results = check_watch_run(out, res, min_sessions=100)
    kinds = {p["f"] for p in results["nemesis_periods"]}
    assert len(kinds) >= 5, f"a 5-minute mix should draw most families, got {kinds}"

"""The simulator: many seeds hold every safety property; the checkers really catch
broken Raft; a failing seed is reported with the command that replays it."""

from __future__ import annotations

import os

import pytest
from jepsen_lite.checker import check_history

from meshraft.raft import core as core_mod
from meshraft.raft import log as log_mod
from meshraft.raft.rafttest import sim


def _run(start: int, n: int, nodes: int, ticks: int) -> list[sim.SimResult]:
    return [sim.run_seed(s, nodes, ticks, checker=check_history)
            for s in range(start, start + n)]


@pytest.mark.parametrize(
    "start,count,nodes",
    [(0, 200, 3), (200, 200, 3), (400, 200, 3), (600, 200, 3), (10_000, 200, 5)],
)
def test_a_thousand_seeds_hold_every_safety_property(start, count, nodes):
    # 5 x 200 = 1000 seeds in CI, each with faults, crashes, membership changes,
    # clients and a final leader crash; the history of each is linearizable.
    rs = _run(start, count, nodes, 200)
    bad = [r for r in rs if not r.ok]
    assert not bad, "\n".join(
        f"seed {r.seed}: {r.error}\n  replay: {sim.replay_command(r.seed, nodes, 200)}"
        for r in bad)
    # and the checker decided every history (an "unknown" would hide a violation)
    undecided = [r.seed for r in rs if r.linearizable is not True]
    assert not undecided, f"histories not shown linearizable: seeds {undecided}"


def test_the_simulation_really_exercises_faults_and_features():
    rs = _run(0, 40, 3, 200)
    assert sum(r.commits for r in rs) > 1000
    assert sum(r.snapshots_sent for r in rs) > 0
    assert sum(r.conf_changes for r in rs) > 20
    assert sum(r.ops_ok for r in rs) > 500
    assert all(r.linearizable is True for r in rs)
    assert all(r.election_ticks_after_crash is not None for r in rs)


def test_a_seed_replays_exactly():
    a, b = sim.run_seed(17, 3, 200), sim.run_seed(17, 3, 200)
    assert (a.commits, a.ops_total, a.messages, a.steps) == (b.commits, b.ops_total,
                                                             b.messages, b.steps)


def test_a_voter_that_ignores_log_freshness_is_caught(monkeypatch):
    # Break 5.4.1 (grant votes to any log): leaders without committed entries appear.
    monkeypatch.setattr(log_mod.RaftLog, "is_up_to_date", lambda self, i, t: True)
    # About a quarter of seeds hit it; 40 seeds (9 catch it today) keep this robust to
    # timing changes in the driver model.
    bad = [r for r in _run(0, 40, 3, 300) if not r.ok]
    assert bad and any("Leader Completeness" in r.error or "Safety" in r.error
                       or "Log Matching" in r.error for r in bad)


def test_a_disk_that_loses_acknowledged_entries_is_caught(monkeypatch):
    # Node 2 acknowledges appends but its "fsync" keeps nothing: commits without a
    # quorum of durable copies must be flagged.
    write = sim.Disk.write

    def lying_write(self, snap, ents, hs):
        write(self, snap, [] if getattr(self, "lying", False) else ents, hs)

    monkeypatch.setattr(sim.Disk, "write", lying_write)
    s = sim.Simulation(3, sim.SimParams(ticks=200))
    s.nodes["2"].disk.lying = True
    r = s.run()
    assert not r.ok and "disks" in r.error


def test_reads_without_a_quorum_check_are_caught_by_the_linearizability_checker(monkeypatch):
    def unsafe_read(self, ctx, frm):  # serve at once: a deposed leader answers stale
        self._release_read(self.log.committed, ctx, frm)

    monkeypatch.setattr(core_mod.RaftCore, "_leader_read", unsafe_read)
    for seed in range(100):  # stale reads need a paused or deposed leader: not every seed
        r = sim.run_seed(seed, 3, 300, checker=check_history)
        if not r.ok:
            assert "not linearizable" in r.error
            return
    pytest.fail("no seed of 100 caught reads served without confirming leadership")


def test_cli_prints_one_summary_line_and_exits_zero(capsys):
    assert sim.main(["--seeds", "3", "--start", "5", "--ticks", "100"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("sim: 3/3 seeds ok")


def test_cli_reports_a_failing_seed_with_its_replay_command(monkeypatch, capsys):
    def broken(self):
        raise sim.SafetyViolation("injected")

    monkeypatch.setattr(sim.Simulation, "check_final", broken)
    assert sim.main(["--seeds", "2", "--start", "7", "--ticks", "50"]) == 1
    err = capsys.readouterr().err
    assert "seed 7 FAILED" in err and "seed 8 FAILED" in err
    assert ("python -m meshraft.raft.rafttest.sim --seeds 1 --start 7 --nodes 3 --ticks 50"
            in err)


@pytest.mark.soak
@pytest.mark.skipif(not os.environ.get("MESHRAFT_SOAK"),
                    reason="soak: run with MESHRAFT_SOAK=1 (CI runs the 1000 seeds above)")
@pytest.mark.timeout(7200)
def test_soak_many_long_seeds():
    # Same as: python -m meshraft.raft.rafttest.sim --seeds N --start 100000 --ticks 600
    #          --checker jepsen_lite.checker:check_history [--nodes 5]
    n = int(os.environ.get("MESHRAFT_SIM_SOAK_SEEDS", "2000"))
    for nodes in (3, 5):
        bad = [r for r in _run(100_000, n, nodes, 600) if not r.ok]
        assert not bad, [(r.seed, r.error) for r in bad]

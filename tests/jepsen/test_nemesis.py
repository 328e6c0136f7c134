"""Nemesis: partition shapes, fault family selection, and the seeded schedule as it is
recorded in a history (no root needed: a recording cluster stands in for processes)."""

from __future__ import annotations

import asyncio
import io
import json
import random

import pytest
from jepsen_lite import nemesis as nm
from jepsen_lite.history import HistoryWriter
from jepsen_lite.netns import LocalNet, Net, NetError, RunState

NODES5 = ["1", "2", "3", "4", "5"]


def majority(n: int) -> int:
    return n // 2 + 1


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_majorities_ring_each_sees_a_distinct_majority(n, seed):
    nodes = [str(i) for i in range(1, n + 1)]
    g = nm.majorities_ring(nodes, random.Random(seed))
    v = nm.views(nodes, g)
    assert all(len(seen) >= majority(n) for seen in v.values()), v
    assert len({frozenset(s) for s in v.values()}) == n, f"two nodes share a view: {v}"
    assert any(len(seen) < n for seen in v.values()), "nobody is cut at all"
    for a, cut in g.items():  # cuts are symmetric
        for b in cut:
            assert a in g[b]


@pytest.mark.parametrize("seed", range(20))
def test_halves_split_into_two_sides_with_no_link(seed):
    g = nm.halves(NODES5, random.Random(seed))
    v = nm.views(NODES5, g)
    sides = {frozenset(s) for s in v.values()}
    assert len(sides) == 2
    a, b = sides
    assert a | b == set(NODES5) and not a & b
    assert sorted([len(a), len(b)]) == [2, 3]


@pytest.mark.parametrize("seed", range(20))
def test_bridge_one_node_sees_both_halves_that_cannot_talk(seed):
    g = nm.bridge(NODES5, random.Random(seed))
    v = nm.views(NODES5, g)
    bridges = [n for n, s in v.items() if s == set(NODES5)]
    assert len(bridges) == 1
    others = [n for n in NODES5 if n not in bridges]
    sides = {frozenset(v[n] - set(bridges)) for n in others}
    assert len(sides) == 2 and all(len(s) == 2 for s in sides)


def test_isolate_cuts_one_node_from_all():
    g = nm.isolate("3", NODES5)
    assert g["3"] == ["1", "2", "4", "5"]
    assert all(g[n] == ["3"] for n in ["1", "2", "4", "5"])


def test_shapes_replay_from_the_seed():
    assert nm.halves(NODES5, random.Random(7)) == nm.halves(NODES5, random.Random(7))
    assert nm.bridge(NODES5, random.Random(7)) == nm.bridge(NODES5, random.Random(7))


def test_families():
    assert nm.families_for("none", True) == []
    assert set(nm.families_for("all", False)) == {"kill", "pause"}
    assert set(nm.families_for("all", True)) >= {
        "partition-halves", "partition-ring", "partition-bridge", "isolate-leader", "kill",
        "pause", "loss"}
    with pytest.raises(ValueError, match="net netns"):
        nm.families_for("partition-halves", False)
    with pytest.raises(ValueError, match="unknown nemesis"):
        nm.families_for("meteor", True)


def test_register_fault_joins_all():
    class Noop(nm.Fault):
        name = "member-test"

        async def plan(self):
            return {"x": 1}

        async def apply(self):
            pass

        async def stop(self):
            return None

    nm.register_fault("member-test", Noop)
    try:
        assert "member-test" in nm.families_for("all", False)
        assert "member-test" in nm.nemesis_names()
    finally:
        del nm.FAULTS["member-test"]


def test_local_net_refuses_network_faults(tmp_path, monkeypatch):
    monkeypatch.setattr("jepsen_lite.netns.STATE_ROOT", tmp_path)
    net = LocalNet.create(3)
    try:
        with pytest.raises(NetError, match="netns"):
            net.partition({"1": {"2"}})
        with pytest.raises(NetError, match="netns"):
            net.loss(0.2)
        assert len({a.client_port for a in net.nodes.values()}) == 3
    finally:
        net.teardown()


class RecordingNet(Net):
    kind = "recording"

    def __init__(self) -> None:
        super().__init__(RunState("test00", "local", 0, None, 0.0))
        self.faults: list[tuple] = []
        self.active: tuple | None = None
        self.on_apply = None

    def partition(self, cuts):
        self.active = ("partition", {k: sorted(v) for k, v in cuts.items()})
        self.faults.append(self.active)
        if self.on_apply is not None:
            self.on_apply()

    def loss(self, probability, nodes=None):
        self.active = ("loss", probability)
        self.faults.append(self.active)

    def heal(self):
        self.active = None


class RecordingCluster:
    def __init__(self, nodes):
        self.net = RecordingNet()
        self.node_ids = list(nodes)
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self.leader = "2"
        self.calls: list[tuple[str, str]] = []

    def kill(self, node):
        self.calls.append(("kill", node))
        self.killed.add(node)

    def restart(self, node):
        self.calls.append(("restart", node))
        self.killed.discard(node)

    def pause(self, node):
        self.calls.append(("pause", node))
        self.paused.add(node)

    def resume(self, node):
        self.calls.append(("resume", node))
        self.paused.discard(node)

    async def find_leader(self):
        return self.leader


def run_nemesis(families, seed, duration=1.2):
    cluster = RecordingCluster(NODES5)
    buf = io.StringIO()
    hist = HistoryWriter(buf)
    nem = nm.Nemesis(families, cluster, random.Random(seed), hist,
                     schedule=nm.Schedule(0.05, 0.1, 0.01, 0.05))
    asyncio.run(nem.run(duration))
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    return cluster, nem, events


def test_schedule_records_paired_start_stop_and_heals_everything():
    cluster, nem, events = run_nemesis(nm.families_for("all", True), seed=3)
    assert all(e["process"] == "nemesis" and e["type"] == "info" for e in events)
    fs = [e["f"] for e in events]
    assert len(fs) >= 8
    for start, stop in zip(fs[::2], fs[1::2], strict=True):
        assert start.startswith("start-") and stop == "stop-" + start[len("start-"):]
    assert len({f for f in fs if f.startswith("start-")}) >= 3, "all draws from several families"
    assert cluster.net.active is None and not cluster.killed and not cluster.paused
    assert [p.f for p in nem.periods] == [f[len("start-"):] for f in fs[::2]]
    assert all(p.stop is not None and p.stop >= p.start for p in nem.periods)
    periods = nm.periods_from_history(events)
    assert [p.f for p in periods] == [p.f for p in nem.periods]


def test_schedule_replays_from_its_seed():
    _, _, ea = run_nemesis(["partition-halves", "kill", "loss"], seed=11, duration=0.8)
    _, _, eb = run_nemesis(["partition-halves", "kill", "loss"], seed=11, duration=0.8)
    assert [(e["f"], e["value"]) for e in ea][:6] == [(e["f"], e["value"]) for e in eb][:6]


def test_isolate_leader_cuts_the_leader_and_partition_value_is_the_grudge():
    cluster, _, events = run_nemesis(["isolate-leader"], seed=1, duration=0.4)
    start = next(e for e in events if e["f"] == "start-isolate-leader")
    assert start["value"]["isolated"] == "2"
    assert start["value"]["cuts"]["2"] == ["1", "3", "4", "5"]
    assert cluster.net.faults[0] == ("partition", {"2": ["1", "3", "4", "5"], "1": ["2"],
                                                   "3": ["2"], "4": ["2"], "5": ["2"]})


def test_cancelled_nemesis_leaves_no_fault():
    cluster = RecordingCluster(NODES5)
    hist = HistoryWriter(io.StringIO())
    nem = nm.Nemesis(["kill"], cluster, random.Random(0), hist,
                     schedule=nm.Schedule(5.0, 5.0, 0.01, 0.02))

    async def go():
        task = asyncio.create_task(nem.run(60))
        for _ in range(500):  # bounded: at most 5 s for the first kill
            if cluster.killed:
                break
            await asyncio.sleep(0.01)
        assert cluster.killed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert not cluster.killed
    assert cluster.calls[-1][0] == "restart"


def test_start_event_is_written_before_the_fault_takes_effect():
    cluster = RecordingCluster(NODES5)
    buf = io.StringIO()
    seen: list[str] = []
    cluster.net.on_apply = lambda: seen.append(buf.getvalue().splitlines()[-1])
    nem = nm.Nemesis(["partition-halves"], cluster, random.Random(2), HistoryWriter(buf),
                     schedule=nm.Schedule(0.05, 0.1, 0.01, 0.05))
    asyncio.run(nem.run(0.5))
    assert seen, "no partition was applied"
    for last in seen:  # at each application, the newest event is its start
        ev = json.loads(last)
        assert ev["f"] == "start-partition-halves"
        assert cluster.net.faults[seen.index(last)][1] == ev["value"]

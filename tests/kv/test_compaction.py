"""Automatic compaction (meshraft.kv.compactor): the leader proposes, followers never do,
and it stops with its member; then the same on a real 3-member cluster of processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from fakenode import FakeNode, Unavailable

from meshraft.kv import client as kc
from meshraft.kv.compactor import DEFAULT_RETENTION, Compactor
from meshraft.kv.state_machine import KVStateMachine, encode_command
from meshraft.localcluster import LocalCluster, plan_members


async def write(node: FakeNode, n: int, key: bytes = b"k") -> None:
    for i in range(n):
        await node.propose(encode_command({"op": "put", "key": key, "value": b"%d" % i}))


async def until(predicate, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_the_leader_compacts_to_the_retention():
    sm = KVStateMachine()
    node = FakeNode(sm)
    await write(node, 100)
    c = Compactor(node, sm, retention=10, step=5)
    assert await c.tick() is True
    assert (sm.revision, sm.compact_revision) == (100, 90)
    assert await c.tick() is False  # not due: fewer than `step` new revisions
    await write(node, 4)
    assert await c.tick() is False
    await write(node, 1)
    assert await c.tick() is True and sm.compact_revision == 95
    # versions 95..105, and the newest below the point (94)
    assert sm.version_count == 12
    assert sm.get(b"k", revision=95).value == b"94"


async def test_nothing_to_do_on_a_young_store():
    sm = KVStateMachine()
    node = FakeNode(sm)
    await write(node, 5)
    c = Compactor(node, sm, retention=10)
    assert await c.tick() is False and node.proposals == 5 and sm.compact_revision == 0


async def test_a_follower_never_proposes():
    sm = KVStateMachine()
    node = FakeNode(sm)
    await write(node, 100)
    proposals = node.proposals
    for role in ("follower", "candidate", "learner", "removed"):
        node.role = role
        c = Compactor(node, sm, retention=10, step=1)
        assert await c.tick() is False
    assert node.proposals == proposals and sm.compact_revision == 0


async def test_a_failed_proposal_is_retried_on_the_next_check():
    sm = KVStateMachine()
    node = FakeNode(sm)
    await write(node, 50)
    c = Compactor(node, sm, retention=10, step=1)
    node.fail_with = Unavailable("lost leadership")
    assert await c.tick() is False and c.failed == 1 and sm.compact_revision == 0
    node.fail_with = None
    assert await c.tick() is True and sm.compact_revision == 40


async def test_a_manual_compaction_further_on_is_fine():
    sm = KVStateMachine()
    node = FakeNode(sm)
    await write(node, 50)
    await node.propose(encode_command({"op": "compact", "revision": 49}))
    c = Compactor(node, sm, retention=10, step=1)
    assert c.target() is None  # already compacted further than the retention asks
    assert await c.tick() is False and sm.compact_revision == 49


async def test_runs_while_leader_and_stops_cleanly():
    sm = KVStateMachine()
    node = FakeNode(sm)
    c = Compactor(node, sm, retention=20, interval=0.02, step=1)
    c.start()
    try:
        await write(node, 100)
        await until(lambda: sm.compact_revision >= 80)
        node.role = "follower"  # leadership lost: it stops proposing
        await asyncio.sleep(0.05)
        proposed = c.proposed
        await write(node, 100)
        await asyncio.sleep(0.2)
        assert c.proposed == proposed and sm.compact_revision < 180
        node.role = "leader"
        await until(lambda: sm.compact_revision >= 180)
    finally:
        await c.stop()
    await c.stop()  # twice: harmless
    proposed = c.proposed
    await write(node, 100)
    await asyncio.sleep(0.1)
    assert c.proposed == proposed  # stopped: no more proposals


def test_bad_settings():
    sm = KVStateMachine()
    with pytest.raises(ValueError):
        Compactor(FakeNode(sm), sm, retention=0)
    with pytest.raises(ValueError):
        Compactor(FakeNode(sm), sm, retention=5, interval=0)
    assert DEFAULT_RETENTION >= 1000


# -- a real cluster -------------------------------------------------------------------------


def meshraft_cli(endpoints: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshraft.cli", *args,
                           "--endpoints", endpoints],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))


async def test_a_cluster_with_auto_compaction_keeps_about_the_retention(tmp_path):
    retention = 50
    with LocalCluster(plan_members(3), tmp_path, transport="udp",
                      extra_args=["--auto-compact-retention", str(retention)]) as cluster:
        await cluster.wait_ready(60, write_key="ready")
        endpoints = ",".join(cluster.endpoints())
        async with kc.AsyncClient(endpoints, timeout=30) as c:
            sem = asyncio.Semaphore(32)

            async def put(i: int) -> int:
                async with sem:
                    return (await c.put(f"k{i % 10}", str(i))).revision

            revs = await asyncio.gather(*(put(i) for i in range(400)))
            last = max(revs)

            async def compacted_everywhere() -> dict[str, dict]:
                statuses = await cluster.statuses()
                assert all(st is not None for st in statuses.values())
                return {m: st["kv"] for m, st in statuses.items()}

            deadline = time.monotonic() + 60
            while True:
                kvs = await compacted_everywhere()
                # every member (followers through the log) compacted close to the retention
                if all(kv["compact_revision"] >= last - retention - retention // 10 - 1
                       for kv in kvs.values()):
                    break
                assert time.monotonic() < deadline, kvs
                await asyncio.sleep(0.2)
            point = min(kv["compact_revision"] for kv in kvs.values())
            assert 0 < point <= last - retention + 1
            with pytest.raises(kc.Compacted) as exc:
                await c.get("k1", revision=point - 1)
            assert exc.value.compact_revision >= point
            kv = await c.get("k1", revision=last)
            assert kv is not None
        r = meshraft_cli(endpoints, "get", "k1", "--rev", "1")
        assert r.returncode == 1 and "compacted at revision" in r.stderr, r.stderr
        r = meshraft_cli(endpoints, "list", "k", "--rev", str(last + 1000))
        assert r.returncode == 2 and "future revision" in r.stderr, r.stderr
        r = meshraft_cli(endpoints, "compact", "1")
        assert r.returncode == 1 and "compacted at revision" in r.stderr
        for m in cluster.ids:
            cluster.procs[m].signal(signal.SIGTERM)
        for m in cluster.ids:  # stops cleanly with its member (the compactor included)
            assert cluster.procs[m].popen.wait(30) == 0, cluster.procs[m].log_tail()

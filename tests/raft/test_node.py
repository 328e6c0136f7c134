"""RaftNode in one event loop over real UDP sockets on loopback: proposals from
any member, ReadIndex barriers, restart from the data dir, a failing disk,
hostile datagrams, membership changes and leadership transfer."""

# Over 600 lines: the node's behaviours share one real-socket cluster fixture; each
# test is one behaviour through the public API.

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import errno
import os
import socket
from pathlib import Path

import msgpack
import pytest
from conftest import free_ports

from meshraft.raft.core import RaftCore
from meshraft.raft.errors import (
    Busy,
    CorruptWAL,
    DataDirLocked,
    NodeFailed,
    RaftError,
    Removed,
    StorageFailed,
    Timeout,
    Unavailable,
)
from meshraft.raft.messages import (
    Entry,
    InvalidMessage,
    Message,
    MessageType,
    encode_message,
)
from meshraft.raft.node import NodeConfig, RaftNode
from meshraft.raft.storage import DiskIO
from meshraft.raft.udp import udp_transport_factory

# Default timing (0.5-1 s elections): shorter ones flap when the test machine is busy.
FAST = dict(tick_interval=0.05, election_ticks=10)


class ListSM:
    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.restores = 0

    def apply(self, entry: Entry):
        if entry.data == b"boom":
            raise ValueError("boom")
        self.items.append(entry.data)
        return (entry.index, len(self.items))

    def snapshot(self) -> bytes:
        return msgpack.packb(self.items)

    def restore(self, data: bytes) -> None:
        self.items = list(msgpack.unpackb(data))
        self.restores += 1


class Cluster:
    def __init__(self, tmp: Path, n: int = 3, **cfg) -> None:
        self.tmp = tmp
        self.ids = [str(i + 1) for i in range(n)]
        self.addrs = {nid: ("127.0.0.1", p) for nid, p in zip(self.ids, free_ports(n), strict=True)}
        self.cfg = {**FAST, **cfg}
        self.nodes: dict[str, RaftNode] = {}
        self.sms: dict[str, ListSM] = {}

    async def start(self, nid: str, peers: dict | None = None, join: bool = False,
                    disk_io: DiskIO | None = None, **cfg) -> RaftNode:
        sm = self.sms.get(nid) if nid in self.nodes else None
        sm = ListSM()
        self.sms[nid] = sm
        node = await RaftNode.start(
            node_id=nid, peers=peers if peers is not None else self.addrs,
            transport_factory=udp_transport_factory(self.addrs[nid]),
            data_dir=self.tmp / nid, state_machine=sm,
            config=NodeConfig(**{**self.cfg, **cfg}), join=join, disk_io=disk_io)
        self.nodes[nid] = node
        return node

    async def start_all(self) -> None:
        for nid in self.ids:
            await self.start(nid)

    async def leader(self, timeout: float = 10.0) -> RaftNode:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            live = [n for n in self.nodes.values()
                    if not n._stopped and n.status()["last_error"] is None
                    and not n.status()["removed"]]
            leaders = [n for n in live if n.role == "leader"]
            # Everyone alive knows it, so a proposal from any of them is forwarded.
            if len(leaders) == 1 and all(n.leader_id == leaders[0].node_id for n in live
                                         if n.status()["voters"]):
                return leaders[0]
            await asyncio.sleep(0.02)
        raise AssertionError("no single leader")

    async def wait(self, pred, timeout: float = 10.0, what: str = "condition") -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if pred():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    async def stop(self) -> None:
        for n in self.nodes.values():
            await n.stop()


@pytest.fixture
async def cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        await c.stop()


async def test_proposals_from_any_member_and_read_barrier(cluster: Cluster) -> None:
    await cluster.start_all()
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    r1 = await leader.propose(b"a")
    r2 = await follower.propose(b"b")  # forwarded to the leader inside Raft
    assert r2[1] == r1[1] + 1 and r2[0] > r1[0]
    # The state machine sees exactly the proposed bytes, no tag, no no-ops.
    await follower.read_barrier()
    assert cluster.sms[follower.node_id].items == [b"a", b"b"]
    batches_before = leader.status()["stats"]["fsync_batches"]
    results = await asyncio.gather(*(cluster.nodes[nid].propose(b"c%d" % k)
                                     for k in range(30) for nid in cluster.ids))
    assert sorted(r[1] for r in results) == list(range(3, 93))
    # Group commit: 90 concurrent proposals shared a handful of fsyncs on the leader.
    assert leader.status()["stats"]["fsync_batches"] - batches_before < 45
    for n in cluster.nodes.values():
        await n.read_barrier()
    await cluster.wait(lambda: len({tuple(sm.items) for sm in cluster.sms.values()}) == 1,
                       what="all members to apply the same list")
    st = follower.status()
    assert st["role"] == "follower" and st["leader"] == leader.node_id
    assert st["applied_index"] == st["commit_index"] >= 92
    assert st["voters"] == ["1", "2", "3"] and st["last_error"] is None
    assert leader.status()["progress"].keys() == {"1", "2", "3"}
    # A state machine that raises hands the error to its proposer, and goes on.
    with pytest.raises(ValueError, match="boom"):
        await follower.propose(b"boom")
    assert (await leader.propose(b"after"))[1] == 93
    # The size limit is stated and enforced before anything is appended.
    big = b"x" * leader.max_proposal_bytes
    assert (await follower.propose(big))[1] == 94
    with pytest.raises(ValueError, match="exceeds"):
        await leader.propose(big + b"x")


async def test_restart_recovers_log_and_snapshot(cluster: Cluster) -> None:
    cluster.cfg["snapshot_entries"] = 40
    cluster.cfg["compaction_margin"] = 5
    await cluster.start_all()
    leader = await cluster.leader()
    for k in range(100):
        await leader.propose(b"v%d" % k)
    victim = next(nid for nid in cluster.ids if cluster.nodes[nid] is not leader)
    await cluster.wait(lambda: len(cluster.sms[victim].items) == 100, what="victim applied")
    assert cluster.nodes[victim].status()["storage"]["snapshot_index"] > 0
    await cluster.nodes[victim].stop()
    for k in range(100, 110):
        await leader.propose(b"v%d" % k)
    node = await cluster.start(victim)
    sm = cluster.sms[victim]
    assert sm.restores == 1  # from its own snapshot, then the log after it
    await cluster.wait(lambda: len(sm.items) == 110, what="restarted member to catch up")
    assert sm.items == [b"v%d" % k for k in range(110)]
    await node.read_barrier()


class FailingFsync(DiskIO):
    def __init__(self) -> None:
        self.broken = False

    def fsync(self, fd: int) -> None:
        if self.broken:
            raise OSError(errno.EIO, "simulated fsync failure")
        super().fsync(fd)

    def write(self, fd: int, data) -> None:
        if self.broken == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(fd, data)


@pytest.mark.parametrize("mode", [True, "enospc"])
async def test_failing_disk_stops_writes_and_loses_nothing(cluster: Cluster, mode) -> None:
    io = FailingFsync()
    for nid in cluster.ids:
        await cluster.start(nid, disk_io=io if nid == "1" else None)
    await cluster.leader()
    n1 = cluster.nodes["1"]
    acked = [await n1.propose(b"x%d" % k) for k in range(20)]
    assert len(acked) == 20
    io.broken = mode
    with pytest.raises((StorageFailed, Timeout)):
        for k in range(20, 40):
            await n1.propose(b"x%d" % k, timeout=2)
    await cluster.wait(lambda: n1.status()["last_error"] is not None, what="the failure reported")
    reason = n1.status()["last_error"]
    assert ("simulated fsync failure" if mode is True else "No space left") in reason
    with pytest.raises(StorageFailed, match=r"simulated|No space"):
        await n1.propose(b"never")
    with pytest.raises(StorageFailed):
        await n1.read_barrier()
    # The other two go on without it.
    leader = await cluster.leader()
    assert leader.node_id != "1"
    await leader.propose(b"still-works")
    # Restarted on a working disk, member 1 has everything it acknowledged.
    await n1.stop()
    await cluster.start("1")
    sm = cluster.sms["1"]
    await cluster.wait(lambda: b"still-works" in sm.items, what="member 1 to catch up")
    assert sm.items[:20] == [b"x%d" % k for k in range(20)]


async def test_a_bug_in_the_core_stops_the_member_and_status_says_why(
        cluster: Cluster, monkeypatch, caplog) -> None:
    """Fail-stop: an exception out of core.step other than InvalidMessage is a bug that
    may have left Raft's state half-changed. The member stops serving (as etcd does):
    waiting and later requests fail, status() says why, the others carry on."""
    await cluster.start_all()
    leader = await cluster.leader()
    sick = next(n for n in cluster.nodes.values() if n is not leader)
    await sick.propose(b"before")
    step = RaftCore.step
    invalid_once = [True]

    def buggy_step(self, m):
        if self.id == sick.node_id:
            if invalid_once:  # input the core refuses is counted, not a bug
                invalid_once.clear()
                raise InvalidMessage("forged append")
            raise RuntimeError("injected bug")
        return step(self, m)

    monkeypatch.setattr(RaftCore, "step", buggy_step)
    # Made before any datagram reaches the patched core (no await in between).
    pending_read = sick.read_index_future()
    pending_write = sick.propose_future(b"in flight")
    await cluster.wait(lambda: sick.status()["failed"] is not None, what="the fail-stop")
    st = sick.status()
    assert st["dropped"].get("rejected") == 1, st["dropped"]
    failed = st["failed"]
    assert "RuntimeError: injected bug" in failed and "core.step" in failed, failed
    assert "buggy_step" in failed  # where it was raised
    assert st["last_error"] == failed and st["role"] == "follower" and st["leader"] is None
    with pytest.raises(NodeFailed, match="injected bug"):
        await pending_read
    with pytest.raises(Timeout, match="outcome unknown"):  # the others may still apply it
        await pending_write
    with pytest.raises(NodeFailed, match="injected bug"):
        await sick.propose(b"after")
    with pytest.raises(NodeFailed):
        await sick.read_barrier()
    with pytest.raises(NodeFailed):
        await sick.wait_applied(10**6)
    # It stays stopped: nothing it receives is stepped any more.
    received = st["stats"]["received"]
    await asyncio.sleep(0.3)
    assert sick.status()["stats"]["received"] == received
    # The log has the traceback, with the member id.
    bugs = [r for r in caplog.records if "fail-stop" in r.getMessage()]
    assert bugs and f"[node {sick.node_id}]" in bugs[0].getMessage()
    assert "Traceback" in bugs[0].getMessage() and "injected bug" in bugs[0].getMessage()
    # The others go on without it.
    monkeypatch.setattr(RaftCore, "step", step)
    assert leader.role == "leader"
    await leader.propose(b"still-works")


async def test_a_bug_in_the_core_tick_also_stops_the_member(cluster: Cluster,
                                                            monkeypatch) -> None:
    await cluster.start_all()
    leader = await cluster.leader()
    sick = next(n for n in cluster.nodes.values() if n is not leader)
    tick = RaftCore.tick

    def buggy_tick(self):
        if self.id == sick.node_id:
            raise KeyError("injected")
        return tick(self)

    monkeypatch.setattr(RaftCore, "tick", buggy_tick)
    await cluster.wait(lambda: sick.status()["failed"] is not None, what="the fail-stop")
    assert "core.tick: KeyError" in sick.status()["failed"]
    with pytest.raises(NodeFailed):
        await sick.propose(b"x")
    monkeypatch.setattr(RaftCore, "tick", tick)
    await leader.propose(b"still-works")


async def test_hostile_datagrams_are_counted_and_dropped(cluster: Cluster) -> None:
    await cluster.start_all()
    leader = await cluster.leader()
    target = cluster.addrs[leader.node_id]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for junk in (b"", b"\x00\xff garbage", msgpack.packb([1, 2, 3]), os.urandom(500),
                     msgpack.packb([1, 99, "1", "2", 0, 0, 0, [], 0, False, 0, b"", None])):
            s.sendto(junk, target)
        s.sendto(b"x" * 65000, target)
        for k in range(50):  # well-formed, from strangers: they must not fill the book
            s.sendto(encode_message(Message(MessageType.HEARTBEAT_RESP, leader.node_id,
                                            f"stranger{k}", term=1)), target)
        s.sendto(encode_message(Message(MessageType.APP, "someone-else", "2", term=1)),
                 target)
        # Control datagrams ("you were removed"): garbage, and well-formed notices that
        # come from a stranger or from a member's id at an address that is not its own.
        ctl = bytes([0xC1])
        for junk in (ctl, ctl + b"\xff", ctl + os.urandom(40), ctl + msgpack.packb([1, 2]),
                     ctl + msgpack.packb(["removed", leader.node_id, "2", "x"])):
            s.sendto(junk, target)
        other = next(i for i in cluster.addrs if i != leader.node_id)
        for frm in ("stranger", other):
            s.sendto(ctl + msgpack.packb(["removed", leader.node_id, frm, 10**6]), target)
    finally:
        s.close()
    await cluster.wait(lambda: sum(leader.status()["dropped"].values()) >= 11,
                       what="drops to be counted")
    dropped = leader.status()["dropped"]
    assert dropped.get("malformed", 0) >= 10 and dropped.get("oversize", 0) == 1, dropped
    await cluster.wait(lambda: leader.status()["dropped"].get("rejected", 0) >= 2,
                       what="the forged removal notices to be rejected")
    await cluster.wait(lambda: leader.status()["dropped"].get("wrong_recipient") == 1,
                       what="the misaddressed message to be dropped")
    assert set(leader.status()["addresses"]) == {"1", "2", "3"}
    assert leader.role == "leader"
    await leader.propose(b"fine")


async def test_membership_join_promote_remove_and_transfer(tmp_path: Path) -> None:
    c = Cluster(tmp_path, n=4)
    initial = {nid: c.addrs[nid] for nid in ("1", "2", "3")}
    try:
        for nid in ("1", "2", "3"):
            await c.start(nid, peers=initial)
        leader = await c.leader()
        for k in range(10):
            await leader.propose(b"m%d" % k)
        # A joining member is told where the others are, not who votes.
        n4 = await c.start("4", peers=c.addrs, join=True)
        assert n4.status()["voters"] == []
        # Any member can ask: a follower's request goes through the leader.
        follower = next(c.nodes[n] for n in ("1", "2", "3") if c.nodes[n] is not leader)
        await leader.add_member("4", c.addrs["4"], learner=True)
        await c.wait(lambda: len(c.sms["4"].items) == 10, what="the learner to catch up")
        assert n4.role == "learner"
        await leader.promote_member("4")
        await c.wait(lambda: n4.status()["voters"] == ["1", "2", "3", "4"], what="promotion")
        await follower.propose(b"with-4")
        await c.wait(lambda: c.sms["4"].items[-1:] == [b"with-4"], what="4 applies")
        await leader.transfer_leadership("4")
        assert n4.role == "leader"
        await c.nodes["4"].remove_member(leader.node_id)
        old = leader
        await c.wait(lambda: old.status()["removed"], what="the old leader to learn it's removed")
        with pytest.raises(Removed):
            await old.propose(b"nope")
        assert (await n4.propose(b"three-left"))[1] == 12
    finally:
        await c.stop()


async def test_a_transfer_that_times_out_is_abandoned_at_once(cluster: Cluster) -> None:
    """While a transfer is in progress the leader takes no proposals; one that did not
    finish in time is given up when the caller hears Timeout, not an election timeout
    later (a retried move-leader used to leave one behind)."""
    await cluster.start_all()
    leader = await cluster.leader()
    await leader.propose(b"before")
    gone = next(n for n in cluster.nodes.values() if n is not leader)
    await gone.stop()
    with pytest.raises(Timeout):
        await leader.transfer_leadership(gone.node_id, timeout=0.2)
    assert leader.status()["lead_transferee"] is None
    assert leader.role == "leader"
    await leader.propose(b"after", timeout=2)


async def test_result_to_is_ended_by_the_first_applied_proposal_only(cluster: Cluster) -> None:
    """propose_future(result_to=F): F ends with the result when the entry is applied
    here; two proposals may share F (the first applied ends it); a proposal that
    fails, or whose wait was cancelled, never ends F."""
    await cluster.start_all()
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    loop = asyncio.get_running_loop()
    for node in (leader, follower):  # from the leader, and forwarded from a follower
        out = loop.create_future()
        fut = node.propose_future(b"once " + node.node_id.encode(), result_to=out)
        result = await asyncio.wait_for(out, 10)
        assert await asyncio.wait_for(fut, 10) == result
    shared = loop.create_future()
    first = leader.propose_future(b"twice", result_to=shared)
    second = leader.propose_future(b"twice", result_to=shared)
    got = await asyncio.wait_for(shared, 10)
    assert got == await asyncio.wait_for(first, 10)
    assert (await asyncio.wait_for(second, 10))[0] == got[0] + 1
    # Cancelling a proposal's future stops that wait, and its link to result_to.
    unlinked = loop.create_future()
    leader.propose_future(b"cancelled", result_to=unlinked).cancel()
    await cluster.wait(lambda: b"cancelled" in cluster.sms[leader.node_id].items,
                       what="the cancelled wait's entry to apply anyway")
    assert not unlinked.done()
    # A proposal that fails (its member stops before it is committed) leaves it alone.
    lost = loop.create_future()
    await leader.stop()
    pending = follower.propose_future(b"never", result_to=lost)
    await follower.stop()
    with pytest.raises(RaftError):
        await pending
    assert not lost.done()


async def test_an_applied_observer_that_raises_stops_neither_the_node_nor_the_others(
        cluster: Cluster) -> None:
    await cluster.start_all()
    leader = await cluster.leader()
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("a listener's bug")

    leader.applied_observers.append(broken)
    leader.applied_observers.append(lambda: calls.append("next"))
    await leader.propose(b"a")
    await leader.propose(b"b")
    assert calls.count("next") >= 2 and calls.count("broken") == calls.count("next")
    assert leader.fail_stopped is None and leader.role == "leader"


async def test_followers_learn_each_commit_at_once_not_from_the_next_heartbeat(
        tmp_path: Path) -> None:
    """A leader applies a commit before it sends the new commit index (in the loop's
    next iteration, after the writers' answers): the followers must still get it
    then, not only with the next heartbeat (2 s apart here)."""
    c = Cluster(tmp_path, tick_interval=0.02, election_ticks=150, heartbeat_ticks=100)
    try:
        await c.start_all()
        leader = await c.leader(timeout=30)
        followers = [n for n in c.nodes.values() if n is not leader]
        for k in range(3):
            index, _ = await leader.propose(b"w%d" % k)
            await c.wait(lambda i=index: all(f.applied_index >= i for f in followers),
                         timeout=0.5, what=f"the followers to apply entry {index}")
    finally:
        await c.stop()


async def test_busy_when_too_many_proposals_in_flight(cluster: Cluster) -> None:
    cluster.cfg["max_inflight_proposals"] = 2
    await cluster.start_all()
    leader = await cluster.leader()
    tasks = [asyncio.ensure_future(leader.propose(b"p%d" % k)) for k in range(5)]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    busy = [d for d in done if isinstance(d, Busy)]
    assert len(busy) == 3 and all(isinstance(b, Unavailable) for b in busy)
    assert len([d for d in done if isinstance(d, tuple)]) == 2


async def test_data_dir_lock_and_corrupt_wal_refusal(cluster: Cluster) -> None:
    await cluster.start_all()
    leader = await cluster.leader()
    for k in range(20):
        await leader.propose(b"w%d" % k)
    with pytest.raises(DataDirLocked, match="in use"):
        await RaftNode.start(node_id="1", peers=cluster.addrs,
                             transport_factory=udp_transport_factory(("127.0.0.1", 0)),
                             data_dir=cluster.tmp / "1", state_machine=ListSM())
    victim = next(nid for nid in cluster.ids if cluster.nodes[nid] is not leader)
    await cluster.nodes[victim].stop()
    seg = sorted((cluster.tmp / victim / "wal").glob("*.wal"))[-1]
    raw = bytearray(seg.read_bytes())
    pos = raw.find(b"w3")
    assert pos > 0
    raw[pos + 1] ^= 0x40
    seg.write_bytes(bytes(raw))
    with pytest.raises(CorruptWAL) as info:
        await cluster.start(victim)
    assert str(seg) in str(info.value) and "offset" in str(info.value)


class Gate:
    """A transport wrapper the test can close: while closed, nothing goes in or out."""

    def __init__(self) -> None:
        self.closed = False

    def wrap(self, inner):
        gate = self

        class GatedProtocol(asyncio.DatagramProtocol):
            def __init__(self, proto) -> None:
                self.proto = proto

            def connection_made(self, transport) -> None:
                self.proto.connection_made(transport)

            def datagram_received(self, data, addr) -> None:
                if not gate.closed:
                    self.proto.datagram_received(data, addr)

            def error_received(self, exc) -> None:
                self.proto.error_received(exc)

            def connection_lost(self, exc) -> None:
                self.proto.connection_lost(exc)

        class GatedTransport(asyncio.DatagramTransport):
            def __init__(self, transport) -> None:
                super().__init__()
                self.t = transport

            def sendto(self, data, addr=None) -> None:
                if not gate.closed:
                    self.t.sendto(data, addr)

            def close(self) -> None:
                self.t.close()

        async def factory(protocol_factory):
            transport, proto = await inner(lambda: GatedProtocol(protocol_factory()))
            return GatedTransport(transport), proto

        return factory


async def test_proposal_on_a_deposed_leader_fails_fast_as_not_applied(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    gates = {nid: Gate() for nid in c.ids}
    try:
        for nid in c.ids:
            sm = ListSM()
            c.sms[nid] = sm
            c.nodes[nid] = await RaftNode.start(
                node_id=nid, peers=c.addrs, data_dir=tmp_path / nid, state_machine=sm,
                transport_factory=gates[nid].wrap(udp_transport_factory(c.addrs[nid])),
                config=NodeConfig(**FAST))
        old = await c.leader()
        await old.propose(b"before")
        gates[old.node_id].closed = True
        doomed = asyncio.ensure_future(old.propose(b"lost", timeout=30))
        others = [n for n in c.nodes.values() if n is not old]
        await c.wait(lambda: any(n.role == "leader" for n in others), what="a new leader")
        new = next(n for n in others if n.role == "leader")
        for k in range(5):
            await new.propose(b"new%d" % k)
        gates[old.node_id].closed = False
        # Told when its slot was overwritten (certainly not applied), not a Timeout.
        with pytest.raises(Unavailable, match="not applied"):
            await doomed
        await c.wait(lambda: c.sms[old.node_id].items[-1:] == [b"new4"], what="old catches up")
        for sm in c.sms.values():
            assert b"lost" not in sm.items
    finally:
        await c.stop()


class NoSnapshotSM(ListSM):
    def snapshot(self) -> bytes:
        raise RuntimeError("cannot snapshot today")


async def test_failing_state_machine_snapshot_does_not_stop_replication(tmp_path: Path) -> None:
    c = Cluster(tmp_path, snapshot_entries=10)
    try:
        for nid in c.ids:
            sm = NoSnapshotSM()
            c.sms[nid] = sm
            c.nodes[nid] = await RaftNode.start(
                node_id=nid, peers=c.addrs, data_dir=tmp_path / nid, state_machine=sm,
                transport_factory=udp_transport_factory(c.addrs[nid]),
                config=NodeConfig(**c.cfg))
        leader = await c.leader()
        for k in range(40):
            await leader.propose(b"s%d" % k)
        st = leader.status()
        assert st["storage"]["snapshot_index"] == 0
        assert "cannot snapshot today" in st["last_error"]
        assert st["applied_index"] == st["commit_index"]
        assert c.sms[leader.node_id].items == [b"s%d" % k for k in range(40)]
    finally:
        await c.stop()


class GatedFsync(DiskIO):
    """fsync waits (in the storage's worker thread) while the gate is shut."""

    def __init__(self) -> None:
        import threading

        self.open = threading.Event()
        self.open.set()
        self.waiting = 0

    def fsync(self, fd: int) -> None:
        if not self.open.is_set():
            self.waiting += 1
            self.open.wait(30)
        super().fsync(fd)


async def test_followers_ack_only_after_fsync_and_loop_keeps_running(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    gates = {nid: GatedFsync() for nid in c.ids}
    try:
        for nid in c.ids:
            await c.start(nid, disk_io=gates[nid])
        leader = await c.leader()
        await leader.propose(b"first")
        followers = [n for n in c.nodes.values() if n is not leader]
        for f in followers:
            gates[f.node_id].open.clear()
        pending = asyncio.ensure_future(leader.propose(b"second", timeout=20))
        await c.wait(lambda: all(gates[f.node_id].waiting for f in followers),
                     what="both followers to be inside a stuck fsync")
        await asyncio.sleep(1.0)  # many ticks and heartbeats while the disks are stuck
        assert not pending.done(), "committed without a follower's entry on disk"
        for f in followers:  # their event loops still run while the fsync hangs
            assert f.status()["leader"] == leader.node_id
            assert f.status()["last_index"] > f.status()["commit_index"]
        # (The leader may step down meanwhile: followers stuck in a write cannot
        # answer heartbeats, and CheckQuorum notices. The entry survives either way.)
        for f in followers:
            gates[f.node_id].open.set()
        assert (await pending)[1] == 2
    finally:
        for g in gates.values():
            g.open.set()
        await c.stop()


async def test_future_api_answers_without_a_waiting_coroutine_and_sees_leader_changes(
        cluster: Cluster) -> None:
    """propose_future/read_index_future end with the answer; cancelling one stops only
    the wait; leader_change_future ends with the new leader when the leader goes."""
    await cluster.start_all()
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    futs = [follower.propose_future(b"f%d" % i) for i in range(5)]
    results = await asyncio.wait_for(asyncio.gather(*futs), 10)
    assert len({index for index, _ in results}) == 5
    assert all(b"f%d" % i in cluster.sms[follower.node_id].items for i in range(5))
    assert await asyncio.wait_for(follower.read_index_future(), 10) is None
    gone = follower.propose_future(b"cancelled wait")
    gone.cancel()
    await cluster.wait(lambda: b"cancelled wait" in cluster.sms[follower.node_id].items,
                       what="the proposal whose wait was cancelled applies anyway")
    change = follower.leader_change_future()
    assert follower.leader_change_future() is change  # shared, not one per caller
    old = leader.node_id
    await leader.stop()
    new_leader = await asyncio.wait_for(change, 15)
    # it ends on the first change seen: no leader for a while, or the new one at once
    assert new_leader != old
    await cluster.wait(lambda: follower.leader_id not in (None, old), 15, "a new leader")
    assert (await asyncio.wait_for(follower.propose_future(b"after"), 10))[0] > 5


async def test_a_snapshot_is_triggered_by_log_bytes_as_well_as_by_entry_count(
        tmp_path: Path) -> None:
    c = Cluster(tmp_path, n=1, snapshot_entries=1_000_000, snapshot_bytes=30_000,
                compaction_margin=0)
    try:
        await c.start_all()
        node = await c.leader()
        for k in range(20):  # few entries, few bytes: no snapshot
            await node.propose(b"small%d" % k)
        assert node.status()["storage"]["snapshot_index"] == 0
        for k in range(10):  # still far from snapshot_entries, but 50 kB of entry data
            await node.propose(bytes([65 + k]) * 5000)
        await c.wait(lambda: node.status()["storage"]["snapshot_index"] > 0,
                     what="a snapshot triggered by the size of the log")
        assert node.status()["storage"]["snapshot_index"] <= node.applied_index
    finally:
        await c.stop()

"""The Raft simulator: a whole cluster of cores on a simulated network and clock,
driven by one seed, with the Raft safety properties checked at every step.

This module owns the simulated world (network that drops, duplicates, delays,
reorders and partitions; crash-restart that keeps exactly what each Ready
persisted; clients that write, cas and read with ReadIndex) and the checkers.
It must never read a clock, do IO other than printing its result, or use global
randomness: everything comes from the seed, so a failing seed replays exactly.

    python -m meshraft.raft.rafttest.sim --seeds 1000 [--start 0] [--nodes 3] [--ticks 300] \
        [--checker jepsen_lite.checker:check_history] [-v]

Checked while running: Election Safety (one leader per term), Log Matching (an
(index, term) pair names one entry and one predecessor term, on every node),
Leader Completeness (a new leader holds every committed entry), State Machine
Safety (every node applies the same entry at an index, and only committed ones),
no committed command lost (after healing, every node converges on a log that
holds every committed entry and every acknowledged write), and the clients'
history is linearizable (by the checker the caller hands in: the tests pass
jepsen-lite's ``check_history``; this package never imports it).
"""

# Why this module is over 600 lines: the simulated world (network, disks, crashes,
# clients) and the safety checkers observe the same run step by step; split apart,
# every checker would need the world's internals. It is test support, not library.

from __future__ import annotations

import argparse
import heapq
import importlib
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..core import ProposalDropped, RaftConfig, RaftCore
from ..messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    Ready,
    decode_message,
    encode_message,
)
from .scenario import Disk

# A linearizability checker: called as ``checker(history, "cas-register", time_limit=...,
# workers=1, explain=False)`` with the clients' history (a list of jepsen-style event
# dicts); returns an object whose ``valid`` is True, False or "unknown" (the signature
# of ``jepsen_lite.checker.check_history``).
HistoryChecker = Callable[..., Any]

STEPS_PER_TICK = 4  # the network runs at a finer grain than the Raft clock


class SafetyViolation(AssertionError):
    pass


@dataclass
class SimParams:
    nodes: int = 3
    ticks: int = 300  # ticks with faults; then heal, converge, and one leader crash
    clients: int = 4
    keys: int = 2
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    op_timeout_ticks: int = 30
    compact_every: int = 12  # entries applied between snapshots
    max_msg_bytes: int = 8192  # small, so snapshots go in several chunks
    converge_ticks: int = 400
    check_linearizable: bool = True


@dataclass
class ClientOp:
    client: int
    process: int
    seq: int
    f: str
    key: str
    value: object
    node: str
    deadline: int
    data: bytes = b""
    ctx: bytes = b""
    read_index: int | None = None


@dataclass
class SimNode:
    id: str
    core: RaftCore
    disk: Disk
    alive: bool = True
    phase: int = 0
    sm: dict = field(default_factory=dict)  # key -> value
    last_seq: dict = field(default_factory=dict)  # client -> (seq, result): exactly once
    last_commit: int = 0
    writes: dict = field(default_factory=dict)  # data -> ClientOp waiting for apply here
    reads: dict = field(default_factory=dict)  # ctx -> ClientOp waiting for a read state
    incarnation: int = 0
    retired: bool = False  # removed from the cluster and shut down for good
    paused_until: int = 0  # a process pause (GC, SIGSTOP): frozen, state kept
    inflight: tuple | None = None  # (Ready, step its write completes, messages still due)
    drift: float = 1.0  # clock rate: ticks per simulated tick (safety must not care)

    def sm_bytes(self) -> bytes:
        return msgpack.packb([self.sm, {str(k): list(v) for k, v in self.last_seq.items()}],
                             use_bin_type=True)

    def sm_restore(self, data: bytes) -> None:
        if not data:
            self.sm, self.last_seq = {}, {}
            return
        sm, seqs = msgpack.unpackb(data, raw=False, strict_map_key=False)
        self.sm = dict(sm)
        self.last_seq = {int(k): tuple(v) for k, v in seqs.items()}


@dataclass
class SimResult:
    seed: int
    ok: bool
    error: str = ""
    steps: int = 0
    commits: int = 0
    ops_ok: int = 0
    ops_total: int = 0
    elections: int = 0
    election_ticks_after_crash: int | None = None
    linearizable: object = None
    snapshots_sent: int = 0
    messages: int = 0
    conf_changes: int = 0


class Simulation:
    def __init__(self, seed: int, params: SimParams | None = None, verbose: bool = False,
                 checker: HistoryChecker | None = None) -> None:
        self.seed = seed
        self.checker = checker  # None: the history is not checked (linearizable None)
        self.p = params or SimParams()
        self.verbose = verbose
        self.rng = random.Random(seed)
        self.step_no = 0
        self.ids = [str(i + 1) for i in range(self.p.nodes)]
        self.cfg = RaftConfig(
            election_ticks=self.p.election_ticks,
            heartbeat_ticks=self.p.heartbeat_ticks,
            max_msg_bytes=self.p.max_msg_bytes,
            max_inflight=self.rng.choice([1, 4, 64]),
            snapshot_window=self.rng.choice([1, 3]),
            # Safety must not depend on the optional features: sometimes run without.
            pre_vote=self.rng.random() < 0.85,
            check_quorum=self.rng.random() < 0.85,
        )
        self.nodes: dict[str, SimNode] = {}
        for i, n in enumerate(self.ids):
            core = RaftCore(n, ConfState(list(self.ids)), config=self.cfg,
                            rng=random.Random(f"{seed}/{n}/0"))
            self.nodes[n] = SimNode(n, core, Disk(), phase=i % STEPS_PER_TICK,
                                    drift=self.rng.choice([1.0, 1.0, 1.0, 0.7, 1.3]))
        self.net: list[tuple[int, int, Message]] = []
        self.net_seq = 0
        self.blocked: set[tuple[str, str]] = set()
        self.loss = 0.0
        self.dup = 0.0
        self.max_delay = 3
        # checker state
        self.leaders: dict[int, str] = {}
        self.entries_seen: dict[tuple[int, int], tuple[bytes, int | None]] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.commit_term: dict[int, int] = {}  # the term in which it was first committed
        self.history: list[dict] = []
        self.res = SimResult(seed, True)
        self.clients: dict[int, ClientOp | None] = {c: None for c in range(self.p.clients)}
        self.client_process = {c: c for c in range(self.p.clients)}
        self.client_seq = dict.fromkeys(range(self.p.clients), 0)
        self.next_process = self.p.clients
        self.value_counter = 0
        self.client_node: dict[int, str] = {}
        self.removals: list[tuple[str, int]] = []  # (node, index of its REMOVE entry)
        self.conf_changes = 0

    # ---- logging -------------------------------------------------------------------
    def trace(self, msg: str) -> None:
        if self.verbose:
            print(f"[{self.step_no:6d} t{self.step_no // STEPS_PER_TICK}] {msg}")

    def fail(self, msg: str) -> None:
        raise SafetyViolation(f"step {self.step_no}: {msg}")

    # ---- network -------------------------------------------------------------------
    def send(self, m: Message) -> None:
        b = encode_message(m)
        if len(b) > self.cfg.max_msg_bytes:
            self.fail(f"message of {len(b)} bytes exceeds the datagram size: {m.type.name}")
        self.res.messages += 1
        if m.type.name == "SNAP":
            self.res.snapshots_sent += 1
        if self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            delay = self.rng.randint(1, self.max_delay)
            self.net_seq += 1
            heapq.heappush(self.net, (self.step_no + delay, self.net_seq, decode_message(b)))

    def deliver_due(self) -> None:
        while self.net and self.net[0][0] <= self.step_no:
            _, _, m = heapq.heappop(self.net)
            dst = self.nodes.get(m.to)
            if dst is None or not dst.alive or (m.frm, m.to) in self.blocked:
                continue
            if dst.paused_until > self.step_no:
                # The OS buffers it; after the pause the process may first run its
                # timers and serve clients before it reads the socket.
                self.net_seq += 1
                due = dst.paused_until + self.rng.randint(1, 3 * STEPS_PER_TICK)
                heapq.heappush(self.net, (due, self.net_seq, m))
                continue
            dst.core.step(m)

    # ---- Ready processing, with the safety checks ------------------------------------
    def process(self, n: SimNode, crash_after_persist: bool = False) -> None:
        """Drive the node's Readies. Like the asyncio driver, a Ready may take a while
        to persist (an fsync), and messages, ticks and proposals keep reaching the
        core meanwhile; they go into the next Ready."""
        while n.alive:
            if n.inflight is not None:
                rd, due, rest = n.inflight
                if due > self.step_no:
                    return
                n.inflight = None
            elif n.core.has_ready():
                rd = n.core.ready()
                self.check_ready(n, rd)
                # Like the driver: a leader sends what the core allows before its write,
                # so a crash while the write is in flight loses it after they went out.
                early, rest = n.core.split_early(rd)
                for m in early:
                    self.send(m)
                if self.rng.random() < 0.3:
                    due = self.step_no + self.rng.randint(1, 2 * STEPS_PER_TICK)
                    n.inflight = (rd, due, rest)
                    return
            else:
                return
            if not self.finish_ready(n, rd, rest, crash_after_persist):
                return

    def finish_ready(self, n: SimNode, rd: Ready, rest: list[Message],
                     crash_after_persist: bool) -> bool:
        """Persist, send ``rest`` (the messages not sent before the write), apply,
        advance. False if the node crashed in between."""
        core = n.core
        n.disk.write(rd.snapshot, rd.entries, rd.hard_state)
        self.check_commit(n, rd)
        if crash_after_persist:
            self.crash(n, "after persist, before send")
            return False
        for m in rest:
            self.send(m)
        if rd.snapshot is not None:
            n.sm_restore(rd.snapshot.data)
            self.trace(f"{n.id} restored snapshot {rd.snapshot.meta.index}")
        for e in rd.committed_entries:
            self.apply(n, e)
        for rs in rd.read_states:
            op = n.reads.get(rs.context)
            if op is not None:
                op.read_index = rs.index
        core.advance(rd)
        self.finish_reads(n)
        if core.applied - core.log.offset >= self.p.compact_every and \
                (core.log.snapshot is None or core.applied > core.log.snapshot.meta.index):
            snap = core.compact(core.applied, n.sm_bytes(), retain=self.rng.choice([0, 3]))
            n.disk.compact(snap)
            self.trace(f"{n.id} compacted at {snap.meta.index}")
        return True

    def check_ready(self, n: SimNode, rd: Ready) -> None:
        core = n.core
        if rd.soft_state is not None and rd.soft_state.role == "leader":
            term = core.term
            other = self.leaders.setdefault(term, n.id)
            if other != n.id:
                self.fail(f"Election Safety: {other} and {n.id} both leaders in term {term}")
            self.res.elections += 1
            self.trace(f"{n.id} is leader of term {term}")
            self.check_leader_completeness(n)
        for e in rd.entries:
            prev = core.log.term(e.index - 1)
            key = (e.index, e.term)
            seen = self.entries_seen.get(key)
            if seen is None:
                self.entries_seen[key] = (e.data, prev)
            else:
                if seen[0] != e.data:
                    self.fail(f"Log Matching: two different entries {key} ({n.id})")
                if prev is not None and seen[1] is not None and seen[1] != prev:
                    self.fail(f"Log Matching: entry {key} on {n.id} follows term {prev}, "
                              f"elsewhere term {seen[1]}")

    def check_commit(self, n: SimNode, rd: Ready) -> None:
        core = n.core
        if rd.hard_state is not None and rd.hard_state.commit > n.last_commit:
            lo = max(n.last_commit + 1, core.log.first_index())
            for i in range(lo, rd.hard_state.commit + 1):
                t = core.log.term(i)
                if t is None:
                    continue
                self.record_commit(n, i, t, core.log.entry(i).data, rd.hard_state.term)
            n.last_commit = rd.hard_state.commit

    def record_commit(self, n: SimNode, i: int, t: int, data: bytes, term: int) -> None:
        """Entry ``i`` (term ``t``) is committed, as first known by ``n`` in ``term``."""
        have = self.committed.get(i)
        if have is None:
            # Durability: whoever commits first (the leader) counted a quorum of its
            # configuration; that many disks must hold the entry now.
            # (The bootstrap entries are committed by definition, on every disk soon.)
            copies = sum(1 for m in self.nodes.values() if m.disk.holds(i, t))
            need = len(n.core.voters) // 2 + 1
            if copies < need and not (t == 1 and i <= self.p.nodes):
                self.fail(f"committed {t}/{i} is on {copies} disks, a quorum is {need}")
            self.committed[i] = (t, data)
            self.commit_term[i] = term
            self.res.commits += 1
        elif have != (t, data):
            self.fail(f"State Machine Safety: {n.id} commits {t}/{i} but {have[0]}/{i} "
                      "was committed before")

    def check_leader_completeness(self, n: SimNode) -> None:
        # Raft's promise is for leaders of terms after the one that committed the entry
        # (a leader of an older term may still be elected late, from delayed votes).
        lg = n.core.log
        lterm = n.core.term
        for i, (t, _) in self.committed.items():
            if i <= lg.offset or self.commit_term[i] >= lterm:
                continue
            if lg.term(i) != t:
                self.fail(f"Leader Completeness: leader {n.id} (term {n.core.term}) lacks "
                          f"committed entry {t}/{i} (has term {lg.term(i)})")

    def apply(self, n: SimNode, e: Entry) -> None:
        have = self.committed.get(e.index)
        if have is None:
            self.record_commit(n, e.index, e.term, e.data, n.core.term)
        elif have != (e.term, e.data):
            self.fail(f"State Machine Safety: {n.id} applies {e.term}/{e.index}, committed "
                      f"was {have[0]}/{e.index}")
        if e.type != EntryType.NORMAL or not e.data:
            return
        client, seq, f, key, value, expected = msgpack.unpackb(e.data, raw=False)
        last = n.last_seq.get(client)
        if last is not None and last[0] >= seq:
            result = last[1] if last[0] == seq else None
        else:
            if f == "write":
                n.sm[key] = value
                result = True
            else:  # cas
                result = n.sm.get(key) == expected
                if result:
                    n.sm[key] = value
            n.last_seq[client] = (seq, result)
        op = n.writes.pop(e.data, None)
        if op is not None and self.clients.get(op.client) is op:
            self.complete(op, "ok" if result else "fail", error=None if result else "mismatch")

    def finish_reads(self, n: SimNode) -> None:
        for ctx, op in list(n.reads.items()):
            if op.read_index is not None and n.core.applied >= op.read_index:
                del n.reads[ctx]
                if self.clients.get(op.client) is op:
                    op.value = n.sm.get(op.key)
                    self.complete(op, "ok")

    # ---- clients -------------------------------------------------------------------
    def event(self, op: ClientOp, typ: str, value: object, error: str | None = None) -> None:
        ev = {"index": len(self.history), "process": op.process, "type": typ, "f": op.f,
              "key": op.key, "value": value}
        if error:
            ev["error"] = error
        self.history.append(ev)

    def complete(self, op: ClientOp, typ: str, error: str | None = None) -> None:
        value = op.value
        if op.f == "cas":
            value = list(op.value)  # type: ignore[arg-type]
        self.event(op, typ, value, error)
        self.res.ops_total += 1
        if typ == "ok":
            self.res.ops_ok += 1
        if typ == "info":
            self.client_process[op.client] = self.next_process
            self.next_process += 1
        self.clients[op.client] = None
        self.trace(f"client {op.client} {op.f} {op.key} {value} -> {typ}")

    def client_actions(self, tick: int) -> None:
        for c, op in self.clients.items():
            if op is not None:
                if tick >= op.deadline:
                    node = self.nodes[op.node]
                    node.writes.pop(op.data, None)
                    node.reads.pop(op.ctx, None)
                    self.complete(op, "fail" if op.f == "read" else "info", error="timeout")
                continue
            if self.rng.random() > 0.3:
                continue
            self.start_op(c, tick)

    def start_op(self, c: int, tick: int) -> None:
        live = [n for n in self.ids if self.nodes[n].alive]
        if not live:
            return
        # Clients are sticky (like a connection) but sometimes move to another node.
        last = self.client_node.get(c)
        if last in live and self.rng.random() < 0.8:
            node = self.nodes[last]
        else:
            node = self.nodes[self.rng.choice(live)]
        self.client_node[c] = node.id
        self.client_seq[c] += 1
        seq = self.client_seq[c]
        key = f"k{self.rng.randrange(self.p.keys)}"
        r = self.rng.random()
        deadline = tick + self.p.op_timeout_ticks
        if r < 0.4:
            op = ClientOp(c, self.client_process[c], seq, "read", key, None, node.id, deadline)
            op.ctx = f"{c}.{seq}".encode()
            self.event(op, "invoke", None)
            self.clients[c] = op
            try:
                node.core.read_index(op.ctx)
            except ProposalDropped:
                self.complete(op, "fail", error="no leader")
                return
            node.reads[op.ctx] = op
            return
        self.value_counter += 1
        v = self.value_counter
        if r < 0.8:
            op = ClientOp(c, self.client_process[c], seq, "write", key, v, node.id, deadline)
            expected = None
        else:
            seen = [x for x in (self.nodes[n].sm.get(key) for n in live) if x is not None]
            expected = self.rng.choice(seen) if seen and self.rng.random() < 0.8 else None
            op = ClientOp(c, self.client_process[c], seq, "cas", key, (expected, v), node.id,
                          deadline)
        op.data = msgpack.packb([c, seq, op.f, key, v, expected], use_bin_type=True)
        self.event(op, "invoke", list(op.value) if op.f == "cas" else v)  # type: ignore
        self.clients[c] = op
        try:
            node.core.propose(op.data)
        except ProposalDropped:
            self.complete(op, "fail", error="dropped")
            return
        node.writes[op.data] = op

    # ---- faults --------------------------------------------------------------------
    def crash(self, n: SimNode, why: str = "") -> None:
        n.alive = False
        n.inflight = None  # a write in progress is lost with the process
        self.trace(f"CRASH {n.id} {why}")
        for op in list(n.writes.values()):
            if self.clients.get(op.client) is op:
                self.complete(op, "info", error="node crashed")
        for op in list(n.reads.values()):
            if self.clients.get(op.client) is op:
                self.complete(op, "fail", error="node crashed")
        n.writes.clear()
        n.reads.clear()

    def restart(self, n: SimNode) -> None:
        n.incarnation += 1
        d = n.disk
        n.core = RaftCore(n.id, None, hard_state=d.hard_state, snapshot=d.snapshot,
                          entries=list(d.entries), config=self.cfg,
                          rng=random.Random(f"{self.seed}/{n.id}/{n.incarnation}"))
        n.sm_restore(d.snapshot.data if d.snapshot else b"")
        n.last_commit = d.hard_state.commit
        n.alive = True
        self.trace(f"RESTART {n.id} term={d.hard_state.term} entries={len(d.entries)}")

    def membership(self, grow_only: bool = False) -> None:
        ld = self.leader()
        if ld is None:
            return
        core = ld.core
        try:
            if core.learners:
                x = sorted(core.learners)[0]
                core.propose_conf_change(ConfChange(ConfChangeType.PROMOTE, x))
                what = f"promote {x}"
            elif len(core.voters) < self.p.nodes or grow_only:
                x = str(len(self.nodes) + 1)
                core.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, x))
                new = RaftCore(x, None, config=self.cfg, rng=random.Random(f"{self.seed}/{x}/0"))
                self.nodes[x] = SimNode(x, new, Disk(), phase=self.rng.randrange(STEPS_PER_TICK))
                self.ids.append(x)
                what = f"add learner {x}"
            else:
                x = self.rng.choice(sorted(core.voters))
                idx = core.propose_conf_change(ConfChange(ConfChangeType.REMOVE, x))
                assert idx is not None
                self.removals.append((x, idx))
                what = f"remove {x}"
        except ProposalDropped as e:
            self.trace(f"conf change refused by {ld.id}: {e}")
            return
        self.conf_changes += 1
        self.trace(f"CONF {ld.id} proposes {what}")

    def pause(self) -> None:
        ld = self.leader()
        live = [n for n in self.nodes.values() if n.alive and n.paused_until <= self.step_no]
        if not live:
            return
        n = ld if ld is not None and self.rng.random() < 0.5 else self.rng.choice(live)
        ticks = self.rng.randint(5, 40)
        n.paused_until = self.step_no + ticks * STEPS_PER_TICK
        self.trace(f"PAUSE {n.id} for {ticks} ticks")

    def transfer(self) -> None:
        ld = self.leader()
        if ld is None:
            return
        others = sorted(v for v in ld.core.voters if v != ld.id)
        if not others:
            return
        to = self.rng.choice(others)
        try:
            ld.core.transfer_leadership(to)
        except (ProposalDropped, ValueError):
            return
        self.trace(f"TRANSFER {ld.id} -> {to}")

    def retire_removed(self) -> None:
        # The operator shuts a member down once its removal is committed and applied.
        if not self.removals:
            return
        ld = self.leader()
        if ld is None:
            return
        keep = []
        for x, idx in self.removals:
            n = self.nodes[x]
            if ld.core.applied < idx:
                keep.append((x, idx))
            elif x not in ld.core.voters and x not in ld.core.learners and not n.retired:
                self.trace(f"RETIRE {x}")
                if n.alive:
                    self.crash(n, "removed")
                n.retired = True
            # else: the REMOVE entry was overwritten by a later leader; x stays a member
        self.removals = keep

    def members(self) -> set[str]:
        ld = self.leader()
        if ld is None:
            return set()
        return ld.core.voters | ld.core.learners

    def leader(self) -> SimNode | None:
        best = None
        for n in self.nodes.values():
            if n.alive and n.core.role.value == "leader":
                if best is None or n.core.term > best.core.term:
                    best = n
        return best

    def nemesis(self) -> None:
        r = self.rng.random()
        ids = list(self.ids)
        self.rng.shuffle(ids)
        self.blocked = set()
        kind = "heal"
        if r < 0.2:
            half = len(ids) // 2
            a, b = ids[:half], ids[half:]
            self.blocked = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
            kind = f"partition {a}|{b}"
        elif r < 0.35:
            ld = self.leader()
            if ld is not None:
                self.blocked = {(ld.id, y) for y in self.ids} | {(y, ld.id) for y in self.ids}
                kind = f"isolate leader {ld.id}"
        elif r < 0.5:
            # Asymmetric: some one-way links are down.
            pairs = [(a, b) for a in self.ids for b in self.ids if a != b]
            self.blocked = set(self.rng.sample(pairs, self.rng.randint(1, len(pairs) // 2)))
            kind = f"one-way {sorted(self.blocked)}"
        elif r < 0.65 and len(ids) >= 3:
            # Partial: a bridge node sees both sides; the sides do not see each other.
            bridge, rest = ids[0], ids[1:]
            half = len(rest) // 2
            a, b = rest[:half], rest[half:]
            self.blocked = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
            kind = f"bridge {bridge} between {a}|{b}"
        self.loss = self.rng.choice([0.0, 0.0, 0.05, 0.2])
        self.dup = self.rng.choice([0.0, 0.05])
        self.max_delay = self.rng.choice([2, 3, 8, 20])
        self.trace(f"NEMESIS {kind} loss={self.loss} dup={self.dup} delay<={self.max_delay}")

    # ---- the run -------------------------------------------------------------------
    def step(self, faults: bool) -> None:
        self.step_no += 1
        self.deliver_due()
        tick = self.step_no // STEPS_PER_TICK
        for n in self.nodes.values():
            if n.alive and n.paused_until <= self.step_no and \
                    (self.step_no + n.phase) % STEPS_PER_TICK == 0:
                if n.drift >= 1.0 or self.rng.random() < n.drift:
                    n.core.tick()
                if n.drift > 1.0 and self.rng.random() < n.drift - 1.0:
                    n.core.tick()
        if self.step_no % STEPS_PER_TICK == 0:
            self.client_actions(tick)
        for n in self.nodes.values():
            if n.alive and n.paused_until <= self.step_no:
                crash_now = faults and n.core.has_ready() and self.rng.random() < 0.002
                self.process(n, crash_after_persist=crash_now)
        if faults:
            if self.rng.random() < 0.004:
                live = [n for n in self.nodes.values() if n.alive]
                if len(live) > 1:
                    self.crash(self.rng.choice(live))
            for n in self.nodes.values():
                if not n.alive and not n.retired and self.rng.random() < 0.01:
                    self.restart(n)
            if self.rng.random() < 0.003:
                self.membership()
            if self.rng.random() < 0.002:
                self.pause()
            if self.rng.random() < 0.002:
                self.transfer()
            if self.rng.random() < 1 / (30 * STEPS_PER_TICK):
                self.nemesis()
        self.retire_removed()

    def run_ticks(self, ticks: int, faults: bool, until=None) -> int | None:
        for t in range(ticks * STEPS_PER_TICK):
            self.step(faults)
            if until is not None and t % STEPS_PER_TICK == 0 and until():
                return t // STEPS_PER_TICK
        return None

    def converged(self) -> bool:
        ld = self.leader()
        if ld is None or ld.core.log.term(ld.core.commit) != ld.core.term:
            return False
        c = ld.core.log.last_index()
        self.retire_removed()
        members = ld.core.voters | ld.core.learners
        return all(n.alive and n.core.applied == c and n.core.commit == c
                   for n in self.nodes.values() if n.id in members)

    def run(self) -> SimResult:
        res = self.res
        try:
            self.nemesis()
            self.blocked, self.loss, self.dup = set(), 0.0, 0.0
            self.run_ticks(self.p.ticks, faults=True)
            # Heal everything and let the cluster settle: nothing committed may be lost.
            self.blocked, self.loss, self.dup, self.max_delay = set(), 0.0, 0.0, 3
            for n in self.nodes.values():
                n.paused_until = min(n.paused_until, self.step_no)
                n.drift = 1.0
                if not n.alive and not n.retired:
                    self.restart(n)
            for c in self.clients:
                self.clients[c] = self.clients[c]  # clients keep going: ops still flow
            if self.run_ticks(self.p.converge_ticks, faults=False,
                              until=self.converged) is None:
                self.fail("no convergence after healing: " + self.describe())
            self.check_final()
            # Grow back to full size (removals may have left fewer voters), so that
            # a leader crash leaves a quorum.
            for _ in range(8):
                ld = self.leader()
                if ld is None or len(ld.core.voters) >= self.p.nodes:
                    break
                self.membership(grow_only=True)
                self.run_ticks(self.p.election_ticks, faults=False)
                if self.run_ticks(self.p.converge_ticks, faults=False,
                                  until=self.converged) is None:
                    self.fail("no convergence after a membership change: " + self.describe())
            self.check_final()
            # One leader crash: how long until a new leader?
            ld = self.leader()
            assert ld is not None
            self.crash(ld, "leader crash for the election measurement")
            old = ld.core.term
            got = self.run_ticks(self.p.converge_ticks, faults=False, until=lambda: (
                (x := self.leader()) is not None and x.core.term > old))
            if got is None:
                self.fail("no new leader after the leader crashed")
            res.election_ticks_after_crash = got
            if self.p.check_linearizable:
                res.linearizable = self.check_linearizable()
                if res.linearizable is False:
                    self.fail("the clients' history is not linearizable")
        except SafetyViolation as e:
            res.ok = False
            res.error = str(e)
        except Exception as e:  # a crash in the core is a failure of this seed too
            res.ok = False
            res.error = f"step {self.step_no}: {type(e).__name__}: {e}"
            if self.verbose:
                raise
        res.steps = self.step_no
        res.conf_changes = self.conf_changes
        return res

    def check_final(self) -> None:
        ld = self.leader()
        assert ld is not None
        self.check_leader_completeness(ld)
        members = ld.core.voters | ld.core.learners
        states = {n.id: n.sm for n in self.nodes.values() if n.id in members}
        first = states[ld.id]
        for nid, s in states.items():
            if s != first:
                self.fail(f"state machines differ after convergence: {ld.id}={first} "
                          f"{nid}={s}")
        top = max(self.committed, default=0)
        if top > ld.core.commit:
            self.fail(f"committed index {top} lost: the leader's commit is {ld.core.commit}")
        committed_values = set()
        for _, d in self.committed.values():
            try:
                obj = msgpack.unpackb(d, raw=False)
            except ValueError:
                continue
            if isinstance(obj, list) and len(obj) == 6:
                committed_values.add(obj[4])
        invoked = {}
        for ev in self.history:
            if ev["type"] == "invoke":
                invoked[ev["process"]] = ev
            elif ev["type"] == "ok" and ev["f"] in ("write", "cas"):
                v = invoked[ev["process"]]["value"]
                if ev["f"] == "cas":
                    v = v[1]
                if v not in committed_values:
                    self.fail(f"acknowledged {ev['f']} of {v} is not in the committed log")

    def check_linearizable(self) -> object:
        if self.checker is None:
            return None
        r = self.checker(self.history, "cas-register", time_limit=10.0, workers=1,
                         explain=False)
        return r.valid

    def describe(self) -> str:
        return "; ".join(
            f"{n.id}:{'up' if n.alive else 'down'} {n.core.role.value} t{n.core.term} "
            f"c{n.core.commit} a{n.core.applied} l{n.core.log.last_index()} "
            f"lead={n.core.lead}" for n in self.nodes.values())


def run_seed(seed: int, nodes: int = 3, ticks: int = 300, verbose: bool = False,
             linearizable: bool = True, checker: HistoryChecker | None = None) -> SimResult:
    """Run one seed; with ``checker``, the clients' history must be linearizable."""
    p = SimParams(nodes=nodes, ticks=ticks, check_linearizable=linearizable)
    return Simulation(seed, p, verbose, checker=checker).run()


def replay_command(seed: int, nodes: int, ticks: int) -> str:
    extra = f" --ticks {ticks}" if ticks != SimParams.ticks else ""
    return (f"python -m meshraft.raft.rafttest.sim --seeds 1 --start {seed} --nodes {nodes}"
            f"{extra} --checker {DEFAULT_CHECKER} -v")


# What --checker names by default in a replay command (loaded only when asked for).
DEFAULT_CHECKER = "jepsen_lite.checker:check_history"


def load_checker(spec: str) -> HistoryChecker:
    """``module:function`` -> the function (the CLI's --checker)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--checker takes MODULE:FUNCTION, not {spec!r}")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None, checker: HistoryChecker | None = None) -> int:
    """The simulator's command line; ``checker`` (or --checker MODULE:FUNCTION) checks
    each history for linearizability."""
    ap = argparse.ArgumentParser(prog="python -m meshraft.raft.rafttest.sim",
                                 description="Simulate Raft clusters, one per seed.")
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--ticks", type=int, default=SimParams.ticks)
    ap.add_argument("--no-linearizability", action="store_true")
    ap.add_argument("--checker", metavar="MODULE:FUNCTION",
                    help=f"linearizability checker, e.g. {DEFAULT_CHECKER}")
    ap.add_argument("-v", "--verbose", action="store_true", help="trace every event")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.CRITICAL,
                        format="    %(message)s")
    if a.checker:
        checker = load_checker(a.checker)
    t0 = time.perf_counter()
    failed: list[SimResult] = []
    worst = 0
    worst_seed = None
    commits = ops = lin_checked = conf = 0
    elections: list[int] = []
    lin_unknown: list[int] = []
    for s in range(a.start, a.start + a.seeds):
        r = run_seed(s, a.nodes, a.ticks, a.verbose, not a.no_linearizability, checker)
        commits += r.commits
        conf += r.conf_changes
        ops += r.ops_total
        if r.linearizable is True:
            lin_checked += 1
        elif r.linearizable is not None and r.ok:
            lin_unknown.append(s)  # the checker's time limit ran out
        if not r.ok:
            failed.append(r)
            print(f"seed {s} FAILED: {r.error}", file=sys.stderr)
            print(f"  replay: {replay_command(s, a.nodes, a.ticks)}", file=sys.stderr)
        elif r.election_ticks_after_crash is not None:
            elections.append(r.election_ticks_after_crash)
            if r.election_ticks_after_crash > worst:
                worst, worst_seed = r.election_ticks_after_crash, s
    dt = time.perf_counter() - t0
    print(f"sim: {a.seeds - len(failed)}/{a.seeds} seeds ok (start {a.start}, {a.nodes} nodes, "
          f"{a.ticks} ticks), {commits} commits, {ops} client ops, "
          f"{lin_checked} histories linearizable"
          f"{f' ({len(lin_unknown)} unknown: {lin_unknown[:5]})' if lin_unknown else ''}, "
          f"election after leader crash: median "
          f"{statistics.median(elections) if elections else 0} worst {worst} ticks "
          f"(seed {worst_seed}; timeout {SimParams.election_ticks}), {conf} membership changes, "
          f"{a.seeds / dt:.1f} seeds/s in {dt:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

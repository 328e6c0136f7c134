"""A deterministic in-memory cluster of Raft cores and a small text format to
drive it, for readable multi-node stories (like etcd's data-driven interaction
tests).

This module owns ``Cluster`` (cores + a message queue + per-node "disks" that
hold exactly what each Ready asked to persist) and ``run_script``. It must never
do IO beyond returning text, read a clock, or use global randomness.

Script format: one command per line; ``#`` starts a comment. A block is the
command followed by ``----`` and the output it produced; ``run_file`` compares
them (and rewrites them when asked). Commands::

    cluster 1 2 3 [learners=4] [election=10] [prevote=1] [checkquorum=1] [seed=1]
                  [heartbeat=1] [maxmsg=61440] [inflight=256] [promotelag=100]
    campaign ID | tick ID [N] | tick-all N | tick-heartbeat ID
    elect ID                     campaign and settle quietly; fail unless ID won
    run N                        N times: tick every node, stabilize (prints role changes)
    stabilize [IDS...]           deliver messages and Readies until nothing moves
    deliver [IDS...]             deliver the queued messages once (no new round)
    propose ID DATA [size=N] | read ID CTX | transfer ID TO | compact ID INDEX [RETAIN]
    add-voter ID NEW (or add) | add-learner ID NEW | promote ID NEW | remove ID OLD
    partition A B | C ...        only nodes in one group can talk
    cut A B | block A B (one way A->B) | isolate ID | heal
    drop-queued                  lose every message in flight
    crash ID | restart ID        restart keeps only what was persisted
    status [IDS...] | log ID | raft-state
    expect ID key=value ...      fail unless status fields match (role, term, leader, commit)
    expect-applied ID DATA,...   fail unless the node applied exactly these payloads
    expect-read ID CTX [INDEX|none] | expect-leader IDS...
"""

# Why this module is over 600 lines: the scenario language is one command table over
# one in-memory cluster; each command is a few lines, and there are many of them.
# It is test support, not library.

from __future__ import annotations

import random
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..core import ProposalDropped, RaftConfig, RaftCore
from ..messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    decode_message,
    encode_message,
)


class ScenarioError(AssertionError):
    """A script's ``expect`` failed, or a command was malformed."""


@dataclass
class Disk:
    """What a node persisted: exactly what its Readies asked for, nothing more."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def write(self, snap: Snapshot | None, ents: list[Entry], hs: HardState | None) -> None:
        if snap is not None:
            self.snapshot = snap
            self.entries = [e for e in self.entries if e.index > snap.meta.index]
            if self.entries and self.entries[0].index != snap.meta.index + 1:
                self.entries = []
        if ents:
            first = ents[0].index
            self.entries = [e for e in self.entries if e.index < first]
            if self.entries and self.entries[-1].index != first - 1:
                raise AssertionError("persisted log would have a gap")
            self.entries.extend(Entry(e.term, e.index, e.type, e.data) for e in ents)
        if hs is not None:
            self.hard_state = HardState(hs.term, hs.vote, hs.commit)

    def holds(self, i: int, t: int) -> bool:
        """Whether entry ``i`` of term ``t`` is on this disk (or under its snapshot)."""
        if self.snapshot is not None and self.snapshot.meta.index >= i:
            return True
        if not self.entries or i < self.entries[0].index or i > self.entries[-1].index:
            return False
        return self.entries[i - self.entries[0].index].term == t

    def compact(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        try:
            cc = ConfChange.decode(e.data)
            body = f"conf:{cc.type.name.lower()}:{cc.node_id}"
        except ValueError:
            body = "conf:?"
    else:
        body = e.data.decode(errors="replace") if e.data else "noop"
        if len(body) > 24:
            body = f"{body[:8]}...({len(e.data)} bytes)"
    return f"{e.term}/{e.index} {body}"


def fmt_message(m: Message) -> str:
    parts = [f"{m.frm}->{m.to} {m.type.name} term={m.term}"]
    t = m.type
    if t in (MessageType.APP,):
        parts.append(f"prev={m.index}/{m.log_term} commit={m.commit}")
        if m.entries:
            parts.append("[" + ", ".join(fmt_entry(e) for e in m.entries) + "]")
    elif t is MessageType.APP_RESP:
        if m.reject:
            parts.append(f"REJECT index={m.index} hint={m.reject_hint}/{m.log_term}")
        else:
            parts.append(f"index={m.index}")
    elif t in (MessageType.VOTE, MessageType.PRE_VOTE):
        parts.append(f"last={m.index}/{m.log_term}")
    elif t in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP):
        parts.append("REJECT" if m.reject else "granted")
    elif t is MessageType.HEARTBEAT:
        parts.append(f"commit={m.commit}")
    elif t is MessageType.PROP:
        parts.append("[" + ", ".join(fmt_entry(e) for e in m.entries) + "]")
    elif t is MessageType.READ_INDEX_RESP:
        parts.append(f"index={m.index}")
    elif t in (MessageType.SNAP, MessageType.SNAP_RESP) and m.snapshot is not None:
        c = m.snapshot
        parts.append(f"snap={c.meta.index}/{c.meta.term} offset={c.offset} len={len(c.data)} "
                     f"total={c.total}")
    if m.context and t not in (MessageType.TRANSFER_LEADER,):
        parts.append(f"ctx={m.context.decode(errors='replace')}")
    elif t is MessageType.TRANSFER_LEADER:
        parts.append(f"to={m.context.decode(errors='replace')}")
    return " ".join(parts)


class Cluster:
    """Cores on a reliable, controllable in-memory network (messages go through the
    wire encoding, so the codec is exercised too)."""

    def __init__(self, voters: list[str], learners: Iterable[str] = (), *,
                 config: RaftConfig | None = None, seed: int = 1) -> None:
        self.config = config or RaftConfig()
        self.seed = seed
        self.disks: dict[str, Disk] = {}
        self.nodes: dict[str, RaftCore] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.read_states: dict[str, list[tuple[int, bytes]]] = {}
        self.queue: list[Message] = []
        self.blocked: set[tuple[str, str]] = set()
        self.crashed: set[str] = set()
        self.out: list[str] = []
        self.restarts = 0
        conf = ConfState(list(voters), list(learners))
        for n in [*voters, *learners]:
            self._create(n, conf)

    def _rng(self, node: str) -> random.Random:
        return random.Random(f"{self.seed}/{node}/{self.restarts}")

    def _create(self, n: str, conf: ConfState | None) -> RaftCore:
        self.disks[n] = Disk()
        self.applied[n] = []
        self.read_states[n] = []
        core = RaftCore(n, conf, config=self.config, rng=self._rng(n))
        self.nodes[n] = core
        return core

    def add_node(self, n: str) -> RaftCore:
        """A brand-new member that joins (it learns the configuration from the leader)."""
        return self._create(n, None)

    def crash(self, n: str) -> None:
        self.crashed.add(n)
        self.queue = [m for m in self.queue if m.to != n and m.frm != n]

    def restart(self, n: str) -> RaftCore:
        self.crashed.discard(n)
        self.restarts += 1
        d = self.disks[n]
        core = RaftCore(n, None, hard_state=d.hard_state, snapshot=d.snapshot,
                        entries=list(d.entries), config=self.config, rng=self._rng(n))
        self.nodes[n] = core
        # The state machine restarts from the snapshot; committed entries are replayed.
        if d.snapshot is not None:
            self.applied[n] = [e for e in self.applied[n] if e.index <= d.snapshot.meta.index]
        else:
            self.applied[n] = []
        return core

    def can_talk(self, a: str, b: str) -> bool:
        return (a, b) not in self.blocked and a not in self.crashed and b not in self.crashed

    def partition(self, *groups: list[str]) -> None:
        self.blocked = set()
        where = {n: i for i, g in enumerate(groups) for n in g}
        for a in self.nodes:
            for b in self.nodes:
                if a != b and where.get(a, -1) != where.get(b, -2):
                    self.blocked.add((a, b))

    # ---- driving ------------------------------------------------------------------
    def process(self, n: str, log: bool = True) -> bool:
        """Run every Ready of ``n`` the way the driver does. True if there was one."""
        core = self.nodes[n]
        did = False
        while n not in self.crashed and core.has_ready():
            did = True
            rd = core.ready()
            self.disks[n].write(rd.snapshot, rd.entries, rd.hard_state)
            if log:
                if rd.soft_state is not None:
                    ss = rd.soft_state
                    self.out.append(f"{n}: {ss.role} leader={ss.leader} term={core.term}")
                if rd.snapshot is not None:
                    self.out.append(f"{n}: restore snapshot {rd.snapshot.meta.index}/"
                                    f"{rd.snapshot.meta.term}")
            for m in rd.messages:
                self.queue.append(decode_message(encode_message(m)))
            if rd.snapshot is not None:
                self.applied[n] = [Entry(rd.snapshot.meta.term, rd.snapshot.meta.index,
                                         EntryType.NORMAL, b"<snapshot>")]
            for e in rd.committed_entries:
                self.applied[n].append(e)
                if log and e.type == EntryType.NORMAL and e.data:
                    self.out.append(f"{n}: apply {fmt_entry(e)}")
            for rs in rd.read_states:
                self.read_states[n].append((rs.index, rs.context))
                if log:
                    self.out.append(f"{n}: read-state index={rs.index} "
                                    f"ctx={rs.context.decode(errors='replace')}")
            core.advance(rd)
        return did

    def deliver(self, only: set[str] | None = None, log: bool = True) -> bool:
        """Deliver the queued messages (those from/to ``only`` if given) once."""
        keep, batch = [], []
        for m in self.queue:
            if only is not None and m.frm not in only and m.to not in only:
                keep.append(m)
            else:
                batch.append(m)
        self.queue = keep
        for m in batch:
            ok = self.can_talk(m.frm, m.to) and m.to in self.nodes
            if log:
                self.out.append(("" if ok else "DROP ") + fmt_message(m))
            if ok:
                self.nodes[m.to].step(m)
        return bool(batch)

    def stabilize(self, only: set[str] | None = None, log: bool = True,
                  max_rounds: int = 1000) -> None:
        for _ in range(max_rounds):
            moved = False
            for n in sorted(self.nodes):
                if only is None or n in only:
                    moved |= self.process(n, log)
            moved |= self.deliver(only, log)
            if not moved:
                return
        raise ScenarioError("cluster did not stabilize")

    def tick(self, n: str, k: int = 1) -> None:
        for _ in range(k):
            if n not in self.crashed:
                self.nodes[n].tick()

    def tick_all(self, k: int = 1) -> None:
        for _ in range(k):
            for n in sorted(self.nodes):
                self.tick(n)

    def elect(self, n: str) -> None:
        self.nodes[n].campaign()
        self.stabilize(log=False)

    def leader(self) -> str | None:
        ls = [n for n, c in self.nodes.items()
              if n not in self.crashed and c.role.value == "leader"]
        if not ls:
            return None
        return max(ls, key=lambda n: self.nodes[n].term)

    def applied_data(self, n: str) -> list[bytes]:
        return [e.data for e in self.applied[n] if e.type == EntryType.NORMAL and e.data]

    # ---- status text -------------------------------------------------------------
    def status_line(self, n: str) -> str:
        c = self.nodes[n]
        if n in self.crashed:
            return f"{n}: crashed"
        return (f"{n}: {c.status()['role']} term={c.term} leader={c.lead} "
                f"commit={c.commit} applied={c.applied} last={c.log.last_index()}"
                f" voters={','.join(sorted(c.voters))}"
                + (f" learners={','.join(sorted(c.learners))}" if c.learners else ""))


# --------------------------------------------------------------------------------------
# The script interpreter


def _kv(args: list[str]) -> tuple[list[str], dict[str, str]]:
    pos, kw = [], {}
    for a in args:
        if "=" in a:
            k, v = a.split("=", 1)
            kw[k] = v
        else:
            pos.append(a)
    return pos, kw


class ScriptRunner:
    def __init__(self) -> None:
        self.c: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        if self.c is None:
            raise ScenarioError("no cluster yet: start with 'cluster ...'")
        return self.c

    def run(self, line: str) -> list[str]:
        args = shlex.split(line)
        cmd, args = args[0], args[1:]
        fn = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if fn is None:
            raise ScenarioError(f"unknown command {cmd!r}")
        if cmd == "cluster":
            fn(args)
            return list(self.cluster.out)
        c = self.cluster
        c.out = []
        fn(args)
        return c.out

    def cmd_cluster(self, args: list[str]) -> None:
        pos, kw = _kv(args)
        cfg = RaftConfig(
            election_ticks=int(kw.get("election", 10)),
            heartbeat_ticks=int(kw.get("heartbeat", 1)),
            pre_vote=kw.get("prevote", "1") == "1",
            check_quorum=kw.get("checkquorum", "1") == "1",
            max_msg_bytes=int(kw.get("maxmsg", 60 * 1024)),
            max_inflight=int(kw.get("inflight", 256)),
            promote_max_lag=int(kw.get("promotelag", 100)),
        )
        learners = kw["learners"].split(",") if kw.get("learners") else []
        self.c = Cluster(pos, learners, config=cfg, seed=int(kw.get("seed", 1)))
        self.c.stabilize(log=False)  # persist the bootstrap entries
        self.c.out = [self.c.status_line(n) for n in sorted(self.c.nodes)]

    def cmd_campaign(self, a: list[str]) -> None:
        self.cluster.nodes[a[0]].campaign()

    def cmd_elect(self, a: list[str]) -> None:
        """The short story of an election: no message trace, only who won."""
        c = self.cluster
        c.nodes[a[0]].campaign()
        c.stabilize(log=False)
        if c.leader() != a[0]:
            raise ScenarioError(f"elect {a[0]}: the leader is {c.leader()}")
        c.out.append(c.status_line(a[0]))

    def cmd_tick(self, a: list[str]) -> None:
        self.cluster.tick(a[0], int(a[1]) if len(a) > 1 else 1)

    def cmd_tick_all(self, a: list[str]) -> None:
        self.cluster.tick_all(int(a[0]) if a else 1)

    def cmd_tick_heartbeat(self, a: list[str]) -> None:
        self.cluster.tick(a[0], self.cluster.config.heartbeat_ticks)

    def cmd_run(self, a: list[str]) -> None:
        """N rounds of (tick every node, stabilize), reporting only role changes."""
        c = self.cluster
        def roles() -> dict[str, tuple]:
            return {n: (x.status()["role"], x.lead, x.term) for n, x in c.nodes.items()
                    if n not in c.crashed}
        before = roles()
        for i in range(int(a[0])):
            c.tick_all()
            c.stabilize(log=False)
            now = roles()
            for n in sorted(now):
                if now[n] != before.get(n):
                    r, lead, term = now[n]
                    c.out.append(f"tick {i + 1}: {n} {r} leader={lead} term={term}")
            before = now

    def cmd_expect_leader(self, a: list[str]) -> None:
        c = self.cluster
        ld = c.leader()
        if ld is None or ld not in a:
            raise ScenarioError(f"expect-leader {a}: the leader is {ld}")
        c.out.append(f"ok: leader {ld}")

    def cmd_stabilize(self, a: list[str]) -> None:
        self.cluster.stabilize(set(a) if a else None)

    def cmd_deliver(self, a: list[str]) -> None:
        c = self.cluster
        for n in sorted(c.nodes):
            if not a or n in a:
                c.process(n)
        c.deliver(set(a) if a else None)

    def cmd_process(self, a: list[str]) -> None:
        for n in a or sorted(self.cluster.nodes):
            self.cluster.process(n)

    def cmd_propose(self, a: list[str]) -> None:
        pos, kw = _kv(a)
        data = pos[1].encode()
        if "size" in kw:  # a big payload: the word repeated to this many bytes
            n = int(kw["size"])
            data = (data * (n // len(data) + 1))[:n]
        try:
            self.cluster.nodes[pos[0]].propose(data)
        except ProposalDropped as e:
            self.cluster.out.append(f"{a[0]}: proposal dropped: {e}")

    def cmd_read(self, a: list[str]) -> None:
        try:
            self.cluster.nodes[a[0]].read_index(a[1].encode())
        except ProposalDropped as e:
            self.cluster.out.append(f"{a[0]}: read dropped: {e}")

    def cmd_transfer(self, a: list[str]) -> None:
        try:
            self.cluster.nodes[a[0]].transfer_leadership(a[1])
        except (ProposalDropped, ValueError) as e:
            self.cluster.out.append(f"{a[0]}: transfer refused: {e}")

    def cmd_compact(self, a: list[str]) -> None:
        c = self.cluster
        n, idx = a[0], int(a[1])
        retain = int(a[2]) if len(a) > 2 else 0
        data = b"|".join(c.applied_data(n))  # the "state machine" is the applied payloads
        snap = c.nodes[n].compact(idx, data, retain)
        c.disks[n].compact(snap)
        c.out.append(f"{n}: compacted to {idx}; log starts at {c.nodes[n].log.first_index()}")

    def _conf(self, a: list[str], t: ConfChangeType) -> None:
        c = self.cluster
        if t in (ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER) and a[1] not in c.nodes:
            c.add_node(a[1])
        try:
            c.nodes[a[0]].propose_conf_change(ConfChange(t, a[1]))
        except ProposalDropped as e:
            c.out.append(f"{a[0]}: conf change refused: {e}")

    def cmd_add_voter(self, a: list[str]) -> None:
        self._conf(a, ConfChangeType.ADD_VOTER)

    cmd_add = cmd_add_voter

    def cmd_add_learner(self, a: list[str]) -> None:
        self._conf(a, ConfChangeType.ADD_LEARNER)

    def cmd_promote(self, a: list[str]) -> None:
        self._conf(a, ConfChangeType.PROMOTE)

    def cmd_remove(self, a: list[str]) -> None:
        self._conf(a, ConfChangeType.REMOVE)

    def cmd_partition(self, a: list[str]) -> None:
        groups: list[list[str]] = [[]]
        for x in a:
            if x == "|":
                groups.append([])
            else:
                groups[-1].append(x)
        self.cluster.partition(*groups)

    def cmd_cut(self, a: list[str]) -> None:
        self.cluster.blocked |= {(a[0], a[1]), (a[1], a[0])}

    def cmd_block(self, a: list[str]) -> None:
        self.cluster.blocked.add((a[0], a[1]))

    def cmd_isolate(self, a: list[str]) -> None:
        c = self.cluster
        for n in c.nodes:
            if n != a[0]:
                c.blocked |= {(a[0], n), (n, a[0])}

    def cmd_heal(self, a: list[str]) -> None:
        self.cluster.blocked = set()

    def cmd_drop_queued(self, a: list[str]) -> None:
        c = self.cluster
        c.out.extend("DROP " + fmt_message(m) for m in c.queue)
        c.queue = []

    def cmd_crash(self, a: list[str]) -> None:
        self.cluster.crash(a[0])

    def cmd_restart(self, a: list[str]) -> None:
        c = self.cluster
        c.restart(a[0])
        c.out.append(c.status_line(a[0]))

    def cmd_status(self, a: list[str]) -> None:
        c = self.cluster
        for n in a or sorted(c.nodes):
            c.out.append(c.status_line(n))

    def cmd_log(self, a: list[str]) -> None:
        c = self.cluster
        core = c.nodes[a[0]]
        lg = core.log
        c.out.append(f"{a[0]}: first={lg.first_index()} last={lg.last_index()} "
                     f"commit={lg.committed}: " + " ".join(
                         f"[{fmt_entry(e)}]" for e in lg.entries))

    def cmd_expect(self, a: list[str]) -> None:
        c = self.cluster
        n = a[0]
        _, kw = _kv(a[1:])
        st = c.nodes[n].status()
        have = {
            "role": st["role"], "term": str(st["term"]), "leader": str(st["leader"]),
            "commit": str(st["commit_index"]), "applied": str(st["applied_index"]),
            "last": str(st["last_index"]), "voters": ",".join(st["voters"]),
            "learners": ",".join(st["learners"]), "first": str(st["first_index"]),
        }
        for k, v in kw.items():
            if k not in have:
                raise ScenarioError(f"expect: unknown key {k}")
            if have[k] != v:
                raise ScenarioError(f"expect {n} {k}={v}, but it is {have[k]}")
        c.out.append(f"ok: {n} " + " ".join(f"{k}={v}" for k, v in kw.items()))

    def cmd_expect_applied(self, a: list[str]) -> None:
        c = self.cluster
        want = [x.encode() for x in a[1].split(",")] if len(a) > 1 and a[1] else []
        have = c.applied_data(a[0])
        if have != want:
            raise ScenarioError(f"expect-applied {a[0]}: want {want}, have {have}")
        c.out.append(f"ok: {a[0]} applied {a[1] if len(a) > 1 else ''}")

    def cmd_expect_read(self, a: list[str]) -> None:
        c = self.cluster
        n, ctx = a[0], a[1].encode()
        got = [i for i, x in c.read_states[n] if x == ctx]
        if len(a) > 2 and a[2] == "none":
            if got:
                raise ScenarioError(f"expect-read {n} {a[1]}: want none, got index {got}")
            c.out.append(f"ok: {n} has no read state {a[1]}")
            return
        if not got or (len(a) > 2 and str(got[0]) != a[2]):
            raise ScenarioError(f"expect-read {n} {a[1]}: got {got}")
        c.out.append(f"ok: {n} read {a[1]} at index {got[0]}")


def parse_blocks(text: str) -> list[tuple[str, str | None]]:
    """(command, expected output or None) in file order; comments are kept as commands
    starting with '#'."""
    lines = text.splitlines()
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            out.append((line, None))
            i += 1
            continue
        if i + 1 < len(lines) and lines[i + 1] == "----":
            j = i + 2
            body = []
            while j < len(lines) and lines[j] != "":
                body.append(lines[j])
                j += 1
            out.append((line, "\n".join(body)))
            i = j
        else:
            out.append((line, None))
            i += 1
    return out


def run_text(text: str) -> tuple[str, list[tuple[str, str, str | None]]]:
    """Run a script; return the rewritten text and (command, got, expected) per command."""
    runner = ScriptRunner()
    results = []
    parts: list[str] = []
    blocks = parse_blocks(text)
    for k, (cmd, expected) in enumerate(blocks):
        if not cmd.strip() or cmd.lstrip().startswith("#"):
            parts.append(cmd)
            continue
        try:
            got = "\n".join(runner.run(cmd)) or "ok"
        except ScenarioError:
            raise
        except Exception as e:
            raise ScenarioError(f"command {cmd!r} failed: {type(e).__name__}: {e}") from e
        results.append((cmd, got, expected))
        parts.append(cmd + "\n----\n" + got)
        if k + 1 < len(blocks) and blocks[k + 1][0].strip():
            parts.append("")  # a block ends at a blank line
    return "\n".join(parts).rstrip("\n") + "\n", results


def run_file(path: Path, rewrite: bool = False) -> list[tuple[str, str, str | None]]:
    text = path.read_text()
    new_text, results = run_text(text)
    if rewrite:
        path.write_text(new_text)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m meshraft.raft.rafttest.scenario FILE... [--rewrite]``: run scenario scripts and
    print their output (with --rewrite, store it in the files)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m meshraft.raft.rafttest.scenario")
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--rewrite", action="store_true")
    a = ap.parse_args(argv)
    status = 0
    for f in a.files:
        try:
            text, results = run_text(f.read_text())
        except ScenarioError as e:
            print(f"{f}: FAILED: {e}")
            status = 1
            continue
        changed = [cmd for cmd, got, exp in results if exp is not None and got != exp]
        if a.rewrite:
            f.write_text(text)
        else:
            print(text)
        if changed and not a.rewrite:
            print(f"{f}: output changed for {len(changed)} commands: {changed[:3]}")
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())

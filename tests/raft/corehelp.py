"""Helpers for the Raft core tests: build a core in a given state, run its Ready
the way the driver does, and collect the messages it wants sent."""

from __future__ import annotations

import random

from meshraft.raft.core import RaftConfig, RaftCore
from meshraft.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

PAPER = dict(pre_vote=False, check_quorum=False)


def cfg(**kw) -> RaftConfig:
    base = dict(election_ticks=10, heartbeat_ticks=1)
    base.update(kw)
    return RaftConfig(**base)


def make(node: str = "1", voters=("1", "2", "3"), *, terms=(), term: int = 0, vote=None,
         commit: int = 0, learners=(), seed: int = 1, **kw) -> RaftCore:
    """A core restarted from storage: ``terms`` are the terms of entries 1..n."""
    ents = [Entry(t, i + 1, data=f"e{i + 1}".encode()) for i, t in enumerate(terms)]
    term = max(term, ents[-1].term if ents else 0)
    snap = Snapshot(SnapshotMeta(0, 0, ConfState(list(voters), list(learners))))
    return RaftCore(node, None, hard_state=HardState(term, vote, commit), snapshot=snap,
                    entries=ents, config=cfg(**kw), rng=random.Random(seed))


def drain(core: RaftCore) -> list[Message]:
    """Process every Ready (persist = nothing to do here); return the messages."""
    out: list[Message] = []
    while core.has_ready():
        rd = core.ready()
        out.extend(rd.messages)
        core.advance(rd)
    return out


def msg(t: MessageType, frm: str, to: str, term: int, **kw) -> Message:
    return Message(t, to, frm, term, **kw)


def make_leader(node: str = "1", voters=("1", "2", "3"), caught_up: bool = True,
                **kw) -> RaftCore:
    """A leader elected at term (current term + 1) with votes from everyone; with
    ``caught_up`` every follower has acknowledged its log (progress: replicate)."""
    c = make(node, voters, **kw)
    c.campaign()
    if c.role.value == "pre-candidate":
        for v in voters:
            if v != node:
                c.step(msg(MessageType.PRE_VOTE_RESP, v, node, c.term + 1))
    for v in voters:
        if v != node:
            c.step(msg(MessageType.VOTE_RESP, v, node, c.term))
    assert c.role.value == "leader"
    drain(c)
    if caught_up:
        for v in voters:
            if v != node:
                c.step(msg(MessageType.APP_RESP, v, node, c.term, index=c.log.last_index()))
        drain(c)
    return c


def log_terms(core: RaftCore) -> list[int]:
    return [e.term for e in core.log.entries]

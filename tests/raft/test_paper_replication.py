"""The Raft paper's log replication and safety rules (sections 5.3, 5.4), one test per
rule, including the situations of Figures 7 and 8, driven message by message."""

from __future__ import annotations

import random

import pytest
from corehelp import PAPER, cfg, drain, make, make_leader, msg

from meshraft.raft.core import RaftCore, Role
from meshraft.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
    encode_message,
)

MT = MessageType


def acks(c: RaftCore, frm: str, index: int) -> list[Message]:
    c.step(msg(MT.APP_RESP, frm, c.id, c.term, index=index))
    return drain(c)


def test_leader_appends_a_proposal_and_replicates_it():
    c = make_leader(**PAPER)
    li = c.log.last_index()
    c.propose(b"x")
    rd = c.ready()
    assert [(e.term, e.index, e.data) for e in rd.entries] == [(c.term, li + 1, b"x")]
    apps = [m for m in rd.messages if m.type is MT.APP and m.entries]
    assert sorted(m.to for m in apps) == ["2", "3"]
    for m in apps:
        assert m.entries[-1].data == b"x" and m.commit == c.commit
    c.advance(rd)


def test_leader_commits_once_a_majority_stored_the_entry_and_tells_followers():
    c = make_leader(**PAPER)
    idx = c.propose(b"x")
    drain(c)
    assert c.commit < idx
    out = acks(c, "2", idx)
    assert c.commit == idx
    # The new commit index goes out so followers can apply.
    assert {m.to for m in out if m.type is MT.APP and m.commit == idx} == {"2", "3"}


@pytest.mark.parametrize(
    "size,ackers,committed",
    [(1, [], True), (3, [], False), (3, ["2"], True), (3, ["2", "3"], True),
     (5, ["2"], False), (5, ["2", "3"], True), (5, ["2", "3", "4", "5"], True)],
)
def test_leader_counts_replicas_for_commitment(size, ackers, committed):
    ids = [str(i + 1) for i in range(size)]
    c = make_leader("1", ids, **PAPER)
    idx = c.propose(b"x")
    drain(c)
    for a in ackers:
        acks(c, a, idx)
    assert (c.commit >= idx) is committed


def test_committing_an_entry_commits_all_preceding_entries():
    # Entries of an older term, not yet committed.
    c = make_leader(terms=[1, 1], term=1, caught_up=False, **PAPER)
    idx = c.propose(b"x")
    drain(c)
    c.step(msg(MT.APP_RESP, "2", "1", c.term, index=idx))
    assert c.commit == idx
    rd = c.ready()
    assert [e.index for e in rd.committed_entries] == list(range(1, idx + 1))
    c.advance(rd)


def test_follower_commits_what_the_leader_says_is_committed():
    c = make(**PAPER)
    c.step(msg(MT.APP, "2", "1", 1, index=0, log_term=0, commit=1,
               entries=[Entry(1, 1, data=b"a"), Entry(1, 2, data=b"b")]))
    assert c.commit == 1
    rd = c.ready()
    assert [e.data for e in rd.committed_entries] == [b"a"]
    c.advance(rd)
    # Never beyond what the append matched (the rest of our log may be stale).
    c.step(msg(MT.APP, "2", "1", 1, index=1, log_term=1, commit=5))
    assert c.commit == 1


@pytest.mark.parametrize(
    "index,log_term,reject,hint",
    [
        (0, 0, False, None),
        (2, 2, False, None),
        (2, 1, True, (1, 1)),  # term mismatch at 2: hint is the last index of term <= 1
        (3, 3, True, (2, 2)),  # beyond our log: hint is our last index
    ],
)
def test_follower_rejects_appends_whose_previous_entry_does_not_match(index, log_term,
                                                                      reject, hint):
    c = make(terms=[1, 2], term=2, commit=1, **PAPER)
    c.step(msg(MT.APP, "2", "1", 2, index=index, log_term=log_term))
    resp = [m for m in drain(c) if m.type is MT.APP_RESP]
    assert resp[0].reject is reject
    if reject:
        assert resp[0].index == index and (resp[0].reject_hint, resp[0].log_term) == hint


@pytest.mark.parametrize(
    "index,log_term,ents,want",  # ents: (index, term)
    [
        (2, 2, [(3, 3)], [1, 2, 3]),
        (1, 1, [(2, 3), (3, 4)], [1, 3, 4]),  # conflict at 2: truncate and append
        (0, 0, [(1, 1)], [1, 2]),  # already have it: nothing truncated
        (0, 0, [(1, 1), (2, 2)], [1, 2]),
        (0, 0, [(1, 3)], [3]),
    ],
)
def test_follower_deletes_conflicting_entries_and_appends_new_ones(index, log_term, ents, want):
    c = make(terms=[1, 2], term=2, **PAPER)
    c.step(msg(MT.APP, "2", "1", 4, index=index, log_term=log_term,
               entries=[Entry(t, i) for i, t in ents]))
    assert [e.term for e in c.log.entries] == want


def test_append_response_is_released_with_the_entries_it_acknowledges():
    # The ack depends on the entries being on disk: same Ready, and the driver
    # persists before sending.
    c = make(**PAPER)
    c.step(msg(MT.APP, "2", "1", 1, index=0, log_term=0, entries=[Entry(1, 1, data=b"a")]))
    rd = c.ready()
    assert [e.index for e in rd.entries] == [1]
    assert [m.index for m in rd.messages if m.type is MT.APP_RESP] == [1]
    assert rd.must_sync()


def _net_run(cores: dict[str, RaftCore], rounds: int = 50) -> None:
    for _ in range(rounds):
        moved = False
        for c in cores.values():
            for m in drain(c):
                moved = True
                if m.to in cores:
                    cores[m.to].step(m)
        if not moved:
            return


FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIG7_FOLLOWERS))
def test_figure_7_leader_brings_every_follower_log_in_line(case):
    # Figure 7: a leader at term 8 and followers missing entries (a, b), with extra
    # uncommitted entries (c, d), or both (e, f); the leader forces its log on them.
    fl = FIG7_FOLLOWERS[case]
    lead = make("1", terms=FIG7_LEADER, term=8, **PAPER)
    foll = make("2", terms=fl, term=max(fl[-1], 7), **PAPER)
    third = make("3", terms=FIG7_LEADER, term=8, **PAPER)
    cores = {"1": lead, "2": foll, "3": third}
    lead.campaign()
    _net_run(cores)
    assert lead.role is Role.LEADER
    assert [e.term for e in foll.log.entries] == [*FIG7_LEADER, lead.term]
    assert foll.commit == lead.commit == len(FIG7_LEADER) + 1


def test_figure_8_leader_never_commits_an_old_term_entry_by_counting():
    # Figure 8 (c): a leader of term 3 holding an entry of term 2 must not commit it
    # because a majority stores it; only its own-term entry commits, and with it index 2.
    c = make("1", ("1", "2", "3", "4", "5"), terms=[1, 2], term=2, **PAPER)
    c.campaign()
    for v in ("2", "3"):
        c.step(msg(MT.VOTE_RESP, v, "1", c.term))
    assert c.role is Role.LEADER and c.term == 3
    drain(c)
    for v in ("2", "3"):
        acks(c, v, 2)  # a majority (1, 2, 3) has the term-2 entry at index 2
    assert c.commit == 0
    for v in ("2", "3"):
        acks(c, v, 3)  # the no-op of term 3
    assert c.commit == 3


def test_leader_sends_compacted_entries_as_a_snapshot_in_datagram_sized_chunks():
    # 7: "the leader must occasionally send snapshots to followers that lag behind".
    snap = Snapshot(SnapshotMeta(100, 5, ConfState(["1", "2", "3"])), random.randbytes(50_000))
    c = RaftCore("1", None, hard_state=HardState(5, None, 100), snapshot=snap,
                 config=cfg(max_msg_bytes=8192, snapshot_window=100, **PAPER),
                 rng=random.Random(1))
    c.campaign()
    c.step(msg(MT.VOTE_RESP, "2", "1", c.term))
    drain(c)
    # Follower 3 has nothing: it rejects the probe at 100 with a hint of 0.
    c.step(msg(MT.APP_RESP, "3", "1", c.term, index=100, reject=True, reject_hint=0))
    chunks = [m for m in drain(c) if m.type is MT.SNAP and m.to == "3"]
    assert len(chunks) > 5
    assert all(len(encode_message(m)) <= 8192 for m in chunks)
    assert b"".join(m.snapshot.data for m in chunks) == snap.data

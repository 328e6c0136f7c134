"""The core's features beyond the paper, each through the public interface: PreVote,
CheckQuorum and leader stickiness, ReadIndex, leadership transfer, proposal
forwarding, membership, progress and flow control, compaction and snapshots,
restart from storage, and the Ready contract."""

# Over 600 lines: one test module per layer of the core's features (the paper's rules
# are in test_paper_*.py); each test is short, and they share the helpers above.

from __future__ import annotations

import random

import pytest
from corehelp import PAPER, cfg, drain, make, make_leader, msg

from meshraft.raft.core import (
    ConfChangeOutcome,
    ConfChangeRejected,
    ProposalDropped,
    RaftCore,
    Role,
)
from meshraft.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    InvalidMessage,
    MessageType,
    Snapshot,
    SnapshotChunk,
    SnapshotMeta,
    encode_message,
)
from meshraft.raft.progress import ProgressState
from meshraft.raft.rafttest.scenario import Cluster

MT = MessageType


def elect(c: Cluster, n: str = "1") -> None:
    c.elect(n)
    assert c.leader() == n


def cluster(n: int = 3, **kw) -> Cluster:
    c = Cluster([str(i + 1) for i in range(n)], config=cfg(**kw))
    c.stabilize(log=False)
    return c


# ---- elections -----------------------------------------------------------------------

def test_prevote_keeps_a_partitioned_node_from_inflating_its_term():
    c = cluster()
    elect(c)
    term = c.nodes["1"].term
    c.partition(["1", "2"], ["3"])
    for _ in range(100):
        c.tick_all()
        c.stabilize(log=False)
    assert c.nodes["3"].term == term  # only pre-votes, which change no term
    c.partition(["1", "2", "3"])
    for _ in range(5):
        c.tick_all()
        c.stabilize(log=False)
    assert c.leader() == "1" and c.nodes["1"].term == term


def test_check_quorum_makes_an_isolated_leader_step_down():
    c = cluster()
    elect(c)
    for _ in range(3 * c.config.election_ticks):  # connected: it stays leader
        c.tick("1")
        c.stabilize(log=False)
    assert c.nodes["1"].role is Role.LEADER
    c.partition(["1"], ["2", "3"])
    # It heard from them in the current round; the next full round without them ends it.
    for _ in range(2 * c.config.election_ticks):
        c.tick("1")
        c.stabilize(log=False)
    assert c.nodes["1"].role is Role.FOLLOWER and c.nodes["1"].lead is None


def test_leader_stickiness_a_follower_with_a_live_leader_ignores_votes():
    f = make("2", term=3, **{})
    f.step(msg(MT.HEARTBEAT, "1", "2", 3))
    drain(f)
    for t in (MT.VOTE, MT.PRE_VOTE):
        f.step(msg(t, "3", "2", 4, index=10, log_term=3))
        assert drain(f) == [] and f.term == 3 and f.lead == "1"
    # After an election timeout without the leader, it listens again.
    for _ in range(f.cfg.election_ticks):
        f.tick()
    drain(f)
    f.step(msg(MT.PRE_VOTE, "3", "2", 4, index=10, log_term=3))
    assert [m.reject for m in drain(f) if m.type is MT.PRE_VOTE_RESP] == [False]


def test_a_transfer_campaign_gets_votes_through_stickiness():
    f = make("2", term=3)
    f.step(msg(MT.HEARTBEAT, "1", "2", 3))
    drain(f)
    f.step(msg(MT.VOTE, "3", "2", 4, index=10, log_term=3, context=b"transfer"))
    assert [m.reject for m in drain(f) if m.type is MT.VOTE_RESP] == [False]
    assert f.term == 4 and f.vote == "3"


def test_an_old_leader_learns_the_new_term_from_a_stale_append_response():
    f = make("2", term=5)
    drain(f)
    f.step(msg(MT.APP, "1", "2", 3, index=0, log_term=0))
    out = drain(f)
    assert [(m.type, m.term, m.to) for m in out] == [(MT.APP_RESP, 5, "1")]


# ---- proposals -----------------------------------------------------------------------

def test_followers_forward_proposals_and_drop_them_without_a_leader():
    c = cluster()
    with pytest.raises(ProposalDropped):
        c.nodes["2"].propose(b"x")
    elect(c)
    assert c.nodes["2"].propose(b"x") is None
    c.stabilize(log=False)
    assert all(c.applied_data(n) == [b"x"] for n in c.nodes)


def test_proposals_too_large_for_a_datagram_are_refused():
    c = cluster(max_msg_bytes=4096)
    elect(c)
    with pytest.raises(ValueError):
        c.nodes["1"].propose(b"x" * 4000)


def test_concurrent_proposals_share_one_append_per_follower():
    ld = make_leader()
    for i in range(20):
        ld.propose(b"p%d" % i)
    apps = [m for m in drain(ld) if m.type is MT.APP and m.entries]
    assert sorted(m.to for m in apps) == ["2", "3"] and len(apps[0].entries) == 20
    f = make("2")
    f.step(msg(MT.HEARTBEAT, "1", "2", 1))
    drain(f)
    for i in range(20):
        f.propose(b"f%d" % i)
    props = [m for m in drain(f) if m.type is MT.PROP]
    assert len(props) == 1 and len(props[0].entries) == 20


def test_appends_are_batched_within_the_datagram_size():
    ld = make_leader(max_msg_bytes=4096, max_inflight=1000)
    for i in range(40):
        ld.propose(bytes([i]) * 500)
    apps = [m for m in drain(ld) if m.type is MT.APP and m.to == "2" and m.entries]
    sent = [e.data for m in apps for e in m.entries]
    assert len(sent) == 40 and len(apps) >= 6
    assert all(len(encode_message(m)) <= 4096 for m in apps)


def test_pipelining_is_bounded_by_max_inflight():
    ld = make_leader(max_inflight=3)
    apps = []
    for i in range(10):
        ld.propose(b"p%d" % i)
        apps += [m for m in drain(ld) if m.type is MT.APP and m.to == "2" and m.entries]
    assert len(apps) == 3
    assert ld.prs["2"].state is ProgressState.REPLICATE and ld.prs["2"].inflights.full()
    ld.step(msg(MT.APP_RESP, "2", "1", ld.term, index=apps[0].entries[-1].index))
    more = [m for m in drain(ld) if m.type is MT.APP and m.to == "2" and m.entries]
    assert len(more) == 1


def test_progress_probe_sends_one_append_at_a_time_until_it_matches_then_replicates():
    ld = make_leader(caught_up=False)
    pr = ld.prs["2"]
    # A new leader does not know the followers' logs: its no-op went out as the probe.
    assert pr.state is ProgressState.PROBE and pr.is_paused()
    ld.propose(b"a")
    ld.propose(b"b")
    assert not [m for m in drain(ld) if m.type is MT.APP and m.to == "2"]  # one in flight
    ld.step(msg(MT.APP_RESP, "2", "1", ld.term, index=1))  # the probe (the no-op) matched
    assert pr.state is ProgressState.REPLICATE and pr.match == 1
    apps = [m for m in drain(ld) if m.type is MT.APP and m.to == "2" and m.entries]
    assert [e.data for m in apps for e in m.entries] == [b"a", b"b"]
    ld.propose(b"c")
    assert [m.index for m in drain(ld) if m.type is MT.APP and m.to == "2"] == [3]  # pipelined
    # The append with a and b was lost: the next one is rejected; back to probing from match.
    ld.step(msg(MT.APP_RESP, "2", "1", ld.term, index=3, reject=True, reject_hint=1,
                log_term=1))
    assert pr.state is ProgressState.PROBE
    resent = [m for m in drain(ld) if m.type is MT.APP and m.to == "2"]
    assert [(m.index, [e.data for e in m.entries]) for m in resent] == [(1, [b"a", b"b", b"c"])]


def test_a_follower_behind_the_compaction_is_in_snapshot_state_until_it_has_the_snapshot():
    snap = Snapshot(SnapshotMeta(100, 5, ConfState(["1", "2", "3"])), b"S" * 10_000)
    ld = RaftCore("1", None, hard_state=HardState(5, None, 100), snapshot=snap,
                  config=cfg(max_msg_bytes=4096, **PAPER), rng=random.Random(1))
    ld.campaign()
    ld.step(msg(MT.VOTE_RESP, "2", "1", ld.term))
    drain(ld)
    ld.step(msg(MT.APP_RESP, "3", "1", ld.term, index=100, reject=True, reject_hint=0))
    pr = ld.prs["3"]
    chunks = [m for m in drain(ld) if m.type is MT.SNAP and m.to == "3"]
    assert pr.state is ProgressState.SNAPSHOT and pr.is_paused() and len(chunks) > 1
    ld.propose(b"x")
    assert not [m for m in drain(ld) if m.type is MT.APP and m.to == "3"]  # appends wait
    total = len(snap.data)
    ld.step(msg(MT.SNAP_RESP, "3", "1", ld.term,
                snapshot=SnapshotChunk(snap.meta, total, total, b"")))
    ld.step(msg(MT.APP_RESP, "3", "1", ld.term, index=100))  # restored at 100
    assert pr.state is ProgressState.REPLICATE and pr.match == 100
    apps = [m for m in drain(ld) if m.type is MT.APP and m.to == "3"]
    assert apps and apps[0].index == 100 and apps[-1].entries[-1].data == b"x"


def test_fast_backtracking_needs_one_round_trip_per_term_not_per_entry():
    # Follower 2 has 50 entries of term 2 the leader never had.
    leader_terms = [1] * 5 + [3] * 50
    ld = make("1", terms=leader_terms, term=3, seed=3)
    fo = make("2", terms=[1] * 5 + [2] * 50, term=3)
    ld.campaign()
    for m in drain(ld):
        if m.type is MT.PRE_VOTE:
            ld.step(msg(MT.PRE_VOTE_RESP, "3", "1", m.term))
    for m in drain(ld):
        if m.type is MT.VOTE:
            ld.step(msg(MT.VOTE_RESP, "3", "1", m.term))
    assert ld.role is Role.LEADER
    rejects = 0
    pending = [m for m in drain(ld) if m.to == "2"]
    for _ in range(20):
        nxt = []
        for m in pending:
            fo.step(m)
        for r in drain(fo):
            rejects += r.reject
            ld.step(r)
        nxt = [m for m in drain(ld) if m.to == "2"]
        if not nxt:
            break
        pending = nxt
    assert [e.term for e in fo.log.entries] == [e.term for e in ld.log.entries]
    assert rejects <= 2


# ---- ReadIndex -----------------------------------------------------------------------

def test_read_index_waits_for_the_leaders_own_term_commit_and_a_quorum():
    c = cluster()
    elect(c)
    ld = c.nodes["1"]
    c.partition(["1"], ["2", "3"])
    ld.read_index(b"r1")
    c.stabilize(log=False)
    assert c.read_states["1"] == []  # no quorum confirmed it is still leader
    c.partition(["1", "2", "3"])
    c.tick("1")
    c.stabilize(log=False)
    assert c.read_states["1"] == [(ld.commit, b"r1")]


def test_a_new_leader_serves_reads_only_after_its_noop_commits():
    c = cluster()
    c.nodes["1"].campaign()
    c.process("1", log=False)
    c.deliver(log=False)  # pre-votes
    c.process("2", log=False)
    c.process("3", log=False)
    c.deliver(log=False)  # pre-vote responses
    c.process("1", log=False)
    c.deliver(log=False)  # votes
    c.process("2", log=False)
    c.process("3", log=False)
    c.deliver(log=False)  # vote responses: 1 is leader, no-op not committed
    ld = c.nodes["1"]
    assert ld.role is Role.LEADER and ld.log.term(ld.commit) != ld.term
    ld.read_index(b"early")
    c.process("1", log=False)
    assert c.read_states["1"] == []
    c.stabilize(log=False)
    assert c.read_states["1"] == [(ld.commit, b"early")]
    assert ld.log.term(ld.commit) == ld.term


def test_followers_get_the_read_index_from_the_leader():
    c = cluster()
    elect(c)
    c.nodes["1"].propose(b"w")
    c.stabilize(log=False)
    c.nodes["3"].read_index(b"f")
    c.stabilize(log=False)
    assert c.read_states["3"] == [(c.nodes["1"].commit, b"f")]
    with pytest.raises(ProposalDropped):
        cluster().nodes["2"].read_index(b"x")  # no leader known


# ---- leadership transfer -------------------------------------------------------------

def test_transfer_to_a_lagging_follower_catches_it_up_first():
    c = cluster()
    elect(c)
    c.partition(["1", "2"], ["3"])
    for i in range(5):
        c.nodes["1"].propose(b"%d" % i)
    c.stabilize(log=False)
    c.partition(["1", "2", "3"])
    c.nodes["1"].transfer_leadership("3")
    with pytest.raises(ProposalDropped):
        c.nodes["1"].propose(b"during")
    c.stabilize(log=False)
    assert c.leader() == "3" and c.nodes["3"].term == c.nodes["1"].term + 0
    assert c.applied_data("3") == [b"0", b"1", b"2", b"3", b"4"]


def test_transfer_is_aborted_after_an_election_timeout():
    c = cluster()
    elect(c)
    c.partition(["1", "2"], ["3"])
    c.nodes["1"].transfer_leadership("3")
    c.stabilize(log=False)
    for _ in range(c.config.election_ticks):
        c.tick("1")
        c.stabilize(log=False)
    assert c.nodes["1"].lead_transferee is None
    assert c.nodes["1"].propose(b"after") is not None


# ---- membership ----------------------------------------------------------------------

def test_membership_changes_wait_for_the_noop_and_one_at_a_time():
    c = cluster()
    c.nodes["1"].campaign()
    for _ in range(4):
        for n in ("1", "2", "3"):
            c.process(n, log=False)
        c.deliver(log=False)
    ld = c.nodes["1"]
    assert ld.role is Role.LEADER and ld.log.term(ld.commit) != ld.term
    with pytest.raises(ConfChangeRejected, match="no-op"):
        ld.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "4"))
    c.stabilize(log=False)
    c.add_node("4")
    ld.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "4"))
    with pytest.raises(ConfChangeRejected, match="pending"):
        ld.propose_conf_change(ConfChange(ConfChangeType.REMOVE, "3"))
    c.stabilize(log=False)
    assert ld.learners == {"4"} and c.nodes["4"].learners == {"4"}
    ld.propose_conf_change(ConfChange(ConfChangeType.PROMOTE, "4"))
    c.stabilize(log=False)
    assert all(c.nodes[n].voters == {"1", "2", "3", "4"} for n in c.nodes)


def test_the_core_alone_judges_a_membership_change_and_says_why():
    CT, Out = ConfChangeType, ConfChangeOutcome
    c = cluster()
    c.nodes["1"].campaign()
    for _ in range(4):
        for n in ("1", "2", "3"):
            c.process(n, log=False)
        c.deliver(log=False)
    ld = c.nodes["1"]
    v = ld.check_conf_change(CT.ADD_LEARNER, "4")
    assert v.outcome is Out.BUSY and "no-op" in v.reason and "busy" in v.reason
    c.stabilize(log=False)
    c.add_node("4")
    removed = {"7": 12}
    cases = {
        (CT.ADD_LEARNER, "4"): (Out.ALLOWED, ""),
        (CT.ADD_VOTER, "2"): (Out.REFUSED, "2 is already a voter"),
        (CT.ADD_LEARNER, "7"): (Out.REFUSED, "ids are never reused"),
        (CT.PROMOTE, "3"): (Out.REFUSED, "3 is already a voter"),
        (CT.PROMOTE, "9"): (Out.REFUSED, "9 is not a member: add it as a learner first"),
        (CT.REMOVE, "9"): (Out.REFUSED, "9 is not a member"),
        (CT.REMOVE, "7"): (Out.REFUSED, "7 is not a member (it was removed at index 12)"),
        (CT.REMOVE, "3"): (Out.ALLOWED, ""),
    }
    for (t, n), (outcome, why) in cases.items():
        v = ld.check_conf_change(t, n, removed)
        assert v.outcome is outcome and why in v.reason, (t, n, v)
        assert v.allowed is (outcome is Out.ALLOWED)
    # a follower judges the configuration the same way, then names the leader
    f = c.nodes["2"]
    assert f.check_conf_change(CT.ADD_VOTER, "3").outcome is Out.REFUSED
    v = f.check_conf_change(CT.ADD_LEARNER, "4")
    assert v.outcome is Out.NOT_LEADER and v.leader == "1" and "member 1" in v.reason
    ld.propose_conf_change(ConfChange(CT.ADD_LEARNER, "4"))
    v = ld.check_conf_change(CT.REMOVE, "3")
    assert v.outcome is Out.BUSY and "another membership change" in v.reason
    c.stabilize(log=False)
    # the learner has acknowledged entries now; a learner that never did is refused
    assert ld.check_conf_change(CT.PROMOTE, "4").allowed
    one = cluster(1)
    elect(one)
    v = one.nodes["1"].check_conf_change(CT.REMOVE, "1")
    assert v.outcome is Out.REFUSED and v.reason == "cannot remove the last voter"


def test_learners_never_campaign_and_their_votes_do_not_count():
    c = Cluster(["1", "2", "3"], ["4"], config=cfg())
    c.stabilize(log=False)
    for _ in range(100):
        c.tick("4")
        c.stabilize(log=False)
    assert c.nodes["4"].role is Role.FOLLOWER and c.nodes["4"].term == 1
    assert c.nodes["4"].status()["role"] == "learner"
    # Votes from 4 do not make 1 a leader of {1,2,3}.
    c1 = make("1", ("1", "2", "3"), learners=("4",), pre_vote=False)
    c1.campaign()
    c1.step(msg(MT.VOTE_RESP, "4", "1", c1.term))
    assert c1.role is Role.CANDIDATE


def test_a_lagging_learner_is_not_promoted():
    c = cluster(promote_max_lag=3)
    elect(c)
    c.add_node("4")
    c.nodes["1"].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "4"))
    c.stabilize(log=False)
    c.blocked = {("1", "4"), ("4", "1")}
    for i in range(10):
        c.nodes["1"].propose(b"%d" % i)
    c.stabilize(log=False)
    with pytest.raises(ConfChangeRejected, match="caught up"):
        c.nodes["1"].propose_conf_change(ConfChange(ConfChangeType.PROMOTE, "4"))
    c.blocked = set()
    c.tick("1")
    c.stabilize(log=False)
    c.nodes["1"].propose_conf_change(ConfChange(ConfChangeType.PROMOTE, "4"))
    c.stabilize(log=False)
    assert "4" in c.nodes["1"].voters


def test_a_removed_leader_steps_down_and_hands_over():
    c = cluster()
    elect(c)
    c.nodes["1"].propose_conf_change(ConfChange(ConfChangeType.REMOVE, "1"))
    c.stabilize(log=False)
    assert c.nodes["1"].role is Role.FOLLOWER
    new = c.leader()
    assert new in ("2", "3") and c.nodes[new].voters == {"2", "3"}
    # It is no voter any more: it cannot start an election.
    c.nodes["1"].campaign()
    c.stabilize(log=False)
    assert c.nodes["1"].role is Role.FOLLOWER and c.leader() == new


# ---- compaction, snapshots and restart -------------------------------------------------

def test_compaction_and_a_follower_that_needs_the_snapshot():
    c = cluster(max_msg_bytes=4096)
    elect(c)
    c.crash("3")
    for i in range(30):
        c.nodes["1"].propose(b"v%02d" % i * 50)
    c.stabilize(log=False)
    ld = c.nodes["1"]
    snap = ld.compact(ld.applied, b"S" * 20_000)
    c.disks["1"].compact(snap)
    assert ld.log.first_index() == ld.applied + 1
    c.restart("3")
    c.tick("1")
    c.stabilize(log=False)
    f = c.nodes["3"]
    assert f.log.snapshot is not None and f.log.snapshot.data == b"S" * 20_000
    assert f.commit == ld.commit and c.disks["3"].snapshot.data == snap.data


def test_restart_from_storage_keeps_term_vote_log_and_configuration():
    c = cluster()
    elect(c)
    for i in range(5):
        c.nodes["1"].propose(b"%d" % i)
    c.stabilize(log=False)
    ld = c.nodes["1"]
    snap = ld.compact(4, b"sm-at-4", retain=1)
    c.disks["1"].compact(snap)
    c.crash("1")
    r = c.restart("1")
    assert (r.term, r.vote) == (ld.term, ld.vote)
    assert r.log.last_index() == ld.log.last_index() and r.applied == 4
    assert r.voters == {"1", "2", "3"}
    rd = r.ready()
    assert [e.index for e in rd.committed_entries] == list(range(5, ld.commit + 1))


def test_ready_contract_one_outstanding_and_advance_releases_only_what_was_handed_out():
    ld = make_leader()
    ld.propose(b"a")
    rd = ld.ready()
    with pytest.raises(RuntimeError):
        ld.ready()
    assert not ld.has_ready()
    ld.propose(b"b")  # arrives while the driver persists rd
    ld.advance(rd)
    rd2 = ld.ready()
    assert [e.data for e in rd2.entries] == [b"b"]
    assert all(e.data != b"a" for m in rd2.messages for e in m.entries)
    ld.advance(rd2)


def test_duplicated_and_reordered_messages_change_nothing():
    rnd = random.Random(7)
    c = cluster()
    elect(c)
    for i in range(10):
        c.nodes["1"].propose(b"%d" % i)
        c.process("1", log=False)
        c.queue += c.queue[:]  # duplicate everything in flight
        rnd.shuffle(c.queue)
        c.deliver(log=False)
    c.stabilize(log=False)
    want = [b"%d" % i for i in range(10)]
    assert all(c.applied_data(n) == want for n in c.nodes)


def test_entries_persisted_by_a_ready_are_replaced_when_a_new_leader_overwrites_them():
    f = make("2", terms=[1, 1, 1], term=1, commit=1)
    drain(f)
    f.step(msg(MT.APP, "3", "2", 2, index=1, log_term=1, entries=[Entry(2, 2, data=b"n")]))
    rd = f.ready()
    assert [(e.index, e.term) for e in rd.entries] == [(2, 2)]
    f.advance(rd)
    assert f.log.last_index() == 2


def test_constructor_bootstraps_a_fresh_cluster_identically_on_every_member():
    a = RaftCore("1", ["1", "2", "3"], rng=random.Random(1))
    b = RaftCore("2", ["3", "2", "1"], rng=random.Random(2))
    ra, rb = a.ready(), b.ready()
    assert ra.entries == rb.entries and len(ra.entries) == 3
    assert ra.hard_state.term == 1 and ra.hard_state.commit == 3
    joiner = RaftCore("4", None, rng=random.Random(3))
    assert joiner.voters == set() and not joiner.has_ready()


@pytest.mark.parametrize(
    "ents",
    [
        [Entry(2, 3)],  # a gap: should start at 2
        [Entry(2, 2), Entry(1, 3)],  # terms go backwards
        [Entry(9, 2)],  # a term beyond the sender's
    ],
)
def test_a_malformed_append_from_a_broken_peer_changes_nothing(ents):
    f = make("2", terms=[1], term=2, commit=1)
    drain(f)
    with pytest.raises(InvalidMessage):  # rejected by validation, for the driver to count
        f.step(msg(MT.APP, "1", "2", 2, index=1, log_term=1, entries=ents, commit=3))
    assert f.log.last_index() == 1 and f.commit == 1


def test_concurrent_reads_share_one_heartbeat_round():
    ld = make_leader()
    for i in range(10):
        ld.read_index(b"r%d" % i)
    hbs = [m for m in drain(ld) if m.type is MT.HEARTBEAT]
    assert sorted(m.to for m in hbs) == ["2", "3"] and hbs[0].context == b"r9"
    ld.step(msg(MT.HEARTBEAT_RESP, "2", "1", ld.term, context=b"r9"))
    rd = ld.ready()
    assert [rs.context for rs in rd.read_states] == [b"r%d" % i for i in range(10)]
    assert {rs.index for rs in rd.read_states} == {ld.commit}
    ld.advance(rd)


def test_reads_arriving_while_a_round_is_in_flight_join_the_next_round():
    ld = make_leader()
    ld.read_index(b"a")
    first = [m for m in drain(ld) if m.type is MT.HEARTBEAT]
    assert [m.context for m in first] == [b"a", b"a"]
    for i in range(5):  # one round is in flight: these wait, however often we flush
        ld.read_index(b"b%d" % i)
        assert not [m for m in drain(ld) if m.type is MT.HEARTBEAT]
    ld.step(msg(MT.HEARTBEAT_RESP, "2", "1", ld.term, context=b"a"))
    rd = ld.ready()
    # "a" is served; its round ended, so one new round covers everything queued since
    assert [rs.context for rs in rd.read_states] == [b"a"]
    second = [m for m in rd.messages if m.type is MT.HEARTBEAT]
    assert sorted(m.to for m in second) == ["2", "3"] and second[0].context == b"b4"
    ld.advance(rd)
    ld.step(msg(MT.HEARTBEAT_RESP, "3", "1", ld.term, context=b"b4"))
    rd = ld.ready()
    assert [rs.context for rs in rd.read_states] == [b"b%d" % i for i in range(5)]
    ld.advance(rd)


def test_a_lost_read_round_is_recovered_by_the_next_heartbeat_tick():
    ld = make_leader()
    ld.read_index(b"lost")
    drain(ld)  # the round's heartbeats never arrive
    ld.read_index(b"later")
    assert not [m for m in drain(ld) if m.type is MT.HEARTBEAT]
    for _ in range(ld.cfg.heartbeat_ticks):
        ld.tick()
    hbs = [m for m in drain(ld) if m.type is MT.HEARTBEAT]
    assert hbs and all(m.context == b"later" for m in hbs)
    ld.step(msg(MT.HEARTBEAT_RESP, "2", "1", ld.term, context=b"later"))
    rd = ld.ready()
    assert [rs.context for rs in rd.read_states] == [b"lost", b"later"]
    ld.advance(rd)


def test_a_single_member_cluster_elects_itself_commits_and_reads():
    c = Cluster(["1"], config=cfg())
    c.stabilize(log=False)
    c.tick("1", 2 * c.config.election_ticks)
    c.stabilize(log=False)
    assert c.leader() == "1"
    before = c.nodes["1"].commit
    idx = c.nodes["1"].propose(b"solo")
    # Issued before the write completed (it commits once persisted, at advance):
    # the read may be served at the commit index it found, which precedes the write.
    c.nodes["1"].read_index(b"r")
    c.stabilize(log=False)
    assert c.applied_data("1") == [b"solo"]
    assert c.nodes["1"].commit == idx
    assert c.read_states["1"] == [(before, b"r")]
    # A read issued after the write committed must cover it.
    c.nodes["1"].read_index(b"r2")
    c.stabilize(log=False)
    assert c.read_states["1"][-1] == (idx, b"r2")


def test_entries_replaced_while_their_write_is_in_flight_are_written_again():
    # The driver is fsyncing entries 2..3 (term 2) when a new leader replaces them.
    f = make("2", terms=[1], term=2, commit=1)
    drain(f)
    f.step(msg(MT.APP, "1", "2", 2, index=1, log_term=1,
               entries=[Entry(2, 2, data=b"old2"), Entry(2, 3, data=b"old3")]))
    rd = f.ready()
    assert [e.data for e in rd.entries] == [b"old2", b"old3"]
    f.step(msg(MT.APP, "3", "2", 3, index=1, log_term=1, entries=[Entry(3, 2, data=b"new2")]))
    f.advance(rd)  # the old entries are on disk now; the new one is not
    assert f.log.persisted == 1
    rd2 = f.ready()
    assert [(e.index, e.term, e.data) for e in rd2.entries] == [(2, 3, b"new2")]
    # The ack for the new entry goes out only with the Ready that writes it.
    assert [m.index for m in rd2.messages if m.type is MT.APP_RESP and m.to == "3"] == [2]
    f.advance(rd2)
    assert f.log.persisted == 2 and f.log.last_index() == 2


def test_an_append_that_would_overwrite_committed_entries_is_refused():
    f = make("2", terms=[1, 1, 1], term=2, commit=3)
    drain(f)
    f.step(msg(MT.APP, "1", "2", 2, index=1, log_term=1, entries=[Entry(2, 2, data=b"evil")]))
    assert [e.term for e in f.log.entries] == [1, 1, 1] and f.commit == 3


def test_a_leader_sends_appends_before_its_fsync_only_once_its_term_and_vote_are_on_disk():
    # A single voter with a learner wins at once: the Ready that makes it leader also
    # carries its new term and vote, so nothing may go out before that Ready is persisted.
    c = make("1", voters=("1",), learners=("2",), terms=[1], term=1, commit=1, **PAPER)
    drain(c)
    c.campaign()
    rd = c.ready()
    assert c.role is Role.LEADER and rd.hard_state is not None and rd.hard_state.term == 2
    assert any(m.type is MT.APP for m in rd.messages)
    early, rest = c.split_early(rd)
    assert early == [] and rest == rd.messages
    # Not counted in its own quorum before the write: the no-op commits at advance().
    assert c.commit == 1
    c.advance(rd)
    assert c.commit == 2
    c.step(msg(MT.APP_RESP, "2", "1", 2, index=2))  # the learner caught up
    drain(c)
    # With term and vote on disk, its appends may go first; only they do.
    idx = c.propose(b"x")
    rd = c.ready()
    early, rest = c.split_early(rd)
    assert early and all(m.type is MT.APP for m in early)
    assert [m for m in rd.messages if m not in early] == rest
    assert c.commit == idx - 1
    c.advance(rd)
    assert c.commit == idx


def test_a_follower_sends_nothing_before_its_fsync():
    f = make("2", terms=[1], term=1, commit=1, **PAPER)
    drain(f)
    f.step(msg(MT.APP, "1", "2", 1, index=1, log_term=1, entries=[Entry(1, 2, data=b"a")],
               commit=1))
    rd = f.ready()
    assert rd.entries and rd.messages
    assert f.split_early(rd) == ([], rd.messages)
    f.advance(rd)


def test_a_follower_that_lost_acknowledged_entries_is_sent_them_again():
    """A follower whose disk dropped entries it had acknowledged (or that was started
    from an older copy of its data dir) is probed down and caught up, not probed at
    the same index forever."""
    c = cluster()
    elect(c)
    for i in range(6):
        c.nodes["1"].propose(b"w%d" % i)
        c.stabilize(log=False)
    last = c.nodes["1"].log.last_index()
    assert c.nodes["1"].prs["3"].match == last
    c.crash("3")
    d = c.disks["3"]
    d.entries = [e for e in d.entries if e.index <= last - 4]  # the tail it acked is gone
    c.restart("3")
    c.nodes["1"].propose(b"after")
    for _ in range(3):  # stabilize() raises if the probing never settles
        c.tick_all()
        c.stabilize(log=False)
    assert c.nodes["3"].log.last_index() == c.nodes["1"].log.last_index()
    assert c.applied_data("3")[-1] == b"after"
    assert c.nodes["1"].prs["3"].match == c.nodes["1"].log.last_index()

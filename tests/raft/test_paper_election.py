"""The Raft paper's election rules (section 5.2, 5.4.1), one test per rule, driven
message by message (PreVote and CheckQuorum off, as in the paper)."""

from __future__ import annotations

import pytest
from corehelp import PAPER, drain, make, make_leader, msg

from meshraft.raft.core import Role
from meshraft.raft.messages import Entry, MessageType

MT = MessageType


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_any_server_seeing_a_higher_term_updates_its_term_and_becomes_follower(role):
    # 5.1: "If a server receives a request with a higher term, it updates its term
    # and reverts to follower state."
    if role == "leader":
        c = make_leader(**PAPER)
    else:
        c = make(**PAPER)
        if role == "candidate":
            c.campaign()
    t = c.term
    c.step(msg(MT.APP, "2", "1", t + 5, index=0, log_term=0))
    assert (c.role, c.term, c.lead) == (Role.FOLLOWER, t + 5, "2")


def test_a_server_ignores_requests_with_a_stale_term():
    c = make(term=5, **PAPER)
    drain(c)
    c.step(msg(MT.APP, "2", "1", 3, index=0, log_term=0, entries=[Entry(3, 1)]))
    assert c.log.last_index() == 0 and c.term == 5 and c.lead is None


def test_servers_start_as_followers():
    c = make(**PAPER)
    assert c.role is Role.FOLLOWER and c.term == 0


def test_leader_sends_heartbeats_every_heartbeat_interval():
    c = make_leader(heartbeat_ticks=2, **PAPER)
    c.tick()
    assert [m for m in drain(c) if m.type is MT.HEARTBEAT] == []
    c.tick()
    hb = [m for m in drain(c) if m.type is MT.HEARTBEAT]
    assert sorted(m.to for m in hb) == ["2", "3"]
    assert all(m.term == c.term for m in hb)


@pytest.mark.parametrize("start_candidate", [False, True])
def test_election_timeout_starts_an_election(start_candidate):
    # 5.2: on election timeout: increment the term, vote for self, ask every peer.
    c = make(**PAPER)
    if start_candidate:
        c.campaign()
        drain(c)
    t = c.term
    for _ in range(2 * c.cfg.election_ticks):
        c.tick()
    assert c.role is Role.CANDIDATE and c.term == t + 1 and c.vote == "1"
    votes = [m for m in drain(c) if m.type is MT.VOTE and m.term == t + 1]
    assert sorted(m.to for m in votes) == ["2", "3"]


@pytest.mark.parametrize(
    "voters,grants,rejects,want",
    [
        (1, [], [], Role.LEADER),
        (3, ["2"], [], Role.LEADER),
        (3, ["2", "3"], [], Role.LEADER),
        (5, ["2", "3"], [], Role.LEADER),
        (5, ["2"], [], Role.CANDIDATE),  # no majority yet
        (5, ["2"], ["3", "4"], Role.CANDIDATE),
        (5, [], ["2", "3", "4"], Role.FOLLOWER),  # a majority said no: give up
        (3, [], ["2", "3"], Role.FOLLOWER),
    ],
)
def test_candidate_wins_with_a_majority_of_votes_in_one_round(voters, grants, rejects, want):
    ids = [str(i + 1) for i in range(voters)]
    c = make("1", ids, **PAPER)
    c.campaign()
    for v in grants:
        c.step(msg(MT.VOTE_RESP, v, "1", c.term))
    for v in rejects:
        c.step(msg(MT.VOTE_RESP, v, "1", c.term, reject=True))
    assert c.role is want


@pytest.mark.parametrize(
    "vote,candidate,granted",
    [(None, "2", True), (None, "3", True), ("2", "2", True), ("3", "3", True),
     ("2", "3", False), ("3", "2", False)],
)
def test_a_follower_votes_for_at_most_one_candidate_per_term(vote, candidate, granted):
    c = make(term=1, vote=vote, **PAPER)
    c.step(msg(MT.VOTE, candidate, "1", 1, index=0, log_term=0))
    resp = [m for m in drain(c) if m.type is MT.VOTE_RESP]
    assert len(resp) == 1 and resp[0].reject is (not granted)
    assert c.vote == (candidate if granted else vote)


def test_the_vote_is_persisted_before_the_response_leaves():
    c = make(term=1, **PAPER)
    drain(c)
    c.step(msg(MT.VOTE, "2", "1", 2, index=0, log_term=0))
    rd = c.ready()
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (2, "2")
    assert any(m.type is MT.VOTE_RESP and not m.reject for m in rd.messages)


@pytest.mark.parametrize("leader_term_delta", [0, 1])
def test_candidate_returns_to_follower_when_a_leader_of_its_term_appears(leader_term_delta):
    c = make(**PAPER)
    c.campaign()
    t = c.term + leader_term_delta
    c.step(msg(MT.APP, "2", "1", t, index=0, log_term=0))
    assert (c.role, c.term, c.lead) == (Role.FOLLOWER, t, "2")


def test_election_timeouts_are_randomized_between_et_and_2et():
    seen = set()
    for seed in range(60):
        c = make(seed=seed, **PAPER)
        for k in range(1, 2 * c.cfg.election_ticks + 1):
            c.tick()
            if c.role is Role.CANDIDATE:
                seen.add(k)
                break
    assert min(seen) >= 10 and max(seen) <= 19
    assert len(seen) > 5  # really spread out, not one fixed value


def test_randomized_timeouts_make_split_votes_unlikely():
    # 5.2: followers rarely time out together.
    conflicts = 0
    for seed in range(100):
        a, b = make("1", seed=seed, **PAPER), make("2", seed=seed + 1000, **PAPER)
        for _ in range(20):
            a.tick()
            b.tick()
            if a.role is Role.CANDIDATE or b.role is Role.CANDIDATE:
                break
        conflicts += a.role is Role.CANDIDATE and b.role is Role.CANDIDATE
    assert conflicts <= 30


def test_candidate_sends_its_last_log_index_and_term_in_vote_requests():
    c = make(terms=[1, 1, 2], term=2, **PAPER)
    c.campaign()
    votes = [m for m in drain(c) if m.type is MT.VOTE]
    assert {(m.index, m.log_term, m.term) for m in votes} == {(3, 2, 3)}


@pytest.mark.parametrize(
    "terms,cand_index,cand_term,granted",
    [
        # 5.4.1: grant only if the candidate's log is at least as up-to-date.
        ([1, 1], 2, 1, True),
        ([1, 1], 3, 1, True),
        ([1, 1], 1, 1, False),  # same last term, shorter log
        ([1, 2], 1, 3, True),  # higher last term wins over length
        ([1, 2], 3, 1, False),  # lower last term loses despite length
        ([2], 5, 1, False),
    ],
)
def test_voter_grants_only_to_up_to_date_logs(terms, cand_index, cand_term, granted):
    c = make(terms=terms, **PAPER)
    drain(c)
    c.step(msg(MT.VOTE, "2", "1", c.term + 1, index=cand_index, log_term=cand_term))
    resp = [m for m in drain(c) if m.type is MT.VOTE_RESP]
    assert resp[0].reject is (not granted)


def test_granting_a_vote_resets_the_election_timer():
    # Figure 2, followers: convert to candidate only if the timeout elapses without
    # hearing from the leader *or granting a vote*.
    c = make(term=1, seed=5, **PAPER)
    drain(c)
    for _ in range(c.randomized_timeout - 1):
        c.tick()
    c.step(msg(MT.VOTE, "2", "1", 2, index=0, log_term=0))
    drain(c)
    c.tick()
    assert c.role is Role.FOLLOWER and c.vote == "2"


def test_a_vote_request_with_a_stale_term_is_rejected():
    # Figure 2, RequestVote 1: reply false if term < currentTerm.
    c = make(term=5, **PAPER)
    drain(c)
    c.step(msg(MT.VOTE, "2", "1", 4, index=9, log_term=4))
    assert c.vote is None and c.term == 5
    assert [m for m in drain(c) if m.type is MT.VOTE_RESP and not m.reject] == []


def test_a_new_leader_announces_itself_to_every_follower_at_once():
    # Figure 2, leaders: upon election, send AppendEntries to each server (ours carries
    # the no-op of the new term).
    c = make(**PAPER)
    c.campaign()
    c.step(msg(MT.VOTE_RESP, "2", "1", c.term))
    apps = [m for m in drain(c) if m.type is MT.APP]
    assert sorted(m.to for m in apps) == ["2", "3"]
    assert all(m.entries and m.entries[-1].term == c.term and not m.entries[-1].data
               for m in apps)

"""The client's retry policy (meshraft.kv.retry), without sockets: every protocol error
code and every connection failure, for reads and writes, with and without an earlier
try that may have been applied."""

from __future__ import annotations

import pytest

from meshraft.kv import errors as ke
from meshraft.kv import protocol as p
from meshraft.kv.retry import RETRY_CODES, Action, Backoff, Decision, Event, decide, give_up

WRITE = [True, False]
APPLIED = [False, True]

# code -> (action, error class) for a request that does not list the code among its answers
REPLY_TABLE: dict[str, tuple[Action, type[ke.MeshraftError] | None]] = {
    p.BUSY: (Action.RETRY_SAME, None),
    p.UNAVAILABLE: (Action.RETRY_NEXT, None),
    p.NOT_LEADER: (Action.RETRY_NEXT, None),
    p.TIMEOUT: (Action.RETRY_NEXT, None),
    p.TOO_LARGE: (Action.RAISE, ke.TooLarge),
    p.BAD_REQUEST: (Action.RAISE, ke.BadRequest),
    p.UNAUTHORIZED: (Action.RAISE, ke.Unauthorized),
    p.STALE: (Action.RAISE, ke.OutcomeUnknown),
    p.NOT_FOUND: (Action.RAISE, ke.MeshraftError),
    p.CAS_MISMATCH: (Action.RAISE, ke.MeshraftError),
    p.INTERNAL: (Action.RAISE, ke.MeshraftError),
    p.TLS_REQUIRED: (Action.RAISE, ke.MeshraftError),
    p.COMPACTED: (Action.RAISE, ke.Compacted),
    p.FUTURE_REVISION: (Action.RAISE, ke.FutureRevision),
    p.LEASE_NOT_FOUND: (Action.RAISE, ke.LeaseNotFound),
    p.TOO_MANY_LEASES: (Action.RAISE, ke.TooManyLeases),
    # a bad request, told apart by its own code
    p.LEASE_TOO_MANY_KEYS: (Action.RAISE, ke.BadRequest),
}
# Codes raised as a class whose own code is another one: the error carries the reply's.
OWN_CODE = {p.LEASE_TOO_MANY_KEYS}


def test_the_table_covers_every_protocol_error_code():
    assert set(REPLY_TABLE) == set(p.ERROR_CODES)
    assert {c for c, (a, _e) in REPLY_TABLE.items() if a is not Action.RAISE} == RETRY_CODES


@pytest.mark.parametrize("code", sorted(p.ERROR_CODES))
@pytest.mark.parametrize("write", WRITE)
@pytest.mark.parametrize("applied", APPLIED)
def test_every_error_code(code, write, applied):
    action, error = REPLY_TABLE[code]
    d = decide(code, "why", write=write, maybe_applied=applied)
    assert d.action is action
    if action is Action.RAISE:
        assert d.error is error and d.backoff is Backoff.NONE
        exc = d.exception()
        assert type(exc) is error and "why" in exc.message
        # the error's kind is carried as a code, for every caller to tell it apart
        assert exc.code == (code if error is ke.MeshraftError or code in OWN_CODE
                            else error.code)
        assert d.maybe_applied == applied
    else:
        assert d.error is None and d.backoff is Backoff.ATTEMPT
        # only a write that timed out on the server may now have been applied
        assert d.maybe_applied == (applied or (write and code == p.TIMEOUT))


@pytest.mark.parametrize("code", sorted(p.ERROR_CODES))
@pytest.mark.parametrize("write", WRITE)
def test_a_code_that_is_the_operations_own_answer_is_returned(code, write):
    d = decide(code, "", write=write, answers=(code,))
    assert d == Decision(Action.RETURN, False)


def test_bad_request_after_an_undeduplicated_try_that_may_have_applied_is_outcome_unknown():
    # a membership change has no sequence number: "already a learner" may be our own doing
    d = decide(p.BAD_REQUEST, "already a learner", write=True, maybe_applied=True,
               deduplicated=False)
    assert d.error is ke.OutcomeUnknown and "already a learner" in d.message
    # deduplicated, or with no earlier try that may have applied: a plain bad request
    assert decide(p.BAD_REQUEST, "x", write=True, maybe_applied=True).error is ke.BadRequest
    assert decide(p.BAD_REQUEST, "x", write=True, deduplicated=False).error is ke.BadRequest


def test_not_leader_whose_leader_is_no_endpoint_raises_unavailable_with_its_code():
    d = decide(p.NOT_LEADER, "not the leader", write=True, leader="4", leader_elsewhere=True)
    assert d.action is Action.RAISE
    exc = d.exception()
    assert isinstance(exc, ke.Unavailable) and exc.code == p.NOT_LEADER
    assert exc.details == {"leader": "4"} and "member 4" in exc.message
    assert "--endpoints" in exc.message
    # an empty message still says what happened
    assert decide(p.NOT_LEADER, "", write=False, leader="4",
                  leader_elsewhere=True).message.startswith("not the leader")
    # with a leader among the endpoints: try another endpoint
    assert decide(p.NOT_LEADER, "", write=True, leader="2").action is Action.RETRY_NEXT


def test_an_unknown_code_is_a_meshraft_error_with_that_code():
    d = decide("what-is-this", "m", write=False)
    assert d.action is Action.RAISE and d.error is ke.MeshraftError
    exc = d.exception()
    assert exc.code == "what-is-this" and exc.message == "what-is-this: m"


# -- connection failures -------------------------------------------------------------------------

# event -> (action, backoff, may a write have been applied after it)
EVENT_TABLE = {
    Event.CONNECT_REFUSED: (Action.RETRY_NEXT, Backoff.ROUND, False),
    Event.CONNECT_FAILED: (Action.RETRY_NEXT, Backoff.ROUND, False),
    Event.CONNECT_RESET: (Action.RETRY_NEXT, Backoff.NONE, False),
    Event.TLS_FAILED: (Action.RETRY_NEXT, Backoff.NONE, False),
    Event.LOST_UNSENT: (Action.RETRY_NEXT, Backoff.ATTEMPT, False),
    Event.LOST_SENT: (Action.RETRY_NEXT, Backoff.ATTEMPT, True),
    Event.NO_ANSWER: (Action.RETRY_NEXT, Backoff.NONE, True),
}


def test_the_event_table_covers_every_event():
    assert set(EVENT_TABLE) == set(Event)


@pytest.mark.parametrize("event", list(Event))
@pytest.mark.parametrize("write", WRITE)
@pytest.mark.parametrize("applied", APPLIED)
def test_every_connection_failure_somewhere(event, write, applied):
    action, backoff, may_apply = EVENT_TABLE[event]
    d = decide(event, "somewhere", write=write, maybe_applied=applied)
    assert (d.action, d.backoff) == (action, backoff)
    assert d.maybe_applied == (applied or (write and may_apply))
    assert d.error is None


@pytest.mark.parametrize("event", list(Event))
@pytest.mark.parametrize("retry_refused", [True, False])
def test_connection_failures_everywhere(event, retry_refused):
    d = decide(event, "TLS with h:1 failed: x", write=True, everywhere=True,
               retry_refused=retry_refused)
    if event is Event.TLS_FAILED:
        # a configuration problem, not an outage: retrying fails the same way
        assert d.action is Action.RAISE and d.error is ke.TLSFailure
        assert d.exception().message == "TLS with h:1 failed: x"
    elif event is Event.CONNECT_REFUSED and not retry_refused:
        assert d.action is Action.RAISE and d.error is ke.Unavailable
        assert "nothing listens there" in d.message
    else:
        assert d.action is EVENT_TABLE[event][0]


# -- out of time ---------------------------------------------------------------------------------


@pytest.mark.parametrize("last_code", [*sorted(p.ERROR_CODES), *Event, None])
@pytest.mark.parametrize("applied", APPLIED)
def test_give_up(last_code, applied):
    exc = give_up(1.5, "h:1: last thing", maybe_applied=applied, last_code=last_code)
    assert "1.5s" in exc.message and "h:1: last thing" in exc.message
    if applied:
        assert type(exc) is ke.OutcomeUnknown
    elif last_code == p.BUSY:
        assert type(exc) is ke.Busy
    else:
        assert type(exc) is ke.Unavailable


def test_busy_is_told_apart_by_code_not_by_text():
    # a message that mentions "busy" does not make an outage a busy cluster
    exc = give_up(1, "h:1: unavailable: busy elsewhere", maybe_applied=False,
                  last_code=p.UNAVAILABLE)
    assert type(exc) is ke.Unavailable
    exc = give_up(1, "h:1: server error", maybe_applied=False, last_code=p.BUSY)
    assert type(exc) is ke.Busy

"""The client's retry policy: what to do after one try of a request, as a pure function.

This module owns the decision the client makes after each try: return the reply,
try again (on the same endpoint or the next one, with or without a backoff), or
raise (and which error). ``decide`` maps one event (an error reply's code, or a
connection failure, as an ``Event`` code) and the facts the client knows (is it
a write, may an earlier try have been applied, is it deduplicated, ...) to a
``Decision``; ``give_up`` says which error ends an operation whose time ran out.
It does no I/O, keeps no state and never looks at an error's text: kinds travel
as codes. The client calls it only on error replies and failures, never on the
hot path of an ``ok`` reply.

Why a write's outcome matters: a write that timed out, or whose connection was
lost after it was sent, may still be applied; the client then never reports it
as failed, only as ``OutcomeUnknown`` (see
docs/architecture.md#a-put-from-the-command-line-to-the-wal-and-back).
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from meshraft.kv import protocol as p
from meshraft.kv.errors import (
    BadRequest,
    Busy,
    Compacted,
    FutureRevision,
    LeaseNotFound,
    MeshraftError,
    OutcomeUnknown,
    TLSFailure,
    TooLarge,
    TooManyLeases,
    Unauthorized,
    Unavailable,
)

__all__ = ["RETRY_CODES", "Action", "Backoff", "Decision", "Event", "decide", "give_up"]


class Event(enum.StrEnum):
    """A try that ended without a reply (a reply's own code is the protocol's)."""

    CONNECT_REFUSED = "connect-refused"  # nothing listens at the endpoint
    CONNECT_FAILED = "connect-failed"  # connect timed out or failed otherwise
    CONNECT_RESET = "connect-reset"  # reset while connecting (plain TCP)
    TLS_FAILED = "tls-failed"  # the TLS handshake failed (or was reset by the server)
    LOST_UNSENT = "lost-unsent"  # the connection ended before the request was written
    LOST_SENT = "lost-sent"  # the connection ended after the request was written
    NO_ANSWER = "no-answer"  # sent, and no answer within the try's time


class Action(enum.Enum):
    RETURN = "return"  # the reply is the operation's answer
    RETRY_SAME = "retry-same"  # try again on the endpoint the client prefers now
    RETRY_NEXT = "retry-next"  # try again on the next endpoint
    RAISE = "raise"  # end the operation with ``Decision.error``


class Backoff(enum.Enum):
    NONE = "none"  # try again at once
    ATTEMPT = "attempt"  # back off by the number of tries so far
    ROUND = "round"  # back off once per round over every endpoint


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    maybe_applied: bool  # after this try: some try of this write may have been applied
    backoff: Backoff = Backoff.NONE
    error: type[MeshraftError] | None = None  # with RAISE
    message: str = ""  # with RAISE: the error's message
    code: str | None = None  # with RAISE: the error's code, when not its class's
    details: dict[str, Any] = field(default_factory=dict)

    def exception(self) -> MeshraftError:
        """The error a RAISE decision ends the operation with."""
        assert self.error is not None
        return self.error(self.message, code=self.code, **self.details)


# Codes after which the same request is tried again (for reads and writes alike).
RETRY_CODES = frozenset({p.BUSY, p.UNAVAILABLE, p.NOT_LEADER, p.TIMEOUT})

# An operation's own "no" that has an error class of its own: final, never retried
# (the history asked for is gone, the lease is gone, a limit was reached).
FINAL_CODES: dict[str, type[MeshraftError]] = {
    p.COMPACTED: Compacted, p.FUTURE_REVISION: FutureRevision,
    p.LEASE_NOT_FOUND: LeaseNotFound, p.TOO_MANY_LEASES: TooManyLeases,
    p.LEASE_TOO_MANY_KEYS: BadRequest,
}


def decide(code: str | Event | None, message: str = "", *, write: bool,
           maybe_applied: bool = False, deduplicated: bool = True,
           answers: Collection[str] = (), leader: str | None = None,
           leader_elsewhere: bool = False, everywhere: bool = False,
           retry_refused: bool = True) -> Decision:
    """The client's next step after one try of a request.

    ``code``: the error reply's code, or an ``Event``. ``message``: the reply's
    message (for a connection event: what went wrong, where). ``write``: the request
    changes state; ``maybe_applied``: an earlier try of it may have been applied;
    ``deduplicated``: it carries a client id and sequence number, so a repeat is
    applied at most once. ``answers``: codes that are this operation's own "no"
    (a get's not-found). ``leader``/``leader_elsewhere``: with not-leader, the
    leader the reply names, and whether it is a member none of the endpoints is
    (every endpoint is known, and none is it). ``everywhere``: this connection
    failure has now happened at every endpoint. ``retry_refused``: keep trying
    endpoints where nothing listens.
    """
    if code in answers:
        return Decision(Action.RETURN, maybe_applied)
    if code in RETRY_CODES:
        if code == p.NOT_LEADER and leader_elsewhere:
            # Only the leader can do this, and no endpoint we were given is it:
            # retrying until the timeout would only hide that.
            return Decision(
                Action.RAISE, maybe_applied, error=Unavailable, code=p.NOT_LEADER,
                message=f"{message or 'not the leader'}; the leader, member {leader}, is not "
                        "among the endpoints given (add its client address to --endpoints)",
                details={"leader": leader})
        applied = maybe_applied or (write and code == p.TIMEOUT)
        # busy: the member is right, just loaded; anything else: ask another member.
        action = Action.RETRY_SAME if code == p.BUSY else Action.RETRY_NEXT
        return Decision(action, applied, Backoff.ATTEMPT)
    if isinstance(code, Event):
        return _connection_event(code, message, write, maybe_applied, everywhere,
                                 retry_refused)
    if code == p.TOO_LARGE:
        return Decision(Action.RAISE, maybe_applied, error=TooLarge, message=message)
    if code in FINAL_CODES:
        error = FINAL_CODES[code]
        return Decision(Action.RAISE, maybe_applied, error=error, message=message,
                        code=None if error.code == code else str(code))
    if code == p.BAD_REQUEST:
        if maybe_applied and not deduplicated:
            # Not deduplicated (a membership change): an earlier try of ours may be
            # what this one collides with ("already a learner").
            return Decision(Action.RAISE, maybe_applied, error=OutcomeUnknown,
                            message="an earlier attempt may have been applied; retrying it "
                                    f"was refused: {message}")
        return Decision(Action.RAISE, maybe_applied, error=BadRequest, message=message)
    if code == p.UNAUTHORIZED:
        return Decision(Action.RAISE, maybe_applied, error=Unauthorized, message=message)
    if code == p.STALE:
        # Our earlier try was applied and its answer is gone.
        return Decision(Action.RAISE, maybe_applied, error=OutcomeUnknown,
                        message=f"the write was applied but its answer was lost: {message}")
    return Decision(Action.RAISE, maybe_applied, error=MeshraftError,
                    message=f"{code}: {message}", code=str(code))


def _connection_event(event: Event, where: str, write: bool, maybe_applied: bool,
                      everywhere: bool, retry_refused: bool) -> Decision:
    if event is Event.TLS_FAILED:
        # Not an outage: retrying the same handshake will fail the same way.
        if everywhere:
            return Decision(Action.RAISE, maybe_applied, error=TLSFailure, message=where)
        return Decision(Action.RETRY_NEXT, maybe_applied)
    if event is Event.CONNECT_RESET:
        return Decision(Action.RETRY_NEXT, maybe_applied)
    if event is Event.CONNECT_REFUSED or event is Event.CONNECT_FAILED:
        if event is Event.CONNECT_REFUSED and everywhere and not retry_refused:
            return Decision(Action.RAISE, maybe_applied, error=Unavailable,
                            message=f"{where} (nothing listens there: is the member "
                                    "running, and is this its client address?)")
        return Decision(Action.RETRY_NEXT, maybe_applied, Backoff.ROUND)
    if event is Event.LOST_UNSENT or event is Event.LOST_SENT:
        applied = maybe_applied or (write and event is Event.LOST_SENT)
        return Decision(Action.RETRY_NEXT, applied, Backoff.ATTEMPT)
    # NO_ANSWER: the next try goes elsewhere; the connection stays for what else is on it.
    return Decision(Action.RETRY_NEXT, maybe_applied or write)


def give_up(total: float, last: str, *, maybe_applied: bool,
            last_code: str | Event | None) -> MeshraftError:
    """The error of an operation whose ``total`` seconds ran out; ``last``/``last_code``:
    what the last try met."""
    if maybe_applied:
        return OutcomeUnknown(
            f"no answer within {total:g}s; the write may or may not have been applied "
            f"(last: {last})")
    if last_code == p.BUSY:
        return Busy(f"cluster busy for {total:g}s (last: {last})")
    return Unavailable(f"unavailable for {total:g}s (last: {last})")

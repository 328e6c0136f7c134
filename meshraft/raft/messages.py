"""Raft's data types: log entries, hard state, snapshots, and the messages
peers exchange.

This module owns the shapes that cross the boundaries between the core, the
storage and the node. It must never do IO. ``Entry``, ``HardState``,
``ConfState``, ``SnapshotMeta`` and ``Snapshot`` are a contract with
``storage``; extend them only by adding fields with defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import msgpack


class EntryType(IntEnum):
    NORMAL = 0  # application data (``data`` is opaque bytes); empty data is the leader's no-op
    CONF_CHANGE = 1  # a membership change (``data`` is an encoded ConfChange)


@dataclass(slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(slots=True)
class ConfState:
    voters: list[str] = field(default_factory=list)
    learners: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True)
class Snapshot:
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""


# --------------------------------------------------------------------------------------
# Membership


class ConfChangeType(IntEnum):
    ADD_VOTER = 0  # add a new voter (or make a learner a voter: prefer PROMOTE)
    ADD_LEARNER = 1  # add a non-voting member that receives the log
    PROMOTE = 2  # turn a caught-up learner into a voter
    REMOVE = 3  # remove a voter or a learner


@dataclass(slots=True)
class ConfChange:
    """One single-server membership change; the payload of a CONF_CHANGE entry.

    ``context`` is opaque to the core (the node puts e.g. the new member's address there).
    """

    type: ConfChangeType
    node_id: str
    context: bytes = b""

    def encode(self) -> bytes:
        return msgpack.packb([int(self.type), self.node_id, self.context], use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        try:
            obj = msgpack.unpackb(data, raw=False, **_LIMITS)
        except Exception as e:  # msgpack raises many exception types on garbage
            raise DecodeError(f"bad conf change: {e}") from None
        if not (isinstance(obj, list) and len(obj) == 3):
            raise DecodeError("bad conf change: not a 3-element array")
        t, node, ctx = obj
        if not isinstance(t, int) or t not in _CC_TYPES:
            raise DecodeError("bad conf change type")
        if not isinstance(node, str) or not node or not isinstance(ctx, bytes):
            raise DecodeError("bad conf change fields")
        return cls(ConfChangeType(t), node, ctx)


_CC_TYPES = {int(t) for t in ConfChangeType}


# --------------------------------------------------------------------------------------
# Messages between peers


class MessageType(IntEnum):
    PROP = 1  # follower -> leader: forwarded proposal (entries without term/index)
    APP = 2  # leader -> follower: append entries (may be empty: a probe)
    APP_RESP = 3  # follower -> leader: ack (index = last matching) or reject (+ hints)
    VOTE = 4
    VOTE_RESP = 5
    PRE_VOTE = 6
    PRE_VOTE_RESP = 7
    HEARTBEAT = 8  # leader -> follower: commit + read-index context
    HEARTBEAT_RESP = 9
    SNAP = 10  # leader -> follower: one chunk of a snapshot
    SNAP_RESP = 11  # follower -> leader: bytes of the snapshot received so far
    TIMEOUT_NOW = 12  # leader -> transferee: campaign now, ignoring leases
    READ_INDEX = 13  # follower -> leader: ask for a read index (context identifies it)
    READ_INDEX_RESP = 14  # leader -> follower: the read index (reject if it cannot serve)
    TRANSFER_LEADER = 15  # follower -> leader: please transfer leadership to ``index``'s node


_MSG_TYPES = {int(t) for t in MessageType}



@dataclass(slots=True)
class SnapshotChunk:
    """A piece of a snapshot in flight: ``data`` is bytes [offset, offset+len) of ``total``."""

    meta: SnapshotMeta
    offset: int
    total: int
    data: bytes


@dataclass(slots=True)
class Message:
    type: MessageType
    to: str
    frm: str
    term: int = 0
    log_term: int = 0  # APP: term of entry ``index``; votes: candidate's last term; reject hint
    index: int = 0  # APP: index before ``entries``; APP_RESP: last index / rejected index
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0  # APP_RESP reject: the follower's guess of the match index
    context: bytes = b""  # read-index context; b"transfer" on a campaign from TimeoutNow
    snapshot: SnapshotChunk | None = None


# --------------------------------------------------------------------------------------
# What the core hands to its driver


@dataclass(slots=True)
class ReadState:
    """A linearizable read may be served once the state machine applied ``index``."""

    index: int
    context: bytes


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state the driver may display; never persisted."""

    leader: str | None
    role: str  # "leader" | "follower" | "candidate" | "pre-candidate" | "learner"


@dataclass(slots=True)
class Ready:
    """One batch of work for the driver, processed strictly in this order:

    1. persist ``snapshot`` (if not None), then ``entries`` and ``hard_state`` (if not None).
       ``entries`` may start at an index that is already on disk: everything on disk from
       ``entries[0].index`` on must be replaced (a leader overwrote a suffix).
    2. send ``messages`` (they may depend on what step 1 wrote, so never before it).
       The one exception: ``RaftCore.split_early(ready)`` names a leader's appends,
       heartbeats and snapshot chunks that may go out before step 1, so the leader's
       fsync overlaps its followers' (it counts itself only once persisted).
    3. restore the state machine from ``snapshot`` (if not None), then apply
       ``committed_entries`` in order, then serve ``read_states`` once applied >= index.
    4. call ``core.advance(ready)``.

    ``committed_entries`` include CONF_CHANGE entries (and empty NORMAL no-ops): the
    core applies a configuration change to itself in ``advance``; the state machine
    should skip them (or note e.g. a new member's address from ``ConfChange.context``).
    A ``snapshot`` here was received from the leader; snapshots the driver takes
    itself go through ``core.compact`` and never come back in a Ready.
    """

    soft_state: SoftState | None = None  # None if unchanged since the last Ready
    hard_state: HardState | None = None  # None if unchanged since the last Ready
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def must_sync(self) -> bool:
        """True if this Ready writes anything that must be fsynced before sending."""
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None


# --------------------------------------------------------------------------------------
# Wire encoding: msgpack with strict limits; garbage raises DecodeError, nothing else.


class DecodeError(ValueError):
    """Bytes that are not a valid encoded message."""


class InvalidMessage(ValueError):
    """A message that decoded but that the core cannot take: its fields contradict
    each other (e.g. an append whose entries are not contiguous after its index, go
    back in term, or carry a term beyond the sender's). Only a broken or forged peer
    sends one; the core raises this before it changes anything, and the driver counts
    it as rejected input. Any other exception out of the core is a bug."""


def validate_message(m: Message) -> None:
    """Raise InvalidMessage if ``m`` cannot be taken as it is (see InvalidMessage).
    The decoder checked each field's type; this checks how they fit together."""
    if m.type is MessageType.APP and m.entries:
        prev_t = m.log_term
        for k, e in enumerate(m.entries):
            if e.index != m.index + 1 + k or e.term < prev_t or e.term > m.term:
                raise InvalidMessage(
                    f"{m.type.name} from {m.frm}: entry {k} ({e.index}, term {e.term}) does "
                    f"not follow ({m.index}, term {prev_t}) within term {m.term}")
            prev_t = e.term


MAX_WIRE_BYTES = 1 << 20  # hard cap for one encoded message (far above any datagram)
_LIMITS = dict(
    max_bin_len=MAX_WIRE_BYTES,
    max_str_len=1024,
    max_array_len=100_000,
    max_map_len=16,
    max_ext_len=0,
)


def _enc_entry(e: Entry) -> list:
    return [e.term, e.index, int(e.type), e.data]


def encode_message(m: Message) -> bytes:
    snap = None
    if m.snapshot is not None:
        s = m.snapshot
        snap = [
            s.meta.index,
            s.meta.term,
            list(s.meta.conf_state.voters),
            list(s.meta.conf_state.learners),
            s.offset,
            s.total,
            s.data,
        ]
    return msgpack.packb(
        [
            1,  # wire version
            int(m.type),
            m.to,
            m.frm,
            m.term,
            m.log_term,
            m.index,
            [_enc_entry(e) for e in m.entries],
            m.commit,
            m.reject,
            m.reject_hint,
            m.context,
            snap,
        ],
        use_bin_type=True,
    )


def _uint(v: object, what: str) -> int:
    if type(v) is not int or v < 0 or v >= 1 << 63:
        raise DecodeError(f"bad {what}: {v!r}")
    return v


def _id(v: object, what: str) -> str:
    if not isinstance(v, str) or not v or len(v) > 256:
        raise DecodeError(f"bad {what}")
    return v


def _ids(v: object, what: str) -> list[str]:
    if not isinstance(v, list):
        raise DecodeError(f"bad {what}")
    return [_id(x, what) for x in v]


def decode_message(b: bytes) -> Message:
    """Decode one message; anything malformed raises DecodeError (a ValueError)."""
    if not isinstance(b, (bytes, bytearray, memoryview)):
        raise DecodeError("not bytes")
    if len(b) > MAX_WIRE_BYTES:
        raise DecodeError("message too large")
    try:
        obj = msgpack.unpackb(b, raw=False, strict_map_key=True, **_LIMITS)
    except Exception as e:  # msgpack raises ValueError, ExtraData, TypeError, ... on garbage
        raise DecodeError(f"not msgpack: {type(e).__name__}") from None
    if not isinstance(obj, list) or len(obj) != 13 or obj[0] != 1:
        raise DecodeError("not a version-1 message")
    _, t, to, frm, term, log_term, index, ents, commit, reject, hint, ctx, snap = obj
    if type(t) is not int or t not in _MSG_TYPES:
        raise DecodeError(f"bad message type {t!r}")
    if not isinstance(ents, list):
        raise DecodeError("bad entries")
    entries = []
    for e in ents:
        if not (isinstance(e, list) and len(e) == 4):
            raise DecodeError("bad entry")
        et = e[2]
        if type(et) is not int or et not in (0, 1) or not isinstance(e[3], bytes):
            raise DecodeError("bad entry")
        entries.append(Entry(_uint(e[0], "entry term"), _uint(e[1], "entry index"),
                             EntryType(et), e[3]))
    if not isinstance(reject, bool) or not isinstance(ctx, bytes):
        raise DecodeError("bad reject/context")
    chunk = None
    if snap is not None:
        if not (isinstance(snap, list) and len(snap) == 7) or not isinstance(snap[6], bytes):
            raise DecodeError("bad snapshot chunk")
        meta = SnapshotMeta(
            _uint(snap[0], "snapshot index"),
            _uint(snap[1], "snapshot term"),
            ConfState(_ids(snap[2], "voters"), _ids(snap[3], "learners")),
        )
        off, total = _uint(snap[4], "offset"), _uint(snap[5], "total")
        if off + len(snap[6]) > total:
            raise DecodeError("snapshot chunk beyond its total")
        chunk = SnapshotChunk(meta, off, total, snap[6])
    return Message(
        MessageType(t),
        _id(to, "to"),
        _id(frm, "from"),
        _uint(term, "term"),
        _uint(log_term, "log_term"),
        _uint(index, "index"),
        entries,
        _uint(commit, "commit"),
        reject,
        _uint(hint, "reject_hint"),
        ctx,
        chunk,
    )


def entry_wire_size(e: Entry) -> int:
    """An upper bound of the bytes ``e`` takes in an encoded message."""
    return len(e.data) + 32

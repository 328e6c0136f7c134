"""Fuzzing Raft's decoders and its core with hostile messages.

decode_message and ConfChange.decode only ever return a value or raise
DecodeError, whatever the bytes; valid messages round-trip. A RaftCore stepping
random messages that passed the decoder (random types, terms, indices, entries,
snapshot chunks, senders) interleaved with ticks raises nothing but InvalidMessage
(input it refuses before changing anything; anything else would be a bug), and its local
invariants hold after every Ready: term and commit never go back, a vote is never
changed within a term, committed entries are handed out once, in order, and never
change afterwards."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from meshraft.raft.core import RaftCore
from meshraft.raft.messages import (
    ConfChange,
    ConfState,
    DecodeError,
    Entry,
    EntryType,
    InvalidMessage,
    Message,
    MessageType,
    SnapshotChunk,
    SnapshotMeta,
    decode_message,
    encode_message,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

scalars = (st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
           | st.floats() | st.text(max_size=16) | st.binary(max_size=32))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=14)
                      | st.dictionaries(st.text(max_size=4), c, max_size=4), max_leaves=20)

small = st.integers(0, 12)
ids = st.sampled_from(["1", "2", "3", "4"])
entries = st.lists(st.builds(Entry, small, small, st.sampled_from(list(EntryType)),
                             st.binary(max_size=16)), max_size=4)
chunks = st.none() | st.builds(
    lambda idx, term, voters, off, total, data: SnapshotChunk(
        SnapshotMeta(idx, term, ConfState(voters, [])), off, max(total, off + len(data)), data),
    small, small, st.lists(ids, max_size=3, unique=True), st.integers(0, 8), st.integers(0, 16),
    st.binary(max_size=8))
messages = st.builds(
    Message, st.sampled_from(list(MessageType)), st.sampled_from(["1", "1", "1", "9"]),
    st.sampled_from(["2", "3", "4", "1"]), small, small, small, entries, small, st.booleans(),
    small, st.sampled_from([b"", b"transfer", b"ctx"]), chunks)


@FAST
@given(st.binary(max_size=300) | values.map(lambda v: msgpack.packb(v, use_bin_type=True)))
def test_decode_message_only_raises_decode_error(data: bytes) -> None:
    try:
        m = decode_message(data)
    except DecodeError:
        return
    assert isinstance(m, Message)
    assert decode_message(encode_message(m)) == m


@FAST
@given(messages, st.integers(0, 1 << 16), st.integers(0, 7))
def test_valid_messages_round_trip_and_survive_bit_flips(m: Message, pos: int, bit: int) -> None:
    data = encode_message(m)
    assert decode_message(data) == m
    flipped = bytearray(data)
    flipped[pos % len(flipped)] ^= 1 << bit
    for b in (bytes(flipped), data[: pos % len(data)], data + b"\x00"):
        try:
            got = decode_message(b)
        except DecodeError:
            continue
        assert decode_message(encode_message(got)) == got


@FAST
@given(st.binary(max_size=100) | values.map(lambda v: msgpack.packb(v, use_bin_type=True)))
def test_conf_change_decode_only_raises_decode_error(data: bytes) -> None:
    try:
        cc = ConfChange.decode(data)
    except DecodeError:
        return
    assert ConfChange.decode(cc.encode()) == cc


_REPLY = {MessageType.PRE_VOTE: MessageType.PRE_VOTE_RESP, MessageType.VOTE: MessageType.VOTE_RESP,
          MessageType.APP: MessageType.APP_RESP, MessageType.HEARTBEAT: MessageType.HEARTBEAT_RESP}


def cooperative_replies(out: list[Message]) -> list[Message]:
    """What honest peers 2 and 3 would answer (so the fuzz also reaches leadership)."""
    replies = []
    for m in out:
        if m.to in ("2", "3") and m.type in _REPLY:
            index = m.index + len(m.entries) if m.type == MessageType.APP else 0
            replies.append(Message(_REPLY[m.type], "1", m.to, m.term, index=index,
                                   context=m.context))
    return replies


@settings(FAST, max_examples=200)
@given(st.data(), st.integers(0, 1000))
def test_core_stepping_hostile_messages_keeps_its_invariants(data, seed: int) -> None:
    core = RaftCore("1", ["1", "2", "3"], rng=random.Random(seed))
    term, vote, commit, applied = core.term, core.vote, core.log.committed, 0
    committed: dict[int, tuple[int, bytes]] = {}
    outbox: list[Message] = []

    def drain() -> None:
        nonlocal term, vote, commit, applied
        while core.has_ready():
            rd = core.ready()
            outbox.extend(rd.messages)
            for m in rd.messages:
                assert m.frm == "1"
            if rd.snapshot is not None:
                applied = max(applied, rd.snapshot.meta.index)
            for e in rd.committed_entries:
                assert e.index == applied + 1, (e.index, applied)
                applied = e.index
                have = committed.setdefault(e.index, (e.term, e.data))
                assert have == (e.term, e.data)
            core.advance(rd)
        assert core.term >= term
        if core.term == term and vote is not None:
            assert core.vote == vote, f"vote changed within term {term}"
        term, vote = core.term, core.vote
        assert core.log.committed >= commit
        assert core.log.committed <= core.log.last_index()
        commit = core.log.committed
        for i, (t, _data) in committed.items():  # what was committed never changes
            if i >= core.log.first_index() and i <= core.log.last_index():
                assert core.log.term(i) == t, f"committed entry {i} changed"

    drain()
    for _ in range(data.draw(st.integers(0, 20), label="steps")):
        kind = data.draw(st.integers(0, 4), label="kind")
        if kind == 0:
            for _ in range(data.draw(st.integers(1, 12), label="ticks")):
                core.tick()
        elif kind == 1:
            replies, outbox[:] = cooperative_replies(outbox), []
            for r in replies:
                core.step(decode_message(encode_message(r)))
                drain()
            if core.role.name == "LEADER" and data.draw(st.booleans(), label="propose"):
                core.propose(data.draw(st.binary(max_size=8), label="data"))
        else:
            m = data.draw(messages, label="message")
            # Mostly near the core's own term and log, so it gets far (leader, commits).
            if data.draw(st.booleans(), label="near"):
                m.term = max(0, core.term + data.draw(st.integers(-1, 1), label="dterm"))
                last = core.log.last_index()
                m.index = max(0, last + data.draw(st.integers(-2, 1), label="dindex"))
                m.log_term = core.log.term(m.index) or 0
                m.commit = data.draw(st.integers(0, last + 2), label="commit")
                m.entries = [Entry(m.term, m.index + 1 + i, e.type, e.data)
                             for i, e in enumerate(m.entries)]
            if m.type == MessageType.APP and m.entries:  # indices must be contiguous
                m.entries = [Entry(e.term, m.index + 1 + i, e.type, e.data)
                             for i, e in enumerate(m.entries)]
            # only what survived the wire: the decoder is the core's gatekeeper
            try:
                core.step(decode_message(encode_message(m)))
            except InvalidMessage:
                event("rejected as invalid")
        drain()
    # (shown by --hypothesis-show-statistics: the fuzz reaches the interesting states)
    event(f"role {core.role.name.lower()}")
    event(f"applied beyond bootstrap: {applied > 3}")


envelopes = st.builds(
    lambda v, addrs, data, removed: [v, addrs, data, removed][:v + 2 if v in (1, 2) else 3],
    st.integers(0, 3), st.dictionaries(st.text(max_size=3), values, max_size=3),
    st.binary(max_size=16), st.dictionaries(st.text(max_size=3), values, max_size=3))


def is_address(a: object) -> bool:
    """A transport address: a non-empty str, or a (host, port[, flow, scope]) tuple."""
    if isinstance(a, str):
        return bool(a)
    return (isinstance(a, tuple) and len(a) in (2, 4) and isinstance(a[0], str)
            and all(type(x) is int and x >= 0 for x in a[1:]))


@FAST
@given(st.binary(max_size=300) | values.map(lambda v: msgpack.packb(v, use_bin_type=True))
       | envelopes.map(lambda v: msgpack.packb(v, use_bin_type=True)))
# Regressions found by hypothesis: a NaN float accepted as a member's address.
@example(b"\x93\x01\x81\xa0\xcb\x7f\xf1\x00\x00\x00\x00\x00\x00\xc4\x00")
@example(msgpack.packb([1, {"1": float("nan")}, b""], use_bin_type=True))
@example(msgpack.packb([2, {"1": ["h", 1]}, b"", {"2": True}], use_bin_type=True))
@example(msgpack.packb([1, {"1": ["h", -1]}, b""], use_bin_type=True))
def test_snapshot_envelope_decode_only_raises_value_error(data: bytes) -> None:
    """A snapshot arrives from the leader over the network: its envelope (addresses,
    removed ids, the state machine's bytes) decodes or raises ValueError, and what it
    returns has the types its caller expects."""
    from meshraft.raft.envelope import decode_snapshot_envelope_full, encode_snapshot_envelope

    try:
        addrs, sm_data, removed = decode_snapshot_envelope_full(data)
    except ValueError:
        return
    assert isinstance(sm_data, bytes) and all(isinstance(v, int) for v in removed.values())
    assert all(type(v) is int and v >= 0 for v in removed.values()), removed
    assert all(isinstance(k, str) and k for k in [*addrs, *removed]), (addrs, removed)
    assert all(is_address(a) for a in addrs.values()), addrs
    again = decode_snapshot_envelope_full(encode_snapshot_envelope(addrs, sm_data, removed))
    assert again == (addrs, sm_data, removed)


def test_the_nan_address_envelope_is_refused() -> None:
    from meshraft.raft.envelope import decode_snapshot_envelope_full

    for blob in (b"\x93\x01\x81\xa0\xcb\x7f\xf1\x00\x00\x00\x00\x00\x00\xc4\x00",
                 msgpack.packb([1, {"1": float("nan")}, b""], use_bin_type=True)):
        with pytest.raises(ValueError):
            decode_snapshot_envelope_full(blob)


@FAST
@given(st.binary(max_size=100) | values.map(lambda v: msgpack.packb(v, use_bin_type=True))
       | st.tuples(scalars, scalars, scalars).map(
           lambda t: b"\xc1" + msgpack.packb(["removed", *t], use_bin_type=True)))
@example(b"\xc1" + msgpack.packb(["removed", "1", "2", True], use_bin_type=True))
@example(b"\xc1" + msgpack.packb(["removed", "1", "2", -1], use_bin_type=True))
@example(b"\xc1" + msgpack.packb(["removed", "", "2", 1], use_bin_type=True))
def test_removal_notice_decode_only_raises_value_error(data: bytes) -> None:
    """A removal notice comes from the network: it decodes to ids (non-empty str) and
    a non-negative int index, or raises ValueError."""
    from meshraft.raft.notices import RemovedNotice, decode_removed_notice, encode_removed_notice

    try:
        n = decode_removed_notice(data)
    except ValueError:
        return
    assert isinstance(n, RemovedNotice)
    assert isinstance(n.to, str) and n.to and isinstance(n.frm, str) and n.frm
    assert type(n.index) is int and n.index >= 0
    assert decode_removed_notice(encode_removed_notice(n)) == n


@FAST
@given(st.binary(max_size=100) | values.map(lambda v: msgpack.packb(v, use_bin_type=True))
       | st.tuples(values, st.binary(max_size=8)).map(
           lambda t: msgpack.packb(list(t), use_bin_type=True)))
@example(msgpack.packb([float("nan"), b"t"], use_bin_type=True))
@example(msgpack.packb([["h", 1.5], b"t"], use_bin_type=True))
def test_member_change_context_decode_only_raises_value_error(data: bytes) -> None:
    """A membership change's context (the new member's address, the proposer's tag)
    comes from the log: an address or None and bytes, or ValueError."""
    from meshraft.raft.envelope import decode_member_context, encode_member_context

    try:
        address, tag = decode_member_context(data)
    except ValueError:
        return
    assert isinstance(tag, bytes) and (address is None or is_address(address)), address
    assert decode_member_context(encode_member_context(address, tag)) == (address, tag)

"""The wire codec: every message round-trips, and any garbage raises DecodeError
(a ValueError) and nothing else."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshraft.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    DecodeError,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotChunk,
    SnapshotMeta,
    decode_message,
    encode_message,
)

ids = st.text(alphabet="abc123", min_size=1, max_size=5)
u = st.integers(min_value=0, max_value=2**40)
entries = st.builds(Entry, u, u, st.sampled_from(list(EntryType)), st.binary(max_size=50))
chunks = st.builds(
    lambda i, t, v, data, off: SnapshotChunk(SnapshotMeta(i, t, ConfState(v, [])), off,
                                             off + len(data), data),
    u, u, st.lists(ids, max_size=3), st.binary(max_size=64), u,
)
messages = st.builds(
    Message, st.sampled_from(list(MessageType)), ids, ids, u, u, u,
    st.lists(entries, max_size=4), u, st.booleans(), u, st.binary(max_size=20),
    st.none() | chunks,
)


@given(messages)
@settings(max_examples=300, deadline=None)
def test_every_message_round_trips(m):
    assert decode_message(encode_message(m)) == m


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_decode_error_only(b):
    try:
        decode_message(b)
    except DecodeError:
        pass


@given(messages, st.data())
@settings(max_examples=300, deadline=None)
def test_corrupted_messages_raise_decode_error_only(m, data):
    b = bytearray(encode_message(m))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    try:
        decode_message(bytes(b[:cut]))
    except DecodeError:
        pass


@pytest.mark.parametrize(
    "obj",
    [
        None, 1, "x", [], {"a": 1}, [1] * 13, [2, 2, "1", "2", 0, 0, 0, [], 0, False, 0, b"", None],
        [1, 99, "1", "2", 0, 0, 0, [], 0, False, 0, b"", None],  # unknown type
        [1, 2, "", "2", 0, 0, 0, [], 0, False, 0, b"", None],  # empty id
        [1, 2, "1", "2", -1, 0, 0, [], 0, False, 0, b"", None],  # negative term
        [1, 2, "1", "2", 0, 0, 0, [[1, 1, 7, b""]], 0, False, 0, b"", None],  # entry type
        [1, 2, "1", "2", 0, 0, 0, [[1, 1, 0, "str"]], 0, False, 0, b"", None],
        [1, 2, "1", "2", 0, 0, 0, [], 0, 1, 0, b"", None],  # reject not a bool
        [1, 10, "1", "2", 0, 0, 0, [], 0, False, 0, b"", [1, 1, [], [], 5, 3, b"abc"]],
        [1, 2, "1", "2", 2**64 - 1, 0, 0, [], 0, False, 0, b"", None],
    ],
)
def test_well_formed_msgpack_with_bad_fields_is_rejected(obj):
    with pytest.raises(DecodeError):
        decode_message(msgpack.packb(obj, use_bin_type=True))


def test_limits_stop_oversized_containers_before_allocation():
    with pytest.raises(DecodeError):
        decode_message(b"\xdd\xff\xff\xff\xff")  # an array header claiming 4G elements
    with pytest.raises(DecodeError):
        decode_message(b"\xc6\x7f\xff\xff\xff")  # a bin header claiming 2 GiB
    with pytest.raises(DecodeError):
        decode_message(b"x" * (2 << 20))
    with pytest.raises(DecodeError):
        decode_message(b"\x91" * 100_000)  # nesting deeper than any stack should go
    with pytest.raises(DecodeError):
        decode_message(b"\xd4\x01\x02")  # an ext type: never accepted
    with pytest.raises(DecodeError):
        decode_message("not bytes")  # type: ignore[arg-type]


def test_conf_change_round_trips_and_rejects_garbage():
    cc = ConfChange(ConfChangeType.ADD_LEARNER, "4", b"127.0.0.1:7004")
    assert ConfChange.decode(cc.encode()) == cc
    for bad in (b"", b"\x93\x09\xa14\xc4\x00", b"\x93\x00\xa0\xc4\x00", b"\xff"):
        with pytest.raises(DecodeError):
            ConfChange.decode(bad)

"""Fuzzing the kv state machine's decoders: log entries' commands and snapshots.

A command that does not decode or validate is answered with an error and changes
nothing; nothing raises out of apply_command. A snapshot that does not decode is
refused with ValueError and leaves the store as it was; a real one round-trips."""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshraft.kv.state_machine import KVStateMachine, encode_command

FAST = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
ints = st.integers(-(1 << 63), (1 << 64) - 1)
scalars = (st.none() | st.booleans() | ints | st.floats() | st.text(max_size=12)
           | st.binary(max_size=24))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=5)
                      | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=16)
commands = st.builds(
    lambda op, args: {"op": op, **args},
    st.sampled_from(["put", "delete", "cas", "frag", "get", ""]) | scalars,
    st.dictionaries(st.sampled_from(["key", "value", "expected", "cid", "seq", "ack", "fk", "i",
                                     "n", "data"]),
                    st.binary(max_size=8) | st.integers(0, 4) | st.text(max_size=4) | values,
                    max_size=6))
blobs = (st.binary(max_size=200) | values.map(lambda v: msgpack.packb(v, use_bin_type=True))
         | commands.map(lambda c: msgpack.packb(c, use_bin_type=True)))


def seeded() -> KVStateMachine:
    sm = KVStateMachine()
    sm.apply_command(encode_command({"op": "put", "key": b"a", "value": b"1"}))
    sm.apply_command(encode_command({"op": "put", "key": b"b", "value": b"2", "cid": "c1",
                                     "seq": 1, "ack": 1}))
    return sm


def view(sm: KVStateMachine) -> tuple:
    return sm.revision, [(kv.key, kv.value, kv.mod_revision) for kv in sm.list(b"")]


@FAST
@given(st.lists(blobs, min_size=1, max_size=5))
def test_commands_error_or_apply_never_raise(datas: list[bytes]) -> None:
    sm = seeded()
    for data in datas:
        before = view(sm)
        result = sm.apply_command(data)
        assert isinstance(result, dict)
        if "error" in result:
            assert view(sm) == before, result
        else:
            assert view(sm)[0] >= before[0]
    # whatever happened, the snapshot round-trips
    again = KVStateMachine()
    again.restore(sm.snapshot())
    assert view(again) == view(sm)


@FAST
@given(blobs)
def test_bad_snapshots_are_refused_and_change_nothing(data: bytes) -> None:
    sm = seeded()
    before = view(sm)
    try:
        sm.restore(data)
    except (ValueError, TypeError, KeyError):
        assert view(sm) == before
        return
    # it decoded as a snapshot: then it must be a usable store
    sm.apply_command(encode_command({"op": "put", "key": b"z", "value": b"9"}))
    assert sm.get(b"z").value == b"9"

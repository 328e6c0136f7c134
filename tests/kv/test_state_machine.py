"""The kv state machine on its own: semantics, revisions, exactly-once, snapshots, limits."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshraft.kv.state_machine import (
    KVStateMachine,
    Limits,
    encode_command,
)
from meshraft.raft.messages import Entry, EntryType

_index = 0


def entry(cmd: dict) -> Entry:
    global _index
    _index += 1
    return Entry(term=1, index=_index, data=encode_command(cmd))


def put(sm, key, value, **kw):
    return sm.apply(entry({"op": "put", "key": key, "value": value, **kw}))


def test_put_get_revisions_and_versions():
    sm = KVStateMachine()
    r1 = put(sm, b"a", b"1")
    assert r1["revision"] == 1
    r2 = put(sm, b"b", b"2")
    assert r2["revision"] == 2
    r3 = put(sm, b"a", b"3")
    assert r3["revision"] == 3
    kv = sm.get(b"a")
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"3", 1, 3, 2)
    assert sm.get(b"missing") is None


def test_delete_bumps_revision_only_when_something_was_deleted():
    sm = KVStateMachine()
    put(sm, b"a", b"1")
    r = sm.apply(entry({"op": "delete", "key": b"missing"}))
    assert r == {"revision": 1, "deleted": 0}
    r = sm.apply(entry({"op": "delete", "key": b"a"}))
    assert r["deleted"] == 1 and r["revision"] == 2
    assert sm.get(b"a") is None
    # re-created key starts a new life: new create_revision, version 1
    put(sm, b"a", b"x")
    kv = sm.get(b"a")
    assert (kv.create_revision, kv.version) == (3, 1)


def test_cas_semantics():
    sm = KVStateMachine()
    # expected None = only if absent
    r = sm.apply(entry({"op": "cas", "key": b"k", "expected": None, "value": b"v1"}))
    assert r["succeeded"] and r["revision"] == 1
    r = sm.apply(entry({"op": "cas", "key": b"k", "expected": None, "value": b"v2"}))
    assert r["error"] == "cas-mismatch" and r["mod_revision"] == 1
    r = sm.apply(entry({"op": "cas", "key": b"k", "expected": b"wrong", "value": b"v2"}))
    assert r["error"] == "cas-mismatch"
    assert sm.get(b"k").value == b"v1" and sm.revision == 1
    r = sm.apply(entry({"op": "cas", "key": b"k", "expected": b"v1", "value": b"v2"}))
    assert r["succeeded"] and r["revision"] == 2
    assert sm.get(b"k").value == b"v2"
    # expected a value on an absent key: mismatch
    r = sm.apply(entry({"op": "cas", "key": b"absent", "expected": b"", "value": b"x"}))
    assert r["error"] == "cas-mismatch" and r["mod_revision"] == 0


def test_list_prefix_sorted():
    sm = KVStateMachine()
    for k in [b"b/2", b"a/1", b"b/1", b"c"]:
        put(sm, k, b"v")
    assert [kv.key for kv in sm.list(b"b/")] == [b"b/1", b"b/2"]
    assert [kv.key for kv in sm.list()] == [b"a/1", b"b/1", b"b/2", b"c"]
    assert [kv.key for kv in sm.list(b"", limit=2)] == [b"a/1", b"b/1"]


def test_retried_write_is_applied_once_and_returns_the_first_answer():
    sm = KVStateMachine()
    first = put(sm, b"k", b"v", cid="c1", seq=1, ack=1)
    again = put(sm, b"k", b"v", cid="c1", seq=1, ack=1)
    assert again == first
    assert sm.revision == 1 and sm.get(b"k").version == 1
    # a different client with the same seq is a different write
    put(sm, b"k", b"v", cid="c2", seq=1, ack=1)
    assert sm.revision == 2


def test_duplicate_below_the_ack_floor_is_refused_not_applied():
    sm = KVStateMachine()
    put(sm, b"k", b"1", cid="c", seq=1, ack=1)
    put(sm, b"k", b"2", cid="c", seq=2, ack=2)  # client saw the answer to 1
    rev = sm.revision
    late = put(sm, b"k", b"1", cid="c", seq=1, ack=1)  # an old duplicate from the log
    assert late["error"] == "stale"
    assert sm.revision == rev and sm.get(b"k").value == b"2"


def test_concurrent_requests_of_one_client_each_keep_their_answer():
    sm = KVStateMachine()
    a1 = put(sm, b"a", b"1", cid="c", seq=5, ack=5)
    a2 = put(sm, b"b", b"1", cid="c", seq=6, ack=5)
    # 5 still outstanding: its retry must get its answer back, not a new write
    assert put(sm, b"a", b"1", cid="c", seq=5, ack=5) == a1
    assert put(sm, b"b", b"1", cid="c", seq=6, ack=5) == a2
    assert sm.revision == 2


def test_sessions_are_bounded_and_evicted_lru():
    sm = KVStateMachine(max_sessions=3)
    for i in range(5):
        put(sm, b"k", b"v", cid=f"c{i}", seq=1, ack=1)
    assert sm.session_count == 3


def test_answers_per_session_are_bounded():
    sm = KVStateMachine(max_answers=4)
    for seq in range(1, 20):
        put(sm, b"k", b"v", cid="c", seq=seq, ack=1)  # client never acks
    snap = msgpack.unpackb(sm.snapshot(), raw=False, strict_map_key=False)
    [[_cid, floor, answers]] = snap["sessions"]
    assert len(answers) <= 4 and floor > 1
    # something under the floor is refused, never re-applied
    rev = sm.revision
    assert put(sm, b"k", b"v", cid="c", seq=1, ack=1)["error"] == "stale"
    assert sm.revision == rev


def test_snapshot_restore_roundtrip_includes_sessions():
    sm = KVStateMachine()
    first = put(sm, b"k", b"v", cid="c", seq=1, ack=1)
    put(sm, b"x", b"\x00\xff")
    sm.apply(entry({"op": "delete", "key": b"x"}))
    put(sm, b"y", b"y")
    copy = KVStateMachine()
    copy.restore(sm.snapshot())
    assert copy.revision == sm.revision
    assert copy.list() == sm.list()
    # the dedup table came along: a retry after restore is not applied again
    assert put(copy, b"k", b"v", cid="c", seq=1, ack=1) == first
    assert copy.revision == sm.revision
    assert copy.snapshot() == sm.snapshot()


def test_restore_empty_resets():
    sm = KVStateMachine()
    put(sm, b"k", b"v")
    sm.restore(b"")
    assert sm.revision == 0 and len(sm) == 0


def test_restore_rejects_garbage():
    sm = KVStateMachine()
    with pytest.raises(Exception):  # noqa: B017 - any decoding error is fine, silence is not
        sm.restore(b"\x93garbage")


@pytest.mark.parametrize(
    "cmd,code",
    [
        # past the apply ceiling (the server refuses far smaller by default)
        ({"op": "put", "key": b"k" * (64 * 1024 + 1), "value": b"v"}, "too-large"),
        ({"op": "put", "key": b"k", "value": b"v" * (32 * 1024 * 1024 + 1)}, "too-large"),
        ({"op": "put", "key": "text", "value": b"v"}, "bad-request"),
        ({"op": "put", "key": b"", "value": b"v"}, "bad-request"),
        ({"op": "put", "key": b"k"}, "bad-request"),
        ({"op": "frobnicate", "key": b"k"}, "bad-request"),
        ({"op": "cas", "key": b"k", "expected": 3, "value": b"v"}, "bad-request"),
        ({"op": "put", "key": b"k", "value": b"v", "cid": "c"}, "bad-request"),
        ({"op": "put", "key": b"k", "value": b"v", "cid": "c", "seq": -1}, "bad-request"),
    ],
)
def test_bad_commands_answer_an_error_and_change_nothing(cmd, code):
    sm = KVStateMachine()
    put(sm, b"k", b"orig")
    before = sm.snapshot()
    r = sm.apply(entry(cmd))
    assert r["error"] == code and r["message"]
    assert sm.snapshot() == before


@pytest.mark.parametrize(
    "data", [b"\xc1", b"\x92\x01", b"garbage", b"\xdd\xff\xff\xff\xff", b"\x01"]
)
def test_garbage_entries_do_not_raise(data):
    sm = KVStateMachine()
    r = sm.apply(Entry(term=1, index=1, data=data))
    assert r["error"] == "bad-request"
    assert sm.revision == 0


def test_apply_does_not_depend_on_a_members_own_limits():
    """Limits are admission control (the server checks them); apply checks only the
    fixed ceiling, so replicas configured differently still agree."""
    from meshraft.kv.state_machine import APPLY_MAX_KEY, APPLY_MAX_VALUE

    small, default = KVStateMachine(Limits(max_key=4, max_value=8)), KVStateMachine()
    for sm in (small, default):
        assert put(sm, b"12345", b"v")["revision"] == 1
        assert put(sm, b"1234", b"x" * 2_000_000)["revision"] == 2
        assert put(sm, b"k" * (APPLY_MAX_KEY + 1), b"v")["error"] == "too-large"
        assert put(sm, b"k", b"x" * (APPLY_MAX_VALUE + 1))["error"] == "too-large"
    assert small.snapshot() == default.snapshot()
    with pytest.raises(ValueError, match="max key size"):
        Limits(max_key=APPLY_MAX_KEY + 1)
    with pytest.raises(ValueError, match="max value size"):
        Limits(max_value=-1)


def test_noop_and_conf_change_entries_are_ignored():
    sm = KVStateMachine()
    assert sm.apply(Entry(term=1, index=1, data=b"")) is None
    assert sm.apply(Entry(term=1, index=2, type=EntryType.CONF_CHANGE, data=b"xx")) is None
    assert sm.revision == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "delete", "cas"]),
                          st.sampled_from([b"a", b"b", b"c"]),
                          st.one_of(st.none(), st.sampled_from([b"1", b"2"]))), max_size=40))
def test_replicas_applying_the_same_log_agree(ops):
    """Determinism: two replicas, one restored from a mid-way snapshot, end identical."""
    a, b = KVStateMachine(), KVStateMachine()
    cmds = []
    for i, (op, key, val) in enumerate(ops):
        cmd = {"op": op, "key": key, "cid": "c", "seq": i + 1, "ack": i + 1}
        if op == "put":
            cmd["value"] = val or b""
        elif op == "cas":
            cmd["expected"], cmd["value"] = val, b"n"
        cmds.append(encode_command(cmd))
    half = len(cmds) // 2
    for i, c in enumerate(cmds):
        a.apply(Entry(1, i + 1, data=c))
        if i < half:
            b.apply(Entry(1, i + 1, data=c))
    c2 = KVStateMachine()
    c2.restore(b.snapshot())
    for i, c in enumerate(cmds[half:], start=half):
        c2.apply(Entry(1, i + 1, data=c))
    assert c2.snapshot() == a.snapshot()


def test_large_command_applies_from_fragments_in_order():
    from meshraft.kv.state_machine import fragment_command

    sm = KVStateMachine()
    value = bytes(range(256)) * 400  # 100 KiB
    data = encode_command({"op": "put", "key": b"big", "value": value, "cid": "c", "seq": 1,
                           "ack": 1})
    frags = fragment_command(data, "fk1", size=8192)
    assert len(frags) > 10
    for i, f in enumerate(frags[:-1]):
        assert sm.apply(Entry(1, i + 1, data=f)) == {"fragment": i}
        assert sm.revision == 0  # nothing applied before the last piece
    r = sm.apply(Entry(1, 99, data=frags[-1]))
    assert r["revision"] == 1 and sm.get(b"big").value == value
    # a whole retry of the same command (new fragment key) is deduplicated
    for f in fragment_command(data, "fk2", size=8192):
        last = sm.apply(Entry(1, 100, data=f))
    assert last == r and sm.revision == 1


def test_fragments_out_of_order_never_apply_a_partial_command():
    from meshraft.kv.state_machine import fragment_command

    sm = KVStateMachine()
    data = encode_command({"op": "put", "key": b"k", "value": b"x" * 50_000})
    frags = fragment_command(data, "fk", size=10_000)
    sm.apply(Entry(1, 1, data=frags[0]))
    r = sm.apply(Entry(1, 2, data=frags[2]))  # fragment 1 lost
    assert r["error"] == "incomplete"
    for f in frags[3:]:
        assert "error" in sm.apply(Entry(1, 3, data=f))
    assert sm.revision == 0 and sm.get(b"k") is None


def test_staged_fragments_survive_a_snapshot():
    from meshraft.kv.state_machine import fragment_command

    sm = KVStateMachine()
    data = encode_command({"op": "put", "key": b"k", "value": b"y" * 30_000})
    frags = fragment_command(data, "fk", size=10_000)
    for f in frags[:-1]:
        sm.apply(Entry(1, 1, data=f))
    copy = KVStateMachine()
    copy.restore(sm.snapshot())
    assert copy.apply(Entry(1, 2, data=frags[-1]))["revision"] == 1
    assert copy.get(b"k").value == b"y" * 30_000


def test_a_fragment_cannot_smuggle_a_fragment():
    from meshraft.kv.state_machine import fragment_command

    sm = KVStateMachine()
    inner = encode_command({"op": "frag", "fk": "x", "i": 0, "n": 2, "data": b"zz"})
    frags = fragment_command(inner + b"", "outer", size=10)
    for f in frags:
        r = sm.apply(Entry(1, 1, data=f))
    assert r["error"] == "bad-request"

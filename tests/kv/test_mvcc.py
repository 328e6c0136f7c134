"""The state machine's history: reads at a revision, events, listeners, compaction, snapshots."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshraft.kv.state_machine import (
    COMPACTED,
    FUTURE_REVISION,
    SNAPSHOT_VERSION,
    Compacted,
    Event,
    FutureRevision,
    KeyValue,
    KVStateMachine,
    encode_command,
)
from meshraft.raft.messages import Entry

_index = 0


def apply(sm: KVStateMachine, cmd: dict) -> dict:
    global _index
    _index += 1
    return sm.apply(Entry(term=1, index=_index, data=encode_command(cmd)))


def put(sm, key, value, **kw):
    return apply(sm, {"op": "put", "key": key, "value": value, **kw})


def delete(sm, key):
    return apply(sm, {"op": "delete", "key": key})


def compact(sm, revision):
    return apply(sm, {"op": "compact", "revision": revision})


class Recorder:
    def __init__(self) -> None:
        self.revisions: list[tuple[int, tuple[Event, ...]]] = []
        self.restores: list[int] = []
        self.compactions: list[int] = []

    def on_revision(self, revision, events):
        self.revisions.append((revision, events))

    def on_restore(self, revision):
        self.restores.append(revision)

    def on_compact(self, compact_revision):
        self.compactions.append(compact_revision)


def history_sm() -> KVStateMachine:
    """rev 1 a=1, 2 b=1, 3 a=2, 4 del a, 5 a=3 (recreated), 6 b=2"""
    sm = KVStateMachine()
    put(sm, b"a", b"1")
    put(sm, b"b", b"1")
    put(sm, b"a", b"2")
    delete(sm, b"a")
    put(sm, b"a", b"3")
    put(sm, b"b", b"2")
    return sm


def value_at(sm, key, rev):
    kv = sm.get(key, revision=rev)
    return None if kv is None else kv.value


def test_get_and_list_at_every_revision():
    sm = history_sm()
    assert sm.revision == 6 and sm.compact_revision == 0
    expected_a = [None, b"1", b"1", b"2", None, b"3", b"3"]
    expected_b = [None, None, b"1", b"1", b"1", b"1", b"2"]
    for rev in range(0, 7):
        assert value_at(sm, b"a", rev) == expected_a[rev], rev
        assert value_at(sm, b"b", rev) == expected_b[rev], rev
        listed = {kv.key: kv.value for kv in sm.list(b"", revision=rev)}
        assert listed == {k: v for k, v in ((b"a", expected_a[rev]), (b"b", expected_b[rev]))
                          if v is not None}
    # metadata of a past version is the one it had then
    kv = sm.get(b"a", revision=3)
    assert (kv.create_revision, kv.mod_revision, kv.version) == (1, 3, 2)
    kv = sm.get(b"a", revision=5)
    assert (kv.create_revision, kv.mod_revision, kv.version) == (5, 5, 1)
    assert [kv.key for kv in sm.list(b"", limit=1, revision=2)] == [b"a"]
    assert [kv.key for kv in sm.list(b"b", revision=6)] == [b"b"]


def test_future_revision_and_compacted_reads():
    sm = history_sm()
    with pytest.raises(FutureRevision) as fut:
        sm.get(b"a", revision=7)
    assert fut.value.code == FUTURE_REVISION and fut.value.current_revision == 6
    with pytest.raises(FutureRevision):
        sm.list(b"", revision=100)
    assert compact(sm, 4) == {"revision": 6, "compact_revision": 4}
    with pytest.raises(Compacted) as exc:
        sm.get(b"a", revision=3)
    assert exc.value.code == COMPACTED and exc.value.compact_revision == 4
    assert "4" in exc.value.message
    with pytest.raises(Compacted):
        sm.list(b"", revision=0)
    # reads at the compaction point and above still see what they saw before
    assert value_at(sm, b"a", 4) is None and value_at(sm, b"b", 4) == b"1"
    assert value_at(sm, b"a", 5) == b"3" and value_at(sm, b"b", 6) == b"2"


def test_compaction_keeps_newest_version_below_point_unless_tombstone():
    sm = KVStateMachine()
    put(sm, b"old", b"x")  # 1: never written again
    put(sm, b"gone", b"x")  # 2
    delete(sm, b"gone")  # 3: tombstone below the point
    for i in range(5):  # 4..8
        put(sm, b"hot", b"%d" % i)
    before = sm.version_count
    compact(sm, 7)
    # old keeps its only version, gone is gone entirely, hot keeps 6 (newest below), 7, 8
    assert sm.version_count == 1 + 0 + 3 < before
    assert value_at(sm, b"old", 7) == b"x"
    assert value_at(sm, b"gone", 7) is None
    assert value_at(sm, b"hot", 7) == b"3" and value_at(sm, b"hot", 8) == b"4"
    assert sm.get(b"old").value == b"x"


def test_compact_errors_and_no_revision_bump():
    sm = history_sm()
    r = compact(sm, 7)
    assert r["error"] == FUTURE_REVISION and r["revision"] == 6
    assert compact(sm, 3)["compact_revision"] == 3
    assert sm.revision == 6  # compaction is not a write
    r = compact(sm, 3)
    assert r["error"] == COMPACTED and r["compact_revision"] == 3 and "3" in r["message"]
    r = compact(sm, 2)
    assert r["error"] == COMPACTED
    r = compact(sm, 0)
    assert r["error"] == COMPACTED
    assert compact(sm, 6)["compact_revision"] == 6


@pytest.mark.parametrize("bad", [-1, "3", 1.5, None, True, 2**63])
def test_compact_bad_revision_is_bad_request(bad):
    sm = history_sm()
    r = compact(sm, bad)
    assert r["error"] == "bad-request"
    assert sm.compact_revision == 0


def test_events_of_puts_and_deletes_with_prev_kv():
    sm = history_sm()
    revs = sm.events_since(1, 100)
    assert [r for r, _ in revs] == [1, 2, 3, 4, 5, 6]
    assert all(len(evs) == 1 for _, evs in revs)
    ev3 = revs[2][1][0]
    assert ev3.type == "PUT" and ev3.kv.value == b"2" and ev3.prev_kv.value == b"1"
    ev4 = revs[3][1][0]
    # etcd's tombstone: empty value, create_revision 0, version 0, mod_revision = the delete's
    assert ev4.type == "DELETE"
    assert ev4.kv == KeyValue(b"a", b"", 0, 4, 0)
    assert ev4.prev_kv.value == b"2" and ev4.prev_kv.mod_revision == 3
    ev5 = revs[4][1][0]
    assert ev5.type == "PUT" and ev5.prev_kv is None and ev5.kv.version == 1
    assert revs[0][1][0].prev_kv is None
    # the events are the same objects as the versions read back (no copies)
    assert sm.get(b"a") is ev5.kv and sm.get(b"a", revision=3) is ev3.kv


def test_event_to_wire():
    sm = history_sm()
    [(_, (ev,))] = sm.events_since(4, 1)
    w = ev.to_wire(prev_kv=False)
    assert w == {"type": "DELETE", "kv": {"key": b"a", "value": b"", "create_revision": 0,
                                          "mod_revision": 4, "version": 0}}
    w = ev.to_wire(prev_kv=True)
    assert w["prev_kv"]["value"] == b"2" and w["prev_kv"]["version"] == 2
    [(_, (first,))] = sm.events_since(1, 1)
    assert "prev_kv" not in first.to_wire(prev_kv=True)  # absent: nothing before it


def test_events_since_limits_and_compaction():
    sm = history_sm()
    assert [r for r, _ in sm.events_since(3, 2)] == [3, 4]
    assert [r for r, _ in sm.events_since(0, 1)] == [1]
    assert sm.events_since(7, 10) == []  # nothing yet: the next revision is 7
    assert [r for r, _ in sm.events_since(6, 0)] == [6]  # at least one revision
    compact(sm, 4)
    with pytest.raises(Compacted) as exc:
        sm.events_since(3, 10)
    assert exc.value.compact_revision == 4
    assert [r for r, _ in sm.events_since(4, 10)] == [4, 5, 6]


def test_listeners_see_each_revision_compaction_and_restore():
    sm = KVStateMachine()
    rec = Recorder()
    sm.add_listener(rec)
    put(sm, b"k", b"1")
    delete(sm, b"k")
    delete(sm, b"k")  # nothing deleted: no revision, no call
    apply(sm, {"op": "cas", "key": b"k", "expected": b"zz", "value": b"v"})  # mismatch
    put(sm, b"k", b"2")
    assert [(r, [e.type for e in evs]) for r, evs in rec.revisions] == [
        (1, ["PUT"]), (2, ["DELETE"]), (3, ["PUT"])]
    assert rec.revisions[1][1][0].prev_kv.value == b"1"
    compact(sm, 2)
    assert rec.compactions == [2]
    compact(sm, 1)  # refused: not a compaction
    assert rec.compactions == [2]
    other = history_sm()
    sm.restore(other.snapshot())
    assert rec.restores == [6]
    put(sm, b"x", b"y")  # the listener survived the restore
    assert rec.revisions[-1][0] == 7
    sm.remove_listener(rec)
    put(sm, b"x", b"z")
    assert rec.revisions[-1][0] == 7
    sm.remove_listener(rec)  # removing twice is harmless


def test_a_raising_listener_does_not_break_apply():
    class Bad:
        def on_revision(self, revision, events):
            raise RuntimeError("boom")

        def on_restore(self, revision):
            raise RuntimeError("boom")

        def on_compact(self, compact_revision):
            raise RuntimeError("boom")

    sm = KVStateMachine()
    rec = Recorder()
    sm.add_listener(Bad())
    sm.add_listener(rec)
    assert put(sm, b"k", b"1")["revision"] == 1
    assert compact(sm, 1) == {"revision": 1, "compact_revision": 1}
    sm.restore(sm.snapshot())
    assert sm.get(b"k").value == b"1"
    assert [r for r, _ in rec.revisions] == [1] and rec.compactions == [1]
    assert sm.listener_errors == 3


def test_snapshot_v2_roundtrip_keeps_history_and_compaction():
    sm = history_sm()
    compact(sm, 3)
    snap = sm.snapshot()
    assert msgpack.unpackb(snap, raw=False, strict_map_key=False)["v"] == SNAPSHOT_VERSION == 2
    copy = KVStateMachine()
    copy.restore(snap)
    assert copy.snapshot() == snap
    assert copy.revision == 6 and copy.compact_revision == 3
    for rev in range(3, 7):
        for key in (b"a", b"b"):
            assert copy.get(key, revision=rev) == sm.get(key, revision=rev)
    assert [(r, evs) for r, evs in copy.events_since(3, 100)] == sm.events_since(3, 100)
    with pytest.raises(Compacted):
        copy.get(b"a", revision=2)
    # the restored copy goes on exactly like the original
    for s in (sm, copy):
        put(s, b"a", b"4")
        compact(s, 5)
    assert copy.snapshot() == sm.snapshot()


def test_version_1_snapshot_restores_without_history():
    v1 = msgpack.packb({
        "v": 1, "revision": 9,
        "kv": [[b"a", b"1", 2, 7, 3], [b"b", b"2", 9, 9, 1]],
        "sessions": [], "staged": [],
    }, use_bin_type=True)
    sm = KVStateMachine()
    rec = Recorder()
    sm.add_listener(rec)
    sm.restore(v1)
    assert rec.restores == [9]
    assert sm.revision == 9 and sm.compact_revision == 9
    assert sm.get(b"a", revision=9).value == b"1"
    with pytest.raises(Compacted):
        sm.get(b"a", revision=8)
    assert sm.events_since(10, 10) == []
    with pytest.raises(Compacted):  # revision 9's events are not in a version-1 snapshot
        sm.events_since(9, 10)
    put(sm, b"a", b"new")
    kv = sm.get(b"a")
    assert (kv.create_revision, kv.mod_revision, kv.version) == (2, 10, 4)
    assert sm.get(b"a", revision=9).value == b"1"
    [(rev, (ev,))] = sm.events_since(10, 10)
    assert rev == 10 and ev.prev_kv.value == b"1"
    compact(sm, 10)
    assert sm.get(b"a", revision=10).value == b"new"


def test_several_events_at_one_revision_keep_their_order_through_a_snapshot():
    # Issue 19 (transactions) writes several keys at one revision; the history
    # already supports it through the same begin/put/delete/end steps.
    from meshraft.kv.mvcc import History

    h = History()
    h.begin()
    h.put(b"z", b"1")
    h.put(b"a", b"1")
    h.end()
    h.begin()
    h.put(b"m", b"1")
    h.delete(b"z")
    h.put(b"a", b"2")
    rec = Recorder()
    h.listeners.append(rec)
    assert h.end() == 2
    [(rev, evs)] = h.events_since(2, 10)
    assert rev == 2 and [(e.type, e.kv.key) for e in evs] == [
        ("PUT", b"m"), ("DELETE", b"z"), ("PUT", b"a")]
    assert all(e.kv.mod_revision == 2 for e in evs)
    assert evs[1].prev_kv.key == b"z" and evs[2].prev_kv.value == b"1"
    assert rec.revisions == [(2, evs)]  # listeners got the same events, in order
    h.begin()
    assert h.end() == 0 and h.revision == 2  # nothing changed: no revision
    h.begin()  # the same key twice at one revision: each event's prev_kv is the one before
    h.put(b"q", b"1")
    h.put(b"q", b"2")
    h.delete(b"q")
    h.end()
    [(_, evs3)] = h.events_since(3, 10)
    assert [(e.type, e.prev_kv and e.prev_kv.value) for e in evs3] == [
        ("PUT", None), ("PUT", b"1"), ("DELETE", b"2")]
    assert rec.revisions[-1] == (3, evs3)
    h2 = History()
    h2.restore_state(h.snapshot_state())
    assert h2.events_since(1, 10) == h.events_since(1, 10)
    assert h2.snapshot_state() == h.snapshot_state()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "delete", "compact"]),
                          st.sampled_from([b"a", b"b", b"c"]),
                          st.integers(min_value=0, max_value=30)), max_size=40))
def test_history_matches_a_model_of_every_revision(ops):
    """Reads at every readable revision equal a model that copies the store each revision,
    through compactions and a snapshot round trip."""
    sm = KVStateMachine()
    model: list[dict[bytes, bytes]] = [{}]
    for op, key, n in ops:
        if op == "put":
            put(sm, key, b"%d" % n)
        elif op == "delete":
            delete(sm, key)
        else:
            compact(sm, n)
        while len(model) <= sm.revision:
            state = dict(model[-1])
            kv = sm.get(key)
            if kv is None:
                state.pop(key, None)
            else:
                state[key] = kv.value
            model.append(state)
    copy = KVStateMachine()
    copy.restore(sm.snapshot())
    for s in (sm, copy):
        for rev in range(max(s.compact_revision, 0), s.revision + 1):
            assert {kv.key: kv.value for kv in s.list(b"", revision=rev)} == model[rev]
        events = s.events_since(s.compact_revision, 1000)
        assert [r for r, _ in events] == list(range(max(s.compact_revision, 1),
                                                    s.revision + 1))

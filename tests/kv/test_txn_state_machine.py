"""Transactions through the replicated state machine: one revision with several events,
exactly-once retries, the operation ceiling every replica checks, leases, snapshots."""

from __future__ import annotations

import pytest

from meshraft.kv.state_machine import (
    CommandError,
    KVStateMachine,
    Limits,
    check_write,
    encode_command,
)
from meshraft.kv.txn import APPLY_MAX_TXN_OPS
from meshraft.raft.messages import Entry

_index = 0


def apply(sm, cmd):
    global _index
    _index += 1
    return sm.apply(Entry(term=1, index=_index, data=encode_command(cmd)))


def put(key, value, **kw):
    return {"op": "put", "key": key, "value": value, **kw}


def cmp(key, target, result, value):
    return {"key": key, "target": target, "result": result, "value": value}


class Recorder:
    def __init__(self):
        self.revisions = []

    def on_revision(self, revision, events):
        self.revisions.append((revision, [(e.type, e.kv.key, e.kv.mod_revision)
                                          for e in events]))

    def on_restore(self, revision):
        pass

    def on_compact(self, compact_revision):
        pass


def test_a_transactions_writes_are_one_revision_with_several_events():
    sm = KVStateMachine()
    apply(sm, put(b"a", b"1"))
    apply(sm, put(b"b", b"2"))
    rec = Recorder()
    sm.add_listener(rec)
    r = apply(sm, {"op": "txn", "compare": [cmp(b"a", "value", "=", b"1")],
                   "success": [put(b"a", b"10"), {"op": "delete", "key": b"b"},
                               put(b"c", b"3"), {"op": "get", "key": b"c"}]})
    assert r["succeeded"] is True and r["revision"] == 3 == sm.revision
    assert r["responses"][3]["kv"]["mod_revision"] == 3
    assert rec.revisions == [(3, [("PUT", b"a", 3), ("DELETE", b"b", 3), ("PUT", b"c", 3)])]
    assert sm.get(b"a").value == b"10" and sm.get(b"b") is None
    # history: the store as it was before the transaction is still readable
    assert sm.get(b"b", revision=2).value == b"2"


def test_the_else_branch_and_read_only_transactions_bump_nothing():
    sm = KVStateMachine()
    apply(sm, put(b"a", b"1"))
    r = apply(sm, {"op": "txn", "compare": [cmp(b"a", "version", ">", 5)],
                   "success": [put(b"a", b"x")], "failure": [{"op": "get", "key": b"a"}]})
    assert r["succeeded"] is False and r["revision"] == 1 == sm.revision
    assert r["responses"][0]["kv"]["value"] == b"1"


def test_a_retried_transaction_returns_its_first_answer():
    sm = KVStateMachine()
    cmd = {"op": "txn", "compare": [cmp(b"n", "version", "=", 0)],
           "success": [put(b"n", b"first")], "failure": [put(b"n", b"again")],
           "cid": "c1", "seq": 1, "ack": 1}
    first = apply(sm, cmd)
    second = apply(sm, cmd)  # the same cid/seq: not applied again
    assert first == second and first["succeeded"] is True
    assert sm.get(b"n").value == b"first" and sm.revision == 1
    # a new sequence number is a new transaction: now the compare fails
    third = apply(sm, {**cmd, "seq": 2, "ack": 2})
    assert third["succeeded"] is False and sm.get(b"n").value == b"again"


def test_bad_transactions_in_the_log_change_nothing():
    sm = KVStateMachine()
    apply(sm, put(b"a", b"1"))
    for cmd, code in [
        ({"op": "txn", "success": [put(b"k", b"1"), put(b"k", b"2")]}, "bad-request"),
        ({"op": "txn", "success": [put(b"k%d" % i, b"v")
                                   for i in range(APPLY_MAX_TXN_OPS + 1)]}, "bad-request"),
        ({"op": "txn", "compare": [cmp(b"a", "size", "=", 1)]}, "bad-request"),
        ({"op": "txn", "success": [put(b"k", b"v", lease=99)]}, "lease-not-found"),
    ]:
        r = apply(sm, cmd)
        assert r["error"] == code, r
        assert sm.revision == 1 and len(sm) == 1
    # within the ceiling, a member's own, smaller limit is not what apply checks
    r = apply(sm, {"op": "txn", "success": [put(b"k%d" % i, b"v") for i in range(200)]})
    assert r["succeeded"] and sm.revision == 2 and len(sm) == 201


def test_the_members_limit_is_checked_before_proposing():
    ops = [put(b"k%d" % i, b"v") for i in range(129)]
    with pytest.raises(CommandError) as e:
        check_write({"op": "txn", "success": ops}, Limits())
    assert e.value.code == "too-large" and "the limit is 128" in e.value.message
    assert check_write({"op": "txn", "success": ops}, Limits(max_txn_ops=129))["success"]
    with pytest.raises(ValueError):
        Limits(max_txn_ops=APPLY_MAX_TXN_OPS + 1)


def test_leases_in_a_transaction():
    sm = KVStateMachine()
    lease = apply(sm, {"op": "lease_grant", "lease_id": 0, "ttl": 10})["id"]
    r = apply(sm, {"op": "txn", "success": [put(b"l1", b"v", lease=lease),
                                            put(b"l2", b"v", lease=lease)]})
    assert r["succeeded"] and sm.get(b"l1").lease == lease
    r = apply(sm, {"op": "txn", "compare": [cmp(b"l1", "lease", "=", lease)],
                   "success": [put(b"l1", b"plain")]})
    assert r["succeeded"] and sm.get(b"l1").lease == 0
    apply(sm, {"op": "lease_revoke", "lease_id": lease})
    assert sm.get(b"l1").value == b"plain" and sm.get(b"l2") is None  # only l2 was its


def test_cas_keeps_its_protocol_over_a_transaction():
    sm = KVStateMachine()
    assert apply(sm, {"op": "cas", "key": b"k", "expected": None, "value": b"v1"}) == {
        "revision": 1, "create_revision": 1, "version": 1, "succeeded": True}
    r = apply(sm, {"op": "cas", "key": b"k", "expected": b"nope", "value": b"v2"})
    assert r == {"error": "cas-mismatch", "message": "the current value is not the expected one",
                 "revision": 1, "mod_revision": 1}
    # a large value is never refused for its read: the cas answer keeps no value
    big = b"x" * (5 * 1024 * 1024)
    apply(sm, put(b"big", big))
    r = apply(sm, {"op": "cas", "key": b"big", "expected": b"small", "value": b"v"})
    assert r["error"] == "cas-mismatch" and r["mod_revision"] == 2


def test_transaction_answers_survive_a_snapshot():
    sm = KVStateMachine()
    cmd = {"op": "txn", "success": [put(b"a", b"1"), {"op": "list", "prefix": b""}],
           "cid": "c", "seq": 1, "ack": 1}
    first = apply(sm, cmd)
    other = KVStateMachine()
    other.restore(sm.snapshot())
    assert apply(other, cmd) == first and other.revision == 1

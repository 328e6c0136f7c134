"""meshraft.kv.txn on its own: validation, compares, execution against a store,
cas as a transaction, and the client-side builders."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from meshraft.kv import txn
from meshraft.kv.txn import Compare, Op, TxnError, check_txn, execute


@dataclass
class KV:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int

    def to_wire(self):
        return {"key": self.key, "value": self.value, "create_revision": self.create_revision,
                "mod_revision": self.mod_revision, "version": self.version}


class Store:
    """A plain store with revisions, applying TxnOutcome writes like the state machine."""

    def __init__(self):
        self.data: dict[bytes, KV] = {}
        self.revision = 0

    def get(self, key):
        return self.data.get(key)

    def list(self, prefix=b"", limit=None):
        keys = sorted(k for k in self.data if k.startswith(prefix))
        return [self.data[k] for k in keys[:limit]]

    def put(self, key, value):
        self.revision += 1
        cur = self.data.get(key)
        self.data[key] = KV(key, value, cur.create_revision if cur else self.revision,
                            self.revision, cur.version + 1 if cur else 1)

    def apply(self, outcome):
        if not outcome.writes:
            return
        rev = self.revision + 1
        for w in outcome.writes:
            if w[0] == "put":
                cur = self.data.get(w[1])
                self.data[w[1]] = KV(w[1], w[2], cur.create_revision if cur else rev, rev,
                                     cur.version + 1 if cur else 1)
            else:
                del self.data[w[1]]
        self.revision = rev

    def txn(self, cmd, **kw):
        out = execute(check_txn(cmd, LIMITS), self, self.revision, **kw)
        self.apply(out)
        return out


@dataclass
class Limits:
    max_key: int = 100
    max_value: int = 1000


LIMITS = Limits()


def cmp(key, target, result, value):
    return {"key": key, "target": target, "result": result, "value": value}


def put(key, value):
    return {"op": "put", "key": key, "value": value}


# -- validation --------------------------------------------------------------------------


@pytest.mark.parametrize("cmd, code, words", [
    ({"op": "txn", "compare": "x"}, "bad-request", "compare must be a list"),
    ({"op": "txn", "compare": [cmp(b"k", "colour", "=", 1)]}, "bad-request", "target"),
    ({"op": "txn", "compare": [cmp(b"k", "version", "==", 1)]}, "bad-request", "result"),
    ({"op": "txn", "compare": [cmp(b"k", "version", "=", b"1")]}, "bad-request",
     "non-negative integer"),
    ({"op": "txn", "compare": [cmp(b"k", "mod", ">", -1)]}, "bad-request", "non-negative"),
    ({"op": "txn", "compare": [cmp(b"k", "value", "=", 3)]}, "bad-request",
     "value compare's value must be bytes"),
    ({"op": "txn", "compare": [cmp(b"", "value", "=", b"")]}, "bad-request", "empty"),
    ({"op": "txn", "compare": [cmp(b"k" * 101, "version", "=", 0)]}, "too-large", "limit"),
    ({"op": "txn", "success": [{"op": "frobnicate", "key": b"k"}]}, "bad-request", "op must"),
    ({"op": "txn", "success": [{"op": "put", "key": b"k"}]}, "bad-request", "value"),
    ({"op": "txn", "success": [put(b"k", b"v" * 1001)]}, "too-large", "1001 bytes"),
    ({"op": "txn", "failure": [{"op": "list", "prefix": b"", "limit": 0}]}, "bad-request",
     "limit"),
    ({"op": "txn", "success": [{"op": "delete", "key": b"k", "prefix": 1}]}, "bad-request",
     "prefix"),
    ({"op": "txn", "success": [put(b"k", b"1"), put(b"k", b"2")]}, "bad-request",
     "duplicate key"),
    ({"op": "txn", "failure": [{"op": "delete", "key": b"k"}, put(b"k", b"2")]},
     "bad-request", "duplicate key"),
    ({"op": "txn", "success": [{"op": "delete", "key": b"d/", "prefix": True},
                               put(b"d/x", b"2")]}, "bad-request", "duplicate key"),
    ({"op": "put", "key": b"k", "value": b"v"}, "bad-request", "not a txn"),
    ([], "bad-request", "must be a map"),
])
def test_bad_transactions_are_refused_with_a_clear_error(cmd, code, words):
    with pytest.raises(TxnError) as e:
        check_txn(cmd, LIMITS)
    assert e.value.code == code
    assert words in e.value.message


def test_op_count_limit_counts_compares_and_each_branch_like_etcd():
    ops = [put(b"k%d" % i, b"v") for i in range(128)]
    ok = check_txn({"op": "txn", "compare": [cmp(b"a", "version", "=", 0)] * 128,
                    "success": ops, "failure": ops}, LIMITS)
    assert len(ok["success"]) == 128
    for part in ("compare", "success", "failure"):
        items = ([cmp(b"a", "version", "=", 0)] * 129 if part == "compare"
                 else [*ops, put(b"x", b"v")])
        with pytest.raises(TxnError) as e:
            check_txn({"op": "txn", part: items}, LIMITS)
        assert e.value.code == "too-large"
        assert f"129 in {part}, the limit is 128" in e.value.message
    with pytest.raises(TxnError):
        check_txn({"op": "txn", "success": ops[:5]}, LIMITS, max_ops=4)


def test_gets_and_overlapping_deletes_may_repeat_a_key():
    check_txn({"op": "txn", "success": [
        {"op": "get", "key": b"k"}, put(b"k", b"1"), {"op": "get", "key": b"k"},
        {"op": "delete", "key": b"d"}, {"op": "delete", "key": b"d"},
        {"op": "delete", "key": b"e", "prefix": True}]}, LIMITS)
    # the same key in both branches is fine: only one runs
    check_txn({"op": "txn", "success": [put(b"k", b"1")], "failure": [put(b"k", b"2")]},
              LIMITS)


# -- compares ------------------------------------------------------------------------------


@pytest.mark.parametrize("target, result, value, expected", [
    ("value", "=", b"b", True), ("value", "!=", b"b", False), ("value", ">", b"a", True),
    ("value", "<", b"a", False), ("value", "<", b"c", True),
    ("version", "=", 2, True), ("version", ">", 1, True), ("version", "<", 2, False),
    ("create", "=", 1, True), ("create", "!=", 1, False),
    ("mod", "=", 3, True), ("mod", "<", 4, True), ("mod", ">", 3, False),
    ("lease", "=", 0, True), ("lease", ">", 0, False),
])
def test_compares_on_a_present_key(target, result, value, expected):
    s = Store()
    s.put(b"k", b"a")
    s.put(b"other", b"x")
    s.put(b"k", b"b")  # k: create 1, mod 3, version 2, value b
    c = check_txn({"op": "txn", "compare": [cmp(b"k", target, result, value)]}, LIMITS)
    assert txn.compare_holds(c["compare"][0], s.get(b"k")) is expected
    assert execute(c, s, s.revision).answer["succeeded"] is expected


@pytest.mark.parametrize("target, result, value, expected", [
    ("value", "=", b"", False), ("value", "!=", b"x", False),  # etcd: always false
    ("version", "=", 0, True), ("create", "=", 0, True), ("mod", "<", 1, True),
    ("lease", "=", 0, True), ("version", ">", 0, False),
])
def test_compares_on_an_absent_key(target, result, value, expected):
    c = check_txn({"op": "txn", "compare": [cmp(b"k", target, result, value)]}, LIMITS)
    assert txn.compare_holds(c["compare"][0], None) is expected


def test_all_compares_must_hold_and_the_branch_runs_atomically_at_one_revision():
    s = Store()
    s.put(b"a", b"1")
    s.put(b"b", b"2")
    cmd = {"op": "txn",
           "compare": [cmp(b"a", "value", "=", b"1"), cmp(b"b", "version", "=", 1),
                       cmp(b"c", "version", "=", 0)],
           "success": [put(b"a", b"10"), put(b"c", b"30"), {"op": "delete", "key": b"b"}],
           "failure": [{"op": "get", "key": b"a"}]}
    out = s.txn(cmd)
    assert out.answer["succeeded"] is True
    assert out.answer["revision"] == 3 == s.revision
    assert out.answer["responses"] == [
        {"op": "put", "revision": 3, "create_revision": 1, "version": 2},
        {"op": "put", "revision": 3, "create_revision": 3, "version": 1},
        {"op": "delete", "deleted": 1}]
    assert {k: (v.value, v.mod_revision) for k, v in s.data.items()} == {
        b"a": (b"10", 3), b"c": (b"30", 3)}
    # again: the compares no longer hold, the failure branch reads and writes nothing
    out = s.txn(cmd)
    assert out.answer["succeeded"] is False and out.writes == []
    assert out.answer["revision"] == 3 == s.revision
    assert out.answer["responses"][0]["kv"]["value"] == b"10"


def test_reads_in_a_transaction_see_its_earlier_writes_in_order():
    s = Store()
    s.put(b"d/1", b"old")
    s.put(b"d/2", b"two")
    s.put(b"e", b"e")
    out = s.txn({"op": "txn", "success": [
        {"op": "get", "key": b"d/1"},
        put(b"d/1", b"new"),
        {"op": "get", "key": b"d/1"},
        {"op": "delete", "key": b"d/2"},
        put(b"d/0", b"zero"),
        {"op": "list", "prefix": b"d/"},
        {"op": "list", "prefix": b"d/", "limit": 1},
        {"op": "get", "key": b"d/2"},
    ]})
    r = out.answer["responses"]
    assert r[0]["kv"]["value"] == b"old" and r[0]["kv"]["mod_revision"] == 1
    assert r[2]["kv"] == {"key": b"d/1", "value": b"new", "create_revision": 1,
                          "mod_revision": 4, "version": 2}
    assert [kv["key"] for kv in r[5]["kvs"]] == [b"d/0", b"d/1"] and r[5]["more"] is False
    assert [kv["key"] for kv in r[6]["kvs"]] == [b"d/0"] and r[6]["more"] is True
    assert r[7] == {"op": "get", "kv": None}
    assert s.revision == 4 and sorted(s.data) == [b"d/0", b"d/1", b"e"]


def test_prefix_delete_and_deletes_of_absent_keys():
    s = Store()
    for k in (b"d/a", b"d/b", b"dz", b"e"):
        s.put(k, b"v")
    out = s.txn({"op": "txn", "success": [{"op": "delete", "key": b"d/", "prefix": True},
                                          {"op": "delete", "key": b"d/a"}]})
    assert [r["deleted"] for r in out.answer["responses"]] == [2, 0]
    assert out.writes == [("delete", b"d/a"), ("delete", b"d/b")]
    assert sorted(s.data) == [b"dz", b"e"] and s.revision == 5
    # nothing deleted: no new revision (like a plain delete of an absent key)
    out = s.txn({"op": "txn", "success": [{"op": "delete", "key": b"nope"}]})
    assert out.answer == {"succeeded": True, "revision": 5,
                          "responses": [{"op": "delete", "deleted": 0}]}


def test_an_empty_transaction_succeeds_and_writes_nothing():
    s = Store()
    out = s.txn({"op": "txn"})
    assert out.answer == {"succeeded": True, "revision": 0, "responses": []}


def test_a_lease_must_exist():
    s = Store()
    cmd = check_txn({"op": "txn", "success": [{"op": "put", "key": b"k", "value": b"v",
                                               "lease": 7}]}, LIMITS)
    with pytest.raises(TxnError) as e:
        execute(cmd, s, 0)
    assert e.value.code == "lease-not-found" and "lease 7 not found" in e.value.message
    asked = []
    out = execute(cmd, s, 0, check_lease=lambda lease, key: asked.append((lease, key)))
    assert out.writes == [("put", b"k", b"v", 7)] and asked == [(7, b"k")]

    def refuse(lease, key):
        raise KeyError(lease)
    with pytest.raises(KeyError):
        execute(cmd, s, 0, check_lease=refuse)


def test_reads_beyond_the_budget_refuse_the_whole_transaction():
    s = Store()
    for i in range(10):
        s.put(b"k%d" % i, b"x" * 500)
    cmd = check_txn({"op": "txn", "success": [put(b"new", b"v"),
                                              {"op": "list", "prefix": b"k"}]}, LIMITS)
    with pytest.raises(TxnError) as e:
        execute(cmd, s, s.revision, max_read_bytes=3000)
    assert e.value.code == "too-large" and "nothing was written" in e.value.message
    assert len(execute(cmd, s, s.revision, max_read_bytes=6000).answer["responses"][1]
               ["kvs"]) == 10


def test_execute_is_deterministic_and_changes_nothing_itself():
    s = Store()
    s.put(b"a", b"1")
    cmd = check_txn({"op": "txn", "compare": [cmp(b"a", "value", "=", b"1")],
                     "success": [put(b"a", b"2"), {"op": "get", "key": b"a"}]}, LIMITS)
    one = execute(cmd, s, s.revision)
    two = execute(cmd, s, s.revision)
    assert one.answer == two.answer and one.writes == two.writes
    assert s.get(b"a").value == b"1" and s.revision == 1


# -- cas as a transaction --------------------------------------------------------------


def test_cas_is_a_transaction_with_the_cas_answer():
    s = Store()
    out = s.txn(txn.cas_txn(b"k", None, b"v1"))
    assert txn.cas_answer(out.answer, s.revision) == {"revision": 1, "create_revision": 1,
                                               "version": 1, "succeeded": True}
    out = s.txn(txn.cas_txn(b"k", None, b"v2"))  # not absent any more
    assert txn.cas_answer(out.answer, s.revision) == {
        "error": "cas-mismatch", "message": "the current value is not the expected one",
        "revision": 1, "mod_revision": 1}
    out = s.txn(txn.cas_txn(b"k", b"v1", b"v2"))
    assert txn.cas_answer(out.answer, s.revision)["version"] == 2
    out = s.txn(txn.cas_txn(b"gone", b"v1", b"v2"))
    assert txn.cas_answer(out.answer, s.revision)["mod_revision"] == 0


# -- builders ----------------------------------------------------------------------------


def test_compare_and_op_builders_give_the_wire_form():
    assert (Compare.value("k") == "x").to_wire() == cmp(b"k", "value", "=", b"x")
    assert (Compare.version(b"k") != 0).to_wire() == cmp(b"k", "version", "!=", 0)
    assert (Compare.mod("k") > 3).to_wire()["result"] == ">"
    assert (Compare.create("k") < 3).to_wire()["target"] == "create"
    assert (Compare.lease("k") == 5).to_wire()["target"] == "lease"
    assert Compare("k", "value", "=", b"x").to_wire() == cmp(b"k", "value", "=", b"x")
    with pytest.raises(ValueError):
        Compare("k", "value", "~", b"x")
    assert Op.put("k", "v", lease=3).to_wire() == {"op": "put", "key": b"k", "value": b"v",
                                                   "lease": 3}
    assert Op.delete("d/", prefix=True).to_wire() == {"op": "delete", "key": b"d/",
                                                      "prefix": True}
    assert Op.get("k").to_wire() == {"op": "get", "key": b"k"}
    assert Op.list("p", limit=2).to_wire() == {"op": "list", "prefix": b"p", "limit": 2}
    assert txn.to_wire_list([Op.get("k"), {"op": "get", "key": b"j"}], "success") == [
        {"op": "get", "key": b"k"}, {"op": "get", "key": b"j"}]
    with pytest.raises(TypeError):
        txn.to_wire_list(["get k"], "success")
    # what the builders make passes validation
    check_txn({"op": "txn", "compare": [(Compare.value("k") == "x").to_wire()],
               "success": [Op.put("k", "y").to_wire()]}, LIMITS)

"""Leases inside the replicated state machine: attach, revoke in one revision,
bad input changing nothing, snapshots."""

from __future__ import annotations

from meshraft.kv.lease import LEASE_NOT_FOUND, LEASE_TOO_MANY_KEYS
from meshraft.kv.state_machine import DELETE, KVStateMachine, encode_command


def run(sm: KVStateMachine, **cmd):
    return sm.apply_command(encode_command(cmd))


class Events:
    def __init__(self) -> None:
        self.revisions: list[tuple[int, tuple]] = []

    def on_revision(self, revision, events):
        self.revisions.append((revision, events))

    def on_restore(self, revision):
        pass

    def on_compact(self, compact_revision):
        pass


def test_revoke_deletes_every_key_in_one_revision():
    sm = KVStateMachine()
    ev = Events()
    sm.add_listener(ev)
    lid = run(sm, op="lease_grant", ttl=5)["id"]
    for k in (b"a", b"b", b"c"):
        assert run(sm, op="put", key=k, value=b"v", lease=lid)["revision"] > 0
    run(sm, op="put", key=b"free", value=b"v")
    assert sm.get(b"a").lease == lid and sm.get(b"free").lease == 0
    assert sm.get(b"a").to_wire()["lease"] == lid
    rev = sm.revision
    out = run(sm, op="lease_revoke", lease_id=lid)
    assert out == {"revision": rev + 1, "deleted": 3}
    assert [k.key for k in sm.list()] == [b"free"]
    r, events = ev.revisions[-1]
    assert r == rev + 1 and [e.type for e in events] == [DELETE] * 3
    assert sorted(e.kv.key for e in events) == [b"a", b"b", b"c"]
    assert run(sm, op="lease_revoke", lease_id=lid)["error"] == LEASE_NOT_FOUND


def test_put_with_unknown_or_revoked_lease_changes_nothing():
    sm = KVStateMachine()
    lid = run(sm, op="lease_grant", ttl=5)["id"]
    run(sm, op="lease_revoke", lease_id=lid)
    rev = sm.revision
    for bad in (lid, 12345):
        out = run(sm, op="put", key=b"k", value=b"v", lease=bad)
        assert out["error"] == LEASE_NOT_FOUND
        assert "not found" in out["message"]
    assert sm.revision == rev and sm.get(b"k") is None


def test_overwrite_and_delete_detach_from_the_lease():
    sm = KVStateMachine()
    a = run(sm, op="lease_grant", ttl=5)["id"]
    b = run(sm, op="lease_grant", ttl=5)["id"]
    run(sm, op="put", key=b"moved", value=b"1", lease=a)
    run(sm, op="put", key=b"moved", value=b"2", lease=b)  # now b's
    run(sm, op="put", key=b"plain", value=b"1", lease=a)
    run(sm, op="put", key=b"plain", value=b"2")  # a put without a lease detaches
    run(sm, op="put", key=b"gone", value=b"1", lease=a)
    run(sm, op="delete", key=b"gone")
    run(sm, op="put", key=b"gone", value=b"again")
    assert run(sm, op="lease_revoke", lease_id=a)["deleted"] == 0
    assert sm.get(b"moved").value == b"2" and sm.get(b"plain").value == b"2"
    assert sm.get(b"gone").value == b"again"
    assert run(sm, op="lease_revoke", lease_id=b)["deleted"] == 1
    assert sm.get(b"moved") is None


def test_keys_per_lease_bounded_by_the_table():
    sm = KVStateMachine()
    sm.leases.max_keys = 2
    lid = run(sm, op="lease_grant", ttl=5)["id"]
    run(sm, op="put", key=b"a", value=b"", lease=lid)
    run(sm, op="put", key=b"b", value=b"", lease=lid)
    out = run(sm, op="put", key=b"c", value=b"", lease=lid)
    assert out["error"] == LEASE_TOO_MANY_KEYS and sm.get(b"c") is None


def test_snapshot_keeps_leases_and_their_keys():
    sm = KVStateMachine()
    lid = run(sm, op="lease_grant", ttl=7)["id"]
    run(sm, op="put", key=b"a", value=b"1", lease=lid)
    run(sm, op="put", key=b"a", value=b"2", lease=lid)
    run(sm, op="lease_grant", ttl=3)
    other = KVStateMachine()
    other.restore(sm.snapshot())
    assert other.leases.ids() == [1, 2] and other.leases.get(lid).ttl == 7
    assert other.get(b"a").lease == lid
    assert other.get(b"a", revision=other.revision - 1).lease == lid
    assert run(other, op="lease_grant", ttl=3)["id"] == 3
    assert run(other, op="lease_revoke", lease_id=lid)["deleted"] == 1
    assert other.get(b"a") is None
    other.restore(b"")
    assert len(other.leases) == 0

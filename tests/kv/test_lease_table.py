"""The lease table on its own: grant, revoke, attach/detach, bounds, snapshot."""

from __future__ import annotations

import pytest

from meshraft.kv.lease import (
    LEASE_NOT_FOUND,
    LEASE_RENEWED,
    LEASE_TOO_MANY_KEYS,
    MAX_TTL,
    TOO_MANY_LEASES,
    LeaseError,
    LeaseTable,
    check_lease_command,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_grant(self, lease_id: int, ttl: int) -> None:
        self.events.append(("grant", lease_id, ttl))

    def on_revoke(self, lease_id: int) -> None:
        self.events.append(("revoke", lease_id))

    def on_restore(self) -> None:
        self.events.append(("restore",))

    def on_keepalive(self, lease_id: int, ttl: int) -> None:
        self.events.append(("keepalive", lease_id, ttl))


def test_grant_picks_increasing_ids_never_reused():
    t = LeaseTable()
    a, b = t.grant(0, 5), t.grant(0, 5)
    assert (a.id, b.id) == (1, 2)
    t.revoke(2)
    assert t.grant(0, 5).id == 3  # 2 is never handed out again
    assert t.grant(10, 5).id == 10
    assert t.grant(0, 5).id == 11
    with pytest.raises(LeaseError) as e:
        t.grant(10, 5)
    assert "already exists" in e.value.message


def test_revoke_returns_sorted_keys_and_unknown_is_not_found():
    t = LeaseTable()
    lid = t.grant(0, 3).id
    for k in (b"b", b"a", b"c"):
        t.check_attach(lid, k)
        t.attach(lid, k)
    t.detach(lid, b"c")
    assert t.revoke(lid) == [b"a", b"b"]
    with pytest.raises(LeaseError) as e:
        t.revoke(lid)
    assert e.value.code == LEASE_NOT_FOUND and "not found" in e.value.message
    with pytest.raises(LeaseError) as e:
        t.check_attach(lid, b"x")
    assert e.value.code == LEASE_NOT_FOUND


def test_bounds_refuse_and_change_nothing():
    t = LeaseTable(max_leases=2, max_keys=2)
    lid = t.grant(0, 1).id
    t.grant(0, 1)
    with pytest.raises(LeaseError) as e:
        t.grant(0, 1)
    assert e.value.code == TOO_MANY_LEASES
    assert len(t) == 2
    t.attach(lid, b"a")
    t.attach(lid, b"b")
    t.check_attach(lid, b"a")  # already attached: no new slot needed
    with pytest.raises(LeaseError) as e:
        t.check_attach(lid, b"c")
    assert e.value.code == LEASE_TOO_MANY_KEYS


@pytest.mark.parametrize("cmd", [
    {"op": "lease_grant", "ttl": 0}, {"op": "lease_grant", "ttl": MAX_TTL + 1},
    {"op": "lease_grant", "ttl": 1.5}, {"op": "lease_grant", "ttl": True},
    {"op": "lease_grant", "ttl": 5, "lease_id": -1}, {"op": "lease_revoke"},
    {"op": "lease_revoke", "lease_id": 0}, {"op": "lease_revoke", "lease_id": "1"},
    {"op": "lease_nope", "lease_id": 1},
])
def test_bad_commands_are_refused(cmd):
    with pytest.raises(LeaseError) as e:
        check_lease_command(cmd)
    assert e.value.code == "bad-request"


def test_good_commands_normalise():
    assert check_lease_command({"op": "lease_grant", "ttl": 1}) == {
        "op": "lease_grant", "ttl": 1, "lease_id": 0}
    assert check_lease_command({"op": "lease_revoke", "lease_id": 7, "expired": True}) == {
        "op": "lease_revoke", "lease_id": 7, "expired": True, "renewals": 0}
    assert check_lease_command({"op": "lease_keepalive", "lease_id": 7}) == {
        "op": "lease_keepalive", "lease_id": 7}


def test_an_expiry_decided_before_a_logged_keepalive_is_refused():
    t = LeaseTable()
    rec = Recorder()
    t.observer = rec
    lid = t.grant(0, 5).id
    seen = t.renewals(lid)  # what the leader saw when its clock ran out
    t.renew(lid)  # a keepalive forwarded through the log, applied first
    with pytest.raises(LeaseError) as e:
        t.revoke(lid, renewals=seen)
    assert e.value.code == LEASE_RENEWED and lid in t
    assert t.revoke(lid, renewals=t.renewals(lid)) == []
    assert ("keepalive", lid, 5) in rec.events
    with pytest.raises(LeaseError) as e:
        t.renew(lid)
    assert e.value.code == LEASE_NOT_FOUND


def test_snapshot_round_trip_and_observer():
    t = LeaseTable()
    rec = Recorder()
    t.observer = rec
    a = t.grant(0, 5).id
    b = t.grant(0, 9).id
    t.attach(a, b"k1")
    t.revoke(b)
    snap = t.to_snapshot()
    u = LeaseTable()
    u.observer = rec
    u.restore(snap, [(b"k1", a), (b"orphan", 99)])
    assert u.ids() == [a]
    assert u.get(a).ttl == 5 and u.get(a).keys == {b"k1"}
    assert u.grant(0, 1).id == 3
    assert rec.events == [("grant", 1, 5), ("grant", 2, 9), ("revoke", 2), ("restore",),
                          ("grant", 3, 1)]

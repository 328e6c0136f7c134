"""Leases end to end: three real `meshraft serve` processes, the Python client and
the CLI. Expiry after the TTL, keepalives through a follower's endpoint, a leader
kill and a full cluster restart (every lease gets its full TTL again, its keys are
still there, and then it expires)."""

from __future__ import annotations

import time

import pytest
from e2e_cluster import wait_until

from meshraft.kv.client import LeaseNotFound

cluster = __import__("e2e_cluster").cluster  # the fixture


def test_grant_attach_keepalive_ttl_revoke(cluster):
    with cluster.client_for() as c:
        g = c.lease_grant(5)
        assert g.ttl == 5 and g.id >= 1
        c.put("lease/a", "1", lease=g.id)
        c.put("lease/b", "2", lease=g.id)
        assert c.get("lease/a").lease == g.id
        assert c.lease_keepalive(g.id) == 5
        t = c.lease_ttl(g.id, keys=True)
        assert t.granted_ttl == 5 and 4 <= t.ttl <= 5 and t.keys == (b"lease/a", b"lease/b")
        assert g.id in c.leases()
        rev = c.get("lease/a").mod_revision
        r = c.lease_revoke(g.id)
        assert r.deleted == 2 and r.revision == rev + 2  # both keys in one revision
        assert c.get("lease/a") is None and c.get("lease/b") is None
        for call in (lambda: c.lease_keepalive(g.id), lambda: c.lease_revoke(g.id),
                     lambda: c.lease_ttl(g.id), lambda: c.put("x", "y", lease=g.id)):
            with pytest.raises(LeaseNotFound, match="not found"):
                call()
        assert c.get("x") is None


def test_a_lease_expires_after_its_ttl_and_lives_while_kept_alive(cluster):
    leader = cluster.leader()
    follower = next(i for i in cluster.ids if i != leader)
    with cluster.client_for() as c, cluster.client_for([follower]) as f:
        kept = c.lease_grant(2).id
        lapsing = c.lease_grant(2).id
        c.put("kept", "v", lease=kept)
        granted = time.monotonic()
        c.put("lapsing", "v", lease=lapsing)
        # keepalives through a follower's endpoint only: answered by the leader
        end = time.monotonic() + 5
        while time.monotonic() < end:
            assert f.lease_keepalive(kept) == 2
            time.sleep(0.3)
        assert c.get("kept") is not None
        assert c.get("lapsing") is None
        gone = wait_until(lambda: c.get("lapsing") is None and time.monotonic(), 5, 0.05)
        assert gone - granted >= 2.0
        with pytest.raises(LeaseNotFound):
            f.lease_keepalive(lapsing)


def test_leader_kill_gives_every_lease_its_full_ttl_again(cluster):
    with cluster.client_for(timeout=20) as c:
        idle = c.lease_grant(4).id
        kept = c.lease_grant(2).id
        c.put("idle", "v", lease=idle)
        c.put("kept", "v", lease=kept)
        end = time.monotonic() + 2.0  # idle's clock on the old leader: about 2 s left
        while time.monotonic() < end:
            c.lease_keepalive(kept)
            time.sleep(0.4)
        old = cluster.leader()
        cluster.kill(old)
        new = cluster.leader(among=[i for i in cluster.ids if i != old])
        # the new leader started every clock afresh: more than the 2 s idle had left
        t = c.lease_ttl(idle)
        assert t.remaining > 2.5, t
        assert c.get("idle") is not None and c.get("kept") is not None
        # keepalives go on against the new leader, and the kept lease lives
        end = time.monotonic() + 4
        while time.monotonic() < end:
            c.lease_keepalive(kept)
            time.sleep(0.3)
        assert c.get("kept") is not None
        last = time.monotonic()
        c.lease_keepalive(kept)
        gone = wait_until(lambda: c.get("kept") is None and time.monotonic(), 10, 0.05,
                          what=f"lease {kept} to expire on leader {new}")
        assert gone - last >= 2.0
        wait_until(lambda: c.get("idle") is None, 10, 0.1, what="the idle lease to expire")


def test_full_cluster_restart_keeps_leases_and_keys_then_expires_them(cluster):
    with cluster.client_for(timeout=20) as c:
        lid = c.lease_grant(3).id
        c.put("survives", "v", lease=lid)
    for i in cluster.ids:
        cluster.stop(i)
    time.sleep(4.0)  # longer than the TTL, with no leader to expire anything
    cluster.start_all()
    cluster.leader()
    with cluster.client_for(timeout=20) as c:
        up = time.monotonic()
        kv = c.get("survives")
        assert kv is not None and kv.lease == lid  # the keys are still there
        assert c.lease_ttl(lid).granted_ttl == 3
        gone = wait_until(lambda: c.get("survives") is None and time.monotonic(), 15, 0.05,
                          what="the lease to expire after the restart")
        assert gone - up >= 1.5  # a full TTL from the new leader's start, not 0
        with pytest.raises(LeaseNotFound):
            c.lease_keepalive(lid)


def test_cli_lease_commands_and_bad_input(procs):
    from e2e_cluster import Cluster

    c = Cluster(procs, extra_args=("--max-leases", "2"))
    c.start_all()
    c.leader()
    r = c.cli("lease", "grant", "30")
    assert r.returncode == 0, r.stderr
    lid = int(r.stdout)
    assert c.cli("put", "cli/a", "1", "--lease", str(lid)).returncode == 0
    assert c.cli_json("lease", "keepalive", str(lid), "--once") == {"id": lid, "ttl": 30}
    t = c.cli_json("lease", "ttl", str(lid), "--keys")
    assert t["granted_ttl"] == 30 and 28 <= t["ttl"] <= 30 and t["keys"] == ["cli/a"]
    assert c.cli_json("lease", "list")["leases"] == [lid]
    # bad input: a clear error, nothing changed
    for ttl in ("0", "604801", "x"):
        r = c.cli("lease", "grant", ttl)
        assert r.returncode == 2 and "TTL" in r.stderr + r.stdout, (ttl, r.stderr)
    unknown = str(lid + 100)
    for args in (("lease", "revoke", unknown), ("lease", "ttl", unknown),
                 ("lease", "keepalive", unknown, "--once"),
                 ("put", "cli/b", "1", "--lease", unknown)):
        r = c.cli(*args)
        assert r.returncode == 1 and "lease" in r.stderr and "not found" in r.stderr, args
    assert c.cli("get", "cli/b").returncode == 1
    assert c.cli("lease", "grant", "5").returncode == 0
    r = c.cli("lease", "grant", "5")  # the third: over --max-leases 2
    assert r.returncode == 2 and "too many leases" in r.stderr
    assert len(c.cli_json("lease", "list")["leases"]) == 2
    r = c.cli("lease", "revoke", str(lid))
    assert r.returncode == 0 and "1 key(s) deleted" in r.stdout
    assert c.cli("get", "cli/a").returncode == 1
    r = c.cli("put", "cli/a", "again", "--lease", str(lid))  # a revoked lease
    assert r.returncode == 1 and "not found" in r.stderr
    assert c.cli("get", "cli/a").returncode == 1


def test_watchers_see_an_expiry_as_delete_events_of_one_revision(cluster):
    with cluster.client_for() as c:
        lid = c.lease_grant(1).id
        for k in ("w/a", "w/b", "w/c"):
            c.put(k, "v", lease=lid)
        start = c.get("w/c").mod_revision + 1
        with c.watch("w/", prefix=True, start_revision=start) as w:
            events = [next(iter(w)) for _ in range(3)]  # the expiry: no keepalive sent
        assert [e.type for e in events] == ["DELETE"] * 3
        assert sorted(e.key for e in events) == [b"w/a", b"w/b", b"w/c"]
        assert len({e.revision for e in events}) == 1 and events[0].revision == start


def test_cli_keepalive_runs_until_interrupted_then_the_lease_lapses(cluster):
    import signal
    import sys

    with cluster.client_for() as c:
        lid = c.lease_grant(2).id
        c.put("fg", "v", lease=lid)
        proc = cluster.procs.start_raw(
            [sys.executable, "-m", "meshraft.cli", "lease", "keepalive", str(lid),
             "--endpoints", cluster.endpoints()], name="keepalive")
        wait_until(lambda: proc.log().count("kept alive") >= 6, 15, 0.1,
                   what="six renewals (over three TTLs)")
        assert c.get("fg") is not None  # kept alive past its 2 s TTL
        proc.signal(signal.SIGINT)
        assert proc.wait(10) == 0, proc.log()
        stopped = time.monotonic()
        gone = wait_until(lambda: c.get("fg") is None and time.monotonic(), 10, 0.05,
                          what="the lease to lapse after Ctrl-C")
        assert gone - stopped < 2 + 5

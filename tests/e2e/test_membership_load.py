"""Membership changes under a write load, with real processes: grow 1 -> 3 -> 5, shrink
5 -> 3, replace the leader. A writer thread records every acknowledged write; at the
end every one of them must be readable (linearizably) with the value written."""

from __future__ import annotations

import os
import threading
import time

import pytest
from e2e_cluster import Cluster, free_ports, wait_until

from meshraft.kv.client import BadRequest, Client, MeshraftError


class WriteLoad:
    """One writer thread: unique keys, bounded in count and time."""

    def __init__(self, endpoints: str, max_writes: int = 20000, max_seconds: float = 120) -> None:
        self.endpoints = endpoints
        self.max_writes = max_writes
        self.max_seconds = max_seconds
        self.acked: dict[str, str] = {}
        self.unknown = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WriteLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        end = time.monotonic() + self.max_seconds
        with Client(self.endpoints, timeout=3.0, attempt_timeout=1.0) as c:
            for n in range(self.max_writes):
                if self._stop.is_set() or time.monotonic() > end:
                    return
                key, value = f"w{n:06d}", f"v{n}"
                try:
                    c.put(key, value)
                    self.acked[key] = value
                except MeshraftError as exc:  # unavailable or outcome unknown: not acked
                    self.unknown += 1
                    if len(self.errors) < 20:
                        self.errors.append(exc.message)

    def wait_for(self, n: int, timeout: float = 20) -> None:
        """Until ``n`` more writes were acknowledged (the cluster keeps taking writes)."""
        target = len(self.acked) + n
        wait_until(lambda: len(self.acked) >= target, timeout, 0.05,
                   what=f"{n} more acked writes (errors: {self.errors[-3:]})")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()

    def check_all_readable(self, endpoints: str) -> None:
        with Client(endpoints, timeout=10) as c:
            got = {kv.key.decode(): kv.value.decode() for kv in c.list("w")}
        lost = [k for k, v in self.acked.items() if got.get(k) != v]
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
        assert len(self.acked) > 0
        print(f"{len(self.acked)} acked writes all readable; {self.unknown} not acked")


class Members:
    """Adds members to a Cluster: empty, --join, knowing one member's address."""

    def __init__(self, procs, c: Cluster) -> None:
        self.procs = procs
        self.c = c

    def admin(self, ids=None) -> Client:
        return Client(self.c.endpoints(ids), timeout=10)

    def start_joining(self, nid: str, via: str) -> None:
        c = self.c
        peer_port, client_port = free_ports(2)
        c.ids.append(nid)
        c.peer[nid] = f"127.0.0.1:{peer_port}"
        c.client[nid] = f"127.0.0.1:{client_port}"
        c.dirs[nid] = self.procs.tmpdir(f"node{nid}")
        c.members[nid] = self.procs.start(
            "serve", "--id", nid, "--join", "--peers", f"{via}={c.peer[via]}", "--listen",
            c.peer[nid], "--client", c.client[nid], "--data-dir", str(c.dirs[nid]),
            "--transport", c.transport, *c.extra_args, name=f"node{nid}")

    def add_and_promote(self, nid: str, via: str, voters: list[str]) -> float:
        """Learner first, promoted once caught up; returns seconds from add to promotion."""
        self.start_joining(nid, via)
        t0 = time.monotonic()
        adds: list[int] = []
        promotes: list[int] = []
        with self.admin(voters) as a:
            def add() -> bool:
                adds.append(1)
                try:
                    return _ok(lambda: a.add_member(nid, self.c.peer[nid], learner=True))
                except BadRequest as exc:
                    # an earlier try whose outcome was unknown did it
                    if len(adds) > 1 and f"{nid} is already a learner" in exc.message:
                        return True
                    raise

            wait_until(add, 20, 0.2, what=f"add learner {nid}")

            def promote() -> bool:
                promotes.append(1)
                try:
                    return _ok(lambda: a.promote_member(nid))
                except BadRequest as exc:
                    if len(promotes) > 1 and f"{nid} is already a voter" in exc.message:
                        return True
                    assert "not caught up" in exc.message, exc.message
                    return False

            wait_until(promote, 30, 0.2, what=f"promote {nid}")
        return time.monotonic() - t0

    def remove(self, nid: str, voters: list[str]) -> None:
        tries = []

        def attempt() -> bool:
            tries.append(1)
            try:
                return _ok(lambda: a.remove_member(nid))
            except BadRequest as exc:
                # an earlier try whose outcome was unknown did it
                if len(tries) > 1 and f"{nid} is not a member" in exc.message:
                    return True
                raise

        with self.admin(voters) as a:
            wait_until(attempt, 20, 0.2, what=f"remove {nid}")

    def voters(self, ids) -> list[str]:
        with self.admin(ids) as a:
            return sorted(a.members()["voters"])


def _ok(call) -> bool:
    """True if the call succeeded; False on a 'busy, retry' or unavailable answer."""
    try:
        call()
        return True
    except BadRequest:
        raise
    except MeshraftError:
        return False


def test_grow_from_1_to_3_to_5_under_load(procs):
    # Small snapshots: members that join later must catch up from a snapshot + the log.
    c = Cluster(procs, n=1, extra_args=("--snapshot-entries", "100"))
    c.start_all()
    c.leader()
    m = Members(procs, c)
    with WriteLoad(c.endpoints()) as load:
        load.wait_for(50)
        for nid in ("2", "3"):
            took = m.add_and_promote(nid, via="1", voters=list(c.ids))
            print(f"member {nid}: added, caught up and promoted in {took:.2f}s")
            load.wait_for(20)
        assert m.voters(c.ids) == ["1", "2", "3"]
        for nid in ("4", "5"):
            load.wait_for(150)  # well past the next snapshot
            took = m.add_and_promote(nid, via="2", voters=list(c.ids))
            print(f"member {nid}: added, caught up and promoted in {took:.2f}s")
            load.wait_for(20)
        assert m.voters(c.ids) == ["1", "2", "3", "4", "5"]
    # every member has every acknowledged write; the cluster is one of five now
    load.check_all_readable(c.endpoints())
    for nid in c.ids:
        st = c.status(nid)
        assert st["voters"] == ["1", "2", "3", "4", "5"], (nid, st["voters"])
    # the last ones joined long after the leader compacted its log
    assert c.status("5")["stats"]["snapshots_installed"] >= 1


def test_shrink_from_5_to_3_under_load(procs):
    c = Cluster(procs, n=5)
    c.start_all()
    c.leader()
    m = Members(procs, c)
    with WriteLoad(c.endpoints()) as load:
        load.wait_for(50)
        leader = c.leader()
        # one follower, then the leader itself
        follower = next(i for i in c.ids if i != leader)
        for gone in (follower, leader):
            m.remove(gone, c.ids)
            wait_until(lambda g=gone: c.status(g)["role"] == "removed", 10,
                       what=f"{gone} learns it is removed")
            load.wait_for(30)
        rest = [i for i in c.ids if i not in (follower, leader)]
        assert m.voters(rest) == rest
    for gone in (follower, leader):
        c.stop(gone)
    load.check_all_readable(c.endpoints(rest))


def test_replace_the_leader_under_load(procs):
    """Replace the leader (remove it, then add a fresh member): leadership moves at
    once, and no acknowledged write is lost."""
    c = Cluster(procs, n=3)
    c.start_all()
    old = c.leader()
    m = Members(procs, c)
    with WriteLoad(c.endpoints()) as load:
        load.wait_for(50)
        t0 = time.monotonic()
        m.remove(old, c.ids)
        rest = [i for i in c.ids if i != old]
        new = c.leader(among=rest)
        handover = time.monotonic() - t0
        assert new != old
        print(f"leader {old} removed; {new} leads {handover:.2f}s after the remove was sent")
        load.wait_for(30)  # two voters carry on
        assert c.status(old)["role"] == "removed"
        c.stop(old)
        m.add_and_promote("4", via=new, voters=rest)
        load.wait_for(30)
    members = [i for i in c.ids if i != old]
    load.check_all_readable(c.endpoints(members))
    assert m.voters(members) == sorted(members)


@pytest.mark.soak
@pytest.mark.skipif(not os.environ.get("MESHRAFT_SOAK"),
                    reason="measurement: run with MESHRAFT_SOAK=1 (CI runs the grow test above)")
def test_measure_learner_catch_up(procs):
    """Measures (prints, never asserts speed) how long a new learner takes to catch up
    N entries: MESHRAFT_CATCHUP_ENTRIES (default 20000), 100-byte values, default
    snapshot every 10000 entries (MESHRAFT_CATCHUP_SNAPSHOT_ENTRIES), so it gets a
    snapshot and then the log."""
    n = int(os.environ.get("MESHRAFT_CATCHUP_ENTRIES", "20000"))
    snap = os.environ.get("MESHRAFT_CATCHUP_SNAPSHOT_ENTRIES")  # e.g. > N: the log only
    c = Cluster(procs, n=3, extra_args=("--snapshot-entries", snap) if snap else ())
    c.start_all()
    c.leader()

    def writer(k: int) -> None:
        with Client(c.endpoints(), timeout=10) as cl:
            for i in range(k, n, 8):
                for _ in range(5):  # a busy moment is not what this measures
                    try:
                        cl.put(f"c{i:07d}", "v" * 100)
                        break
                    except MeshraftError:
                        time.sleep(0.1)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = Members(procs, c)
    target = c.status(c.leader())["commit_index"]
    m.start_joining("4", via="1")
    t0 = time.monotonic()
    with m.admin(c.ids[:3]) as a:
        a.add_member("4", c.peer["4"], learner=True)
    wait_until(lambda: c.status("4")["applied_index"] >= target, 300, 0.05,
               what="the learner applies everything")
    took = time.monotonic() - t0
    st = c.status("4")
    print(f"learner caught up {target} entries in {took:.2f}s (snapshots installed: "
          f"{st['stats']['snapshots_installed']})")
    with Client([c.client["4"]]) as cl:
        assert len(cl.list("c", serializable=True)) == n

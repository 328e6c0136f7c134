"""The key-value service end to end: three real `meshraft serve` processes, the Python
client and the CLI, crashes and restarts."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
import threading
import time

import msgpack
import pytest
from e2e_cluster import TRANSPORT, Cluster, wait_until

from meshraft.kv import protocol as p
from meshraft.kv.client import AsyncClient, Client, OutcomeUnknown

cluster = __import__("e2e_cluster").cluster  # the fixture


def test_put_and_get_through_each_member(cluster):
    for i in cluster.ids:
        with Client([cluster.client[i]]) as c:
            assert c.put(f"from-{i}", f"value-{i}").revision >= 1
    for i in cluster.ids:
        with Client([cluster.client[i]]) as c:
            for j in cluster.ids:
                kv = c.get(f"from-{j}")  # linearizable, served by this member
                assert kv is not None and kv.value == f"value-{j}".encode()
        r = cluster.cli("get", f"from-{i}", ids=[i])
        assert r.returncode == 0 and r.stdout == f"value-{i}\n"
    revisions = {cluster.status(i)["kv"]["revision"] for i in cluster.ids}
    wait_until(lambda: {cluster.status(i)["kv"]["revision"] for i in cluster.ids} == {3},
               10, what="every member applied the three writes")
    assert revisions <= {1, 2, 3}


def test_kill_leader_during_writes_loses_no_acknowledged_write(cluster):
    leader = cluster.leader()
    acked: dict[str, str] = {}
    unknown: set[str] = set()
    kill_at: float | None = None
    first_ack_after_kill: float | None = None
    elected_at: list[float] = []

    def watch_for_a_new_leader() -> None:
        # Polls the survivors while the writer runs: the moment one says "leader".
        cluster.leader(among=[i for i in cluster.ids if i != leader], timeout=20)
        elected_at.append(time.monotonic())

    watcher = threading.Thread(target=watch_for_a_new_leader, daemon=True)
    with Client(cluster.endpoints(), timeout=15, attempt_timeout=1.0) as c:
        i = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            i += 1
            key, value = f"w{i}", f"v{i}"
            started_after_kill = kill_at is not None
            try:
                c.put(key, value)
            except OutcomeUnknown:
                unknown.add(key)
                continue
            acked[key] = value
            now = time.monotonic()
            if kill_at is None and len(acked) == 30:
                cluster.kill(leader)
                kill_at = time.monotonic()
                watcher.start()
            elif started_after_kill and first_ack_after_kill is None:
                first_ack_after_kill = now
            if kill_at is not None and len(acked) >= 80:
                break
    assert kill_at is not None and first_ack_after_kill is not None, cluster.logs()
    failover = first_ack_after_kill - kill_at
    watcher.join(25)
    assert elected_at, "no surviving member became leader"
    election = elected_at[0] - kill_at
    print(f"\nnew leader after {election:.2f}s; first write acknowledged after {failover:.2f}s")
    # The promise (a new leader within 3 s of kill -9); elections take ~0.6 s
    # here (benchmarks/failover.py), so 3 s leaves room for a loaded CI machine.
    assert election < 3.0, f"a new leader only {election:.1f}s after the leader died"
    assert failover < 10, f"no write acknowledged for {failover:.1f}s after the leader died"
    new_leader = cluster.leader(among=[i for i in cluster.ids if i != leader])
    assert new_leader != leader
    survivors = [i for i in cluster.ids if i != leader]
    with Client(cluster.endpoints(survivors)) as c:
        kvs = c.list("w")
        stored = {kv.key.decode(): kv.value.decode() for kv in kvs}
    # every key was written once: a retried write applied twice would show version 2
    assert all(kv.version == 1 for kv in kvs), [kv for kv in kvs if kv.version != 1]
    for key, value in acked.items():
        assert stored.get(key) == value, f"acknowledged write {key} lost"
    assert set(stored) <= set(acked) | unknown  # nothing appeared that was never written
    # the killed member comes back and catches up
    cluster.start(leader)
    with Client([cluster.client[leader]]) as c:
        wait_until(lambda: len(c.list("w", serializable=True)) == len(stored), 20,
                   what="the restarted member catches up")


def test_restart_of_the_whole_cluster_brings_all_data_back(cluster):
    with Client(cluster.endpoints()) as c:
        for i in range(40):
            c.put(f"k{i:02d}", f"v{i}")
        c.delete("k00")
        c.cas("k01", "v1", "changed")
        before = [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
                  for kv in c.list()]
        revision = c.put("last", "x").revision
    # a hard crash of every member: acknowledged writes were fsynced
    for i in cluster.ids:
        cluster.kill(i)
    cluster.start_all()
    cluster.leader()
    with Client(cluster.endpoints()) as c:
        after = [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
                 for kv in c.list() if kv.key != b"last"]
        assert after == before
        assert c.get("last").mod_revision == revision
        assert c.put("next", "y").revision == revision + 1  # the revision counter survived too
    # and a clean stop (SIGTERM) of all of them, too
    for i in cluster.ids:
        assert cluster.stop(i) == 0
    cluster.start_all()
    cluster.leader()
    with Client(cluster.endpoints()) as c:
        assert len(c.list()) == len(before) + 2


def test_serializable_reads_may_be_stale_linearizable_reads_never_are(cluster):
    with Client(cluster.endpoints()) as c:
        c.put("x", "old")
        wait_until(lambda: all(cluster.status(i)["kv"]["revision"] == 1 for i in cluster.ids),
                   10, what="all members applied x=old")
    lagging = cluster.ids[-1]
    cluster.kill(lagging)
    others = cluster.ids[:-1]
    with Client(cluster.endpoints(others)) as c:
        c.put("x", "new")
    for i in others:
        cluster.kill(i)
    cluster.start(lagging)  # alone: it has x=old and no quorum to learn otherwise
    wait_until(lambda: cluster.status(lagging), 10, what="the lone member answers")
    r = cluster.cli("get", "x", "--serializable", ids=[lagging])
    assert r.returncode == 0 and r.stdout == "old\n"  # stale, as asked
    r = cluster.procs.run("get", "x", "--timeout", "2", "--endpoints", cluster.client[lagging])
    assert r.returncode == 3, r  # linearizable: refuses rather than answer stale
    assert "unavailable" in r.stderr
    for i in others:
        cluster.start(i)
    cluster.leader()
    r = cluster.cli("get", "x", ids=[lagging])
    assert r.returncode == 0 and r.stdout == "new\n"


def test_cas_semantics_and_racing_cas(cluster):
    r = cluster.cli("cas", "--absent", "lock", "a")
    assert r.returncode == 0
    r = cluster.cli("cas", "--absent", "lock", "b")
    assert r.returncode == 1 and "cas mismatch" in r.stderr
    r = cluster.cli("cas", "lock", "b", "c")
    assert r.returncode == 1
    out = cluster.cli_json("cas", "lock", "a", "c")
    assert out["succeeded"] is True
    assert cluster.cli("get", "lock").stdout == "c\n"

    # many clients race to increment one counter with cas; no increment is lost or doubled
    async def worker(ids, n, wins):
        async with AsyncClient(cluster.endpoints(ids)) as c:
            done = 0
            while done < n:
                kv = await c.get("counter")
                cur = int(kv.value) if kv else 0
                res = await c.cas("counter", None if kv is None else kv.value, str(cur + 1))
                if res.succeeded:
                    done += 1
                    wins.append(cur + 1)

    async def race():
        wins: list[int] = []
        ids = cluster.ids
        await asyncio.gather(*(worker([ids[k % 3]], 10, wins) for k in range(6)))
        return wins

    wins = asyncio.run(race())
    assert sorted(wins) == list(range(1, 61))  # each value won exactly once
    assert cluster.cli("get", "counter").stdout == "60\n"


def _frame_reply(sock: socket.socket) -> dict:
    header = sock.recv(4, socket.MSG_WAITALL)
    (n,) = struct.unpack(">I", header)
    return msgpack.unpackb(sock.recv(n, socket.MSG_WAITALL), raw=False)


def test_bad_input_gets_a_clear_error_and_changes_nothing(cluster):
    cluster.cli("put", "k", "v")
    member = cluster.ids[0]
    host, port = cluster.client[member].split(":")

    def revision():
        return cluster.status(member)["kv"]["revision"]

    rev = revision()
    r = cluster.cli("put", "x" * 1025, "v")
    assert r.returncode == 2 and "key is 1025 bytes, the limit is 1024" in r.stderr
    r = cluster.procs.run("put", "big", "--endpoints", cluster.endpoints(),
                          input="v" * (1024 * 1024 + 1))
    assert r.returncode == 2 and "value is 1048577 bytes" in r.stderr
    r = cluster.procs.run("put", "big", "--endpoints", cluster.endpoints(),
                          input="v" * (1024 * 1024))
    assert r.returncode == 0, r.stderr  # exactly the limit is fine (through raft as fragments)
    rev += 1
    import subprocess

    r = subprocess.run([sys.executable.encode(), b"-m", b"meshraft.cli", b"put", b"bad\xff",
                        b"v", b"--endpoints", cluster.endpoints().encode()],
                       capture_output=True, timeout=30)
    assert r.returncode == 2 and b"not valid UTF-8" in r.stderr

    # garbage with a sane length: an error reply, and the connection keeps working
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")
        reply = _frame_reply(s)
        assert reply["error"] == "bad-request" and reply["id"] is None
        s.sendall(p.encode_frame({"id": 1, "op": "frobnicate", "key": b"k"}))
        reply = _frame_reply(s)
        assert reply["id"] == 1 and reply["error"] == "bad-request"
        assert "unknown operation" in reply["message"]
        s.sendall(p.encode_frame({"id": 2, "op": "get", "key": b"k"}))
        assert _frame_reply(s)["result"]["kv"]["value"] == b"v"
    # garbage that breaks the framing: an error reply, then the connection closes
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        reply = _frame_reply(s)
        assert reply["error"] == "too-large"
        assert s.recv(1) == b""
    # a truncated frame: closed, nothing applied
    with socket.create_connection((host, int(port)), timeout=5) as s:
        frame = p.encode_frame({"id": 1, "op": "put", "key": b"trunc", "value": b"x" * 100})
        s.sendall(frame[:30])
        s.shutdown(socket.SHUT_WR)
        reply = _frame_reply(s)
        assert "truncated" in reply["message"]
    assert revision() == rev
    with Client(cluster.endpoints()) as c:
        assert c.get("trunc") is None
        assert c.put("still", "working").revision == rev + 1
    assert all(cluster.members[i].alive() for i in cluster.ids)


def test_cli_exit_codes_and_json(cluster):
    out = cluster.cli_json("put", "a", "1")
    assert out["revision"] == 1
    cluster.cli("put", "a", "2")
    out = cluster.cli_json("get", "a")
    assert (out["value"], out["create_revision"], out["mod_revision"], out["version"]) == (
        "2", 1, 2, 2)
    r = cluster.cli("get", "nope")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    out = cluster.cli_json("delete", "a")
    assert out == {"key": "a", "deleted": 1, "revision": 3}
    r = cluster.cli("put")  # no KEY: a usage error
    assert r.returncode == 2 and "Missing argument 'KEY'" in r.stderr
    r = cluster.procs.run("get", "a", "--timeout", "1", "--endpoints", "127.0.0.1:1")
    assert r.returncode == 3 and r.stderr.startswith("meshraft: ")
    leader = cluster.leader()
    st = json.loads(cluster.procs.run("status", "--json", "--endpoints",
                                      cluster.client[leader]).stdout)
    assert st["id"] == leader and st["role"] == "leader" and st["leader"] == leader
    assert st["commit_index"] >= 3 and st["applied_index"] >= 3 and st["term"] >= 1
    assert set(st["progress"]) >= set(cluster.ids) - {leader}
    assert "peers" in st["mesh"] and "routes" in st["mesh"]
    follower = next(i for i in cluster.ids if i != leader)
    st = json.loads(cluster.procs.run("status", "--json", "--endpoints",
                                      f"{cluster.client[follower]},{cluster.client[leader]}")
                    .stdout)
    assert st["id"] == follower and st["role"] == "follower" and st["leader"] == leader
    text = cluster.procs.run("status", "--endpoints", cluster.client[leader]).stdout
    assert "role:           leader" in text and "match index:" in text


def test_writes_through_a_follower_are_forwarded(cluster):
    leader = cluster.leader()
    follower = next(i for i in cluster.ids if i != leader)
    with Client([cluster.client[follower]]) as c:
        for i in range(20):
            c.put(f"f{i}", str(i))
        assert len(c.list("f")) == 20


@pytest.mark.soak
def test_concurrent_clients_soak(cluster):
    """Many concurrent writers through every member for a while; counts add up."""
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            with Client(cluster.endpoints([cluster.ids[k % 3]])) as c:
                for i in range(200):
                    c.put(f"s{k}-{i}", "x")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with Client(cluster.endpoints()) as c:
        assert len(c.list("s")) == 1200


def test_cluster_helper_runs_the_chosen_transport(procs):
    c = Cluster(procs, n=1)
    c.start_all()
    c.leader()
    st = c.status("1")
    assert st["transport"] == c.transport


def test_serve_with_a_mesh_password(procs):
    if TRANSPORT != "mesh":
        pytest.skip(f"this run uses --transport {TRANSPORT}; the password is a mesh feature")
    secret = procs.tmpdir("secret") / "password"
    secret.write_text("correct horse battery staple\n")
    c = Cluster(procs, n=3)
    for i in c.ids:
        c.members[i] = procs.start(
            "serve", "--id", i, "--peers", c.peers_arg, "--client", c.client[i],
            "--data-dir", str(c.dirs[i]), "--password-file", str(secret), name=f"node{i}")
    c.leader()
    r = c.cli("put", "k", "v")
    assert r.returncode == 0, r.stderr
    st = c.status("1")
    assert st["mesh"]["password"] is True
    assert {p["name"] for p in st["mesh"]["peers"]} == set(c.ids)
    assert all(link["encrypted"] for link in st["mesh"]["links"].values())
    # an empty password file is refused up front, with a clear message
    empty = secret.parent / "empty"
    empty.write_text("")
    r = procs.run("serve", "--id", "1", "--peers", c.peers_arg, "--password-file", str(empty))
    assert r.returncode == 2 and "empty" in r.stderr


def test_snapshots_carry_the_data_and_the_dedup_table(procs):
    """Snapshot every 20 entries: a whole-cluster restart restores from snapshots, and a
    member that missed many entries catches up by installing one."""
    c = Cluster(procs, extra_args=("--snapshot-entries", "20"))
    c.start_all()
    c.leader()
    with Client(c.endpoints()) as cl:
        for i in range(120):
            cl.put(f"a{i:03d}", str(i))
    wait_until(lambda: all(c.status(i)["storage"]["snapshot_index"] > 0 for i in c.ids), 20,
               what="every member took a snapshot")
    lagging = c.ids[-1]
    c.kill(lagging)
    others = c.ids[:-1]
    with Client(c.endpoints(others)) as cl:
        for i in range(120):
            cl.put(f"b{i:03d}", str(i))
    c.start(lagging)
    with Client([c.client[lagging]]) as cl:
        wait_until(lambda: len(cl.list("b", serializable=True)) == 120, 30,
                   what="the lagging member catches up")
        assert cl.get("a000", serializable=True).value == b"0"
    assert c.status(lagging)["stats"]["snapshots_installed"] >= 1  # not a log replay
    for i in c.ids:
        c.stop(i)
    c.start_all()
    c.leader()
    with Client(c.endpoints()) as cl:
        assert len(cl.list("a")) == 120 and len(cl.list("b")) == 120
        assert cl.put("after", "x").revision == 241

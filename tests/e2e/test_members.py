"""Membership from the CLI while the cluster serves: add a learner, let it catch up,
promote it, remove an old member."""

from __future__ import annotations

import json
import threading

from e2e_cluster import Cluster, free_ports, wait_until

from meshraft.kv.client import Client, MeshraftError


def test_add_learner_promote_and_remove_from_the_cli(procs):
    c = Cluster(procs, n=3)
    c.start_all()
    c.leader()
    with Client(c.endpoints()) as cl:
        for i in range(30):
            cl.put(f"k{i}", str(i))
    peer_port, client_port = free_ports(2)
    new_peer, new_client = f"127.0.0.1:{peer_port}", f"127.0.0.1:{client_port}"
    r = c.cli("member", "add", "4", new_peer, "--learner")
    assert r.returncode == 0, r.stderr
    assert "added learner 4" in r.stdout
    peers = c.peers_arg + f",4={new_peer}"
    d4 = procs.tmpdir("node4")
    procs.start("serve", "--id", "4", "--peers", peers, "--client", new_client, "--data-dir",
                str(d4), "--transport", c.transport, "--join", name="node4")
    with Client([new_client]) as cl:
        wait_until(lambda: len(cl.list("k", serializable=True)) == 30, 30,
                   what="the learner catches up")
    r = c.cli("member", "promote", "4")
    assert r.returncode == 0, r.stderr
    members = c.cli_json("member", "list")["members"]
    assert {m["id"]: m["role"] for m in members} == {"1": "voter", "2": "voter",
                                                     "3": "voter", "4": "voter"}
    # each member's peer address (HOST:PORT), whatever the transport addresses it by
    assert {m["id"]: m["address"] for m in members} == {**c.peer, "4": new_peer}
    # remove a member that is not the leader, stop it; the cluster keeps serving
    leader = c.leader()
    gone = next(i for i in c.ids if i != leader)
    r = c.cli("member", "remove", gone)
    assert r.returncode == 0, r.stderr
    c.stop(gone)
    rest = [i for i in c.ids if i != gone]
    with Client(c.endpoints(rest) + "," + new_client) as cl:
        assert cl.put("after", "x").revision == 31
    with Client([new_client]) as cl:
        assert cl.get("after").value == b"x"  # linearizable read on the new voter
    st = json.loads(c.procs.run("member", "list", "--json", "--endpoints",
                                new_client).stdout)
    assert sorted(m["id"] for m in st["members"]) == sorted([*rest, "4"])
    # bad requests get a clear error and change nothing
    r = c.procs.run("member", "add", "5", "not-an-address", "--endpoints", new_client)
    assert r.returncode == 2 and "HOST:PORT" in r.stderr
    r = c.procs.run("member", "add", "5", "127.0.0.1:1", "--learner", "--endpoints",
                    "127.0.0.1:1", "--timeout", "1")
    assert r.returncode == 3 and "unavailable" in r.stderr
    assert len(c.cli_json("member", "list", ids=rest)["members"]) == 3


def _join(procs, c: Cluster, nid: str, extra_peers: str = ""):
    """Start member ``nid`` empty, with --join, knowing one existing member's address."""
    peer_port, client_port = free_ports(2)
    peer, client = f"127.0.0.1:{peer_port}", f"127.0.0.1:{client_port}"
    d = procs.tmpdir(f"node{nid}")
    p = procs.start("serve", "--id", nid, "--join", "--peers", f"1={c.peer['1']}{extra_peers}",
                    "--listen", peer, "--client", client, "--data-dir", str(d),
                    "--transport", c.transport, name=f"node{nid}")
    return p, peer, client, d


def test_membership_refusals_removed_member_and_id_reuse(procs):
    c = Cluster(procs, n=3)
    c.start_all()
    c.leader()
    # promote of a non-member: refused at once with a clear error (not a timeout)
    r = c.cli("member", "promote", "9", "--timeout", "30")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "9 is not a member" in r.stderr and "learner first" in r.stderr
    r = c.cli("member", "remove", "9", "--timeout", "30")
    assert r.returncode == 2 and "9 is not a member" in r.stderr
    # also when the only member asked is a follower (it judges after a read barrier)
    follower = next(i for i in c.ids if i != c.leader())
    r = c.cli("member", "promote", "9", "--timeout", "30", ids=[follower])
    assert r.returncode == 2 and "9 is not a member" in r.stderr, r.stderr
    r = c.cli("member", "add", "2", "127.0.0.1:1", "--timeout", "30")
    assert r.returncode == 2 and "2 is already a voter" in r.stderr
    # a valid change asked of a follower alone: it names the leader at once, instead of
    # retrying the follower until --timeout ("unavailable for 30s")
    leader = c.leader()
    r = c.cli("member", "add", "7", "127.0.0.1:1", "--timeout", "30", ids=[follower])
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert f"the leader, member {leader}, is not among the endpoints" in r.stderr, r.stderr
    assert "unavailable for" not in r.stderr
    assert "7" not in [m["id"] for m in c.cli_json("member", "list")["members"]]
    # a learner far behind is not promoted: the refusal says where it stands
    with Client(c.endpoints()) as cl:
        for i in range(130):  # more than the core's promote lag (100)
            cl.put(f"k{i}", str(i))
    r = c.cli("member", "add", "4", "127.0.0.1:9", "--learner")  # never started: match 0
    assert r.returncode == 0, r.stderr
    members = c.cli_json("member", "list")
    row4 = next(m for m in members["members"] if m["id"] == "4")
    assert row4["role"] == "learner" and row4["match"] == 0
    assert members["last_index"] > 100
    r = c.cli("member", "promote", "4", "--timeout", "30")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "4 has not caught up: its match index is 0" in r.stderr
    assert c.cli("member", "remove", "4").returncode == 0
    # ids are never reused
    r = c.cli("member", "add", "4", "127.0.0.1:9", "--learner", "--timeout", "30")
    assert r.returncode == 2 and "ids are never reused" in r.stderr
    assert c.cli_json("member", "list")["removed_ids"] == ["4"]
    # a removed member stops serving, says so, and cannot come back with its data
    leader = c.leader()
    gone = next(i for i in c.ids if i != leader)
    assert c.cli("member", "remove", gone).returncode == 0
    wait_until(lambda: c.status(gone)["role"] == "removed", 10, what=f"{gone} learns it's removed")
    st = c.status(gone)
    assert st["removed"] is True and st["leader"] is None
    with Client([c.client[gone]], timeout=2) as cl:
        try:
            cl.get("k1", serializable=True)
            raise AssertionError("a removed member served a read")
        except MeshraftError as exc:
            assert "was removed from the cluster" in exc.message
    c.stop(gone)
    p = c.start(gone)  # same data dir
    assert p.wait(20) == 3, p.log()[-2000:]
    assert "was removed from the cluster" in p.log() and "wipe" in p.log()
    # nor under another id
    p = procs.start("serve", "--id", "8", "--join", "--peers", f"1={c.peer['1']}",
                    "--listen", f"127.0.0.1:{free_ports(1)[0]}", "--client",
                    f"127.0.0.1:{free_ports(1)[0]}", "--data-dir", str(c.dirs[gone]),
                    "--transport", c.transport, name="node8-old-dir")
    assert p.wait(20) == 3 and "wipe" in p.log()
    rest = [i for i in c.ids if i != gone]
    with Client(c.endpoints(rest)) as cl:
        assert cl.get("k129").value == b"129"


def test_join_with_the_address_of_one_member(procs):
    """`serve --join --peers 1=ADDR --listen ADDR`: the new member knows one address."""
    c = Cluster(procs, n=3)
    c.start_all()
    c.leader()
    with Client(c.endpoints()) as cl:
        for i in range(20):
            cl.put(f"j{i}", str(i))
    p, peer, client, _ = _join(procs, c, "4")
    assert c.cli("member", "add", "4", peer, "--learner").returncode == 0
    with Client([client]) as cl:
        wait_until(lambda: len(cl.list("j", serializable=True)) == 20, 30,
                   what="the learner catches up")

    def promoted():
        r = c.cli("member", "promote", "4")
        assert "not caught up" in r.stderr or r.returncode == 0, r.stderr
        return r.returncode == 0

    wait_until(promoted, 30, 0.5, what="promotion of 4")
    r = c.cli("member", "list")
    assert r.returncode == 0
    lines = [ln.split("\t") for ln in r.stdout.splitlines()[1:] if ln and ln[0].isdigit()]
    assert {ln[0]: ln[1] for ln in lines} == {"1": "voter", "2": "voter", "3": "voter",
                                              "4": "voter"}
    with Client([client]) as cl:
        assert cl.put("via4", "x").revision > 20
    assert p.alive()
    # two changes at once: one at a time, the other is told "busy, retry" and its
    # client retries until the first is applied; both end up done
    errors: list[Exception] = []

    def add(nid: str) -> None:
        try:
            with Client(c.endpoints(), timeout=10) as cl:
                cl.add_member(nid, f"127.0.0.1:{free_ports(1)[0]}", learner=True)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(nid,)) for nid in ("5", "6")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    members = {m["id"]: m["role"] for m in c.cli_json("member", "list")["members"]}
    assert members["5"] == members["6"] == "learner"


def test_member_removed_while_down_learns_it_when_it_comes_back(procs):
    c = Cluster(procs, n=3)
    c.start_all()
    leader = c.leader()
    down = next(i for i in c.ids if i != leader)
    c.stop(down)
    rest = [i for i in c.ids if i != down]
    r = c.cli("member", "remove", down, ids=rest)
    assert r.returncode == 0, r.stderr
    with Client(c.endpoints(rest)) as cl:
        cl.put("after", "x")
    c.start(down)  # its data dir does not know yet: it starts, and is told
    wait_until(lambda: c.status(down)["role"] == "removed", 20,
               what=f"{down} learns it was removed while it was down")
    r = c.cli("get", "after", "--timeout", "2", ids=[down])
    assert r.returncode == 3 and "removed" in r.stderr
    c.stop(down)
    p = c.start(down)
    assert p.wait(20) == 3 and "wipe" in p.log()

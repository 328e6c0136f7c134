"""Membership from the CLI while the cluster serves: add a learner, let it catch up,
promote it, remove an old member."""

from __future__ import annotations

import json

from e2e_cluster import Cluster, free_ports, wait_until

from meshraft.kv.client import Client


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

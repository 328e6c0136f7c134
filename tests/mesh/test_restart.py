"""A restarted peer (same name, new uid) replaces its old self everywhere, and
peers that become unreachable are garbage-collected."""

from __future__ import annotations

from meshtest import eventually, mesh_fixture  # noqa: F401  (fixture)


def uid_seen(router, name):
    return next((p["uid"] for p in router.status()["peers"] if p["name"] == name), None)


async def test_restarted_peer_replaces_its_old_self_everywhere(mesh):
    b = await mesh("b")
    a = await mesh("a", peers=[b], link_filter={"c"})  # a reaches c only through b
    c = await mesh("c", peers=[b], link_filter={"a"})
    await eventually(lambda: a.routes.next_hop("c") == "b", 10, "a sees c via b")
    old_uid = f"{c.uid:016x}"
    assert uid_seen(a, "c") == old_uid
    await c.stop()
    c2 = await mesh("c", peers=[b], link_filter={"a"})  # new life, new port
    new_uid = f"{c2.uid:016x}"
    assert new_uid != old_uid
    await eventually(lambda: uid_seen(a, "c") == new_uid and uid_seen(b, "c") == new_uid,
                     10, "the new life of c known at a and b")
    for r in (a, b):
        assert [p["name"] for p in r.status()["peers"]].count("c") == 1
    got = []
    c2.register_unicast("t", lambda src, p: got.append((src, p)))
    await eventually(lambda: a.routes.next_hop("c") == "b", 5, "route to the new c")
    assert a.send_unicast("t", "c", b"hello again")
    await eventually(lambda: got == [("a", b"hello again")], 5, "unicast to the new life")


async def test_restart_on_the_same_address_replaces_the_link(mesh):
    a = await mesh("a")
    b = await mesh("b", peers=[a])
    await eventually(lambda: "b" in a.links, 5, "a-b")
    port = b.address[1]
    await b.stop()
    b2 = await mesh("b", listen=("127.0.0.1", port))  # a redials the known address
    await eventually(lambda: "b" in a.links and a.links["b"].remote_uid == b2.uid, 10,
                     "a linked to b's new life")
    assert uid_seen(a, "b") == f"{b2.uid:016x}"


async def test_unreachable_peers_are_garbage_collected(mesh):
    a = await mesh("a")
    b = await mesh("b", peers=[a])
    c = await mesh("c", peers=[a])
    await eventually(lambda: all(len(r.links) == 2 for r in (a, b, c)), 10, "full mesh")
    await c.stop()
    await eventually(lambda: uid_seen(a, "c") is None and uid_seen(b, "c") is None, 10,
                     "c forgotten by a and b")
    assert a.stats["peers_gc"] >= 1
    assert "c" not in a.status()["routes"]


async def test_topology_anti_entropy_repairs_a_lost_update(mesh):
    a = await mesh("a", gossip_interval=0.1)
    b = await mesh("b", peers=[a], gossip_interval=0.1)
    c = await mesh("c", peers=[b], link_filter={"a"}, gossip_interval=0.1)
    await eventually(lambda: uid_seen(a, "c") is not None, 10, "a knows c")
    # a loses c's record (as if the update had been dropped): digests repair it
    del a.topology.peers["c"]
    a.topology.generation += 1
    assert uid_seen(a, "c") is None
    await eventually(lambda: uid_seen(a, "c") == f"{c.uid:016x}", 5, "c's record back at a")
    assert a.routes.next_hop("c") == "b"

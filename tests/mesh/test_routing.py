"""Routing: relaying when there is no direct link, routes that move when a link
dies, liveness (silent links are closed), and the link filter."""

from __future__ import annotations

import logging

from mesh_rawpeer import RawPeer
from meshtest import eventually, full_mesh, mesh_fixture  # noqa: F401  (fixture)


def inbox(router, channel="t"):
    got: list[tuple[str, bytes]] = []
    router.register_unicast(channel, lambda src, payload: got.append((src, payload)))
    return got


async def test_unicast_is_relayed_when_the_filter_forbids_the_direct_link(mesh):
    b = await mesh("b")
    a = await mesh("a", peers=[b], link_filter={"c"})
    c = await mesh("c", peers=[b], link_filter={"a"})
    got = inbox(c)
    await eventually(lambda: a.routes.next_hop("c") == "b", 10, "a route a->c via b")
    assert "c" not in a.links and "a" not in c.links
    assert a.send_unicast("t", "c", b"over the bridge")
    await eventually(lambda: got, 5, "relayed datagram at c")
    assert got == [("a", b"over the bridge")]
    assert b.stats["relayed"] >= 1
    assert a.status()["routes"] == {"b": "b", "c": "b"}


async def test_route_moves_when_a_link_dies(mesh):
    b = await mesh("b")
    a = await mesh("a", peers=[b], link_filter={"c"})
    c = await mesh("c", peers=[b], link_filter={"a"})
    d = await mesh("d", peers=[b])
    got = inbox(c)
    # two equal paths a-b-c and a-d-c: the tie-break picks b, deterministically
    await eventually(lambda: "d" in b.links and set(a.links) == {"b", "d"}
                     and set(c.links) == {"b", "d"}, 10, "the diamond a-{b,d}-c")
    await eventually(lambda: a.routes.next_hop("c") == "b", 5, "a->c via b")
    # the link a-b dies (b refuses a from now on)
    b.set_link_filter({"a"})
    await eventually(lambda: a.routes.next_hop("c") == "d", 5, "a->c moved to d")
    assert a.send_unicast("t", "c", b"via d")
    await eventually(lambda: got, 5, "datagram via d")
    assert got == [("a", b"via d")]
    # d goes away entirely: no route left
    await d.stop()
    await eventually(lambda: a.routes.next_hop("c") is None, 5, "no route to c")
    assert not a.send_unicast("t", "c", b"nowhere")


async def test_silent_link_is_closed_after_the_timeout_and_routes_move(mesh, caplog):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    a = await mesh("a", heartbeat=0.05, link_timeout=0.4)
    raw = await RawPeer.connect(*a.address)
    try:
        await raw.handshake(name="mute")
        await eventually(lambda: "mute" in a.links, 2, "the raw peer's link")
        # the raw peer never sends again: a heartbeat timeout closes it
        await eventually(lambda: "mute" not in a.links, 3, "silent link closed")
        assert "heartbeat timeout" in caplog.text
        await eventually(lambda: "mute" not in a.status()["routes"], 2, "route gone")
    finally:
        raw.close()


async def test_handshake_that_never_finishes_times_out(mesh, caplog):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    a = await mesh("a", heartbeat=0.05, link_timeout=0.3)
    raw = await RawPeer.connect(*a.address)
    try:
        assert await raw.closed_by_peer(3.0)
        assert "handshake timeout" in caplog.text
    finally:
        raw.close()


async def test_link_filter_at_runtime_drops_and_refuses(mesh):
    a = await mesh("a")
    b = await mesh("b", peers=[a])
    await eventually(lambda: full_mesh([a, b]), 5, "a-b")
    a.set_link_filter({"b"})
    await eventually(lambda: not a.links and not b.links, 5, "link dropped")
    # b keeps dialling; a keeps refusing.  A link enters `links` only once both sides
    # accepted its handshake, so b never lists a link that a refused, not even for a
    # moment: checked at every poll and, in between, by the count of links set up.
    ups = (a.stats["links_established"], b.stats["links_established"])
    refused = a.stats["links_refused"]

    def refused_three_more_times() -> bool:
        assert not a.links and not b.links
        return a.stats["links_refused"] >= refused + 3

    await eventually(refused_three_more_times, 5, "three more refusals", interval=0.002)
    assert not a.links and not b.links
    assert (a.stats["links_established"], b.stats["links_established"]) == ups
    assert a.link_filter == {"b"}
    a.set_link_filter(set())
    await eventually(lambda: full_mesh([a, b]), 5, "link back after clearing the filter")

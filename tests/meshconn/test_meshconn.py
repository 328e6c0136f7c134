"""MeshPacketConn: UDP semantics over the mesh, checked through the
DatagramTransport/DatagramProtocol interface (and the same protocol over UDP)."""

from __future__ import annotations

import asyncio
import errno
import random
import time

import msgpack
import pytest
from meshconn_helpers import Collector, Echo, RawPeer, eventually, mesh_fixture  # noqa: F401

from meshraft.meshconn import MAX_DATAGRAM_SIZE, create_mesh_endpoint


async def pair(kind, mesh):
    """An echo server and a client endpoint; returns (client transport, client
    protocol, server address) for ``kind`` 'udp' or 'mesh'."""
    loop = asyncio.get_running_loop()
    if kind == "udp":
        await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        st, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        server_addr = st.get_extra_info("sockname")
        ct, cp = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
        return ct, cp, server_addr, [st, ct]
    a = await mesh("a")
    b = await mesh("b", peers=[a])
    await eventually(lambda: "b" in a.links and "a" in b.links, 5, "a-b")
    st, _ = await create_mesh_endpoint(b, Echo)
    ct, cp = await create_mesh_endpoint(a, Collector)
    return ct, cp, "b", [st, ct]


@pytest.mark.parametrize("kind", ["udp", "mesh"])
async def test_same_echo_protocol_over_udp_and_mesh(kind, mesh):
    ct, cp, server, closers = await pair(kind, mesh)
    try:
        rnd = random.Random(7)
        sent = [rnd.randbytes(rnd.choice([1, 100, 1400, 8192, 30000])) for _ in range(40)]
        sent.append(b"m" * MAX_DATAGRAM_SIZE)  # the documented maximum works on both
        for d in sent:
            ct.sendto(d, server)
            await asyncio.sleep(0.001)
        await eventually(lambda: len(cp.got) == len(sent), 5, "all echoes")
        # never split or corrupted: each datagram comes back whole (order may vary)
        assert sorted(d for d, _ in cp.got) == sorted(sent)
        assert all(addr == server for _, addr in cp.got)
        if kind == "mesh":  # (UDP's kernel reports EMSGSIZE via error_received instead)
            with pytest.raises(ValueError, match="exceeds the maximum"):
                ct.sendto(b"x" * (MAX_DATAGRAM_SIZE + 1), server)
    finally:
        for t in closers:
            t.close()


async def test_transport_interface(mesh):
    a = await mesh("a")
    t, p = await create_mesh_endpoint(a, Collector, channel="raft")
    assert isinstance(t, asyncio.DatagramTransport)
    assert t.get_extra_info("sockname") == "a"
    assert t.get_extra_info("max_datagram_size") == MAX_DATAGRAM_SIZE
    assert t.get_write_buffer_size() == 0
    t.set_write_buffer_limits(high=1000)
    assert t.get_write_buffer_limits() == (250, 1000)
    assert t.get_protocol() is p and not t.is_closing()
    with pytest.raises(TypeError):
        t.sendto("text", "a")
    with pytest.raises(TypeError):
        t.sendto(b"x", ("127.0.0.1", 1))
    with pytest.raises(ValueError):
        t.sendto(b"x")  # no address and not connected
    with pytest.raises(ValueError):
        await create_mesh_endpoint(a, Collector, channel="raft")  # channel taken
    with pytest.raises(ValueError):
        await create_mesh_endpoint(a, Collector, channel="x", max_datagram_size=a.max_payload + 1)
    t.abort()
    assert t.is_closing()
    await asyncio.sleep(0.01)
    assert p.lost == [None]
    t.close()  # idempotent
    t.sendto(b"after close", "a")  # ignored, like a closed UDP transport
    await asyncio.sleep(0.01)
    assert p.lost == [None] and not p.got
    # the channel is free again
    t2, _ = await create_mesh_endpoint(a, Collector, channel="raft")
    t2.close()


async def test_datagram_to_own_name_is_delivered_locally(mesh):
    a = await mesh("a")
    t, p = await create_mesh_endpoint(a, Collector)
    t.sendto(b"me", "a")
    await eventually(lambda: p.got, 2, "local delivery")
    assert p.got == [(b"me", "a")]
    t.close()


async def test_channels_are_independent(mesh):
    a = await mesh("a")
    b = await mesh("b", peers=[a])
    await eventually(lambda: "b" in a.links, 5, "a-b")
    tr, pr = await create_mesh_endpoint(b, Collector, channel="raft")
    to, po = await create_mesh_endpoint(b, Collector, channel="other")
    sr, _ = await create_mesh_endpoint(a, Collector, channel="raft")
    so, _ = await create_mesh_endpoint(a, Collector, channel="other")
    sr.sendto(b"for raft", "b")
    so.sendto(b"for other", "b")
    await eventually(lambda: pr.got and po.got, 2, "both channels")
    await asyncio.sleep(0.05)
    assert pr.got == [(b"for raft", "a")] and po.got == [(b"for other", "a")]
    tr.close()
    sr.sendto(b"raft is closed", "b")
    so.sendto(b"other still open", "b")
    await eventually(lambda: len(po.got) == 2, 2, "other channel unaffected")
    assert len(pr.got) == 1
    for t in (to, sr, so):
        t.close()


async def test_no_route_is_ehostunreach_and_later_sends_work(mesh):
    a = await mesh("a")
    t, p = await create_mesh_endpoint(a, Collector)
    t.sendto(b"anyone?", "b")  # no exception from deep in the mesh
    await eventually(lambda: p.errors, 2, "error_received")
    assert isinstance(p.errors[0], OSError) and p.errors[0].errno == errno.EHOSTUNREACH
    assert t.stats["no_route"] == 1
    b = await mesh("b", peers=[a])
    tb, pb = await create_mesh_endpoint(b, Collector)
    await eventually(lambda: "b" in a.links, 5, "route to b")
    t.sendto(b"now?", "b")
    await eventually(lambda: pb.got, 2, "datagram once a route exists")
    assert pb.got == [(b"now?", "a")] and len(p.errors) == 1
    t.close()
    tb.close()


async def test_datagram_is_relayed_to_a_peer_without_a_direct_link(mesh):
    b = await mesh("b")
    a = await mesh("a", peers=[b], link_filter={"c"})
    c = await mesh("c", peers=[b], link_filter={"a"})
    ta, pa = await create_mesh_endpoint(a, Collector)
    tc, _ = await create_mesh_endpoint(c, Echo)
    await eventually(lambda: a.routes.next_hop("c") == "b", 10, "route a->c via b")
    ta.sendto(b"ping via b", "c")
    await eventually(lambda: pa.got, 5, "echo from c via b")
    assert pa.got == [(b"ping via b", "c")]
    assert b.stats["relayed"] >= 2
    ta.close()
    tc.close()


async def test_full_receive_buffer_drops_and_counts(mesh):
    a = await mesh("a")
    b = await mesh("b", peers=[a])
    await eventually(lambda: "b" in a.links, 5, "a-b")

    class Slow(Collector):
        def datagram_received(self, data, addr):
            time.sleep(0.002)  # a consumer slower than the link
            super().datagram_received(data, addr)

    tb, pb = await create_mesh_endpoint(b, Slow, recv_buffer=16)
    ta, _ = await create_mesh_endpoint(a, Collector)
    for i in range(300):
        ta.sendto(i.to_bytes(4, "big"), "b")
    await eventually(lambda: tb.stats["received"] + tb.stats["dropped_full"] == 300, 10,
                     "every datagram delivered or counted as dropped")
    assert tb.stats["dropped_full"] > 0
    assert len(tb._inbox) <= 16
    # what arrived is whole and in the order sent (TCP below), just with gaps
    nums = [int.from_bytes(d, "big") for d, _ in pb.got]
    assert nums == sorted(nums) and len(nums) == tb.stats["received"]
    assert "a" in b.links  # the link survived the flood
    ta.close()
    tb.close()


async def test_malformed_packets_are_dropped_and_counted(mesh):
    a = await mesh("a")
    t, p = await create_mesh_endpoint(a, Collector, max_datagram_size=100)
    raw = await RawPeer.connect(*a.address)
    try:
        await raw.handshake(name="evil")
        await eventually(lambda: "evil" in a.links, 2, "raw link")
        for bad in (12345, "a string", [b"x"], None, b"y" * 101):
            raw.send_frame(msgpack.packb([1, "raft", "evil", "a", 5, bad]))
        raw.send_frame(msgpack.packb([1, "raft", "evil", "a", 5, b"good"]))
        await eventually(lambda: p.got, 2, "the good datagram")
        assert p.got == [(b"good", "evil")]
        assert t.stats["dropped_malformed"] == 5
        assert "evil" in a.links  # a bad datagram is not a bad frame
    finally:
        raw.close()
        t.close()


async def test_protocol_exceptions_go_to_the_loop_handler(mesh):
    a = await mesh("a")
    loop = asyncio.get_running_loop()
    seen = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
    try:
        class Buggy(Collector):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                if data == b"bug":
                    raise RuntimeError("protocol bug")

        t, p = await create_mesh_endpoint(a, Buggy)
        t.sendto(b"bug", "a")
        t.sendto(b"fine", "a")
        await eventually(lambda: len(p.got) == 2, 2, "both datagrams")
        assert len(seen) == 1 and isinstance(seen[0]["exception"], RuntimeError)
        t.close()
    finally:
        loop.set_exception_handler(old)


async def test_router_stop_ends_its_endpoints(mesh):
    a = await mesh("a")
    t, p = await create_mesh_endpoint(a, Collector)
    await a.stop()
    await asyncio.sleep(0.01)
    assert t.is_closing()
    assert len(p.lost) == 1 and isinstance(p.lost[0], ConnectionAbortedError)

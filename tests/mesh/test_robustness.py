"""Hostile and broken input: garbage, oversized, truncated and malformed frames
close only their own link with a logged reason; versions that do not match are
refused clearly; a slow receiver never stalls the mesh; every queue is bounded."""

from __future__ import annotations

import asyncio
import logging
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mesh_rawpeer import RawPeer
from meshtest import FAST, eventually, mesh_fixture  # noqa: F401  (fixture)

from meshraft.mesh import Router


async def test_version_mismatch_is_refused_with_a_clear_log_on_both_sides(mesh, caplog):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    a = await mesh("a", protocol_versions=(1, 1))
    b = await mesh("b", peers=[a], protocol_versions=(2, 3))
    await eventually(lambda: caplog.text.count("protocol version mismatch") >= 2, 5,
                     "both sides log the mismatch")
    assert "[mesh a]" in caplog.text and "[mesh b]" in caplog.text
    lines = [r.getMessage() for r in caplog.records if "version mismatch" in r.getMessage()]
    assert any("[mesh a]" in m and "we speak 1..1, peer speaks 2..3" in m for m in lines)
    assert any("[mesh b]" in m and "we speak 2..3, peer speaks 1..1" in m for m in lines)
    assert not a.links and not b.links


async def test_highest_common_version_wins(mesh):
    a = await mesh("a", protocol_versions=(1, 3))
    b = await mesh("b", peers=[a], protocol_versions=(0, 2))
    await eventually(lambda: "b" in a.links, 5, "a-b")
    assert a.links["b"].version == b.links["a"].version == 2


async def test_oversized_frame_closes_the_link(mesh, caplog):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    a = await mesh("a", max_frame=64 * 1024)
    raw = await RawPeer.connect(*a.address)
    try:
        await raw.handshake()
        raw.send_raw(struct.pack(">I", 10_000_000) + b"x" * 100)
        assert await raw.closed_by_peer()
        assert "oversized frame" in caplog.text
    finally:
        raw.close()


async def test_oversized_handshake_frame_closes_the_connection(mesh, caplog):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    a = await mesh("a")
    raw = await RawPeer.connect(*a.address)
    try:
        raw.send_raw(struct.pack(">I", 100_000) + b"\0" * 5000)
        assert await raw.closed_by_peer()
        assert "oversized frame" in caplog.text
    finally:
        raw.close()


async def test_truncated_frame_at_eof_is_logged(mesh, caplog):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    a = await mesh("a")
    raw = await RawPeer.connect(*a.address)
    await raw.handshake(name="trunc")
    await eventually(lambda: "trunc" in a.links, 2, "raw link up")
    raw.send_raw(struct.pack(">I", 100) + b"only ten b")
    await raw.writer.drain()
    raw.close()
    await eventually(lambda: "trunc" not in a.links, 3, "link gone")
    assert "truncated frame" in caplog.text


async def test_truncated_handshake_frame_is_logged(mesh, caplog):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    a = await mesh("a")
    raw = await RawPeer.connect(*a.address)
    raw.send_raw(struct.pack(">I", 200) + b"half a hello")
    await raw.writer.drain()
    raw.close()
    await eventually(lambda: "ended in the handshake: truncated frame" in caplog.text, 3,
                     "the truncated handshake to be logged")
    assert not a.links


@pytest.mark.parametrize("msg, reason", [
    ([99], "unknown message kind"),
    ("not an array", "not a non-empty array"),
    ([1, "t", 5, "a", 3, b""], "bad header field types"),
    ([1, "t", "x"], "wrong number of fields"),
    ([3, "_topology", "x", [["bad"]]], "topology"),
    ([3, "_topology", "x", [["n", -1, 0, 0, "h", 1, []]]], "topology"),
    ([2, "", "x", 3, b"p"], "bad channel name"),
    ([3, "ch", "x", 12], "payload is not bytes"),
])
async def test_malformed_messages_close_the_link_with_a_reason(mesh, caplog, msg, reason):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    a = await mesh("a")
    await mesh("b", peers=[a])
    await eventually(lambda: "b" in a.links, 5, "a-b")
    raw = await RawPeer.connect(*a.address)
    try:
        await raw.handshake(name="evil")
        raw.send_frame(msgpack.packb(msg))
        assert await raw.closed_by_peer()
        assert reason in caplog.text
        assert "b" in a.links  # other links are untouched
    finally:
        raw.close()


async def test_slow_receiver_never_stalls_the_mesh_and_queues_stay_bounded(mesh):
    limit = 256 * 1024
    a = await mesh("a", write_limit=limit, link_timeout=5.0)
    b = await mesh("b", peers=[a])
    await eventually(lambda: "b" in a.links, 5, "a-b")
    got = []
    b.register_unicast("t", lambda src, p: got.append(p))
    raw = await RawPeer.connect(*a.address)
    try:
        await raw.handshake(name="sloth")  # ... and then never reads again
        await eventually(lambda: "sloth" in a.links, 2, "sloth linked")
        link = a.links["sloth"]
        payload = b"z" * 60_000
        for _ in range(30):
            for _ in range(20):
                a.send_unicast("t", "sloth", payload)
            await asyncio.sleep(0.01)
            queued = link.queued_bytes()
            assert queued <= limit + len(payload) + 64
        assert link.dropped_out > 0
        # the mesh still works: a fast peer gets its datagrams at once
        a.send_unicast("t", "b", b"still here")
        await eventually(lambda: got == [b"still here"], 2, "unicast to b")
    finally:
        raw.close()


async def test_raising_handlers_and_gossipers_are_contained(mesh):
    a = await mesh("a")
    b = await mesh("b", peers=[a])
    await eventually(lambda: "b" in a.links, 5, "a-b")

    def boom(src, payload):
        raise RuntimeError("handler bug")

    b.register_unicast("t", boom)
    a.send_unicast("t", "b", b"x")
    await eventually(lambda: b.stats["handler_errors"] == 1, 2, "handler error counted")
    assert "a" in b.links


async def test_garbage_payloads_do_not_reach_gossipers_as_non_bytes(mesh):
    class G:
        def __init__(self):
            self.seen = []

        def on_gossip_unicast(self, src, msg):
            self.seen.append(msg)

        def on_gossip_broadcast(self, src, update):
            return None

        def gossip(self):
            return None

        def on_gossip(self, msg):
            return None

    a = await mesh("a")
    g = G()
    a.new_gossip("g", g)
    raw = await RawPeer.connect(*a.address)
    try:
        await raw.handshake(name="evil")
        raw.send_frame(msgpack.packb([1, "g", "evil", "a", 5, 12345]))
        raw.send_frame(msgpack.packb([1, "g", "evil", "a", 5, b"fine"]))
        await eventually(lambda: g.seen, 2, "the well-formed message")
        assert g.seen == [b"fine"]
        assert a.stats["unicast_unknown_channel"] == 1
    finally:
        raw.close()


# ---------------------------------------------------------------- hypothesis
@pytest.fixture(scope="module")
def victim(bg_loop):
    """Routers a and b, linked, on a background loop; records loop exceptions."""
    errors: list[dict] = []
    bg_loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))

    async def setup():
        a = await Router.start("a", **FAST)
        b = await Router.start("b", peers=[f"127.0.0.1:{a.address[1]}"], **FAST)
        await eventually(lambda: "b" in a.links, 5, "a-b")
        return a, b

    a, b = asyncio.run_coroutine_threadsafe(setup(), bg_loop).result(10)
    yield bg_loop, a, b, errors

    async def teardown():
        await b.stop()
        await a.stop()

    asyncio.run_coroutine_threadsafe(teardown(), bg_loop).result(10)


from meshtest import bg_loop_fixture  # noqa: E402, F401  (fixture)

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=20) | st.floats(allow_nan=False),
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=20,
)
frames = st.one_of(
    st.binary(max_size=300),
    msgpack_values.map(lambda v: msgpack.packb(v)),
    st.tuples(st.integers(0, 5), st.lists(msgpack_values, max_size=6)).map(
        lambda t: msgpack.packb([t[0], *t[1]])),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.booleans(), st.lists(frames, min_size=1, max_size=4), st.binary(max_size=64))
def test_garbage_never_crashes_anything(victim, handshake, bodies, tail):
    loop, a, b, errors = victim

    async def attack():
        raw = await RawPeer.connect(*a.address)
        try:
            if handshake:
                await raw.handshake(name="fuzz")
            for body in bodies:
                raw.send_frame(body)
            raw.send_raw(tail)
            await raw.writer.drain()
            await raw.closed_by_peer(0.2)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            raw.close()
        await asyncio.sleep(0.01)
        return "b" in a.links and "a" in b.links, a.status()

    healthy, status = asyncio.run_coroutine_threadsafe(attack(), loop).result(10)
    assert healthy, status["links"]
    assert errors == []


structured = st.tuples(
    st.sampled_from([0, 1, 2, 3]),
    st.sampled_from(["_topology", "_topodigest", "_topodigest_r", "counter", "raft", "x"]),
    st.sampled_from(["fuzz", "a", "b", ""]),
    msgpack_values,
).map(lambda t: [t[0], t[1], t[2], t[3]] if t[0] in (0, 3) else
      [t[0], t[1], t[2], "a", 3, t[3]] if t[0] == 1 else [t[0], t[1], t[2], 3, t[3]])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(structured, min_size=1, max_size=4))
def test_well_framed_hostile_messages_never_crash_anything(victim, msgs):
    """Topology records, digests, gossip and unicast with hostile contents."""
    loop, a, b, errors = victim

    async def attack():
        raw = await RawPeer.connect(*a.address)
        try:
            await raw.handshake(name="fuzz")
            for m in msgs:
                raw.send_frame(msgpack.packb(m))
            await raw.writer.drain()
            await raw.closed_by_peer(0.1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            raw.close()
        await asyncio.sleep(0.01)
        return "b" in a.links and "a" in b.links, a.status()

    healthy, status = asyncio.run_coroutine_threadsafe(attack(), loop).result(10)
    assert healthy, status["links"]
    assert errors == []
    assert {p["name"] for p in status["peers"]} >= {"a", "b"}


@given(msgpack_values)
def test_peer_record_decoding_raises_value_error_only(obj):
    from meshraft.mesh.peer import PeerRecord

    try:
        PeerRecord.decode(obj)
    except ValueError:
        pass


async def test_a_gossiper_returning_bad_data_is_contained(mesh):
    class Bad:
        def encode(self):
            return "not a list of bytes"

        def merge(self, other):
            return self

    class G:
        def on_gossip_unicast(self, src, msg):
            pass

        def on_gossip_broadcast(self, src, update):
            return Bad()

        def gossip(self):
            return Bad()

        def on_gossip(self, msg):
            raise RuntimeError("gossiper bug")

    a = await mesh("a")
    b = await mesh("b", peers=[a])
    await eventually(lambda: "b" in a.links, 5, "a-b")
    ga, gb = G(), G()
    ca = a.new_gossip("g", ga)
    b.new_gossip("g", gb)
    from meshraft.mesh.gossip_channel import SurrogateData

    ca.gossip_broadcast(SurrogateData([b"x"]))
    ca.send(SurrogateData([b"y"]))
    await eventually(lambda: b.stats["gossiper_errors"] >= 2, 3, "errors counted at b")
    await asyncio.sleep(0.3)  # anti-entropy asks gossip() too
    assert "b" in a.links and "a" in b.links


async def test_connections_stuck_in_the_handshake_are_bounded(mesh):
    from meshraft.mesh.local_peer import MAX_PENDING_LINKS

    a = await mesh("a", link_timeout=5.0)
    raws = []
    try:
        for _ in range(MAX_PENDING_LINKS + 10):
            raws.append(await RawPeer.connect(*a.address))  # and never say hello
        await eventually(lambda: a.stats["pending_refused"] >= 10, 3, "excess refused")
        assert len(a.peer.conns) <= MAX_PENDING_LINKS
        b = await mesh("b", peers=[a])  # real peers still get in once the flood ends
        for r in raws:
            r.close()
        await eventually(lambda: "b" in a.links, 10, "b links after the flood")
    finally:
        for r in raws:
            r.close()
    assert b.links


async def test_a_receiver_that_catches_up_gets_frames_again(mesh):
    limit = 128 * 1024
    a = await mesh("a", write_limit=limit, link_timeout=5.0)
    raw = await RawPeer.connect(*a.address)
    try:
        await raw.handshake(name="late")
        await eventually(lambda: "late" in a.links, 2, "raw link")
        link = a.links["late"]
        raw.writer.transport.pause_reading()  # stop reading for a while
        for _ in range(200):
            a.send_unicast("t", "late", b"q" * 30_000)
            await asyncio.sleep(0)
        assert link.dropped_out > 0
        raw.writer.transport.resume_reading()  # catch up: read everything queued

        async def read_until_marker():
            while True:
                msg = msgpack.unpackb(await raw.read_frame(within=5.0))
                if msg[0] == 1 and msg[-1] == b"after":
                    return True

        async def send_marker_until_read():
            while True:
                a.send_unicast("t", "late", b"after")
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(send_marker_until_read())
        try:
            assert await asyncio.wait_for(read_until_marker(), 10)
        finally:
            sender.cancel()
    finally:
        raw.close()


async def test_gossip_about_too_many_peers_is_refused_and_bounded(mesh, caplog):
    """A neighbour that gossips 3,000 made-up peers (all 'linked' to it, so
    reachable) cannot grow the topology past max_peers; real peers keep working."""
    a = await mesh("a", max_peers=16)
    b = await mesh("b", peers=[a])
    await eventually(lambda: "b" in a.links and "a" in b.links)
    raw = await RawPeer.connect(*a.address)
    try:
        await raw.handshake(name="fuzz", uid=0xF00D)
        fakes = [[f"fake{i}", 1000 + i, 1, 1, "127.0.0.1", 0, [["fuzz", 0xF00D]]]
                 for i in range(3000)]
        own = ["fuzz", 0xF00D, 1, 99, "127.0.0.1", 0,
               [["a", a.uid]] + [[f"fake{i}", 1000 + i] for i in range(3000)]]
        with caplog.at_level(logging.WARNING):
            raw.send_frame(msgpack.packb([3, "_topology", "fuzz", [own, *fakes]]))
            await raw.writer.drain()
            await eventually(lambda: a.stats["peers_refused"] > 0)
        assert len(a.topology.peers) <= 16
        assert len(a.status()["peers"]) <= 16
        assert "topology full" in caplog.text and "max_peers" in caplog.text
        # the real neighbour is still known and reachable
        assert "b" in a.links and a.routes.unicast().get("b") == "b"
    finally:
        raw.close()


def test_max_peers_must_be_positive():
    from meshraft.mesh.peer import PeerRecord
    from meshraft.mesh.topology import Topology

    with pytest.raises(ValueError, match="max_peers"):
        Topology(PeerRecord("a", 1, 1, 1, "127.0.0.1", 1, {}), max_peers=0)

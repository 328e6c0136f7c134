"""Fuzzing gossip payloads: the example CRDTs' decoders, topology records, and gossip
frames for a live counter channel between two real Routers on loopback.

Decoders only ever raise ValueError; whatever a hostile peer gossips, the routers
keep running, the counter never goes backwards, and an increment on one router
still reaches the other."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
from cmd_examples import crdt_counter
from fuzzmesh import RAW, A, B, Hostile, Pair, poll
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshraft.mesh.peer import PeerRecord
from meshraft.mesh.topology import Topology

CounterGossiper = crdt_counter.CounterGossiper
GCounter = crdt_counter.GCounter
PNCounter = crdt_counter.PNCounter

FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

ints = st.integers(-(1 << 63), (1 << 64) - 1)  # what msgpack can carry
scalars = (st.none() | st.booleans() | ints
           | st.floats() | st.text(max_size=16) | st.binary(max_size=32))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=8)
                      | st.dictionaries(st.text(max_size=6) | ints, c, max_size=4),
                      max_leaves=30)
names = st.sampled_from([RAW, "x", "", "_", "a" * 300]) | st.text(max_size=10)
counts = st.dictionaries(names, st.integers(-1, (1 << 63)) | scalars, max_size=5)
payloads = (st.binary(max_size=200)
            | values.map(lambda v: msgpack.packb(v, use_bin_type=True))
            | counts.map(lambda c: msgpack.packb(c, use_bin_type=True))
            | st.fixed_dictionaries({"p": counts, "n": counts}).map(
                lambda c: msgpack.packb(c, use_bin_type=True)))


@FAST
@given(payloads)
def test_counter_decoders_only_raise_value_error(raw: bytes) -> None:
    for kind in (GCounter, PNCounter):
        try:
            c = kind.decode(raw)
        except ValueError:
            continue
        assert kind.decode(c.encode()[0]) == c
        assert c.merge(c) == c  # idempotent, whatever was decoded


records = st.lists(scalars, min_size=7, max_size=7) | st.tuples(
    names, st.integers(-1, 1 << 64), st.integers(-1, 1 << 64), st.integers(-1, 1 << 64),
    st.text(max_size=8), st.integers(-1, 70000),
    st.lists(st.tuples(names, st.integers(-1, 1 << 64)).map(list), max_size=3)).map(list)


@settings(FAST, max_examples=200)
@given(st.lists(records | scalars, max_size=6))
def test_topology_records_decode_or_raise_value_error_and_merge(objs: list) -> None:
    own = PeerRecord(A, 7, 1, 1, "127.0.0.1", 1, {})
    topo = Topology(own)
    decoded = []
    for obj in objs:
        try:
            decoded.append(PeerRecord.decode(obj))
        except ValueError:
            continue
    topo.merge(decoded)
    assert topo.peers[A].uid == 7  # nobody replaces our own record
    for rec in topo.peers.values():
        assert PeerRecord.decode(rec.encode()) == rec


@pytest.fixture(scope="module")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def counters(loop):
    pair = loop.run_until_complete(Pair(None).start())
    pair.ca = CounterGossiper(pair.a, "counter")
    pair.cb = CounterGossiper(pair.b, "counter")
    yield pair
    loop.run_until_complete(pair.stop())


def test_hostile_gossip_on_a_live_counter_channel(loop, counters):
    pair = counters
    frames = st.tuples(st.sampled_from([1, 2, 3]), payloads)

    @settings(FAST, max_examples=150)
    @given(st.lists(frames, min_size=1, max_size=4))
    def one(fs: list[tuple[int, bytes]]) -> None:
        async def go() -> None:
            before = pair.ca.value(), pair.cb.value()
            h = await Hostile.connect(pair.a)
            await h.handshake(None)
            for kind, raw in fs:
                if kind == 1:  # unicast to the counter's owner
                    msg = [1, "counter", RAW, A, 4, raw]
                elif kind == 2:  # broadcast, relayed if it was news
                    msg = [2, "counter", RAW, 4, raw]
                else:  # periodic gossip
                    msg = [3, "counter", RAW, raw]
                h.send(msgpack.packb(msg, use_bin_type=True))
            await h.finish()
            await pair.healthy()
            assert pair.ca.value() >= before[0] and pair.cb.value() >= before[1]
            mine = pair.ca.state.counts.get(A, 0) + 1
            pair.ca.incr()
            await poll(lambda: pair.cb.state.counts.get(A, 0) >= mine, 10,
                       "the increment to reach B")

        loop.run_until_complete(go())

    one()
    assert not pair.errors
    assert set(pair.a.links) >= {B}

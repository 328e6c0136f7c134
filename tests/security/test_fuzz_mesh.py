"""Fuzzing the mesh's decoders against real Routers on loopback: frames after a
handshake (random msgpack structures shaped like messages, and raw bytes), the
handshake itself (HELLO and IDENT, with and without a password), and random bytes
on an encrypted link. Whatever arrives, the router never crashes, never lets an
exception escape into the event loop, and its link to the other router keeps
carrying unicast."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
from fuzzmesh import RAW, A, B, Hostile, Pair, frame, poll
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=150, deadline=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))

scalars = (st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
           | st.floats(allow_nan=True) | st.text(max_size=24) | st.binary(max_size=64))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=6)
                      | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=24)
# Names a fuzzed message may use: the real peers', ours, and random ones.
names = st.sampled_from([A, B, RAW, "", "x" * 300]) | st.text(max_size=12)
channels = st.sampled_from(["ping", "raft", "counter", "nope"]) | st.text(max_size=12)
ints = st.integers(-(1 << 63), (1 << 64) - 1)
safe_names = names.filter(lambda n: n not in (A, B))
# Topology records that only ever announce loopback addresses (a router dials them).
records = st.lists(st.tuples(
    safe_names, ints, ints, ints, st.sampled_from(["127.0.0.1", "", "::1x"]),
    st.sampled_from([0, 1, 65535, 65536, -1]),
    st.lists(st.tuples(names, ints).map(list), max_size=3)).map(list), max_size=4)
digest = st.lists(st.tuples(safe_names, ints, ints, ints).map(list) | values, max_size=4)

messages = st.one_of(
    st.just([0]),  # heartbeat
    st.tuples(st.just(1), channels, names, names, ints, values).map(list),  # unicast
    st.tuples(st.just(2), channels, names, ints, values).map(list),  # broadcast
    st.tuples(st.just(3), channels.filter(lambda c: not c.startswith("_")), names,
              values).map(list),  # gossip to a channel (known or not)
    st.tuples(st.just(3), st.just("_topology"), names, records).map(list),
    st.tuples(st.just(3), st.sampled_from(["_topodigest", "_topodigest_r"]), names,
              digest).map(list),
    # anything else shaped like a message, except unchecked topology (see records)
    st.lists(values, min_size=0, max_size=7).filter(
        lambda m: not (len(m) > 1 and isinstance(m[1], str) and m[1].startswith("_"))),
)
bodies = messages.map(lambda m: msgpack.packb(m, use_bin_type=True)) | st.binary(max_size=200)


@pytest.fixture(scope="module")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def plain(loop):
    pair = loop.run_until_complete(Pair(None).start())
    yield pair
    loop.run_until_complete(pair.stop())


@pytest.fixture(scope="module")
def secret(loop):
    pair = loop.run_until_complete(Pair("fuzz password").start())
    yield pair
    loop.run_until_complete(pair.stop())


def test_fuzzed_frames_after_the_handshake(loop, plain):
    @SETTINGS
    @given(st.lists(bodies, min_size=1, max_size=5), st.binary(max_size=12))
    def one(bs: list[bytes], tail: bytes) -> None:
        async def go() -> None:
            h = await Hostile.connect(plain.a)
            await h.handshake(None)
            for b in bs:
                h.send(b)
            h.send_raw(tail)  # maybe a partial or oversized frame
            await h.finish()
            await plain.healthy()

        loop.run_until_complete(go())

    one()
    loop.run_until_complete(_settled(plain))


def test_fuzzed_bytes_before_any_handshake(loop, plain, secret):
    @SETTINGS
    @given(st.binary(max_size=300), st.booleans())
    def one(data: bytes, framed: bool) -> None:
        async def go() -> None:
            for pair in (plain, secret):
                h = await Hostile.connect(pair.a)
                h.send_raw(frame(data) if framed else data)
                await h.finish()
                await pair.healthy()

        loop.run_until_complete(go())

    one()


hellos = st.dictionaries(
    st.sampled_from(["magic", "min", "max", "pk", "other"]),
    st.sampled_from(["meshraft-mesh", 1, 0, 2, -1, 65536, None, True, b"\x00" * 32])
    | st.binary(min_size=31, max_size=33) | scalars, max_size=5)


def test_fuzzed_handshakes(loop, plain, secret):
    @SETTINGS
    @given(hellos, st.lists(values, max_size=7) | st.binary(max_size=80), st.booleans())
    def one(hello: dict, ident, magic: bool) -> None:
        if magic:
            hello = {**hello, "magic": "meshraft-mesh"}
        if isinstance(ident, list) and len(ident) >= 5:
            ident[4] = "127.0.0.1"  # a listen address it may dial: loopback only
        async def go() -> None:
            for pair in (plain, secret):
                h = await Hostile.connect(pair.a)
                h.send_raw(frame(msgpack.packb(hello, use_bin_type=True)))
                h.send_raw(frame(ident if isinstance(ident, bytes)
                                 else msgpack.packb(ident, use_bin_type=True)))
                await h.finish()
                await pair.healthy()

        loop.run_until_complete(go())

    one()
    for pair in (plain, secret):
        loop.run_until_complete(_settled(pair))


def test_fuzzed_ciphertext_on_an_encrypted_link(loop, secret):
    @settings(SETTINGS, max_examples=60)
    @given(st.binary(max_size=200))
    def one(garbage: bytes) -> None:
        async def go() -> None:
            h = await Hostile.connect(secret.a)
            await h.handshake("fuzz password")
            h.send_raw(frame(garbage))  # not encrypted under the session key
            assert await h.closed_by_peer(), "the router kept a link that sent garbage"
            await h.finish()
            await secret.healthy()

        loop.run_until_complete(go())

    one()
    assert RAW not in secret.a.links


async def _settled(pair: Pair) -> None:
    """After the storm: only the real link is left, and it works both ways."""
    await poll(lambda: set(pair.a.links) == {B} and set(pair.b.links) == {A}, 10,
               "only the real link left")
    await pair.healthy()
    got = []
    unregister = pair.a.register_unicast("pong", lambda src, p: got.append((src, p)))
    try:
        pair.b.send_unicast("pong", A, b"back")
        await poll(lambda: got, 5, "B->A unicast")
    finally:
        unregister()
    assert got == [(B, b"back")]

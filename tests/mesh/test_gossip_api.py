"""Gossip channel API and router life cycle: gossip_unicast (direct and relayed),
anti-entropy of a channel the middle peer does not know, delta gossipers that
return only what is new (so relaying stops), dial backoff with jitter, the
design's default timings, and stop() closing everything it started."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from cmd_examples import crdt_counter
from meshtest import eventually, full_mesh, mesh_fixture, stable  # noqa: F401  (fixture)

from meshraft.mesh import Gossiper, Router

CounterGossiper = crdt_counter.CounterGossiper
GCounter = crdt_counter.GCounter
PNCounter = crdt_counter.PNCounter


class Inbox:
    """A gossiper that records the unicasts it receives."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    def on_gossip_unicast(self, src: str, msg: bytes) -> None:
        self.got.append((src, msg))

    def on_gossip_broadcast(self, src: str, update: bytes) -> None:
        return None

    def gossip(self) -> None:
        return None

    def on_gossip(self, msg: bytes) -> None:
        return None


async def line(mesh, **kw):
    """a - b - c: a and c refuse each other, so a reaches c only through b."""
    b = await mesh("b", **kw)
    a = await mesh("a", peers=[b], link_filter={"c"}, **kw)
    c = await mesh("c", peers=[b], link_filter={"a"}, **kw)
    await eventually(lambda: stable([a, b, c]) and a.routes.next_hop("c") == "b", 10,
                     "a stable line a-b-c")
    return a, b, c


async def test_gossip_unicast_reaches_the_gossiper_directly_and_relayed(mesh):
    a, b, c = await line(mesh)
    ia, ib, ic = Inbox(), Inbox(), Inbox()
    assert isinstance(ia, Gossiper)
    ga = a.new_gossip("g", ia)
    b.new_gossip("g", ib)
    c.new_gossip("g", ic)
    assert ga.gossip_unicast("b", b"to b")
    assert ga.gossip_unicast("c", b"to c")  # no direct link: b relays it
    await eventually(lambda: ib.got and ic.got, 5, "both unicasts delivered")
    assert ib.got == [("a", b"to b")]
    assert ic.got == [("a", b"to c")]
    assert b.stats["relayed"] >= 1
    assert not ga.gossip_unicast("nobody", b"lost")  # no route: False, no exception


async def test_anti_entropy_of_a_channel_the_middle_peer_does_not_know_is_relayed(mesh):
    a, b, c = await line(mesh, gossip_interval=0.1)
    ca, cc = CounterGossiper(a), CounterGossiper(c)
    # an update no broadcast carries: only a's anti-entropy, relayed by b, can bring it to c
    ca.state = ca.state.merge(GCounter({"a": 41}))
    await eventually(lambda: cc.value() == 41, 5, "c got a's state through b")
    assert "counter" not in b.channels


class _FakeRouter:
    name = "me"

    def new_gossip(self, channel, gossiper):
        return None


def test_counter_gossiper_returns_only_news_and_none_when_nothing_is_new():
    g = CounterGossiper(_FakeRouter())  # type: ignore[arg-type]
    g.state = GCounter({"x": 5, "y": 2})
    update = GCounter({"x": 7, "y": 1, "z": 3}).encode()[0]
    assert g.on_gossip_broadcast("p", update) == GCounter({"x": 7, "z": 3})
    assert g.on_gossip_broadcast("p", update) is None  # a duplicate: relaying stops
    assert g.on_gossip(update) is None
    full = GCounter({"x": 7, "y": 9, "z": 3}).encode()[0]
    assert g.on_gossip(full) == GCounter({"y": 9})
    assert g.on_gossip(full) is None
    assert g.value() == 19

    pn = CounterGossiper(_FakeRouter(), pn=True)  # type: ignore[arg-type]
    down = PNCounter(GCounter({"x": 4}), GCounter({"x": 1})).encode()[0]
    assert pn.on_gossip_broadcast("p", down) == PNCounter(GCounter({"x": 4}), GCounter({"x": 1}))
    assert pn.on_gossip_broadcast("p", down) is None
    more = PNCounter(GCounter({"x": 4}), GCounter({"x": 2})).encode()[0]
    assert pn.on_gossip(more) == PNCounter(GCounter(), GCounter({"x": 2}))
    assert pn.value() == 2


async def test_failed_dials_back_off_exponentially_with_jitter(mesh):
    a = await mesh("a", dial_backoff=(0.1, 2.0), rng=random.Random(5))
    addr = ("127.0.0.1", 9)  # not a dial target: only this test touches its state
    ratios = []
    for k in range(5):
        before = time.monotonic()
        a.maker.dial_failed(addr, "refused")
        next_try, backoff = a.maker.dial_state[addr]
        assert backoff == pytest.approx(0.1 * 2**k)
        ratios.append((next_try - before) / backoff)
    for _ in range(3):
        a.maker.dial_failed(addr, "refused")
    assert a.maker.dial_state[addr][1] == 2.0  # capped
    assert all(0.5 <= r <= 1.5 + 0.05 for r in ratios), ratios
    assert len({round(r, 2) for r in ratios}) > 1, ratios  # jittered, not a fixed schedule


async def test_default_timings_are_the_designs():
    r = await Router.start("solo")
    try:
        assert (r.heartbeat, r.link_timeout, r.gossip_interval) == (0.5, 2.0, 1.0)
        assert r.link_filter == frozenset()  # the link filter is off by default
    finally:
        await r.stop()


async def test_stop_closes_every_link_and_task_it_started(mesh):
    from conftest import free_port

    a = await mesh("a")
    b = await mesh("b", peers=[a])
    b.connect(f"127.0.0.1:{free_port()}")  # a dial that keeps failing
    await eventually(lambda: full_mesh([a, b]), 5, "a-b")
    tasks = b.tasks()
    assert tasks and not any(t.done() for t in tasks)
    await b.stop()
    assert all(t.done() for t in tasks)
    assert not b.maker.dialing
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("mesh-b-")]
    await eventually(lambda: not b.peer.conns and not b.links, 2, "b's connections closed")
    await eventually(lambda: "b" not in a.links, 2, "a saw b's link close")
    with pytest.raises(OSError):
        _, w = await asyncio.open_connection(*b.address)  # nothing listens any more
        w.close()

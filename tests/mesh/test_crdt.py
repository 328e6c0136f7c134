"""The example CRDTs: semilattice laws, convergence under any delivery order,
strict decoding, and delta-state behaviour over a real mesh (counted in bytes)."""

from __future__ import annotations

import asyncio

from cmd_examples import crdt_counter
from hypothesis import given, settings
from hypothesis import strategies as st
from meshtest import eventually, mesh_fixture, stable  # noqa: F401  (fixture)

CounterGossiper = crdt_counter.CounterGossiper
GCounter = crdt_counter.GCounter
PNCounter = crdt_counter.PNCounter

names = st.sampled_from(list("abcdefg"))
gcounters = st.dictionaries(names, st.integers(0, 10**6), max_size=7).map(GCounter)
pncounters = st.builds(PNCounter, gcounters, gcounters)


@given(gcounters, gcounters, gcounters)
def test_gcounter_merge_is_a_semilattice(x, y, z):
    assert x.merge(y) == y.merge(x)
    assert x.merge(y).merge(z) == x.merge(y.merge(z))
    assert x.merge(x) == x
    m = x.merge(y)
    assert m.value() >= max(x.value(), y.value())


@given(pncounters, pncounters, pncounters)
def test_pncounter_merge_is_a_semilattice(x, y, z):
    assert x.merge(y) == y.merge(x)
    assert x.merge(y).merge(z) == x.merge(y.merge(z))
    assert x.merge(x) == x


ops = st.lists(st.tuples(names, st.integers(-5, 5)), max_size=40)


@given(ops, st.randoms(use_true_random=False), st.booleans())
def test_any_delivery_order_converges(operations, rnd, pn):
    """Replicas increment locally; their deltas (and some full states) reach a fresh
    replica in any order, duplicated: it ends with the same value as the truth."""
    kind = PNCounter if pn else GCounter
    replicas = {n: kind() for n in "abcdefg"}
    deltas = []
    total = 0
    for name, d in operations:
        if not pn:
            d = abs(d)
        deltas.append(replicas[name].incr(name, d))
        total += d
    messages = deltas + deltas[: len(deltas) // 2] + list(replicas.values())[:2]
    rnd.shuffle(messages)
    fresh = kind()
    for m in messages:
        news = fresh.news(kind.decode(m.encode()[0]))
        if news is not None:
            fresh = fresh.merge(news)
    for m in list(replicas.values())[2:]:
        fresh = fresh.merge(m)
    assert fresh.value() == total
    # and every replica's own view merged with everything agrees
    everything = kind()
    for r in replicas.values():
        everything = everything.merge(r)
    assert everything == fresh


@given(gcounters, gcounters)
def test_news_is_only_what_is_new(x, y):
    news = x.news(y)
    if news is None:
        assert x.merge(y) == x
    else:
        assert all(v > x.counts.get(k, -1) for k, v in news.counts.items())
        assert x.merge(news) == x.merge(y)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decoding_garbage_raises_value_error_only(raw):
    for kind in (GCounter, PNCounter):
        try:
            kind.decode(raw)
        except ValueError:
            pass


def test_decoding_rejects_wrong_shapes():
    import msgpack
    import pytest

    for bad in ({"a": -1}, {"a": 1.5}, {"": 1}, {"a": True}, [1, 2], {"p": {"a": "x"}}):
        with pytest.raises(ValueError):
            GCounter.decode(msgpack.packb(bad))
    with pytest.raises(ValueError):
        PNCounter.decode(msgpack.packb({"q": {}}))


def counter_bytes(routers) -> int:
    return sum(r.stats["bytes_out:counter"] for r in routers)


async def test_counters_converge_and_increments_travel_as_deltas(mesh):
    a = await mesh("a", gossip_interval=60)  # no anti-entropy during the measurement
    routers = [a] + [await mesh(n, peers=[a], gossip_interval=60) for n in "bcdef"]
    # deltas travel only over the broadcast trees, which agree once the views do
    # (anti-entropy, off here, is what repairs broadcasts sent before that)
    await eventually(lambda: all(len(r.links) == 5 for r in routers) and stable(routers), 10,
                     "a stable full mesh")
    counters = [CounterGossiper(r) for r in routers]
    # a big state: 300 entries everywhere (as after a long history)
    big = GCounter({f"p{i:03d}": i + 1 for i in range(300)})
    for c in counters:
        c.state = c.state.merge(big)
    for i, c in enumerate(counters):
        c.incr(i + 1)
    expected = big.value() + sum(range(1, 7))
    await eventually(lambda: all(c.value() == expected for c in counters), 5, "convergence")
    await asyncio.sleep(0.1)
    full_state = len(counters[0].state.encode()[0])
    before = counter_bytes(routers)
    counters[2].incr()
    await eventually(lambda: all(c.value() == expected + 1 for c in counters), 5, "one incr")
    await asyncio.sleep(0.2)
    spent = counter_bytes(routers) - before
    # five one-entry deltas, not five copies of a 300-entry state
    assert 0 < spent < full_state / 5, (spent, full_state)
    assert spent <= 5 * 60


async def test_new_peer_gets_the_complete_state_and_pn_counts_down(mesh):
    a = await mesh("a")
    b = await mesh("b", peers=[a])
    await eventually(lambda: "b" in a.links, 5, "a-b")
    ca, cb = CounterGossiper(a, pn=True), CounterGossiper(b, pn=True)
    ca.incr(10)
    cb.incr(-3)
    await eventually(lambda: ca.value() == cb.value() == 7, 5, "a and b agree on 7")
    c = await mesh("c", peers=[b])
    cc = CounterGossiper(c, pn=True)
    await eventually(lambda: cc.value() == 7, 5, "newcomer learns the state")
    cc.incr(-7)
    await eventually(lambda: [x.value() for x in (ca, cb, cc)] == [0, 0, 0], 5, "zero")


async def test_anti_entropy_repairs_lost_broadcasts(mesh):
    a = await mesh("a", gossip_interval=0.1)
    b = await mesh("b", peers=[a], gossip_interval=0.1)
    await eventually(lambda: "b" in a.links, 5, "a-b")
    ca, cb = CounterGossiper(a), CounterGossiper(b)
    # an update that no broadcast carries (as if lost): only anti-entropy can spread it
    ca.state = ca.state.merge(GCounter({"a": 41}))
    await eventually(lambda: cb.value() == 41, 5, "anti-entropy delivered it")
    # it came as periodic gossip (no broadcast carried it), and b's state is a's
    assert b.stats["gossip_in"] > 0 and b.stats["broadcast_in"] == 0
    assert cb.state == ca.state == GCounter({"a": 41})

"""Broadcast over the sender-rooted spanning tree: each peer gets it exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

from meshtest import eventually, mesh_fixture, stable  # noqa: F401  (fixture)

from meshraft.mesh.gossip_channel import SurrogateData


class Recorder:
    """Relays every broadcast (always 'new') and counts deliveries."""

    def __init__(self) -> None:
        self.got: Counter[tuple[str, bytes]] = Counter()

    def on_gossip_unicast(self, src, msg):
        pass

    def on_gossip_broadcast(self, src, update):
        self.got[(src, update)] += 1
        return SurrogateData([update])

    def gossip(self):
        return None

    def on_gossip(self, msg):
        return None


async def start_ring(mesh, names):
    n = len(names)
    routers = []
    for i, name in enumerate(names):
        allowed = {names[(i - 1) % n], names[(i + 1) % n]}
        seeds = [routers[-1]] if routers else []
        routers.append(await mesh(name, peers=seeds, link_filter=set(names) - allowed - {name}))
    routers[-1].connect(routers[0].address)
    return routers


async def check_exactly_once(routers, messages_per_peer=3):
    recs = {r.name: Recorder() for r in routers}
    chans = {r.name: r.new_gossip("bc", recs[r.name]) for r in routers}
    sent = []
    for r in routers:
        for k in range(messages_per_peer):
            msg = f"{r.name}-{k}".encode()
            chans[r.name].gossip_broadcast(SurrogateData([msg]))
            sent.append((r.name, msg))
    want = len(routers) - 1

    def all_arrived():
        return all(sum(1 for r in routers if recs[r.name].got[m]) == want for m in sent)

    await eventually(all_arrived, 10, "every broadcast at every other peer")
    await asyncio.sleep(0.3)  # late duplicates would show up now
    for r in routers:
        got = recs[r.name].got
        for src, msg in sent:
            assert got[(src, msg)] == (0 if src == r.name else 1), (r.name, src, msg, got)


async def test_broadcast_exactly_once_on_a_ring(mesh):
    routers = await start_ring(mesh, list("abcdef"))
    await eventually(lambda: all(len(r.links) == 2 for r in routers) and stable(routers),
                     10, "a stable ring of 6")
    await check_exactly_once(routers)


async def test_broadcast_exactly_once_on_a_full_mesh(mesh):
    a = await mesh("a")
    routers = [a] + [await mesh(n, peers=[a]) for n in "bcde"]
    await eventually(lambda: all(len(r.links) == 4 for r in routers) and stable(routers),
                     10, "a stable full mesh of 5")
    await check_exactly_once(routers)


async def test_unknown_channels_are_relayed(mesh):
    # b in the middle of a line a-b-c knows no channel "bc", yet relays it.
    b = await mesh("b")
    a = await mesh("a", peers=[b], link_filter={"c"})
    c = await mesh("c", peers=[b], link_filter={"a"})
    await eventually(lambda: stable([a, b, c]), 10, "a stable line")
    ra, rc = Recorder(), Recorder()
    ca = a.new_gossip("bc", ra)
    c.new_gossip("bc", rc)
    ca.gossip_broadcast(SurrogateData([b"hello c"]))
    await eventually(lambda: rc.got[("a", b"hello c")] == 1, 5, "relayed through b")
    assert "bc" not in b.channels

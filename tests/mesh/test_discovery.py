"""Discovery: a full mesh from one seed, one link per pair, never a link to oneself."""

from __future__ import annotations

import asyncio
import contextlib
import json

from meshtest import eventually, full_mesh, mesh_fixture, stable  # noqa: F401  (fixture)

from meshraft.mesh import Router


async def test_six_peers_discover_each_other_from_one_seed(mesh):
    seed = await mesh("a")
    others = [await mesh(n, peers=[seed]) for n in "bcdef"]
    routers = [seed, *others]
    await eventually(lambda: full_mesh(routers), 10, "a full mesh of 6")
    await eventually(lambda: stable(routers), 5, "every peer with the same view")
    names = {r.name for r in routers}
    for r in routers:
        st = r.status()
        json.dumps(st)  # plain data
        assert {p["name"] for p in st["peers"]} == names
        assert st["routes"] == {n: n for n in sorted(names - {r.name})}
        # every peer's record lists its 5 links
        assert all(len(p["links"]) == 5 for p in st["peers"])
        established = [k for k, v in st["links"].items() if v["state"] == "established"]
        assert sorted(established) == sorted(names - {r.name})


async def test_each_pair_has_exactly_one_link_after_simultaneous_dials(mesh):
    # a and b each know the other: both dial at once; the tie-break keeps one link.
    a = await mesh("a")
    b = await mesh("b", peers=[a])
    a.connect(b.address)
    c = await mesh("c", peers=[a, b])
    b.connect(c.address)
    a.connect(c.address)
    routers = [a, b, c]
    await eventually(lambda: full_mesh(routers), 10, "full mesh of 3")
    # duplicate handshakes finish and are resolved: one connection per pair remains
    await eventually(lambda: all(len(r.peer.conns) == 2 for r in routers), 5, "one link per pair")
    await asyncio.sleep(0.3)
    for r in routers:
        assert len(r.peer.conns) == 2, r.status()["links"]
        assert len(r.links) == 2
    # the kept link is the same TCP connection on both ends
    for r in routers:
        for name, link in r.links.items():
            other = next(x for x in routers if x.name == name)
            back = other.links[r.name]
            assert link.peername == back.sockname


async def test_never_links_to_itself(mesh, caplog):
    a = await mesh("a")
    a.connect(a.address)  # its own address, as when a peer list includes oneself
    b = await mesh("b", peers=[a])
    await eventually(lambda: full_mesh([a, b]), 5, "a-b link")
    await asyncio.sleep(0.3)
    assert set(a.links) == {"b"}
    assert "a" not in a.status()["routes"]


async def test_failed_dials_back_off(mesh):
    from conftest import free_port  # an address nobody listens on

    dead = f"127.0.0.1:{free_port()}"
    a = await mesh("a", peers=[dead], dial_backoff=(0.05, 0.4))
    await asyncio.sleep(1.0)
    addr_state = a.maker.dial_state
    assert addr_state, "a dial failure is remembered"
    (_next_try, backoff), = addr_state.values()
    assert backoff > 0.05  # it grew


async def test_peer_addresses_are_validated():
    import pytest

    with pytest.raises(ValueError):
        await Router.start("x", peers=["no-port"])
    with pytest.raises(ValueError):
        await Router.start("bad name with spaces")


async def test_topology_changes_arriving_together_go_out_as_one_update(mesh):
    """Coalescing: six records merged in one read leave as one topology message to
    each neighbour, not six."""
    import msgpack
    from mesh_rawpeer import RawPeer

    a = await mesh("a", heartbeat=0.5, link_timeout=5.0)
    obs, src = await RawPeer.connect(*a.address), await RawPeer.connect(*a.address)
    try:
        await obs.handshake(name="obs", uid=0x0B5)
        await src.handshake(name="src", uid=0x5C)
        await eventually(lambda: {"obs", "src"} <= set(a.links), 5, "both raw links")
        fakes = [f"fake{i}" for i in range(5)]
        # src's own record first (so the fakes are reachable), then one frame per fake
        frames = [["src", 0x5C, 1, 99, "127.0.0.1", 0,
                   [["a", a.uid]] + [[f, 1000 + i] for i, f in enumerate(fakes)]]]
        frames += [[f, 1000 + i, 1, 1, "127.0.0.1", 0, [["src", 0x5C]]]
                   for i, f in enumerate(fakes)]
        # one write, so that a reads (and merges) all six in one go
        src.writer.write(b"".join(
            len(b).to_bytes(4, "big") + b
            for b in (msgpack.packb([3, "_topology", "src", [rec]]) for rec in frames)))
        await src.writer.drain()
        updates = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.4):  # the flush comes ~2 ms after the merge
                while True:
                    msg = msgpack.unpackb(await obs.read_frame())
                    if msg[:3] == [3, "_topology", "a"] and any(
                            rec[0].startswith("fake") for rec in msg[3]):
                        updates.append(sorted(rec[0] for rec in msg[3]))
        assert len(updates) == 1, updates
        assert {*fakes, "src"} <= set(updates[0]), updates
    finally:
        obs.close()
        src.close()

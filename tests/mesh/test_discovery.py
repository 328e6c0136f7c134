"""Discovery: a full mesh from one seed, one link per pair, never a link to oneself."""

from __future__ import annotations

import asyncio
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
    await eventually(lambda: all(len(r._conns) == 2 for r in routers), 5, "one link per pair")
    await asyncio.sleep(0.3)
    for r in routers:
        assert len(r._conns) == 2, r.status()["links"]
        assert len(r.links) == 2
    # the kept link is the same TCP connection on both ends
    for r in routers:
        for name, link in r.links.items():
            other = next(x for x in routers if x.name == name)
            back = other.links[r.name]
            assert link.peername == back._transport.get_extra_info("sockname")


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
    addr_state = a._dial_state
    assert addr_state, "a dial failure is remembered"
    (_next_try, backoff), = addr_state.values()
    assert backoff > 0.05  # it grew


async def test_peer_addresses_are_validated():
    import pytest

    with pytest.raises(ValueError):
        await Router.start("x", peers=["no-port"])
    with pytest.raises(ValueError):
        await Router.start("bad name with spaces")

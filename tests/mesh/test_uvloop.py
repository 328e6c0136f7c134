"""The mesh forms and carries unicast under uvloop too (the optional ``fast``
extra): its transports are not subclasses of asyncio.Transport."""

import asyncio

import uvloop

from meshraft.mesh import Router


async def _two_peers_route() -> dict:
    a = await Router.start(name="a", listen=("127.0.0.1", 0), peers=[], password=None)
    b = await Router.start(name="b", listen=("127.0.0.1", 0),
                           peers=[f"{a.address[0]}:{a.address[1]}"], password=None)
    try:
        for _ in range(100):
            if a.status()["routes"].get("b") == "b":
                break
            await asyncio.sleep(0.05)
        return a.status()["routes"]
    finally:
        await b.stop()
        await a.stop()


def test_mesh_forms_under_uvloop():
    routes = uvloop.run(_two_peers_route())
    assert routes.get("b") == "b"

"""Helpers for MeshPacketConn tests: routers with short timings, always stopped,
and protocols that work unchanged over UDP and over the mesh."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from mesh_rawpeer import RawPeer

from meshraft.mesh import Router

__all__ = ["FAST", "Collector", "Echo", "RawPeer", "eventually", "mesh_fixture"]

FAST: dict[str, Any] = dict(heartbeat=0.1, link_timeout=1.0, gossip_interval=0.2,
                            dial_backoff=(0.02, 0.3), connect_interval=0.03)


async def eventually(pred: Callable[[], Any], within: float = 10.0,
                     what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


@pytest.fixture(name="mesh")
async def mesh_fixture() -> AsyncIterator[Callable[..., Any]]:
    routers: list[Router] = []

    async def start(name: str, peers: Any = (), **kw: Any) -> Router:
        addrs = [p if isinstance(p, str) else f"127.0.0.1:{p.address[1]}" for p in peers]
        r = await Router.start(name, peers=addrs, **{**FAST, **kw})
        routers.append(r)
        return r

    try:
        yield start
    finally:
        for r in routers:
            await r.stop()


class Echo(asyncio.DatagramProtocol):
    """Sends every datagram back where it came from."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class Collector(asyncio.DatagramProtocol):
    """Remembers what arrives, errors, and whether the connection was lost."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, Any]] = []
        self.errors: list[Exception] = []
        self.lost: list[Exception | None] = []
        self.arrived = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.got.append((data, addr))
        self.arrived.set()

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.lost.append(exc)

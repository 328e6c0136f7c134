"""Helpers and fixtures for mesh tests (imported by name: a conftest.py here would
shadow tests/conftest.py for other directories): routers with short timings that
are always stopped, and polling helpers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from meshraft.mesh import Router

# Short timings keep the tests fast; tests of timeouts pass their own.
FAST: dict[str, Any] = dict(heartbeat=0.1, link_timeout=1.0, gossip_interval=0.2,
                            dial_backoff=(0.02, 0.3), connect_interval=0.03)


def addr(r: Router) -> str:
    return f"{r.address[0]}:{r.address[1]}"


async def eventually(pred: Callable[[], Any], within: float = 10.0, what: str = "condition",
                     interval: float = 0.02) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


def full_mesh(routers: list[Router]) -> bool:
    names = {r.name for r in routers}
    return all(set(r.links) == names - {r.name} for r in routers)


def stable(routers: list[Router]) -> bool:
    """Every router has the same topology view and a route to every other."""
    views = [r.status()["peers"] for r in routers]
    names = {r.name for r in routers}
    return all(v == views[0] for v in views) and all(
        set(r.routes.unicast()) == names - {r.name} for r in routers)


@pytest.fixture(name="mesh")
async def mesh_fixture() -> AsyncIterator[Callable[..., Any]]:
    """``await mesh(name, peers=[router or 'host:port', ...], **Router.start kwargs)``."""
    routers: list[Router] = []

    async def start(name: str, peers: Any = (), **kw: Any) -> Router:
        peer_addrs = [p if isinstance(p, str) else addr(p) for p in peers]
        r = await Router.start(name, peers=peer_addrs, **{**FAST, **kw})
        routers.append(r)
        return r

    try:
        yield start
    finally:
        for r in routers:
            await r.stop()


@pytest.fixture(scope="module", name="bg_loop")
def bg_loop_fixture() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop in a background thread (for hypothesis tests, which are sync)."""
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()

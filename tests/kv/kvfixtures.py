"""Fixtures for the kv tests (imported by the test modules; not a conftest.py, so the
root conftest stays the one `conftest` module): a kv server over a fake node, on a
loop in a thread (for blocking clients and CLI subprocesses)."""

from __future__ import annotations

import asyncio

import pytest
from fakenode import FakeNode

from meshraft.kv import server as ks
from meshraft.kv.state_machine import KVStateMachine


@pytest.fixture
def served_sync():
    """A server on its own loop in a thread, for the blocking client."""
    import threading

    sm = KVStateMachine()
    loop = asyncio.new_event_loop()
    node = FakeNode(sm)
    srv = ks.KVServer(node, sm, status_extra=lambda: {
        "mesh": {"peers": ["2", "3"], "routes": {"2": "2", "3": "2"}}})
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(srv.start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(5)
    try:
        yield srv.host, srv.port, sm, node
    finally:
        asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()

"""Hostile watch requests: whatever a client sends as watch, watch_cancel or
watch_progress, the server answers it (an error or a watch), never crashes, and the
connection keeps serving everything else."""

from __future__ import annotations

import asyncio

import msgpack
from fakenode import FakeNode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshraft.kv import protocol as p
from meshraft.kv import server as ks
from meshraft.kv.state_machine import KVStateMachine
from meshraft.kv.watch import WatchLimits

values = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.binary(max_size=40),
                   st.text(max_size=10), st.lists(st.integers(-9, 9), max_size=3),
                   st.floats(allow_nan=True))
bodies = st.fixed_dictionaries(
    {"op": st.sampled_from(["watch", "watch_cancel", "watch_progress"])},
    optional={"key": values, "prefix": values, "start_revision": values, "prev_kv": values,
              "progress_notify": values, "watch_id": values, "timeout": values})


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(bodies, min_size=1, max_size=8))
def test_random_watch_requests_are_answered_and_the_connection_survives(reqs):
    async def run() -> None:
        sm = KVStateMachine()
        srv = ks.KVServer(FakeNode(sm), sm, watch_limits=WatchLimits(
            max_watches_per_connection=3))
        await srv.start()
        try:
            reader, writer = await asyncio.open_connection(srv.host, srv.port)
            for i, body in enumerate(reqs):
                writer.write(p.HEADER.pack(len(b := msgpack.packb({**body, "id": i + 1},
                                                                   use_bin_type=True))) + b)
            writer.write(p.encode_frame({"id": 1000, "op": "ping"}))
            answered: set[int] = set()
            async with asyncio.timeout(10):
                while 1000 not in answered:
                    frame = p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24, 1 << 20)
                    if frame.get("id") is not None:
                        answered.add(frame["id"])
                        assert frame.get("ok") or frame.get("error") in p.ERROR_CODES, frame
                        assert frame.get("error") != p.INTERNAL, frame
            sm.apply_command(msgpack.packb({"op": "put", "key": b"k", "value": b"v"}))
            writer.write(p.encode_frame({"id": 1001, "op": "get", "key": b"k"}))
            async with asyncio.timeout(10):
                while True:
                    frame = p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24, 1 << 20)
                    if frame.get("id") == 1001:
                        assert frame["ok"]
                        break
            assert answered >= set(range(1, len(reqs) + 1)) | {1000}
            writer.close()
        finally:
            await srv.stop()

    asyncio.run(run())

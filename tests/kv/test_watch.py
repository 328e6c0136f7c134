"""Watch through the public interface, against one kv server over a fake node: events
of a revision together and in order, start revision, prefix, prev_kv, several watches
per connection, cancel, progress, compaction, bad input, slow readers."""

from __future__ import annotations

import asyncio
import socket

import kvfixtures
import msgpack
import pytest
from fakenode import FakeNode

from meshraft.kv import protocol as p
from meshraft.kv import server as ks
from meshraft.kv.client import AsyncClient, BadRequest, Client, Compacted, TooLarge
from meshraft.kv.state_machine import KVStateMachine
from meshraft.kv.watch import WatchLimits

served_sync = kvfixtures.served_sync  # a fixture shared with the other kv tests


async def start_server(**watch) -> tuple[ks.KVServer, KVStateMachine, FakeNode]:
    sm = KVStateMachine()
    node = FakeNode(sm)
    srv = ks.KVServer(node, sm, watch_limits=WatchLimits(**watch))
    await srv.start()
    return srv, sm, node


@pytest.fixture
async def served():
    srv, sm, node = await start_server(progress_interval=0.3)
    client = AsyncClient([f"{srv.host}:{srv.port}"], timeout=5)
    try:
        yield srv, sm, node, client
    finally:
        await client.close()
        await srv.stop()


async def take(watch, n: int, within: float = 5.0) -> list:
    out = []
    async with asyncio.timeout(within):
        async for ev in watch:
            out.append(ev)
            if len(out) == n:
                break
    return out


async def test_watch_from_now_sees_puts_and_deletes_in_order(served):
    _srv, _sm, _node, c = served
    await c.put("a", "before")
    w = c.watch("a")
    async with w:
        r1 = await c.put("a", "1")
        await c.put("b", "other key")
        r2 = await c.delete("a")
        evs = await take(w, 2)
    assert [(e.type, e.key, e.value, e.revision) for e in evs] == [
        ("PUT", b"a", b"1", r1.revision), ("DELETE", b"a", b"", r2.revision)]
    assert evs[0].version == 2 and evs[0].create_revision == 1
    assert evs[1].version == 0 and evs[0].prev_kv is None


async def test_start_revision_is_inclusive_and_prefix_and_prev_kv(served):
    _srv, _sm, _node, c = served
    revs = [(await c.put(f"app/{i}", str(i))).revision for i in range(5)]
    await c.put("apple", "not under app/")
    await c.put("app/0", "again")
    w = c.watch("app/", prefix=True, start_revision=revs[2], prev_kv=True)
    evs = await take(w, 4)
    await w.cancel()
    assert [e.key for e in evs] == [b"app/2", b"app/3", b"app/4", b"app/0"]
    assert [e.revision for e in evs] == sorted(e.revision for e in evs)
    assert evs[0].revision == revs[2]
    assert evs[3].prev_kv is not None and evs[3].prev_kv.value == b"0"
    assert evs[0].prev_kv is None  # created at that revision


async def test_several_watches_on_one_connection_and_cancel(served):
    srv, _sm, _node, c = served
    ws = [c.watch(k) for k in ("x", "y", "x")]
    for w in ws:
        await w.__aenter__()
    assert len({id(w.link.client) for w in ws}) == 1
    assert srv.watch.status()["watchers"] == 3
    assert srv.watch.status()["groups"] == 2  # x's two watches share one encoding
    await ws[2].cancel()
    assert srv.watch.status()["watchers"] == 2
    await c.put("x", "1")
    await c.put("y", "2")
    assert [e.value for e in await take(ws[0], 1)] == [b"1"]
    assert [e.value for e in await take(ws[1], 1)] == [b"2"]
    assert [e async for e in ws[2]] == []  # a cancelled watch ends
    for w in ws[:2]:
        await w.cancel()
    assert srv.watch.status()["watchers"] == 0


async def test_events_of_one_revision_arrive_in_one_frame_and_revisions_in_order():
    """Raw protocol: a batch of revisions applied in one go reaches the watcher in
    frames holding whole revisions in order, and the frame's revision covers them."""
    srv, sm, _node = await start_server()
    try:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(p.encode_frame({"id": 1, "op": "watch", "key": b"k", "prefix": True}))
        reply = p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24)
        assert reply["ok"] and reply["result"]["watch_id"] == 1
        for i in range(20):  # applied back to back, one flush
            sm.apply_command(msgpack.packb({"op": "put", "key": b"k%d" % i, "value": b"v"}))
        seen: list[int] = []
        while len(seen) < 20:
            frame = p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24, 1 << 20)
            assert frame["watch"] == 1 and "id" not in frame
            revs = [e["kv"]["mod_revision"] for e in frame["events"]]
            assert revs == sorted(revs) and frame["revision"] >= revs[-1]
            seen += revs
        assert seen == list(range(1, 21))
        writer.close()
    finally:
        await srv.stop()


async def test_progress_notifications_periodic_and_on_request(served):
    _srv, sm, _node, c = served
    await c.put("other", "1")
    w = c.watch("quiet")
    async with w:
        await c.put("other", "2")
        consumer = asyncio.create_task(w.next_batch())  # no event will come
        async with asyncio.timeout(5):
            while w.revision < sm.revision:  # noqa: ASYNC110  (periodic progress, 0.3 s)
                await asyncio.sleep(0.05)
        assert not consumer.done()
        consumer.cancel()
    assert w.revision == sm.revision == 2


async def test_progress_on_request_raw():
    srv, sm, _node = await start_server(progress_interval=3600)
    try:
        sm.apply_command(msgpack.packb({"op": "put", "key": b"z", "value": b"v"}))
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(p.encode_frame({"id": 1, "op": "watch", "key": b"k"}))
        writer.write(p.encode_frame({"id": 2, "op": "watch_progress"}))
        frames = [p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24)
                  for _ in range(3)]
        assert [f.get("id") for f in frames] == [1, 2, None]
        assert frames[2] == {"watch": 1, "revision": 1, "events": [], "progress": True}
        writer.close()
    finally:
        await srv.stop()


async def test_watch_starting_in_the_future_waits(served):
    _srv, sm, _node, c = served
    w = c.watch("f", start_revision=sm.revision + 3)
    async with w:
        for i in range(4):
            await c.put("f", str(i))
        evs = await take(w, 2)
    assert [e.value for e in evs] == [b"2", b"3"]


async def test_compacted_history_cancels_the_watch(served):
    _srv, _sm, _node, c = served
    for i in range(5):
        await c.put("h", str(i))
    await c.compact(4)
    with pytest.raises(Compacted) as ei:
        await take(c.watch("h", start_revision=2), 1)
    assert ei.value.compact_revision == 4
    assert "compacted at 4" in str(ei.value)
    # from the compaction point on, the history is there
    assert [e.value for e in await take(c.watch("h", start_revision=4), 2)] == [b"3", b"4"]


@pytest.mark.parametrize("body,code,words", [
    ({"key": b""}, "bad-request", "empty"),
    ({"key": b"k" * 5000}, "too-large", "limit"),
    ({"key": b"k", "start_revision": -1}, "bad-request", "start_revision"),
    ({"key": b"k", "start_revision": "1"}, "bad-request", "start_revision"),
    ({"key": b"k", "prefix": "yes"}, "bad-request", "prefix"),
    ({"key": "k"}, "bad-request", "bytes"),
])
async def test_bad_watch_requests_get_clear_errors_and_the_connection_lives_on(
        served, body, code, words):
    srv, _sm, _node, _c = served
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(p.encode_frame({"id": 1, "op": "watch", **body}))
    writer.write(p.encode_frame({"id": 2, "op": "watch", "key": b"ok"}))
    writer.write(p.encode_frame({"id": 3, "op": "ping"}))
    replies = {}
    for _ in range(3):
        r = p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24)
        replies[r["id"]] = r
    assert replies[1]["error"] == code and words in replies[1]["message"]
    assert replies[2]["ok"] and replies[3]["ok"]
    writer.close()


async def test_client_side_bad_input():
    srv, _sm, _node = await start_server()
    c = AsyncClient([f"{srv.host}:{srv.port}"], timeout=3)
    try:
        with pytest.raises(BadRequest, match="empty"):
            await take(c.watch(""), 1)
        with pytest.raises(TooLarge):
            await take(c.watch("k" * 5000), 1)
        with pytest.raises(BadRequest, match="non-negative"):
            c.watch("k", start_revision=-1)
        await c.put("k", "still fine")
    finally:
        await c.close()
        await srv.stop()


async def test_too_many_watches_per_connection_says_which_limit():
    srv, _sm, _node = await start_server(max_watches_per_connection=2)
    c = AsyncClient([f"{srv.host}:{srv.port}"], timeout=3)
    try:
        a, b = c.watch("a"), c.watch("b")
        await a.__aenter__()
        await b.__aenter__()
        with pytest.raises(BadRequest, match="max-watches-per-connection") as ei:
            await c.watch("c").__aenter__()
        assert "2" in str(ei.value)
        await c.put("a", "1")  # the others go on
        assert [e.value for e in await take(a, 1)] == [b"1"]
    finally:
        await c.close()
        await srv.stop()


async def test_slow_reader_is_cancelled_and_the_server_stays_bounded():
    """A raw client that stops reading: the server queues at most the per-watch buffer,
    then cancels that watch with slow-watcher; the frames before it are intact."""
    limits = {"buffer_events": 50, "write_buffer": 64 * 1024}
    srv, sm, _node = await start_server(**limits)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((srv.host, srv.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(p.encode_frame({"id": 1, "op": "watch", "key": b"big", "prefix": True}))
        reply = p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24)
        assert reply["ok"]
        value = b"x" * 16 * 1024
        peak = 0
        for i in range(600):  # ~10 MB: far more than the socket buffers hold
            sm.apply_command(msgpack.packb({"op": "put", "key": b"big%d" % (i % 10),
                                            "value": value}))
            await asyncio.sleep(0)
            st = srv.watch.status()
            peak = max(peak, st["queued_bytes"])
            if st.get("canceled_slow_watcher"):
                break
        st = srv.watch.status()
        assert st.get("canceled_slow_watcher") == 1, st
        assert st["queued_bytes"] == 0 and st["watchers"] == 0
        assert peak <= 51 * (len(value) + 200)  # never more than the per-watch bound
        # now read: whole frames in revision order, then the cancel
        last = 0
        async with asyncio.timeout(10):
            while True:
                frame = p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24, 1 << 20)
                if frame.get("canceled"):
                    assert frame["error"] == "slow-watcher" and frame["watch"] == 1
                    break
                revs = [e["kv"]["mod_revision"] for e in frame["events"]]
                assert revs[0] == last + 1 and revs == list(range(revs[0], revs[-1] + 1))
                last = revs[-1]
        writer.close()
    finally:
        await srv.stop()


async def test_member_stopping_cancels_watches_unavailable():
    srv, _sm, _node = await start_server()
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(p.encode_frame({"id": 1, "op": "watch", "key": b"k"}))
    assert p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24)["ok"]
    await srv.stop()
    frame = p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24)
    assert frame["canceled"] and frame["error"] == "unavailable"
    writer.close()


async def test_leaderless_member_cancels_watches_and_refuses_new_ones():
    srv, _sm, node = await start_server(leaderless_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(p.encode_frame({"id": 1, "op": "watch", "key": b"k"}))
        assert p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24)["ok"]
        node.leader_id = None
        async with asyncio.timeout(5):
            frame = p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24)
        assert frame["canceled"] and frame["error"] == "unavailable"
        assert "no leader" in frame["message"]
        writer.write(p.encode_frame({"id": 2, "op": "watch", "key": b"k"}))
        r = p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24)
        assert r["error"] == "unavailable"
        node.leader_id = node.node_id
        await asyncio.sleep(0.5)
        writer.write(p.encode_frame({"id": 3, "op": "watch", "key": b"k"}))
        assert p.decode_body(await p.read_frame(reader, 1 << 24), 1 << 24)["ok"]
        writer.close()
    finally:
        await srv.stop()


async def test_client_resumes_after_slow_watcher_cancel_without_loss():
    """The client's consumer stalls; the server cancels slow-watcher; the client
    re-subscribes from its last revision + 1 and the log has every revision once."""
    srv, _sm, _node = await start_server(buffer_events=20, write_buffer=16 * 1024)
    c = AsyncClient([f"{srv.host}:{srv.port}"], timeout=5)
    try:
        w = c.watch("s/", prefix=True)
        await w.__aenter__()
        value = b"y" * 8192
        writes = [(await c.put(f"s/{i % 7}", value + str(i).encode())).revision
                  for i in range(400)]
        got = await take(w, 400, within=30)
        assert [e.revision for e in got] == writes
        assert [e.value for e in got] == [value + str(i).encode() for i in range(400)]
        await w.cancel()
    finally:
        await c.close()
        await srv.stop()


def test_sync_client_watch(served_sync):
    host, port, _sm, _node = served_sync
    with Client([f"{host}:{port}"], timeout=5) as c:
        r = c.put("cfg", "v1")
        with c.watch("cfg", start_revision=r.revision) as w:
            c.put("cfg", "v2")
            it = iter(w)
            assert [next(it).value, next(it).value] == [b"v1", b"v2"]
        assert list(w) == []
        plain = c.watch("cfg", start_revision=1)  # no `with`: iterating subscribes
        assert next(iter(plain)).value == b"v1" and plain.revision == r.revision
        plain.close()
        assert list(plain) == []


def test_cli_watch_text_output_and_ctrl_c(served_sync):
    """`meshraft watch` prints etcdctl's format (type, [previous key and value,] key,
    value, one per line) and exits 0 on Ctrl-C."""
    import os
    import signal
    import subprocess
    import sys

    host, port, _sm, _node = served_sync
    with Client([f"{host}:{port}"], timeout=5) as c:
        r = c.put("k", "one")
        c.put("k", "two")
        c.delete("k")
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshraft.cli", "watch", "k", "--rev", str(r.revision),
         "--prev-kv", "--endpoints", f"{host}:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ,
                                                             "PYTHONUNBUFFERED": "1"})
    try:
        lines = [proc.stdout.readline() for _ in range(2 + 5 + 5)]
        assert lines == [b"PUT\n", b"k\n", b"one\n",
                         b"PUT\n", b"k\n", b"one\n", b"k\n", b"two\n",
                         b"DELETE\n", b"k\n", b"two\n", b"k\n"][:12]
        assert proc.stdout.readline() == b"\n"  # the tombstone's empty value
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)




async def test_catch_up_from_long_history_joins_the_live_stream_without_gap():
    """A watch from revision 1 over more history than one catch-up step, while writes
    go on: every revision once, in order, across the switch to the live path."""
    srv, sm, _node = await start_server(catchup_events=100, buffer_events=100)
    c = AsyncClient([f"{srv.host}:{srv.port}"], timeout=5)
    try:
        for i in range(1000):
            sm.apply_command(msgpack.packb({"op": "put", "key": b"h/%d" % (i % 13),
                                            "value": b"%d" % i}))
        w = c.watch("h/", prefix=True, start_revision=1)
        await w.__aenter__()

        async def writer():
            for i in range(1000, 1500):
                await c.put(f"h/{i % 13}", str(i))

        task = asyncio.create_task(writer())
        got = await take(w, 1500, within=30)
        await task
        assert [e.revision for e in got] == list(range(1, 1501))
        assert [int(e.value) for e in got] == list(range(1500))
        await w.cancel()
    finally:
        await c.close()
        await srv.stop()


async def test_snapshot_restore_catches_watchers_up_from_the_restored_history():
    """A member that installs a snapshot (it fell behind) sends its watchers the events
    of the revisions it skipped, from the snapshot's history."""
    srv, sm, _node = await start_server()
    c = AsyncClient([f"{srv.host}:{srv.port}"], timeout=5)
    try:
        await c.put("r/a", "0")
        w = c.watch("r/", prefix=True)
        await w.__aenter__()
        ahead = KVStateMachine()  # the leader's copy, three revisions further
        ahead.restore(sm.snapshot())
        for i in range(1, 4):
            ahead.apply_command(msgpack.packb({"op": "put", "key": b"r/a",
                                               "value": b"%d" % i}))
        sm.restore(ahead.snapshot())
        got = await take(w, 3)
        assert [(e.revision, e.value) for e in got] == [(2, b"1"), (3, b"2"), (4, b"3")]
        await c.put("r/a", "4")
        assert [e.value for e in await take(w, 1)] == [b"4"]
        await w.cancel()
    finally:
        await c.close()
        await srv.stop()


async def test_a_timeout_around_async_for_ends_the_iteration_while_events_flow(served):
    """A caller's asyncio.timeout around `async for` always ends it, even while events
    keep arriving (no cancellation lost to a race), and the watch then cancels."""
    _srv, _sm, _node, c = served

    async def writer():
        i = 0
        while True:
            await c.put("t", str(i))
            i += 1

    task = asyncio.create_task(writer())
    try:
        for _ in range(20):
            w = c.watch("t")
            got = 0
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    async for _ev in w:
                        got += 1
            await asyncio.wait_for(w.cancel(), 5)
    finally:
        task.cancel()

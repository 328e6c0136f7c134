"""Transactions through the kv server and the Python client (a fake in-process node)."""

from __future__ import annotations

import asyncio

import kvfixtures
import msgpack
import pytest
from fakenode import FakeNode

from meshraft.kv import client as kc
from meshraft.kv import protocol as p
from meshraft.kv import server as ks
from meshraft.kv.client import Compare, Op
from meshraft.kv.state_machine import KVStateMachine, Limits

served_sync = kvfixtures.served_sync


@pytest.fixture
async def served():
    sm = KVStateMachine()
    node = FakeNode(sm)
    srv = ks.KVServer(node, sm)
    await srv.start()
    try:
        yield srv, node, sm
    finally:
        await srv.stop()


def ep(srv) -> str:
    return f"{srv.host}:{srv.port}"


async def test_txn_roundtrip_with_the_builders(served):
    srv, _node, sm = served
    async with kc.AsyncClient([ep(srv)]) as c:
        await c.put("a", "1")
        await c.put("d/x", "x")
        r = await c.txn(
            compare=[Compare.value("a") == "1", Compare.version("b") == 0,
                     Compare.mod("a") < 100],
            success=[Op.put("a", "2"), Op.put("b", "new"), Op.delete("d/", prefix=True),
                     Op.get("a"), Op.list("")],
            failure=[Op.get("a")])
        assert r.succeeded is True and r.revision == 3
        put_a, put_b, deleted, got, listed = r.responses
        assert put_a == kc.PutResult(3, 1, 2) and put_b == kc.PutResult(3, 3, 1)
        assert deleted == kc.DeleteResult(3, 1)
        assert got == kc.KeyValue(b"a", b"2", 1, 3, 2)
        assert [kv.key for kv in listed.kvs] == [b"a", b"b"] and listed.more is False
        # the else branch: exit-code-1 case of the CLI
        r = await c.txn(compare=[Compare.value("a") == "1"], success=[Op.put("a", "3")],
                        failure=[Op.get("a"), Op.get("zz")])
        assert r.succeeded is False and r.revision == 3
        assert r.responses[0].value == b"2" and r.responses[1] is None
        assert sm.revision == 3


async def test_bad_transactions_are_clear_errors_and_change_nothing(served):
    srv, _node, sm = served
    async with kc.AsyncClient([ep(srv)]) as c:
        with pytest.raises(kc.BadRequest, match="duplicate key"):
            await c.txn(success=[Op.put("k", "1"), Op.put("k", "2")])
        with pytest.raises(kc.TooLarge, match="too many operations"):
            await c.txn(success=[Op.put(f"k{i}", "v") for i in range(129)])
        with pytest.raises(kc.BadRequest, match="target"):
            await c.txn(compare=[{"key": b"k", "target": "size", "result": "=", "value": 1}])
        with pytest.raises(TypeError):
            await c.txn(success=["put k v"])
        with pytest.raises(kc.TooLarge, match="no member accepts more than 1024"):
            await c.txn(success=[Op.get("k")] * 1025)
        assert sm.revision == 0
        # 128 ops (more than a plain request's 64 items) are fine
        r = await c.txn(compare=[Compare.version(f"k{i}") == 0 for i in range(128)],
                        success=[Op.put(f"k{i}", "v") for i in range(128)])
        assert r.succeeded and len(r.responses) == 128 and sm.revision == 1


async def test_the_members_op_limit_is_a_serve_setting():
    sm = KVStateMachine(Limits(max_txn_ops=3))
    srv = ks.KVServer(FakeNode(sm), sm)
    await srv.start()
    try:
        async with kc.AsyncClient([ep(srv)]) as c:
            with pytest.raises(kc.TooLarge, match="the limit is 3"):
                await c.txn(success=[Op.get(f"k{i}") for i in range(4)])
            assert (await c.txn(success=[Op.get(f"k{i}") for i in range(3)])).succeeded
    finally:
        await srv.stop()


async def test_a_retried_txn_returns_its_first_answer(served):
    srv, _node, sm = served
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    body = {"op": "txn", "compare": [{"key": b"n", "target": "version", "result": "=",
                                      "value": 0}],
            "success": [{"op": "put", "key": b"n", "value": b"1"}],
            "failure": [{"op": "put", "key": b"n", "value": b"2"}],
            "cid": "client-1", "seq": 7, "ack": 7}
    answers = []
    for rid in (1, 2):
        writer.write(p.encode_frame({**body, "id": rid}))
        await writer.drain()
        reply = msgpack.unpackb(await p.read_frame(reader, 1 << 24), raw=False)
        assert reply["ok"], reply
        answers.append(reply["result"])
    writer.close()
    assert answers[0] == answers[1] and answers[0]["succeeded"] is True
    assert sm.get(b"n").value == b"1" and sm.revision == 1


async def test_a_large_txn_travels_as_fragments():
    sm = KVStateMachine()
    node = FakeNode(sm)
    srv = ks.KVServer(node, sm, max_entry=4096)
    await srv.start()
    try:
        async with kc.AsyncClient([ep(srv)]) as c:
            big = b"v" * 3000
            r = await c.txn(success=[Op.put(f"k{i}", big) for i in range(10)])
            assert r.succeeded and r.revision == 1
            assert all(sm.get(b"k%d" % i).value == big for i in range(10))
    finally:
        await srv.stop()


def test_the_sync_client_and_cas_over_txn(served_sync):
    host, port, _sm, _node = served_sync
    with kc.Client([f"{host}:{port}"]) as c:
        r = c.txn([Compare.version("x") == 0], [Op.put("x", "1")], [Op.get("x")])
        assert r.succeeded and r.revision == 1
        assert c.cas("x", "1", "2").succeeded
        bad = c.cas("x", "1", "3")
        assert bad == kc.CasResult(False, 2, 2)

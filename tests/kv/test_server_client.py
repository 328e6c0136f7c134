"""The kv server and client over real TCP sockets, in front of a fake in-process node."""

from __future__ import annotations

import asyncio
import struct

import kvfixtures
import msgpack
import pytest
from fakenode import Busy, FakeNode, NodeFailed, NotLeader, Timeout, Unavailable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshraft.kv import client as kc
from meshraft.kv import protocol as p
from meshraft.kv import server as ks
from meshraft.kv.state_machine import KVStateMachine, Limits

served_sync = kvfixtures.served_sync  # a fixture shared with the other kv tests


@pytest.fixture
async def served():
    sm = KVStateMachine()
    node = FakeNode(sm)
    srv = ks.KVServer(node, sm, status_extra=lambda: {"mesh": {"peers": ["2"], "routes": {}}})
    await srv.start()
    try:
        yield srv, node, sm
    finally:
        await srv.stop()


def ep(srv) -> str:
    return f"{srv.host}:{srv.port}"


async def raw(srv):
    return await asyncio.open_connection(srv.host, srv.port)


async def send(writer, body) -> None:
    writer.write(p.encode_frame(body))
    await writer.drain()


async def recv(reader) -> dict:
    payload = await asyncio.wait_for(p.read_frame(reader, 1 << 24), 5)
    return msgpack.unpackb(payload, raw=False)


async def test_roundtrip_put_get_delete_cas_list(served):
    srv, _node, _sm = served
    async with kc.AsyncClient([ep(srv)]) as c:
        r = await c.put("a", "1")
        assert r.revision == 1 and r.version == 1
        await c.put(b"b", b"\x00\xff")
        kv = await c.get("a")
        assert kv == kc.KeyValue(b"a", b"1", 1, 1, 1)
        assert await c.get("missing") is None
        assert (await c.cas("a", "1", "2")).succeeded
        res = await c.cas("a", "1", "3")
        assert not res.succeeded and res.mod_revision == 3
        assert (await c.cas("new", None, "x")).succeeded
        assert not (await c.cas("new", None, "y")).succeeded
        assert [k.key for k in await c.list()] == [b"a", b"b", b"new"]
        assert (await c.delete("a")).deleted == 1
        assert (await c.delete("a")).deleted == 0
        assert [k.key for k in await c.list("n")] == [b"new"]


async def test_reads_are_linearizable_by_default_and_serializable_skips_the_barrier(served):
    srv, node, _sm = served
    async with kc.AsyncClient([ep(srv)]) as c:
        await c.put("k", "v")
        await c.get("k")
        assert node.barriers == 1
        await c.get("k", serializable=True)
        await c.list(serializable=True)
        assert node.barriers == 1
        await c.list()
        assert node.barriers == 2


async def test_a_write_whose_answer_was_lost_is_retried_and_applied_once(served):
    srv, node, sm = served
    node.apply_then_timeout = 1
    async with kc.AsyncClient([ep(srv)], backoff=(0.001, 0.01)) as c:
        r = await c.put("k", "v")
    assert node.proposals == 2  # proposed twice ...
    assert sm.revision == 1 and r.revision == 1  # ... applied once, first answer returned
    assert sm.get(b"k").version == 1


async def test_write_that_keeps_timing_out_is_outcome_unknown(served):
    srv, node, _sm = served
    node.fail_with = Timeout("slow")
    async with kc.AsyncClient([ep(srv)], timeout=0.5, backoff=(0.01, 0.02)) as c:
        with pytest.raises(kc.OutcomeUnknown):
            await c.put("k", "v")
        # a read that cannot happen is simply unavailable: it has no effect to be unsure of
        with pytest.raises(kc.Unavailable):
            await c.get("k")


@pytest.mark.parametrize("exc,cls", [(Unavailable("no leader"), kc.Unavailable),
                                     (NotLeader(leader_id="2"), kc.Unavailable),
                                     (Busy("full"), kc.Busy)])
async def test_write_that_certainly_failed_is_unavailable(served, exc, cls):
    srv, node, sm = served
    node.fail_with = exc
    async with kc.AsyncClient([ep(srv)], timeout=0.3, backoff=(0.01, 0.02)) as c:
        with pytest.raises(cls):
            await c.put("k", "v")
    assert sm.revision == 0


async def test_bounded_inflight_proposals_answer_busy(served):
    srv, node, sm = served
    srv.max_inflight = 2
    node.delay = 0.3
    r, w = await raw(srv)
    for i in range(1, 5):
        await send(w, {"id": i, "op": "put", "key": b"k%d" % i, "value": b"v"})
    replies = [await recv(r) for _ in range(4)]
    codes = sorted(str(x.get("error")) for x in replies if not x["ok"])
    assert codes == ["busy", "busy"]
    assert sum(1 for x in replies if x["ok"]) == 2
    assert sm.revision == 2
    w.close()


async def test_several_requests_in_flight_answer_out_of_order(served):
    srv, node, _sm = served
    node.delay = 0.3
    r, w = await raw(srv)
    await send(w, {"id": 1, "op": "put", "key": b"k", "value": b"v"})
    await send(w, {"id": 2, "op": "ping"})
    first, second = await recv(r), await recv(r)
    assert (first["id"], second["id"]) == (2, 1)
    assert second["ok"] and second["result"]["revision"] == 1
    w.close()


async def test_client_uses_the_next_endpoint_when_one_is_down(served):
    srv, _node, _sm = served
    dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = dead.sockets[0].getsockname()[1]
    dead.close()
    await dead.wait_closed()
    async with kc.AsyncClient([f"127.0.0.1:{dead_port}", ep(srv)]) as c:
        assert (await c.put("k", "v")).revision == 1
        assert c.endpoint == (srv.host, srv.port)


async def test_no_endpoint_reachable_is_unavailable():
    dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = dead.sockets[0].getsockname()[1]
    dead.close()
    await dead.wait_closed()
    async with kc.AsyncClient([f"127.0.0.1:{port}"], timeout=0.3) as c:
        with pytest.raises(kc.Unavailable, match="cannot connect"):
            await c.put("k", "v")


async def test_status_includes_node_kv_and_extra(served):
    srv, _node, _sm = served
    async with kc.AsyncClient([ep(srv)]) as c:
        await c.put("k", "v")
        st = await c.status()
    assert st["role"] == "leader" and st["mesh"]["peers"] == ["2"]
    assert st["kv"]["revision"] == 1 and st["kv"]["keys"] == 1
    assert st["progress"] == {"2": 0}


async def test_list_pages(served, monkeypatch):
    srv, _node, _sm = served
    monkeypatch.setattr(ks, "LIST_PAGE_MAX", 3)
    async with kc.AsyncClient([ep(srv)]) as c:
        for i in range(10):
            await c.put(f"k{i}", "v")
        await c.put("other", "v")
        keys = [kv.key for kv in await c.list("k")]
    assert keys == [b"k%d" % i for i in range(10)]


# -- bad input ----------------------------------------------------------------------------------


async def assert_still_serving(srv, sm, revision):
    """The server answers a fresh connection and the store did not change."""
    assert sm.revision == revision
    async with kc.AsyncClient([ep(srv)]) as c:
        await c.ping()


@pytest.mark.parametrize("body,code", [
    ({"id": 1, "op": "put", "key": b"k" * 1025, "value": b"v"}, "too-large"),
    ({"id": 1, "op": "put", "key": b"k", "value": b"v" * (1024 * 1024 + 1)}, "too-large"),
    ({"id": 1, "op": "cas", "key": b"k", "expected": b"x" * (1024 * 1024 + 1), "value": b"v"},
     "too-large"),
    ({"id": 1, "op": "get", "key": b"k" * 1025}, "too-large"),
    ({"id": 1, "op": "frobnicate", "key": b"k"}, "bad-request"),
    ({"id": 1, "key": b"k"}, "bad-request"),
    ({"id": 1, "op": "put", "key": "str-not-bytes", "value": b"v"}, "bad-request"),
    ({"id": 1, "op": "put", "key": b"k", "value": 42}, "bad-request"),
    ({"id": 1, "op": "get", "key": b"k", "serializable": "yes"}, "bad-request"),
    ({"id": 1, "op": "get", "key": b"k", "timeout": -1}, "bad-request"),
    ({"id": 1, "op": "list", "limit": 0}, "bad-request"),
])
async def test_bad_requests_get_a_clear_error_and_change_nothing(served, body, code):
    srv, _node, sm = served
    async with kc.AsyncClient([ep(srv)]) as c:
        await c.put("k", "orig")
    r, w = await raw(srv)
    await send(w, body)
    reply = await recv(r)
    assert reply["id"] == 1 and reply["ok"] is False
    assert reply["error"] == code and reply["message"]
    # the same connection keeps working
    await send(w, {"id": 2, "op": "get", "key": b"k"})
    reply = await recv(r)
    assert reply["ok"] and reply["result"]["kv"]["value"] == b"orig"
    w.close()
    await assert_still_serving(srv, sm, 1)


async def test_client_raises_clear_errors_for_bad_input(served):
    srv, _node, sm = served
    async with kc.AsyncClient([ep(srv)]) as c:
        with pytest.raises(kc.TooLarge, match="key is 1025 bytes"):
            await c.put(b"k" * 1025, b"v")
        with pytest.raises(kc.TooLarge, match="value is 1048577 bytes"):
            await c.put(b"k", b"v" * (1024 * 1024 + 1))
        with pytest.raises(kc.BadRequest, match="empty"):
            await c.put(b"", b"v")
        # a value of exactly the limit is fine
        assert (await c.put(b"k", b"v" * (1024 * 1024))).revision == 1
    assert sm.revision == 1


async def test_undecodable_body_is_answered_and_the_connection_survives(served):
    srv, _node, sm = served
    r, w = await raw(srv)
    for garbage in (b"\xc1\xc1\xc1", b"\x93\x01\x02\x03", b"\x81\xa2id\xa3str", b"\x01\x02"):
        w.write(struct.pack(">I", len(garbage)) + garbage)
        await w.drain()
        reply = await recv(r)
        assert reply["ok"] is False and reply["error"] == "bad-request" and reply["id"] is None
    await send(w, {"id": 9, "op": "ping"})
    assert (await recv(r))["ok"]
    w.close()
    await assert_still_serving(srv, sm, 0)


async def test_broken_framing_is_answered_then_closed(served):
    srv, _node, sm = served
    r, w = await raw(srv)
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # length prefix reads as ~1.2 GB
    await w.drain()
    reply = await recv(r)
    assert reply["error"] == "too-large" and "closing" in reply["message"]
    assert await asyncio.wait_for(r.read(), 5) == b""  # closed
    w.close()
    await assert_still_serving(srv, sm, 0)


async def test_truncated_frame_closes_only_that_connection(served):
    srv, _node, sm = served
    r, w = await raw(srv)
    frame = p.encode_frame({"id": 1, "op": "put", "key": b"k", "value": b"v" * 100})
    w.write(frame[: len(frame) // 2])
    await w.drain()
    w.write_eof()
    reply = await recv(r)
    assert reply["error"] == "bad-request" and "truncated" in reply["message"]
    assert await asyncio.wait_for(r.read(), 5) == b""  # closed by the server
    w.close()
    # a half header, too
    r2, w2 = await raw(srv)
    w2.write(b"\x00\x00")
    w2.write_eof()
    assert await asyncio.wait_for(r2.read(), 5) == b""
    w2.close()
    await assert_still_serving(srv, sm, 0)


async def test_configurable_limits():
    sm = KVStateMachine(Limits(max_key=8, max_value=16))
    srv = ks.KVServer(FakeNode(sm), sm)
    await srv.start()
    try:
        async with kc.AsyncClient([ep(srv)]) as c:
            with pytest.raises(kc.TooLarge):
                await c.put(b"123456789", b"v")
            with pytest.raises(kc.TooLarge):
                await c.put(b"k", b"x" * 17)
            await c.put(b"12345678", b"x" * 16)
    finally:
        await srv.stop()


def test_sync_client(served_sync):
    host, port, sm, _node = served_sync
    with kc.Client([f"{host}:{port}"]) as c:
        assert c.put("k", "v").revision == 1
        assert c.get("k").value == b"v"
        assert c.cas("k", "v", "w").succeeded
        assert [kv.key for kv in c.list()] == [b"k"]
        assert c.delete("k").deleted == 1
        assert c.get("k") is None
    assert sm.revision == 3


async def test_large_values_travel_as_fragments():
    sm = KVStateMachine()
    node = FakeNode(sm)
    srv = ks.KVServer(node, sm, max_entry=4096)
    await srv.start()
    try:
        async with kc.AsyncClient([ep(srv)]) as c:
            value = b"v" * (1024 * 1024)
            assert (await c.put("big", value)).revision == 1
            assert node.proposals > 200
            assert (await c.get("big")).value == value
            assert (await c.cas("big", value, b"small")).succeeded
            assert (await c.get("big")).value == b"small"
    finally:
        await srv.stop()


async def test_a_lost_fragment_means_not_applied():
    sm = KVStateMachine()
    node = FakeNode(sm)
    srv = ks.KVServer(node, sm, max_entry=4096)
    await srv.start()
    calls = 0
    real = node.propose

    async def flaky(data, timeout=5.0):  # noqa: ASYNC109 - the node API
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Unavailable("leader lost")
        return await real(data, timeout)

    node.propose = flaky
    try:
        r, w = await raw(srv)
        await send(w, {"id": 1, "op": "put", "key": b"k", "value": b"v" * 20_000})
        reply = await recv(r)
        assert reply["error"] == "unavailable" and "not applied" in reply["message"]
        assert sm.revision == 0
        w.close()
    finally:
        await srv.stop()


async def test_a_request_stuck_with_a_dead_leader_is_asked_again_when_the_leader_changes(served):
    srv, node, sm = served
    real_propose, real_barrier = node.propose, node.read_barrier
    calls = {"propose": 0, "barrier": 0}

    def stuck_once(kind, real):
        async def call(*args, timeout=5.0):  # noqa: ASYNC109 - the node API
            calls[kind] += 1
            if calls[kind] == 1:  # forwarded to a leader that died: never answered
                await asyncio.sleep(timeout)
                raise Timeout("lost with the old leader")
            return await real(*args, timeout=timeout)
        return call

    node.propose = stuck_once("propose", real_propose)
    node.read_barrier = stuck_once("barrier", real_barrier)

    async def new_leader_soon():
        await asyncio.sleep(0.2)
        node.leader_id = "2"

    async with kc.AsyncClient([ep(srv)], attempt_timeout=4.0) as c:
        task = asyncio.create_task(new_leader_soon())
        r = await c.put("k", "v")
        await task
        # the server asked again itself (the client did not have to time out and retry)
        assert srv.stats["retried_on_leader_change"] == 1 and c.retries == 0
        assert r.revision == 1 and sm.revision == 1 and calls["propose"] == 2
        task = asyncio.create_task(new_leader_soon())
        node.leader_id = "1"
        assert (await c.get("k")).value == b"v"
        await task
        assert calls["barrier"] == 2 and srv.stats["retried_on_leader_change"] == 2


async def test_connections_beyond_the_bound_are_told_busy(served):
    srv, _node, _sm = served
    srv.max_connections = 2
    held = [await raw(srv) for _ in range(2)]
    for r, w in held:  # make sure both are accepted and served
        await send(w, {"id": 1, "op": "ping"})
        assert (await recv(r))["ok"]
    r, w = await raw(srv)
    reply = await recv(r)
    assert reply["error"] == "busy" and "too many client connections" in reply["message"]
    assert await asyncio.wait_for(r.read(), 5) == b""
    w.close()
    for _r, hw in held:
        hw.close()
    await asyncio.sleep(0.1)
    await assert_still_serving(srv, _sm, 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda d: msgpack.packb(d, use_bin_type=True), st.dictionaries(
        st.sampled_from(["id", "op", "key", "value", "expected", "prefix", "after", "limit",
                         "serializable", "timeout", "cid", "seq", "ack", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                  st.text(max_size=8),
                  st.binary(max_size=8), st.sampled_from(["put", "get", "cas", "delete",
                                                          "list", "status", "ping"])),
        max_size=8)),
))
def test_any_payload_gets_a_reply_and_never_breaks_the_server(payload):
    sm = KVStateMachine()
    srv = ks.KVServer(FakeNode(sm), sm)
    reply = asyncio.run(srv.handle_payload(payload))
    assert isinstance(reply, dict) and reply["ok"] in (True, False)
    if not reply["ok"]:
        assert reply["error"] in p.ERROR_CODES and reply["error"] != p.INTERNAL, reply
    msgpack.packb(reply, use_bin_type=True)  # the reply itself is always encodable


async def test_an_unknown_attempt_keeps_the_outcome_unknown_even_if_a_retry_fails(served):
    srv, node, _sm = served
    calls = 0

    async def propose(data, timeout=5.0):  # noqa: ASYNC109 - the node API
        nonlocal calls
        calls += 1
        if calls == 1:  # times out while the second attempt is still running
            await asyncio.sleep(0.4)
            raise Timeout("may still apply")
        await asyncio.sleep(0.6)
        raise Unavailable("no quorum")

    node.propose = propose

    async def new_leader_soon():
        await asyncio.sleep(0.1)
        node.leader_id = "2"

    task = asyncio.create_task(new_leader_soon())
    r, w = await raw(srv)
    await send(w, {"id": 1, "op": "put", "key": b"k", "value": b"v", "cid": "c", "seq": 1,
                   "timeout": 2.0})
    reply = await recv(r)
    await task
    assert calls == 2
    assert reply["error"] == "timeout"  # not "unavailable": the first try may still apply
    w.close()


async def test_client_finds_the_leader_and_sends_there():
    sm1, sm2 = KVStateMachine(), KVStateMachine()
    n1, n2 = FakeNode(sm1, "1"), FakeNode(sm2, "2")
    n1.leader_id = n2.leader_id = "2"
    n1.role = "follower"
    s1, s2 = ks.KVServer(n1, sm1), ks.KVServer(n2, sm2)
    await s1.start()
    await s2.start()
    try:
        async with kc.AsyncClient([ep(s1), ep(s2)]) as c:
            await c.put("a", "1")  # answered by member 1, which names 2 as leader
            assert n1.proposals == 1
            await asyncio.sleep(0.2)  # the client identifies the other endpoint
            await c.put("b", "1")
            await c.get("b")
            assert n2.proposals == 1 and n2.barriers == 1 and n1.proposals == 1
        async with kc.AsyncClient([ep(s1), ep(s2)], prefer_leader=False) as c:
            await c.put("c", "1")
            await asyncio.sleep(0.2)
            await c.put("d", "1")
            assert n1.proposals == 3
    finally:
        await s1.stop()
        await s2.stop()


async def test_stop_lets_requests_in_progress_finish():
    sm = KVStateMachine()
    node = FakeNode(sm)
    srv = ks.KVServer(node, sm)
    await srv.start()
    node.delay = 0.3
    r, w = await raw(srv)
    await send(w, {"id": 1, "op": "put", "key": b"k", "value": b"v"})
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(srv.stop(grace=2.0))
    await asyncio.sleep(0.05)
    await send(w, {"id": 2, "op": "ping"})
    replies = {x["id"]: x for x in [await recv(r), await recv(r)]}
    assert replies[1]["ok"] and replies[1]["result"]["revision"] == 1
    assert replies[2]["error"] == "unavailable" and "shutting down" in replies[2]["message"]
    await stopping
    assert await asyncio.wait_for(r.read(), 5) == b""
    w.close()


async def test_membership_ops_and_their_bad_input():
    sm = KVStateMachine()
    node = FakeNode(sm)
    srv = ks.KVServer(node, sm, member_address=lambda nid, addr: ("udp", addr))
    await srv.start()
    try:
        async with kc.AsyncClient([ep(srv)]) as c:
            await c.add_member("2", "127.0.0.1:7002", learner=True)
            assert node.addresses["2"] == ("udp", "127.0.0.1:7002")
            m = await c.members()
            assert m["voters"] == ["1"] and m["learners"] == ["2"]
            await c.promote_member("2")
            await c.remove_member("1")
            assert (await c.members())["voters"] == ["2"]
            with pytest.raises(kc.BadRequest, match="already a member"):
                await c.add_member("2", "127.0.0.1:7002")
        r, w = await raw(srv)
        for body in ({"id": 1, "op": "member_add", "member": "", "address": "x"},
                     {"id": 1, "op": "member_add", "member": "3"},
                     {"id": 1, "op": "member_add", "member": "3", "address": "a:1",
                      "learner": "yes"},
                     {"id": 1, "op": "member_remove", "member": 7}):
            await send(w, body)
            reply = await recv(r)
            assert reply["error"] == "bad-request" and reply["message"], body
        w.close()
        assert node.voters == ["2"] and node.learners == []
    finally:
        await srv.stop()


async def test_a_retried_membership_change_that_collides_with_itself_is_outcome_unknown():
    """A membership change is not deduplicated like a write: if the first try was
    applied but its answer lost, the retry is refused ("already a member"). That is
    not the user's mistake (exit 2); the outcome is unknown (exit 3)."""
    sm = KVStateMachine()
    node = FakeNode(sm)
    srv = ks.KVServer(node, sm, member_address=lambda nid, addr: ("udp", addr))
    await srv.start()
    try:
        async with kc.AsyncClient([ep(srv)], timeout=5, attempt_timeout=1) as c:
            node.apply_then_timeout = 1
            with pytest.raises(kc.OutcomeUnknown, match="earlier attempt may have been"):
                await c.add_member("2", "127.0.0.1:7002", learner=True)
            assert node.learners == ["2"]
            # without a lost answer, the same refusal is the user's: BadRequest
            with pytest.raises(kc.BadRequest, match="already a member"):
                await c.add_member("2", "127.0.0.1:7002", learner=True)
    finally:
        await srv.stop()


async def test_members_shows_the_addresses_the_embedder_maps_to():
    """With the mesh, Raft knows members by peer name; `members` shows HOST:PORT."""
    sm = KVStateMachine()
    node = FakeNode(sm)
    names = {"1": "127.0.0.1:7001"}
    srv = ks.KVServer(node, sm, member_address=lambda nid, addr: nid,
                      member_addresses=lambda addrs: {n: names.get(n) for n in addrs})
    await srv.start()
    try:
        async with kc.AsyncClient([ep(srv)]) as c:
            await c.add_member("2", "127.0.0.1:7002", learner=True)
            assert node.addresses["2"] == "2"  # what the transport addresses it by
            assert (await c.members())["addresses"] == {"1": "127.0.0.1:7001", "2": None}
            names["2"] = "127.0.0.1:7002"  # it joined the mesh
            assert (await c.members())["addresses"]["2"] == "127.0.0.1:7002"
    finally:
        await srv.stop()


# -- a node that stopped serving (fail-stop) ----------------------------------------------------

FAIL_STOP = ("internal error, this member stopped serving (fail-stop; restart it): "
             "core.step: RuntimeError: injected")


@pytest.mark.parametrize("request_body", [
    {"op": "put", "key": b"k", "value": b"v"},
    {"op": "get", "key": b"k"},
    {"op": "get", "key": b"k", "serializable": True},
    {"op": "list", "serializable": True},
    {"op": "member_remove", "member": "2"},
])
async def test_a_failed_node_answers_every_request_with_its_reason_at_once(served, request_body):
    srv, node, sm = served
    sm_revision = sm.revision
    node.failed = FAIL_STOP  # as the node's status says after a fail-stop
    r, w = await raw(srv)
    await send(w, {"id": 1, **request_body})
    reply = await recv(r)  # at once: recv gives up after 5 s
    assert reply["ok"] is False and reply["error"] == p.UNAVAILABLE
    assert reply["message"] == f"node 1: {FAIL_STOP}; ask another member"
    assert node.proposals == 0 and node.barriers == 0 and sm.revision == sm_revision
    # status, ping and members still answer, and status says why
    for i, op in enumerate(["status", "ping", "members"], start=2):
        await send(w, {"id": i, "op": op})
        assert (await recv(r))["ok"] is True
    w.close()
    async with kc.AsyncClient([ep(srv)], timeout=0.3, backoff=(0.01, 0.02)) as c:
        assert (await c.status())["failed"] == FAIL_STOP
        with pytest.raises(kc.Unavailable, match="fail-stop"):
            await c.get("k", serializable=True)


async def test_a_node_failure_met_by_a_request_stops_serializable_reads_too(served):
    srv, node, _sm = served
    async with kc.AsyncClient([ep(srv)], timeout=0.3, backoff=(0.01, 0.02)) as c:
        await c.put("k", "v")
        assert (await c.get("k", serializable=True)).value == b"v"
        # the node raises NodeFailed; its status never says so here
        node.fail_with = NodeFailed(FAIL_STOP)
        with pytest.raises(kc.Unavailable, match="fail-stop"):
            await c.put("k", "w")
        node.fail_with = None
        with pytest.raises(kc.Unavailable, match="fail-stop"):
            await c.get("k", serializable=True)


async def test_a_failed_disk_is_not_a_fail_stop_serializable_reads_go_on(served):
    srv, node, _sm = served
    async with kc.AsyncClient([ep(srv)], timeout=0.3, backoff=(0.01, 0.02)) as c:
        await c.put("k", "v")
        node.failed = node.storage_failed = "fsync failed: EIO"
        # every request asks the node whether it fail-stopped; a failed disk is not that
        for _ in range(20):
            assert (await c.get("k", serializable=True)).value == b"v"

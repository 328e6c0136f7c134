"""The leader's lease clocks (meshraft.kv.lease_manager) against a scripted node: the
clocks start only after a read-index round, a keepalive is acknowledged only after a
round that started after it arrived, expiry goes through the log as a revoke, and a
member that stops leading forgets every deadline."""

# ruff: noqa: ASYNC109, ASYNC110  (until() polls a condition: the scripted node has no event)

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshraft.kv import protocol as p
from meshraft.kv.lease import LEASE_NOT_FOUND
from meshraft.kv.lease_manager import LeaseManager
from meshraft.kv.state_machine import KVStateMachine, encode_command
from meshraft.raft.errors import NotLeader


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedNode:
    """Leads (or not) as told; read-index rounds end only when the test says so;
    proposals apply to the state machine at once."""

    def __init__(self, sm: KVStateMachine) -> None:
        self.sm = sm
        self.node_id = "1"
        self.role = "leader"
        self.leader_id: str | None = "1"
        self.term = 2
        self.rounds: list[asyncio.Future] = []
        self.proposed: list[dict] = []
        self._change: asyncio.Future | None = None

    def status(self) -> dict[str, Any]:
        return {"term": self.term}

    def leader_change_future(self) -> asyncio.Future:
        if self._change is None or self._change.done():
            self._change = asyncio.get_running_loop().create_future()
        return self._change

    def change_leader(self, leader: str | None, role: str) -> None:
        self.leader_id, self.role = leader, role
        if self._change is not None and not self._change.done():
            self._change.set_result(leader)

    def read_index_future(self) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.rounds.append(fut)
        return fut

    def end_rounds(self, exc: BaseException | None = None) -> None:
        for f in self.rounds:
            if not f.done():
                f.set_exception(exc) if exc is not None else f.set_result(None)

    def propose_future(self, data: bytes,
                       result_to: asyncio.Future | None = None) -> asyncio.Future:
        import msgpack

        self.proposed.append(msgpack.unpackb(data))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(self.sm.apply_command(data))
        if result_to is not None and not result_to.done():
            result_to.set_result(fut.result())
        return fut


class Server:
    def __init__(self, sm: KVStateMachine) -> None:
        self.sm = sm
        self.ops: dict[str, Any] = {}
        self.writes: list[dict] = []

    def register_op(self, name: str, handler: Any) -> None:
        self.ops[name] = handler

    async def write(self, rid: Any, body: dict, timeout: float) -> dict:
        self.writes.append(body)
        result = self.sm.apply_command(encode_command(body))
        if "error" in result:
            return p.error_reply(rid, result["error"], result["message"])
        return p.ok_reply(rid, result)

    async def call(self, op: str, timeout: float = 5.0, **body: Any) -> dict:
        return await self.ops[op](self, 1, {"op": op, **body}, timeout)


async def until(cond, what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


@pytest.fixture
def world():
    sm = KVStateMachine()
    node = ScriptedNode(sm)
    clock = Clock()
    mgr = LeaseManager(node, sm, tick=0.01, clock=clock)
    server = Server(sm)
    mgr.install(server)
    return sm, node, clock, mgr, server


def grant(sm: KVStateMachine, ttl: int) -> int:
    return sm.apply_command(encode_command({"op": "lease_grant", "ttl": ttl}))["id"]


async def start_leading(node: ScriptedNode, mgr: LeaseManager) -> None:
    mgr.start()
    await until(lambda: node.rounds, "the warm-up round")
    node.end_rounds()
    await until(lambda: mgr.ready, "the clocks to start")


async def test_clocks_start_after_a_read_round_with_the_full_ttl(world):
    sm, node, clock, mgr, _ = world
    lid = grant(sm, 10)
    mgr.start()
    await until(lambda: node.rounds, "the warm-up round")
    assert not mgr.ready and mgr.remaining(lid) is None
    clock.now += 7  # time before this member caught up does not count
    node.end_rounds()
    await until(lambda: mgr.ready, "the clocks to start")
    assert mgr.remaining(lid) == 10.0
    await mgr.stop()


async def test_a_keepalive_waits_for_a_round_that_started_after_it(world):
    sm, node, clock, mgr, server = world
    lid = grant(sm, 10)
    await start_leading(node, mgr)
    clock.now += 6
    before = len(node.rounds)
    ka = asyncio.ensure_future(server.call("lease_keepalive", lease_id=lid))
    await until(lambda: len(node.rounds) > before, "a new round")
    assert not ka.done() and mgr.remaining(lid) == 4.0
    node.end_rounds()
    reply = await ka
    assert reply["ok"] and reply["result"] == {"id": lid, "ttl": 10}
    assert mgr.remaining(lid) == 10.0
    await mgr.stop()


async def test_a_keepalive_is_not_acknowledged_when_leadership_is_not_confirmed(world):
    sm, node, clock, mgr, server = world
    lid = grant(sm, 10)
    await start_leading(node, mgr)
    clock.now += 6
    ka = asyncio.ensure_future(server.call("lease_keepalive", lease_id=lid))
    await until(lambda: any(not f.done() for f in node.rounds), "a round")
    node.end_rounds(NotLeader("deposed"))
    reply = await ka
    assert not reply["ok"] and reply["error"] == p.UNAVAILABLE
    assert mgr.remaining(lid) == 4.0  # not renewed
    await mgr.stop()


async def test_expiry_is_a_revoke_through_the_log_and_deletes_the_keys(world):
    sm, node, clock, mgr, server = world
    lid = grant(sm, 3)
    sm.apply_command(encode_command({"op": "put", "key": b"k", "value": b"v", "lease": lid}))
    await start_leading(node, mgr)
    clock.now += 2.9
    await asyncio.sleep(0.05)
    assert node.proposed == [] and sm.get(b"k") is not None
    clock.now += 0.2
    await until(lambda: sm.get(b"k") is None, "the expiry")
    assert node.proposed == [{"op": "lease_revoke", "lease_id": lid, "expired": True,
                              "renewals": 0}]
    ka = asyncio.ensure_future(server.call("lease_keepalive", lease_id=lid))
    await until(lambda: any(not f.done() for f in node.rounds), "a round")
    node.end_rounds()
    assert (await ka)["error"] == LEASE_NOT_FOUND
    await mgr.stop()


async def test_a_member_that_stops_leading_forgets_its_deadlines(world):
    sm, node, clock, mgr, server = world
    lid = grant(sm, 3)
    await start_leading(node, mgr)
    node.change_leader("2", "follower")
    await until(lambda: not mgr.ready, "standing down")
    assert mgr.remaining(lid) is None
    clock.now += 100  # no clock runs here: nothing expires
    await asyncio.sleep(0.05)
    assert node.proposed == [] and lid in sm.leases
    # a keepalive reaching this follower is forwarded through the log
    reply = await server.call("lease_keepalive", lease_id=lid)
    assert reply["ok"] and server.writes == [{"op": "lease_keepalive", "lease_id": lid}]
    assert sm.leases.renewals(lid) == 1
    ttl = await server.call("lease_ttl", lease_id=lid)
    assert ttl["error"] == p.NOT_LEADER and ttl["leader"] == "2"
    await mgr.stop()


async def test_grants_beyond_the_members_maximum_are_refused(world):
    sm, node, clock, _, _ = world
    srv = Server(sm)
    LeaseManager(node, sm, max_leases=1, clock=clock).install(srv)
    assert (await srv.call("lease_grant", ttl=5))["ok"]
    reply = await srv.call("lease_grant", ttl=5)
    assert reply["error"] == "too-many-leases" and len(sm.leases) == 1

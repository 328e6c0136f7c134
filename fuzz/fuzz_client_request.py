"""atheris harness: client requests, through the kv server's request handler
(``KVServer.handle_payload``) in front of a state machine on an in-process node.

    pip install -e '.[fuzz]'
    python fuzz/fuzz_client_request.py -atheris_runs=100000

Every reply is a protocol reply (``ok`` true, or an error code the protocol
knows); the store changes only when a write was answered ok."""

# ruff: noqa: ASYNC109  (the node's API takes a timeout)

from __future__ import annotations

import asyncio
from typing import Any

import _harness

with _harness.instrumented():
    from meshraft.kv import protocol as p
    from meshraft.kv.server import KVServer
    from meshraft.kv.state_machine import KVStateMachine
    from meshraft.raft.messages import Entry


class InstantNode:
    """A one-member "cluster" that applies every proposal at once (no Raft)."""

    node_id = "1"
    leader_id = "1"

    def __init__(self, sm: KVStateMachine) -> None:
        self.sm = sm
        self.index = 0

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any:
        self.index += 1
        return self.sm.apply(Entry(1, self.index, data=data))

    async def read_barrier(self, timeout: float = 5.0) -> int:
        return self.index

    def status(self) -> dict[str, Any]:
        return {"id": "1", "role": "leader", "leader": "1", "voters": ["1"], "learners": []}


sm = KVStateMachine()
server = KVServer(InstantNode(sm), sm)
loop = asyncio.new_event_loop()


def test_one_input(data: bytes) -> None:
    before = sm.revision
    reply = loop.run_until_complete(server.handle_payload(data))
    assert isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        assert reply["error"] in p.ERROR_CODES, reply
        assert sm.revision == before, reply
    p.encode_frame(reply)  # the reply can always be sent


if __name__ == "__main__":
    _harness.main(test_one_input)

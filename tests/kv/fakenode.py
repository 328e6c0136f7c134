"""An in-process stand-in for ``meshraft.raft.node.RaftNode`` (its contract's methods only),
so the kv server and client can be tested without Raft. Not part of the package."""

# ruff: noqa: ASYNC109  (a per-call timeout argument is part of the node's and client's API)

from __future__ import annotations

import asyncio
from typing import Any

from meshraft.raft.errors import Busy, NodeFailed, NotLeader, Timeout, Unavailable
from meshraft.raft.messages import Entry

__all__ = ["Busy", "FakeNode", "NodeFailed", "NotLeader", "Timeout", "Unavailable"]


class FakeNode:
    """Applies every proposal at once, unless told to fail, delay or lose answers.

    ``fail_with``: an exception raised by the next propose/read_barrier calls.
    ``apply_then_timeout``: apply the entry but raise Timeout (an unknown outcome).
    ``delay``: seconds each proposal waits before it is applied.
    """

    def __init__(self, sm, node_id: str = "1") -> None:
        self.sm = sm
        self.node_id = node_id
        self.index = 0
        self.fail_with: BaseException | None = None
        self.apply_then_timeout = 0
        self.delay = 0.0
        self.barriers = 0
        self.proposals = 0
        self.role = "leader"
        self._leader_id: str | None = node_id
        self._leader_change: asyncio.Future | None = None
        self.voters: list[str] = [node_id]
        self.learners: list[str] = []
        self.addresses: dict[str, object] = {node_id: "self"}
        self.failed: str | None = None  # status()["failed"]: why it stopped serving
        self.storage_failed: str | None = None  # status()["storage"]["failed"]

    @property
    def fail_stopped(self) -> str | None:
        """As RaftNode.fail_stopped: the reason of a fail-stop, not of a failed disk."""
        return self.failed if self.storage_failed is None else None

    @property
    def leader_id(self) -> str | None:
        return self._leader_id

    @leader_id.setter
    def leader_id(self, value: str | None) -> None:
        changed = value != self._leader_id
        self._leader_id = value
        fut = self._leader_change
        if changed and fut is not None and not fut.done():
            fut.set_result(value)

    def leader_change_future(self) -> asyncio.Future:
        if self._leader_change is None or self._leader_change.done():
            self._leader_change = asyncio.get_running_loop().create_future()
        return self._leader_change

    def propose_future(self, data: bytes,
                       result_to: asyncio.Future | None = None) -> asyncio.Future:
        # the same calls, without waiting: raises what propose() raises before waiting
        if self.fail_with is not None:
            self.proposals += 1
            raise self.fail_with
        fut = asyncio.ensure_future(self.propose(data, timeout=3600))
        if result_to is not None:  # as RaftNode: ended by an applied proposal only
            def applied(f: asyncio.Future) -> None:
                if not f.cancelled() and f.exception() is None and not result_to.done():
                    result_to.set_result(f.result())
            fut.add_done_callback(applied)
        return fut

    def read_index_future(self) -> asyncio.Future:
        if self.fail_with is not None:
            self.barriers += 1
            raise self.fail_with
        return asyncio.ensure_future(self.read_barrier(timeout=3600))

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any:
        self.proposals += 1
        if self.fail_with is not None:
            raise self.fail_with
        if self.delay:
            try:
                await asyncio.wait_for(asyncio.sleep(self.delay), timeout)
            except TimeoutError:
                raise Timeout("not applied in time") from None
        self.index += 1
        result = self.sm.apply(Entry(term=1, index=self.index, data=data))
        if self.apply_then_timeout:
            self.apply_then_timeout -= 1
            raise Timeout("applied, but the answer was lost")
        return result

    async def read_barrier(self, timeout: float = 5.0) -> None:
        self.barriers += 1
        if self.fail_with is not None:
            raise self.fail_with
        await asyncio.sleep(0)

    async def add_member(self, node_id: str, address, learner: bool = False,
                         timeout: float = 5.0) -> None:
        if node_id in self.voters or node_id in self.learners:
            raise ValueError(f"{node_id} is already a member")
        (self.learners if learner else self.voters).append(node_id)
        self.addresses[node_id] = address
        if self.apply_then_timeout:
            self.apply_then_timeout -= 1
            raise Timeout("applied, but the answer is lost")

    async def promote_member(self, node_id: str, timeout: float = 5.0) -> None:
        if node_id not in self.learners:
            raise ValueError(f"{node_id} is not a learner")
        self.learners.remove(node_id)
        self.voters.append(node_id)

    async def remove_member(self, node_id: str, timeout: float = 5.0) -> None:
        if node_id not in self.voters + self.learners:
            raise ValueError(f"{node_id} is not a member")
        for group in (self.voters, self.learners):
            if node_id in group:
                group.remove(node_id)

    def status(self) -> dict:
        return {"id": self.node_id, "role": self.role, "term": 1, "leader": self.leader_id,
                "commit_index": self.index, "applied_index": self.index,
                "progress": {"2": 0}, "voters": list(self.voters),
                "learners": list(self.learners), "addresses": dict(self.addresses),
                "failed": self.failed, "last_error": self.failed,
                "storage": {"failed": self.storage_failed}}

"""Maintenance operations served by a member: snapshot download and leader moves.

This module owns four server operations, registered into a ``KVServer`` with
``register(server)`` (``KVServer.register_op``):

- ``snapshot_begin`` -> ``{id, revision, keys, compact_revision, size, checksum}``:
  after a read barrier (so the snapshot holds every write acknowledged before the
  request), the state machine's ``snapshot()`` is taken at once, in the event loop,
  between two applies: the state at exactly one revision, history and sessions
  included, while the member keeps serving. The bytes wait in a bounded holding
  area (``MAX_HELD`` snapshots, each dropped ``HOLD_SECONDS`` after its last use)
  for the client to pull them.
- ``snapshot_chunk`` id offset -> ``{data, offset, size}``: at most ``CHUNK_BYTES``
  from ``offset`` (pull-style: the client asks for the next chunk when it has
  written the last one, so a slow disk never grows the member's buffers).
- ``snapshot_end`` id -> ``{}``: the client is done; the bytes are dropped now.
- ``move_leader`` member -> ``{leader, term}``: on the leader, hand leadership to
  ``member`` (etcd's move-leader), once it is a voter that is caught up; the
  reply comes when it leads. Refused with ``bad-request``: an unknown id, a
  learner, a voter more than ``MAX_LAG_ENTRIES`` behind or not heard from; on a
  follower ``not-leader`` (the client goes to the leader).

It uses only the server's public attributes (``node``, ``sm``, ``max_frame``) and
the node's public API (``read_index_future``, ``status``, ``transfer_leadership``);
it must never write to the state machine nor keep more than ``MAX_HELD`` snapshots.
See docs/architecture.md#backups-and-leader-moves.
"""

# ruff: noqa: ASYNC109  (a per-call timeout argument is part of the server's op API)

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from meshraft.kv import protocol as p
from meshraft.raft import errors

__all__ = ["CHUNK_BYTES", "HOLD_SECONDS", "MAX_HELD", "MAX_LAG_ENTRIES", "Maintenance",
           "register"]

log = logging.getLogger("meshraft.kv.maintenance")

MAX_HELD = 4  # snapshots held for download at once
HOLD_SECONDS = 60.0  # a held snapshot is dropped this long after its last chunk
CHUNK_BYTES = 512 * 1024  # at most this much per snapshot_chunk reply
MAX_LAG_ENTRIES = 1000  # a voter further behind the leader's log is not a move target


class _Log(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[node {self.extra['node']}] {msg}", kwargs


@dataclass
class _Held:
    data: bytes
    revision: int
    last_used: float


class Maintenance:
    """The maintenance operations of one server (see the module docstring)."""

    def __init__(self, server: Any, *, max_held: int = MAX_HELD,
                 hold_seconds: float = HOLD_SECONDS, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.server = server
        self.max_held = max_held
        self.hold_seconds = hold_seconds
        # A chunk and its reply fields must fit the server's frame cap with room to spare.
        self.chunk_bytes = max(1024, min(chunk_bytes, server.max_frame // 4))
        self.held: dict[str, _Held] = {}
        self.log = _Log(log, {"node": getattr(server.node, "node_id", "?")})

    def register(self) -> None:
        s = self.server
        s.register_op("snapshot_begin", self.snapshot_begin)
        s.register_op("snapshot_chunk", self.snapshot_chunk)
        s.register_op("snapshot_end", self.snapshot_end)
        s.register_op("move_leader", self.move_leader)

    # -- snapshots ---------------------------------------------------------------------------

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [k for k, h in self.held.items() if now - h.last_used > self.hold_seconds]:
            self.log.info("dropped snapshot %s: not downloaded within %.0fs", sid,
                          self.hold_seconds)
            del self.held[sid]

    async def snapshot_begin(self, server: Any, rid: Any, body: dict[str, Any],
                             timeout: float) -> dict[str, Any]:
        self._expire()
        if len(self.held) >= self.max_held:
            return p.error_reply(rid, p.BUSY, f"{len(self.held)} snapshots are being "
                                 "downloaded from this member; retry later")
        try:
            async with asyncio.timeout(timeout):
                await server.node.read_index_future()
        except TimeoutError:
            return p.error_reply(rid, p.UNAVAILABLE, "read barrier for the snapshot timed "
                                 "out; nothing was taken")
        except errors.NotLeader as exc:
            return p.error_reply(rid, p.UNAVAILABLE, f"read barrier failed: {exc}")
        except errors.RaftError as exc:
            return p.error_reply(rid, p.UNAVAILABLE, f"read barrier failed: {exc}")
        sm = server.sm
        # No await between these lines: one revision, whatever applies next.
        data = sm.snapshot()
        revision = sm.revision
        keys = len(sm)
        compact = int(getattr(sm, "compact_revision", 0) or 0)
        checksum = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        if len(self.held) >= self.max_held:  # others began while we waited
            return p.error_reply(rid, p.BUSY, "too many snapshots being downloaded; retry")
        sid = os.urandom(8).hex()
        self.held[sid] = _Held(data, revision, time.monotonic())
        self.log.info("snapshot %s taken at revision %d: %d keys, %d bytes", sid, revision,
                      keys, len(data))
        return p.ok_reply(rid, {"snapshot": sid, "revision": revision, "keys": keys,
                                "compact_revision": compact, "size": len(data),
                                "checksum": checksum, "chunk": self.chunk_bytes})

    def _get_held(self, body: dict[str, Any]) -> tuple[str, _Held]:
        sid = body.get("snapshot")
        if not isinstance(sid, str) or len(sid) > 64:
            raise p.ProtocolError(p.BAD_REQUEST, "snapshot must be the id snapshot_begin gave")
        self._expire()
        held = self.held.get(sid)
        if held is None:
            raise p.ProtocolError(p.BAD_REQUEST, f"no snapshot {sid[:64]!r} on this member "
                                  "(expired, finished, or taken on another member): begin again")
        return sid, held

    async def snapshot_chunk(self, server: Any, rid: Any, body: dict[str, Any],
                             timeout: float) -> dict[str, Any]:
        _, held = self._get_held(body)
        offset = body.get("offset")
        if not isinstance(offset, int) or isinstance(offset, bool) or not (
                0 <= offset <= len(held.data)):
            raise p.ProtocolError(p.BAD_REQUEST, f"offset must be an integer in "
                                  f"[0, {len(held.data)}]")
        held.last_used = time.monotonic()
        chunk = held.data[offset:offset + self.chunk_bytes]
        return p.ok_reply(rid, {"data": chunk, "offset": offset, "size": len(held.data)})

    async def snapshot_end(self, server: Any, rid: Any, body: dict[str, Any],
                           timeout: float) -> dict[str, Any]:
        sid, _ = self._get_held(body)
        del self.held[sid]
        return p.ok_reply(rid, {})

    # -- leader moves ------------------------------------------------------------------------

    async def move_leader(self, server: Any, rid: Any, body: dict[str, Any],
                          timeout: float) -> dict[str, Any]:
        target = body.get("member")
        if not isinstance(target, str) or not 0 < len(target) <= 64 or not target.isprintable():
            raise p.ProtocolError(p.BAD_REQUEST, "member id must be a short printable string")
        node = server.node
        st = node.status()
        me = st.get("id")
        if st.get("role") != "leader":
            leader = st.get("leader")
            details = {"leader": str(leader)} if leader is not None else {}
            return p.error_reply(rid, p.NOT_LEADER, f"member {me} does not lead; ask the "
                                 "leader" + (f" ({leader})" if leader else ""), **details)
        if target == me:
            return p.ok_reply(rid, {"leader": me, "term": st.get("term")})
        refusal = self._refusal(target, st)
        if refusal is not None:
            return p.error_reply(rid, p.BAD_REQUEST, refusal)
        self.log.info("moving leadership to %s (asked by a client)", target)
        t0 = time.monotonic()
        try:
            await node.transfer_leadership(target, timeout=timeout)
        except errors.Timeout:
            return p.error_reply(rid, p.UNAVAILABLE, f"leadership did not move to {target} "
                                 f"within {timeout:.1f}s (the transfer was abandoned; "
                                 "check that it is reachable, then retry)")
        except errors.RaftError as exc:
            return p.error_reply(rid, p.UNAVAILABLE, f"cannot move leadership: {exc}")
        self.log.info("leadership moved to %s in %.3fs", target, time.monotonic() - t0)
        return p.ok_reply(rid, {"leader": target, "term": node.status().get("term")})

    @staticmethod
    def _refusal(target: str, st: dict[str, Any]) -> str | None:
        """Why ``target`` cannot take over now (None: it can), as the leader sees it."""
        voters, learners = st.get("voters") or [], st.get("learners") or []
        if target in learners:
            return (f"member {target} is a learner: it cannot lead (promote it first: "
                    f"`meshraft member promote {target}`)")
        if target not in voters:
            return f"member {target} is not a member of this cluster (voters: " \
                   f"{', '.join(map(str, voters))})"
        match = (st.get("progress") or {}).get(target)
        if isinstance(match, dict):
            match = match.get("match")
        last = st.get("last_index") or 0
        if not isinstance(match, int) or match == 0:
            return f"member {target} has not acknowledged any entry yet: is it running?"
        lag = last - match
        if lag > MAX_LAG_ENTRIES:
            return (f"member {target} is {lag} entries behind the leader (more than "
                    f"{MAX_LAG_ENTRIES}): wait until it has caught up")
        return None


def register(server: Any) -> Maintenance:
    """Serve the maintenance operations on ``server``; returns the handler object."""
    m = Maintenance(server)
    m.register()
    return m

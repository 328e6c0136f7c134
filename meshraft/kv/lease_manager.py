"""The leader's lease clocks: keepalives, remaining TTLs and expiry.

This module owns time for leases. The replicated lease table
(``meshraft.kv.lease``) knows which leases exist and their TTLs; only the member
that leads keeps a deadline per lease, renews it on a keepalive, and, when a
deadline passes, proposes a ``lease_revoke`` through the log. It also serves the
lease requests (``lease_grant``, ``lease_revoke``, ``lease_keepalive``,
``lease_ttl``, ``lease_leases``) registered into the kv server with
``KVServer.register_op``. It never changes the table itself and never writes a
keepalive to the log.

Why it is safe (docs/architecture.md#leases), the promise being "a lease lives at
least TTL seconds after its last acknowledged keepalive", time measured from the
moment the keepalive was sent:

- Expiry is decided only here, on the leader, and reaches the data only as a
  committed revoke. A deposed or paused old leader may still get its revoke
  committed (Raft commits entries of earlier terms), so a new leader starts its
  clocks only after a read-index round has completed: that round needs the new
  leader's own first entry committed and everything up to it applied, so any
  earlier revoke is applied (the lease is gone) before this leader acknowledges
  a single keepalive. Every lease then gets its full TTL again; a deadline is
  never carried over from an earlier leader (safe: leases live longer, never
  shorter, across a leader change or a full restart; etcd's reported defect of
  TTLs restarting on a leader change is this same, safe, choice).
- A keepalive is acknowledged only after a read-index round that started after
  the keepalive arrived: a quorum confirmed this member still led then. A leader
  elected later got a vote from one of that quorum after it answered, so its
  clocks (full TTL from after its election) run past the keepalive's TTL too.
  The rounds are shared: keepalives arriving while one round is in flight all
  wait for the next one, so there are at most two rounds in flight.
- A lease whose revoke this leader has proposed is treated as gone: a keepalive
  for it is answered "lease not found" even though the revoke may yet fail.

Keepalives go to the leader. A client that knows the leader's endpoint goes
there (it learns it from replies: a ``lease_ttl`` or ``lease_leases`` sent to a
follower is answered ``not-leader`` with the leader's id); the leader renews
without writing to the log. A keepalive that reaches a follower is forwarded to
the leader through the log, as one ``lease_keepalive`` entry, and answered once
applied: the leader renews when it applies the entry (after the keepalive was
sent), and a revoke of an expiry the leader had already proposed carries the
lease's count of logged renewals, so the state machine refuses it if such a
keepalive was applied first.
Clocks are the member's monotonic clock; the promise assumes clocks of the
members advance at the same rate (no bounded-drift correction is made).

Bounds: the member's maximum number of leases (checked before a grant is
proposed; the table has a replicated ceiling too), at most ``MAX_EXPIRING``
revokes in flight, replies listing keys or leases are paged.
"""

# ruff: noqa: ASYNC109  (a per-call timeout argument is the server's handler API)

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from meshraft.kv import protocol as p
from meshraft.kv.lease import (
    DEFAULT_MAX_LEASES,
    LEASE_NOT_FOUND,
    MAX_KEYS_PER_LEASE,
    TOO_MANY_LEASES,
    LeaseError,
    validate_lease_id,
)
from meshraft.kv.state_machine import KVStateMachine, encode_command

__all__ = ["DEFAULT_TICK", "MAX_EXPIRING", "LeaseManager"]

log = logging.getLogger("meshraft.kv.lease_manager")

DEFAULT_TICK = 0.05  # how often the leader looks for expired deadlines
MAX_EXPIRING = 1024  # revokes of expired leases in flight at once
MAX_LIST = 10_000  # lease ids per lease_leases page
MAX_KEYS_LISTED = 1000  # keys per lease_ttl reply


class _Log(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[member {self.extra['node']}] {msg}", kwargs


class LeaseManager:
    """Lease clocks and lease requests for one member. ``install(server)`` registers
    the requests; ``start()`` runs the clock task; ``stop()`` ends it."""

    def __init__(self, node: Any, sm: KVStateMachine, *,
                 max_leases: int = DEFAULT_MAX_LEASES, tick: float = DEFAULT_TICK,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_leases < 1:
            raise ValueError("max_leases must be at least 1")
        self.node = node
        self.sm = sm
        self.table = sm.leases
        self.max_leases = min(max_leases, self.table.max_leases)
        self.tick = tick
        self.clock = clock
        self.log = _Log(log, {"node": getattr(node, "node_id", "?")})
        self._deadlines: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []
        self._expiring: set[int] = set()
        self._ready = False  # the clocks run (this member leads and has caught up)
        self._ready_event = asyncio.Event()
        self._epoch = 0  # bumped whenever this member stops leading or the leader changes
        self._warming: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self._round_next: asyncio.Future | None = None  # the round new keepalives join
        self._round_inflight = False
        self.stats = {"keepalives": 0, "expired": 0, "clock_starts": 0}
        self.table.observer = self

    # -- wiring ----------------------------------------------------------------------------

    def install(self, server: Any) -> None:
        for name, handler in (("lease_grant", self._grant), ("lease_revoke", self._revoke),
                              ("lease_keepalive", self._keepalive),
                              ("lease_ttl", self._ttl), ("lease_leases", self._leases)):
            server.register_op(name, handler)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="lease-clock")

    async def stop(self) -> None:
        self._stand_down()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self.table.observer is self:
            self.table.observer = None

    @property
    def ready(self) -> bool:
        """This member leads and its lease clocks run."""
        return self._ready

    def remaining(self, lease_id: int) -> float | None:
        """Seconds left on ``lease_id``'s clock (leader only; None if not running)."""
        d = self._deadlines.get(lease_id)
        return None if d is None or not self._ready else max(0.0, d - self.clock())

    # -- the table's observer (called inside apply) ---------------------------------------

    def on_grant(self, lease_id: int, ttl: int) -> None:
        if self._ready:
            self._set(lease_id, self.clock() + ttl)

    def on_revoke(self, lease_id: int) -> None:
        self._deadlines.pop(lease_id, None)
        self._expiring.discard(lease_id)

    def on_keepalive(self, lease_id: int, ttl: int) -> None:
        """A keepalive forwarded through the log was applied: renew. An expiry this
        leader proposed before it will be refused (its renewal count is stale)."""
        if self._ready:
            self._expiring.discard(lease_id)
            self._set(lease_id, self.clock() + ttl)

    def on_restore(self) -> None:
        if self._ready:
            self._start_clocks()

    # -- clocks ------------------------------------------------------------------------------

    def _set(self, lease_id: int, deadline: float) -> None:
        self._deadlines[lease_id] = deadline
        heapq.heappush(self._heap, (deadline, lease_id))
        if len(self._heap) > 2 * len(self._deadlines) + 1024:  # drop superseded entries
            self._heap = [(d, i) for i, d in self._deadlines.items()]
            heapq.heapify(self._heap)

    def _start_clocks(self) -> None:
        """Every lease gets its full TTL from now (a new leader knows no deadline)."""
        now = self.clock()
        self._deadlines = {lid: now + self.table.get(lid).ttl for lid in self.table.ids()}
        self._heap = [(d, i) for i, d in self._deadlines.items()]
        heapq.heapify(self._heap)
        self._expiring.clear()

    def _stand_down(self) -> None:
        self._epoch += 1
        if self._ready:
            self.log.info("not leading any more: lease clocks stopped")
        self._ready = False
        self._ready_event.clear()
        self._deadlines.clear()
        self._heap.clear()
        self._expiring.clear()
        if self._warming is not None:
            self._warming.cancel()
            self._warming = None

    def _leading(self) -> bool:
        return getattr(self.node, "role", None) == "leader"

    async def _run(self) -> None:
        while True:
            change = self.node.leader_change_future()
            if self._leading():
                if not self._ready and self._warming is None:
                    self._warming = asyncio.create_task(self._warm(self._epoch))
                if self._ready:
                    self._expire_due()
            elif self._ready or self._warming is not None:
                self._stand_down()
            await asyncio.wait([change], timeout=self.tick)
            if change.done():
                self._stand_down()  # any leader change: start over (rewarm if we lead)

    def _term(self) -> Any:
        try:
            return self.node.status().get("term")
        except Exception:  # status must not break the clock
            return None

    async def _warm(self, epoch: int) -> None:
        """Start the clocks once this leader has applied everything up to its own
        term's first entry (a completed read-index round proves it)."""
        term = self._term()
        while epoch == self._epoch and self._leading():
            try:
                async with asyncio.timeout(2.0):
                    await self.node.read_index_future()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not yet: no quorum, stepped down, ...
                self.log.debug("lease clocks wait for a read-index round: %r", exc)
                await asyncio.sleep(self.tick)
                continue
            if epoch != self._epoch or not self._leading() or self._term() != term:
                break
            self._start_clocks()
            self._ready = True
            self._ready_event.set()
            self.stats["clock_starts"] += 1
            self.log.info("leading with %d lease(s): every lease gets its full TTL from now",
                          len(self.table))
            break
        if self._warming is asyncio.current_task():
            self._warming = None

    def _expire_due(self) -> None:
        now = self.clock()
        heap = self._heap
        while heap and heap[0][0] <= now and len(self._expiring) < MAX_EXPIRING:
            deadline, lid = heapq.heappop(heap)
            if self._deadlines.get(lid) != deadline or lid in self._expiring:
                continue  # superseded by a keepalive, or already on its way out
            if not self._leading():
                return
            try:
                fut = self.node.propose_future(encode_command(
                    {"op": "lease_revoke", "lease_id": lid, "expired": True,
                     "renewals": self.table.renewals(lid)}))
            except Exception as exc:  # busy, stepping down: try again next tick
                self.log.info("could not propose the expiry of lease %d yet: %r", lid, exc)
                heapq.heappush(heap, (deadline, lid))
                return
            self._expiring.add(lid)
            epoch = self._epoch
            fut.add_done_callback(lambda f, lid=lid, epoch=epoch: self._expired(f, lid, epoch))

    def _expired(self, fut: asyncio.Future, lid: int, epoch: int) -> None:
        if fut.cancelled() or fut.exception() is not None:
            # Not applied (or not known): if we still lead, try again at the next tick.
            if epoch == self._epoch and lid in self._expiring:
                self._expiring.discard(lid)
                if lid in self.table and lid in self._deadlines:
                    self._set(lid, self.clock())
            return
        result = fut.result()
        if isinstance(result, dict) and "error" not in result:
            self.stats["expired"] += 1
            self.log.info("lease %d expired: revoked, %s key(s) deleted at revision %s",
                          lid, result.get("deleted"), result.get("revision"))

    # -- confirmed leadership (shared read-index rounds) -----------------------------------

    def _confirm(self) -> asyncio.Future:
        """A future that ends once a read-index round that started after this call
        has completed (this member led then), or with the round's error."""
        fut = self._round_next
        if fut is None:
            fut = self._round_next = asyncio.get_running_loop().create_future()
            if not self._round_inflight:
                self._launch_round()
        return fut

    def _launch_round(self) -> None:
        shared, self._round_next = self._round_next, None
        if shared is None:
            return
        try:
            rf = self.node.read_index_future()
        except Exception as exc:
            shared.set_exception(exc)
            shared.exception()  # retrieved: nobody may be waiting any more
            return
        self._round_inflight = True

        def done(f: asyncio.Future) -> None:
            self._round_inflight = False
            if not shared.done():
                exc = (p.ProtocolError(p.UNAVAILABLE, "read round cancelled")
                       if f.cancelled() else f.exception())
                if exc is None:
                    shared.set_result(None)
                else:
                    shared.set_exception(exc)
                    shared.exception()  # retrieved: nobody may be waiting any more
            self._launch_round()

        rf.add_done_callback(done)

    async def _leading_and_confirmed(self, rid: Any, timeout: float) -> dict[str, Any] | None:
        """None if this member leads with running clocks, confirmed by a read-index
        round that started now; else the error reply to send."""
        if not self._leading():
            leader = getattr(self.node, "leader_id", None)
            return p.error_reply(rid, p.NOT_LEADER,
                                 "lease keepalives and TTLs are served by the leader",
                                 leader=None if leader is None else str(leader))
        deadline = self.clock() + timeout
        if not self._ready:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready_event.wait()
            if not self._ready:
                return p.error_reply(rid, p.UNAVAILABLE,
                                     "the new leader has not started its lease clocks yet")
        epoch = self._epoch
        fut = self._confirm()
        done, _ = await asyncio.wait([fut], timeout=max(0.0, deadline - self.clock()))
        if not done:
            return p.error_reply(rid, p.UNAVAILABLE, "leadership not confirmed in time")
        if fut.exception() is not None:
            return p.error_reply(rid, p.UNAVAILABLE,
                                 f"leadership not confirmed: {fut.exception()!r}")
        if epoch != self._epoch or not self._ready:
            return p.error_reply(rid, p.UNAVAILABLE, "the leader changed; retry")
        return None

    # -- requests ----------------------------------------------------------------------------

    @staticmethod
    def _lease_id(body: dict[str, Any]) -> int:
        try:
            return validate_lease_id(body.get("lease_id"))
        except LeaseError as exc:
            raise p.ProtocolError(exc.code, exc.message) from None

    async def _grant(self, server: Any, rid: Any, body: dict[str, Any],
                     timeout: float) -> dict[str, Any]:
        if len(self.table) >= self.max_leases:
            return p.error_reply(rid, TOO_MANY_LEASES,
                                 f"too many leases: this member allows at most "
                                 f"{self.max_leases}; revoke some first")
        return await server.write(rid, body, timeout)

    async def _revoke(self, server: Any, rid: Any, body: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        return await server.write(rid, body, timeout)

    async def _keepalive(self, server: Any, rid: Any, body: dict[str, Any],
                         timeout: float) -> dict[str, Any]:
        lid = self._lease_id(body)
        if not self._leading():
            # Forwarded to the leader through the log (one entry), for clients that
            # reach only followers; the leader renews when it applies it.
            return await server.write(rid, {"op": "lease_keepalive", "lease_id": lid},
                                      timeout)
        refused = await self._leading_and_confirmed(rid, timeout)
        if refused is not None:
            return refused
        lease = self.table.get(lid)
        if lease is None or lid in self._expiring:
            return p.error_reply(rid, LEASE_NOT_FOUND, f"lease {lid} not found")
        self._set(lid, self.clock() + lease.ttl)
        self.stats["keepalives"] += 1
        return p.ok_reply(rid, {"id": lid, "ttl": lease.ttl})

    async def _ttl(self, server: Any, rid: Any, body: dict[str, Any],
                   timeout: float) -> dict[str, Any]:
        lid = self._lease_id(body)
        keys = body.get("keys", False)
        if not isinstance(keys, bool):
            raise p.ProtocolError(p.BAD_REQUEST, "keys must be true or false")
        refused = await self._leading_and_confirmed(rid, timeout)
        if refused is not None:
            return refused
        lease = self.table.get(lid)
        left = self.remaining(lid)
        if lease is None or left is None or lid in self._expiring:
            return p.error_reply(rid, LEASE_NOT_FOUND, f"lease {lid} not found")
        out: dict[str, Any] = {"id": lid, "granted_ttl": lease.ttl,
                               "ttl": math.ceil(left) if left > 0 else 0,
                               "remaining": round(left, 3), "key_count": len(lease.keys)}
        if keys:
            listed = sorted(lease.keys)[:MAX_KEYS_LISTED]
            out["keys"] = listed
            out["more"] = len(lease.keys) > len(listed)
        return p.ok_reply(rid, out)

    async def _leases(self, server: Any, rid: Any, body: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        after = body.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise p.ProtocolError(p.BAD_REQUEST, "after must be a non-negative lease id")
        refused = await self._leading_and_confirmed(rid, timeout)
        if refused is not None:
            return refused
        ids = [i for i in self.table.ids() if i > after and i not in self._expiring]
        page = ids[:MAX_LIST]
        return p.ok_reply(rid, {"leases": page, "more": len(ids) > len(page),
                                "max_keys_per_lease": MAX_KEYS_PER_LEASE})

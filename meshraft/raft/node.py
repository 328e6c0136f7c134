"""The asyncio Raft node: drives the sans-IO core with a clock, a datagram
transport, durable storage and a state machine.

This module owns the event loop side of Raft: the tick timer (``loop.time()``,
monotonic), turning datagrams into ``core.step`` calls, and processing each
``Ready`` strictly in order — persist, then send, then apply, then advance. It
matches applied entries to the futures of the proposals this node made, serves
ReadIndex barriers, triggers snapshots, and restores from the data dir. It must
never decide anything Raft decides (that is ``core``), never write to disk but
through ``storage``, and never know what the transport is (mesh or UDP) beyond
"an address per member id".

Group commit: while one ``Ready`` is being fsynced, proposals, votes and appends
keep flowing into the core; the next ``Ready`` carries all of them, so any
number of concurrent proposers share one fsync.

Proposals are tagged (origin id, a random incarnation, a sequence number) around
the caller's bytes so the proposer can resolve its future when it applies the
entry; the state machine sees exactly the caller's bytes. Leader no-ops (empty
entries) and membership changes are not passed to the state machine.

Snapshot data on disk and on the wire is the node's envelope (``envelope``): the
member address book, the ids removed so far, and the state machine's own
``snapshot()`` bytes, so a member that restarts from a snapshot still knows how to
reach members added since boot and which ids may never come back.

Membership: the core decides whether a change may be proposed
(``RaftCore.check_conf_change``); this module maps its verdict to errors: a change
that can never succeed (unknown member, an id that was removed — ids are never
reused — a learner too far behind to promote) raises ``MembershipRefused`` (a
ValueError); one that must wait (the leader's no-op not committed yet, another
change pending) raises Busy; on a follower, judged after a read barrier (its
configuration is then current as of the request), NotLeader naming the leader. A
leader removing itself first hands leadership to the most caught-up voter. A member
that applies its own removal (or hears from a member that applied it: ``notices``)
marks its data dir REMOVED (``datadir``), stops ticking and refuses every request; a
data dir marked so, or one that belongs to another id, refuses to start.

Fail-stop (docs/architecture.md#failure-and-fail-stop): input the core cannot take
is refused by validation (DecodeError, InvalidMessage) and counted in
``status()["dropped"]``; any other exception out of the core is a bug that may have
left its state half-changed, so the member stops serving: the traceback goes to
the log, ``status()["failed"]`` says why, and every waiting and later request fails
with NodeFailed (Timeout for a proposal already handed to Raft).
"""

# Why this module is over 600 lines: it is the one place where Raft meets time, IO
# and callers, and the Ready loop (persist, send, apply, advance), the waiters of
# proposals and reads, membership requests and stopping all touch the same waiter
# tables and must stay in step. What is not the loop lives in its own modules: the
# rules (core.py), the disk (storage.py, datadir.py), the snapshot envelope
# (envelope.py), the removal notices (notices.py). See docs/architecture.md#layers and
# docs/architecture.md#failure-and-fail-stop.

# The node API takes `timeout=` arguments by contract (kv and the CLI call it so).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import struct
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from meshraft.raft.cluster import ClusterGate
from meshraft.raft.core import ConfChangeOutcome, RaftConfig, RaftCore
from meshraft.raft.datadir import read_cluster_id
from meshraft.raft.envelope import (
    decode_member_context,
    decode_snapshot_envelope_full,
    encode_member_context,
    encode_snapshot_envelope,
    norm_addr,
)
from meshraft.raft.errors import (
    Busy,
    NodeFailed,
    NotLeader,
    RaftError,
    Removed,
    StorageFailed,
    Timeout,
    Unavailable,
)
from meshraft.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    DecodeError,
    Entry,
    EntryType,
    InvalidMessage,
    Message,
    MessageType,
    Ready,
    Snapshot,
    decode_message,
    encode_message,
)
from meshraft.raft.notices import (
    REMOVED_NOTICE_EVERY,
    RemovedNotice,
    decode_removed_notice,
    encode_removed_notice,
    is_control,
)
from meshraft.raft.storage import (
    REMOVED_MARKER,
    DiskIO,
    Storage,
    StorageOptions,
    check_data_dir_identity,
    mark_removed,
    write_member_id,
)

log = logging.getLogger("meshraft.raft.node")


class StateMachine(Protocol):
    def apply(self, entry: Entry) -> Any: ...  # deterministic; entry.data as given to propose()
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes) -> None: ...


@dataclass
class NodeConfig:
    tick_interval: float = 0.05  # seconds per core tick
    election_ticks: int = 10  # randomized in [election, 2*election) ticks by the core
    heartbeat_ticks: int = 1
    snapshot_entries: int = 10000  # snapshot when this many entries since the last one ...
    snapshot_bytes: int = 64 * 1024 * 1024  # ... or this many bytes of entry data
    compaction_margin: int = 1000  # entries kept in memory before a snapshot for slow followers
    max_inflight_proposals: int = 4096  # beyond: raise Busy (a subclass of Unavailable)
    max_datagram: int = 60000  # bytes; the core batches entries and snapshot chunks below it
    max_inflight_msgs: int = 64  # appends in flight per follower
    pre_vote: bool = True
    check_quorum: bool = True
    segment_bytes: int = 64 * 1024 * 1024  # WAL segment size
    apply_batch_bytes: int = 4 * 1024 * 1024  # committed entries handed out per Ready
    extra: dict[str, Any] = field(default_factory=dict)  # passed through to the core config


ProtocolFactory = Callable[[], asyncio.DatagramProtocol]
TransportFactory = Callable[[ProtocolFactory], Awaitable[tuple[asyncio.DatagramTransport, Any]]]

_TAG = 0xA7  # first byte of a node-tagged proposal
_TAG_HDR = struct.Struct("<BQQB")  # tag, incarnation, seq, len(origin)


class MembershipRefused(ValueError):
    """A membership change that cannot succeed as asked (nothing was proposed)."""


class _NodeLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"[node {self.extra['node_id']}] {msg}", kwargs


class _RaftProtocol(asyncio.DatagramProtocol):
    def __init__(self, node: RaftNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.node._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.node._count("transport_error", f"{exc}", level=logging.DEBUG)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.node.log.warning("transport lost: %s", exc)


class RaftNode:
    """One Raft member. Create with :meth:`start`, end with :meth:`stop`."""

    def __init__(self) -> None:  # use start()
        raise TypeError("use `await RaftNode.start(...)`")

    # ------------------------------------------------------------------------ start

    @classmethod
    async def start(cls, *, node_id: str, peers: dict[str, Any],
                    transport_factory: TransportFactory, data_dir: str | os.PathLike,
                    state_machine: StateMachine, config: NodeConfig | None = None,
                    rng: random.Random | None = None, join: bool = False,
                    disk_io: DiskIO | None = None) -> RaftNode:
        """Open (or create) ``data_dir``, restore the state machine from the newest
        snapshot, replay the log, bind the transport and start ticking.

        ``peers`` maps member ids to transport addresses. When the data dir is new
        and ``join`` is false they are the initial voters; otherwise they are only
        an address book (a joining member starts with no configuration and waits
        for a leader to add it with ``add_member``). Addresses of members added
        later travel in the membership change itself and in snapshots."""
        # Over 80 lines: it declares every field of the node in one place and opens
        # the data dir, the state machine and the transport in the order a crash-safe
        # start needs (close the data dir again if anything after it fails).
        self = object.__new__(cls)
        self.node_id = str(node_id)
        self.config = config or NodeConfig()
        self.log = _NodeLog(log, {"node_id": self.node_id})
        self._rng = rng or random.Random()
        self._sm = state_machine
        self._loop = asyncio.get_running_loop()
        self._addresses = {str(k): norm_addr(v) for k, v in peers.items()}
        # Addresses the operator gave win over ones learned from the log or a snapshot.
        self._given = frozenset(self._addresses)
        self._incarnation = random.SystemRandom().getrandbits(63)
        self._seq = 0
        self._waiters: dict[int, asyncio.Future] = {}
        self._result_to: dict[int, asyncio.Future] = {}  # see propose_future(result_to=)
        self._deferred: list[Message] = []  # see _send_soon
        self._read_waiters: dict[bytes, asyncio.Future] = {}
        self._pending_reads: list[tuple[int, asyncio.Future]] = []
        self._apply_waiters: list[tuple[int, asyncio.Future]] = []
        # Log index -> our proposal's seq, for proposals appended while we led.
        self._proposed_at: dict[int, int] = {}
        self._counters: dict[str, int] = {}
        self._last_error: str | None = None
        # Why this member stopped serving (a failed disk, or a bug: fail-stop), and the
        # error every request gets from then on.
        self._failed: str | None = None
        self._fail_cls: type[RaftError] = StorageFailed
        self._removed = False
        # Ids removed from the cluster (never to be reused) -> index of the removal.
        self._removed_ids: dict[str, int] = {}
        self._removed_notice_at: dict[str, float] = {}
        self._own_removal: int | None = None  # seq of our request to remove ourselves
        self._data_dir = Path(data_dir)
        self._stopping = False
        self._stopped = False
        self._wake = asyncio.Event()
        self._snapshot_task: asyncio.Task | None = None
        self._snapshot_retry_at = 0
        self._applied = 0
        self._tasks: list[asyncio.Task] = []
        # Resolved (and replaced) when this member sees the leader change; shared by
        # every caller that waits for that, so a request costs no task or timer.
        self._leader_change: asyncio.Future | None = None
        self._seen_lead: str | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self.stats = {"readies": 0, "fsync_batches": 0, "proposals": 0, "applied": 0,
                      "snapshots": 0, "snapshots_installed": 0, "sent": 0, "received": 0,
                      "leader_changes": 0, "proposals_failed": 0, "snapshots_sent": 0,
                      "snapshot_chunks_sent": 0}
        # Observability hooks (meshraft.ops turns them into metrics; this layer stays free
        # of any metrics library). Called synchronously, must be cheap and must not raise:
        # rtt_observers(peer, seconds) for each heartbeat answered while leading (the time
        # from our latest heartbeat to that peer until its answer), and
        # snapshot_observers(kind, seconds) with kind "save" (this member wrote one) or
        # "install" (it installed one from the leader).
        self.rtt_observers: list[Callable[[str, float], None]] = []
        self.snapshot_observers: list[Callable[[str, float], None]] = []
        # applied_observers() after each batch of committed entries was applied (the
        # state machine's listeners may then send what the batch produced at once).
        self.applied_observers: list[Callable[[], None]] = []
        self._heartbeat_sent: dict[str, float] = {}
        # Messages the transport refused to send, by peer (a bounded key set: members).
        self.peer_send_failures: dict[str, int] = {}

        t0 = time.monotonic()
        check_data_dir_identity(data_dir, self.node_id)
        self.storage = await asyncio.to_thread(
            Storage.open, data_dir, options=StorageOptions(segment_bytes=self.config.segment_bytes),
            io=disk_io, logger=self.log)
        try:
            await asyncio.to_thread(write_member_id, self._data_dir, self.node_id)
            # A restored cluster tags datagrams with its id, refuses others' (cluster.py).
            fresh = self.storage.last_index() == 0 and self.storage.hard_state.term == 0
            self._cluster = ClusterGate(self._data_dir, read_cluster_id(self._data_dir),
                                        may_adopt=join and fresh, logger=self.log)
            snap = self.storage.snapshot()
            if snap.meta.index > 0:
                addrs, sm_data, removed = decode_snapshot_envelope_full(snap.data)
                self._removed_ids.update(removed)
                self._learn_addresses(addrs)
                self._sm.restore(sm_data)
            self._applied = snap.meta.index
            self._core = self._make_core(snap, join)
            self.log.info(
                "started in %.3fs: term %d, snapshot %d, log [%d, %d], commit %d%s",
                time.monotonic() - t0, self.storage.hard_state.term, snap.meta.index,
                self.storage.first_index(), self.storage.last_index(),
                self.storage.hard_state.commit, ", joining" if join else "")
            self._transport, _ = await transport_factory(lambda: _RaftProtocol(self))
        except BaseException:
            self.storage.close()
            raise
        self._tasks = [self._loop.create_task(self._run(), name=f"raft-{self.node_id}-ready"),
                       self._loop.create_task(self._ticker(), name=f"raft-{self.node_id}-tick")]
        self._wake.set()
        return self

    def _make_core(self, snap: Snapshot, join: bool) -> RaftCore:
        hs, _ = self.storage.initial_state()
        cfg = RaftConfig(
            election_ticks=self.config.election_ticks,
            heartbeat_ticks=self.config.heartbeat_ticks,
            max_msg_bytes=self.config.max_datagram,
            max_inflight=self.config.max_inflight_msgs,
            pre_vote=self.config.pre_vote,
            check_quorum=self.config.check_quorum,
            max_committed_bytes_per_ready=self.config.apply_batch_bytes,
            **self.config.extra,
        )
        self._max_entry_bytes = cfg.max_entry_bytes
        entries = self.storage.entries(self.storage.first_index(), self.storage.last_index() + 1)
        # The core bootstraps only a brand-new member (no state at all) from the
        # initial voters; on restart the configuration comes from the snapshot and log.
        boot = None if join else ConfState(voters=sorted(self._addresses), learners=[])
        return RaftCore(self.node_id, boot, hard_state=hs,
                        snapshot=snap if snap.meta.index > 0 else None, entries=entries,
                        config=cfg, rng=self._rng)

    # ------------------------------------------------------------------------ properties

    # A member whose disk failed is frozen: it leads nothing and knows no leader;
    # it reports itself as a follower without a leader, and last_error says why.

    @property
    def leader_id(self) -> str | None:
        return None if self._failed is not None or self._removed else self._core.lead

    @property
    def role(self) -> str:
        """leader, follower, candidate, learner — or ``removed`` once this member
        learned it was removed from the cluster."""
        if self._removed:
            return "removed"
        return "follower" if self._failed is not None else self._core.role_name

    @property
    def fail_stopped(self) -> str | None:
        """Why this member stopped serving after an internal error (fail-stop: its
        state may be half-changed, so not even a serializable read may be served), or
        None. A failed disk is not a fail-stop: that member still holds a consistent
        copy, and ``status()["failed"]`` says why it accepts no more writes."""
        return self._failed if self._fail_cls is NodeFailed else None

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def term(self) -> int:
        """The current term (cheap: no status())."""
        return self._core.term

    @property
    def commit_index(self) -> int:
        """The highest log index this member knows is committed (cheap: no status())."""
        return self._core.commit

    @property
    def pending_proposals(self) -> int:
        """Proposals (and membership changes) made here and not answered yet."""
        return len(self._waiters)

    @property
    def max_proposal_bytes(self) -> int:
        """The largest ``data`` :meth:`propose` takes (one entry must fit a datagram)."""
        return self._max_entry_bytes - len(self._tag(0))

    def status(self) -> dict:
        """Plain, JSON-serialisable facts about this member."""
        core = self._core.status()
        progress = {p: d.get("match") if isinstance(d, dict) else d
                    for p, d in core.get("progress", {}).items()}
        return {
            "id": self.node_id,
            "role": self.role,
            "term": core["term"],
            "leader": self.leader_id,
            "commit_index": core["commit_index"],
            "applied_index": self._applied,
            "last_index": core["last_index"],
            "voters": core["voters"],
            "learners": core["learners"],
            "progress": progress,
            "addresses": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in sorted(self._addresses.items())},
            "storage": {
                "dir": str(self.storage.data_dir),
                "snapshot_index": self.storage.snapshot_meta.index,
                "first_index": self.storage.first_index(),
                "wal_segments": len(self.storage.segment_paths()),
                "fsyncs": self.storage.fsyncs,
                "failed": self.storage.failed,
            },
            "stats": dict(self.stats),
            "dropped": dict(self._counters),
            "last_error": self._failed or self._last_error,
            # None while this member serves; else why it stopped (a failed disk, or a
            # bug: the exception and where it was raised; the full traceback is in the log)
            "failed": self._failed,
            "removed": self._removed,
            "removed_ids": dict(sorted(self._removed_ids.items())),
            "cluster_id": self._cluster.cluster_id,
            "lead_transferee": core.get("lead_transferee"),
        }

    # ------------------------------------------------------------------------ public API

    def _check_writable(self) -> None:
        if self._failed is not None:
            raise self._fail_cls(self._failed)
        if self._removed:
            raise Removed(f"node {self.node_id} was removed from the cluster")
        if self._stopping:
            raise Unavailable(f"node {self.node_id} is stopped")

    def _tag(self, seq: int) -> bytes:
        origin = self.node_id.encode()
        return _TAG_HDR.pack(_TAG, self._incarnation, seq, len(origin)) + origin

    def _untag(self, data: bytes) -> tuple[str, int, int, bytes] | None:
        if len(data) < _TAG_HDR.size or data[0] != _TAG:
            return None
        _, inc, seq, olen = _TAG_HDR.unpack_from(data, 0)
        end = _TAG_HDR.size + olen
        return data[_TAG_HDR.size:end].decode(errors="replace"), inc, seq, data[end:]

    def _new_waiter(self) -> tuple[int, asyncio.Future]:
        self._check_writable()
        if len(self._waiters) >= self.config.max_inflight_proposals:
            raise Busy(f"{len(self._waiters)} proposals in flight on node {self.node_id}")
        self._seq += 1
        seq = self._seq
        fut = self._loop.create_future()
        self._waiters[seq] = fut
        # However it ends (answered, failed, cancelled by a caller that stopped waiting).
        fut.add_done_callback(lambda f: self._waiter_done(seq, f))
        return seq, fut

    def _waiter_done(self, seq: int, fut: asyncio.Future) -> None:
        self._waiters.pop(seq, None)
        self._result_to.pop(seq, None)
        # Failed: the caller stopped waiting (its timeout) or Raft refused or lost it; a
        # state machine's own "no" (an apply error) is an applied proposal, not a failure.
        if fut.cancelled() or isinstance(fut.exception(), RaftError):
            self.stats["proposals_failed"] += 1

    @staticmethod
    async def _bounded(fut: asyncio.Future, timeout: float, message: str) -> Any:
        """``await fut`` for at most ``timeout`` seconds, else Timeout(message). No shield
        and no wait_for task: the waiter is ours alone, so a timeout or a cancelled
        caller may cancel it (whoever settles a waiter checks done())."""
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise Timeout(message) from None

    def propose_future(self, data: bytes,
                       result_to: asyncio.Future | None = None) -> asyncio.Future:
        """Like :meth:`propose`, without waiting: the future ends with the result
        or with the error :meth:`propose` would raise, except Timeout: bounding
        the wait is the caller's (cancelling the future stops waiting, not the
        proposal). Errors known at once (Unavailable, Busy, ...) are raised here.

        ``result_to`` (optional, the caller's): also ended, if not done yet, with the
        result (or the state machine's exception) when the entry is applied here, and
        never with a failure of this proposal (nor once its future was cancelled).
        Several proposals of one idempotent command may share it: the first applied
        ends it. A caller awaiting it directly gets the answer a loop iteration
        sooner than through callbacks on the proposals' futures."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("propose() takes bytes")
        try:
            seq, fut = self._new_waiter()
        except RaftError:
            self.stats["proposals_failed"] += 1
            raise
        try:
            index = self._core.propose(self._tag(seq) + bytes(data))
        except Exception as exc:
            self._waiters.pop(seq, None)
            fut.cancel()  # nobody waits on it; its done callback counts it as failed
            raise self._map_core_error(exc, "core.propose") from exc
        if index is not None:  # we lead: we know where it must land
            self._proposed_at[index] = seq
        if result_to is not None:
            self._result_to[seq] = result_to
        self.stats["proposals"] += 1
        self._wake.set()
        return fut

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any:
        """Append ``data`` through Raft from any member; return what this member's
        ``state_machine.apply`` returned for it once applied here.

        Raises Timeout (outcome unknown), Unavailable/Busy/NotLeader (certainly not
        appended), StorageFailed, Removed."""
        return await self._bounded(self.propose_future(data), timeout,
                                   f"proposal not applied within {timeout}s (outcome unknown)")

    def read_index_future(self) -> asyncio.Future:
        """Like :meth:`read_barrier`, without waiting (see :meth:`propose_future`)."""
        self._check_writable()
        self._seq += 1
        ctx = self._tag(self._seq)
        fut = self._loop.create_future()
        self._read_waiters[ctx] = fut
        try:
            self._core.read_index(ctx)
        except Exception as exc:
            self._read_waiters.pop(ctx, None)
            raise self._map_core_error(exc, "core.read_index") from exc
        self._wake.set()
        fut.add_done_callback(lambda _f: self._read_waiters.pop(ctx, None))
        return fut

    async def read_barrier(self, timeout: float = 5.0) -> None:
        """Wait until this member may serve a linearizable read (ReadIndex)."""
        await self._bounded(self.read_index_future(), timeout,
                            f"read index not served within {timeout}s")

    def leader_change_future(self) -> asyncio.Future:
        """A future that ends (with the new leader id, or None) the next time this
        member sees the leader change. Shared: callers must not cancel it."""
        if self._leader_change is None or self._leader_change.done():
            self._leader_change = self._loop.create_future()
        return self._leader_change

    def _note_leader(self) -> None:
        lead = self.leader_id
        if lead != self._seen_lead:
            self._seen_lead = lead
            if lead is not None:
                self.stats["leader_changes"] += 1
            self._heartbeat_sent.clear()
            fut, self._leader_change = self._leader_change, None
            if fut is not None and not fut.done():
                fut.set_result(lead)

    async def wait_applied(self, index: int, timeout: float = 5.0) -> None:
        """Wait until this member applied ``index``."""
        if self._applied >= index:
            return
        if self._failed is not None:
            raise self._fail_cls(self._failed)
        fut = self._loop.create_future()
        waiter = (index, fut)
        self._apply_waiters.append(waiter)
        try:
            await self._bounded(fut, timeout, f"index {index} not applied within {timeout}s")
        finally:
            if waiter in self._apply_waiters:
                self._apply_waiters.remove(waiter)

    async def transfer_leadership(self, to: str, timeout: float = 5.0) -> None:
        """Ask the leader to hand leadership to ``to``; wait until ``to`` leads. Raises
        Timeout if it does not within ``timeout``; the transfer is then abandoned."""
        self._check_writable()
        try:
            self._core.transfer_leadership(str(to))
        except Exception as exc:
            raise self._map_core_error(exc, "core.transfer_leadership") from exc
        self._wake.set()
        deadline = self._loop.time() + timeout
        while self._core.lead != str(to):
            if self._loop.time() > deadline:
                # Abandon it now (a transfer to ourselves cancels ours), so that no
                # transfer outlives the request that asked for it: a client retrying
                # would otherwise find one still in progress, or leave one behind.
                if self._core.role_name == "leader" and self._core.lead_transferee == str(to):
                    self._core.transfer_leadership(self.node_id)
                raise Timeout(f"leadership did not move to {to} within {timeout}s")
            await asyncio.sleep(self.config.tick_interval)

    async def _membership_check(self, cc_type: ConfChangeType, n: str,
                                timeout: float) -> None:
        """Refuse at once what cannot succeed (MembershipRefused), what needs the leader
        (NotLeader) and what must wait (Busy): the core decides, this maps its verdict
        to errors. A follower has it judged only after a read barrier (it has applied
        everything committed before the request: it may not have applied the add a
        promote follows), then sends the caller to the leader."""
        if self._core.role_name != "leader":
            try:
                await self.read_barrier(timeout=timeout)
            except Timeout:
                raise Unavailable("could not confirm the configuration with the leader in "
                                  "time; retry") from None
        verdict = self._core.check_conf_change(cc_type, n, self._removed_ids)
        outcome = verdict.outcome
        if outcome is ConfChangeOutcome.ALLOWED:
            return
        if outcome is ConfChangeOutcome.REFUSED:
            raise MembershipRefused(verdict.reason)
        if outcome is ConfChangeOutcome.BUSY:
            raise Busy(verdict.reason)
        if verdict.leader is None:
            raise Unavailable(verdict.reason)
        raise NotLeader(verdict.reason, leader_id=verdict.leader)

    async def _conf_change(self, cc_type: ConfChangeType, node_id: str, address: Any,
                           timeout: float) -> None:
        self._check_writable()
        await self._membership_check(cc_type, str(node_id), timeout)
        seq, fut = self._new_waiter()
        if cc_type is ConfChangeType.REMOVE and str(node_id) == self.node_id:
            self._own_removal = seq
        ctx = encode_member_context(address, self._tag(seq))
        try:
            self._core.propose_conf_change(ConfChange(cc_type, str(node_id), ctx))
        except Exception as exc:
            self._waiters.pop(seq, None)
            raise self._map_core_error(exc, "core.propose_conf_change") from exc
        self._wake.set()
        await self._bounded(fut, timeout, f"membership change {cc_type.name} {node_id} not "
                            f"applied within {timeout}s (outcome unknown)")

    async def add_member(self, node_id: str, address: Any, learner: bool = False,
                         timeout: float = 5.0) -> None:
        t = ConfChangeType.ADD_LEARNER if learner else ConfChangeType.ADD_VOTER
        await self._conf_change(t, node_id, address, timeout)

    async def promote_member(self, node_id: str, timeout: float = 5.0) -> None:
        await self._conf_change(ConfChangeType.PROMOTE, node_id, None, timeout)

    async def remove_member(self, node_id: str, timeout: float = 5.0) -> None:
        """Remove a member. The leader removing itself hands leadership to the most
        caught-up voter first (no election timeout to wait out), then proposes its own
        removal through the new leader; if the hand-over fails it removes itself as
        leader and the core's step-down picks a successor."""
        n = str(node_id)
        core = self._core
        if n != self.node_id or core.role_name != "leader" or n not in core.voters:
            await self._conf_change(ConfChangeType.REMOVE, n, None, timeout)
            return
        self._check_writable()
        await self._membership_check(ConfChangeType.REMOVE, n, timeout)  # before a hand-over
        deadline = self._loop.time() + timeout
        target = core.transfer_candidate(exclude=n)
        if target is None:  # (the check above refuses removing the last voter)
            raise Unavailable("no other voter to hand leadership to; retry")
        try:
            await self.transfer_leadership(target, timeout=min(2.0, timeout / 2))
        except RaftError as exc:
            self.log.info("hand-over to %s before removing myself failed: %s", target, exc)
        if core.role_name == "leader":
            await self._conf_change(ConfChangeType.REMOVE, n, None,
                                    max(0.1, deadline - self._loop.time()))
            return
        self.log.info("handed leadership to %s; removing myself through it", core.lead)
        await self._forward_own_removal(deadline)

    async def _forward_own_removal(self, deadline: float) -> None:
        """As a follower: propose our own removal through the leader, again every few
        ticks until it is applied (the leader drops it while its term's no-op or another
        change is pending). Every copy carries the same tag, and the leader refuses a
        second removal of a non-member, so it takes effect once."""
        seq, fut = self._new_waiter()
        self._own_removal = seq
        ctx = encode_member_context(None, self._tag(seq))
        cc = ConfChange(ConfChangeType.REMOVE, self.node_id, ctx)
        try:
            while not fut.done():
                if self._loop.time() > deadline:
                    raise Timeout(f"removal of {self.node_id} not applied in time "
                                  "(outcome unknown)")
                core = self._core
                if core.lead is not None:  # (led again? then it appends it, once)
                    try:
                        core.propose_conf_change(cc)
                        self._wake.set()
                    except RaftError:
                        pass
                    except Exception as exc:
                        raise self._map_core_error(exc, "core.propose_conf_change") from exc
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), 5 * self.config.tick_interval)
            return fut.result()
        finally:
            self._waiters.pop(seq, None)

    def _map_core_error(self, exc: Exception, where: str) -> Exception:
        """The core raises ProposalDropped (an Unavailable) when it certainly did not
        take the request, ValueError for a request that can never succeed. Anything
        else is a bug in the core: this member stops (fail-stop) and the caller gets
        NodeFailed."""
        if isinstance(exc, RaftError | ValueError):
            return exc
        return self._fail_stop(where, exc)

    def _fail_stop(self, where: str, exc: BaseException) -> NodeFailed:
        """A bug inside the core (or the apply path) may have left the Raft state
        half-changed: stop serving, as etcd does, rather than carry on. The traceback
        goes to the log, a summary to status()["failed"]; every waiting and later
        request fails with NodeFailed."""
        frames = traceback.extract_tb(exc.__traceback__)[-4:]
        at = " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}"
                         for f in reversed(frames))
        reason = (f"internal error, this member stopped serving (fail-stop; restart it): "
                  f"{where}: {type(exc).__name__}: {exc}" + (f" [at {at}]" if at else ""))
        if self._failed is None:
            self.log.error("BUG: %s raised; this member stops serving (fail-stop)\n%s", where,
                           "".join(traceback.format_exception(exc)).rstrip())
            self._halt(reason, NodeFailed)
            self._wake.set()
        return NodeFailed(self._failed or reason)

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop ticking and receiving, let the write in progress finish, close the
        transport and the data dir. Proposals still waiting get Timeout (outcome
        unknown), reads get Unavailable. If the disk hangs for ``timeout`` seconds
        the data dir is left open (never closed under a write in progress)."""
        if self._stopped:
            return
        self._stopping = True
        self._wake.set()
        for t in self._tasks:
            if t.get_name().endswith("-tick"):
                t.cancel()
        pending = [t for t in [*self._tasks, self._snapshot_task] if t is not None]
        done, hung = await asyncio.wait(pending, timeout=timeout) if pending else (set(), set())
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                self.log.debug("task %s ended with %r", t.get_name(), t.exception())
        if self._transport is not None:
            self._transport.close()
        self._fail_all(Unavailable(f"node {self.node_id} stopped"))
        if hung:
            self.log.error("a disk write did not finish within %.0fs; leaving the data dir "
                           "open (the process should exit)", timeout)
        else:
            self.storage.close()
        self._stopped = True
        self.log.info("stopped")

    # ------------------------------------------------------------------------ internals

    def _count(self, reason: str, detail: str, level: int = logging.WARNING) -> None:
        n = self._counters.get(reason, 0) + 1
        self._counters[reason] = n
        if n <= 5 or n % 1000 == 0:  # counted always, logged sparingly
            self.log.log(level, "dropped (%s, #%d): %s", reason, n, detail)

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        if self._stopping or self._failed is not None:
            return
        self.stats["received"] += 1
        if len(data) > self.config.max_datagram + 1024:
            self._count("oversize", f"{len(data)} bytes from {addr!r}")
            return
        accepted = self._cluster.accept(data, addr)  # refuses (and logs) other clusters'
        if accepted is None:
            self._count("wrong_cluster", f"from {addr!r}", level=logging.DEBUG)
            return
        data = accepted
        if is_control(data):
            self._on_control(data, addr)
            return
        try:
            m = decode_message(data)
        except DecodeError as exc:
            self._count("malformed", f"{exc} from {addr!r}")
            return
        if m.to != self.node_id:
            self._count("wrong_recipient", f"message for {m.to!r} from {addr!r}")
            return
        known = self._addresses.get(m.frm)
        if known is None:
            # A member we have no address for (we joined, or it was added while we
            # were away): reply where it sends from, as the transport reports it.
            # Only for members (or, while we have no configuration yet, a few peers),
            # so hostile datagrams cannot grow the address book without bound.
            core = self._core
            member = m.frm in core.voters or m.frm in core.learners
            if member or (not core.voters and len(self._addresses) < 256):
                self._addresses[m.frm] = norm_addr(addr)
                self.log.info("learned address %r for member %s", addr, m.frm)
        elif norm_addr(addr) != known:
            self._count("address_mismatch", f"{m.frm!r} claims {addr!r}, known as {known!r}")
            return
        if m.frm in self._removed_ids and not self._removed:
            self._notify_removed(m.frm)  # it has not learned yet (down or behind then)
        if m.type is MessageType.HEARTBEAT_RESP and self.rtt_observers:
            sent = self._heartbeat_sent.pop(m.frm, None)
            if sent is not None:
                rtt = self._loop.time() - sent
                for observe in self.rtt_observers:
                    observe(m.frm, rtt)
        try:
            self._core.step(m)
        except InvalidMessage as exc:  # input the core cannot take: counted, dropped
            self._count("rejected", f"{exc} ({m.type.name} from {m.frm})")
            return
        except Exception as exc:  # anything else is a bug in the core: fail-stop
            self._fail_stop(f"core.step({m.type.name} from {m.frm})", exc)
            return
        self._wake.set()

    async def _ticker(self) -> None:
        interval = self.config.tick_interval
        next_at = self._loop.time() + interval
        while not self._stopping:
            await asyncio.sleep(max(0.0, next_at - self._loop.time()))
            # A removed member neither campaigns nor heartbeats.
            if self._failed is None and not self._removed:
                try:
                    self._core.tick()
                except Exception as exc:  # a bug in the core: fail-stop
                    self._fail_stop("core.tick", exc)
                self._wake.set()
            now = self._loop.time()
            # Do not replay missed ticks after a stall: that would fire an election at once.
            next_at = max(next_at + interval, now + interval / 2)

    async def _run(self) -> None:
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                while self._core.has_ready() and not self._stopping and self._failed is None:
                    await self._handle_ready(self._core.ready())
                self._maybe_snapshot()
        except StorageFailed as exc:
            self._on_storage_failed(str(exc))
        except Exception as exc:  # e.g. the core, or the state machine's restore(): a bug
            self._fail_stop("the ready loop", exc)

    def _on_storage_failed(self, reason: str) -> None:
        self.log.error("storage failed; this member accepts no more writes and sends "
                       "nothing that depends on unsynced state: %s", reason)
        self._halt(reason)

    def _halt(self, reason: str, cls: type[RaftError] = StorageFailed) -> None:
        """Freeze: no ticks, no input, no output; status() and callers say why (every
        request from now on raises ``cls(reason)``)."""
        self._failed = reason
        self._fail_cls = cls
        self._fail_all(cls(reason))

    def _fail_all(self, exc: RaftError) -> None:
        """End every wait with ``exc``. Proposals already handed to Raft may still
        be committed by the others, so their callers get Timeout (outcome unknown)
        with ``exc`` as the reason; reads and waits get ``exc`` itself."""
        unknown = Timeout(f"{exc}; a proposal in flight may still be applied (outcome unknown)")
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(unknown)
        for fut in self._read_waiters.values():
            if not fut.done():
                fut.set_exception(exc)
        for _, fut in self._pending_reads + self._apply_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._pending_reads.clear()
        self._apply_waiters.clear()

    async def _handle_ready(self, rd: Ready) -> None:
        self.stats["readies"] += 1
        # 1. persist (group commit: everything that arrived since the last Ready)
        # A leader's appends and heartbeats go out before its fsync, so its fsync and
        # the followers' overlap; the core decided at ready() whether that is safe.
        early, msgs = self._core.split_early(rd)
        committed = rd.committed_entries
        # Only the commit index moved (the Ready of a leader's every commit): it is
        # written at once, and its entries (all on disk: one Ready at a time) are
        # applied before a leader sends its messages, which go out in the loop's next
        # iteration, after the answers to the writers (see _send_soon). Those messages
        # carry the new commit index to the followers and are on nobody's path, while
        # the apply answers the writers and watchers; and each write to a follower's
        # socket costs a system call that wakes that follower (~0.1 ms here), which
        # may also take this CPU. (A follower sends first: its heartbeat answers are
        # on the path of ReadIndex.)
        commit_only = (not rd.entries and rd.snapshot is None and rd.hard_state is not None
                       and self.storage.save_commit_now(rd.hard_state))
        send_after_apply = commit_only and self._core.role_name == "leader"
        if send_after_apply:
            msgs = early + msgs
        else:
            self._send(early)
        if not commit_only and rd.must_sync():
            # Committed entries already on our disk do not wait for this fsync: they
            # are applied (and their callers answered) while the WAL thread syncs the
            # new ones. Entries this Ready persists are applied only after the save,
            # so a member never applies past what its own log holds.
            on_disk = self._core.persisted_index
            n_early = 0
            if rd.snapshot is None or rd.snapshot.meta.index == 0:
                while n_early < len(committed) and committed[n_early].index <= on_disk:
                    n_early += 1
            if n_early:
                save = asyncio.ensure_future(
                    self.storage.save(rd.hard_state, rd.entries, rd.snapshot))
                await asyncio.sleep(0)  # let the save reach its thread first
                committed = self._apply_early(committed, n_early)
                synced = await save
            else:  # awaited directly: a task would cost a loop iteration
                synced = await self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
            if synced:
                self.stats["fsync_batches"] += 1
        # 2. send (a leader's commit-only Ready: after the apply)
        if not send_after_apply:
            self._send(msgs)
        # 3. apply
        if rd.snapshot is not None and rd.snapshot.meta.index > 0:
            self._install_snapshot(rd.snapshot)
        for i, e in enumerate(committed):
            self._apply(e)
            if i % 1024 == 1023:
                await asyncio.sleep(0)  # let datagrams in during a long apply batch
        if committed:
            self._notify_applied()
        if send_after_apply:
            self._send_soon(msgs)
        for rs in rd.read_states:
            fut = self._read_waiters.get(rs.context)
            if fut is not None and not fut.done():
                if self._applied >= rs.index:
                    fut.set_result(None)
                else:
                    self._pending_reads.append((rs.index, fut))
        self._release_applied()
        # 4. advance
        self._core.advance(rd)
        if rd.soft_state is not None:
            self._note_leader()

    def _apply_early(self, committed: list[Entry], n: int) -> list[Entry]:
        """Apply the first ``n`` of ``committed`` (already on disk); the rest."""
        if not n:
            return committed
        for e in committed[:n]:
            self._apply(e)
        self._release_applied()
        self._notify_applied()
        return committed[n:]

    def _notify_applied(self) -> None:
        for observe in self.applied_observers:
            try:
                observe()
            except Exception:  # a listener's bug must not stop the node (nor skip others)
                self.log.exception("an applied_observers callback raised")

    def _send_soon(self, messages: list[Message]) -> None:
        """Send ``messages`` in the loop's next iteration, after the callbacks already
        scheduled (the tasks answering the entries just applied), but before anything
        sent later: every ``_send`` first sends what is still deferred, so the order
        of the messages to each peer stays the order Raft made them in."""
        if not messages:
            return
        if not self._deferred:
            self._loop.call_soon(self._send_deferred)
        self._deferred.extend(messages)

    def _send_deferred(self) -> None:
        if self._deferred:
            messages, self._deferred = self._deferred, []
            self._send(messages)

    def _send(self, messages: list[Message]) -> None:
        if self._deferred:
            self._send_deferred()
        if not messages or self._transport is None:
            return
        for m in messages:
            addr = self._addresses.get(m.to)
            if addr is None:
                self._count("no_address", f"{m.type.name} to {m.to!r}", level=logging.DEBUG)
                continue
            data = self._cluster.wrap(encode_message(m))
            if len(data) > self.config.max_datagram + 1024:
                self._count("oversize_out", f"{m.type.name} of {len(data)} bytes to {m.to}")
                continue
            t = m.type
            if t is MessageType.HEARTBEAT:
                # The newest heartbeat to each peer: its answer gives the round trip.
                self._heartbeat_sent[m.to] = self._loop.time()
            elif t is MessageType.SNAP:
                self.stats["snapshot_chunks_sent"] += 1
                if m.snapshot is not None and m.snapshot.offset == 0:
                    self.stats["snapshots_sent"] += 1
            try:
                self._transport.sendto(data, addr)
                self.stats["sent"] += 1
            except (OSError, ValueError) as exc:
                self._count("send_error", f"{m.type.name} to {m.to}: {exc}", logging.DEBUG)
                self.peer_send_failures[m.to] = self.peer_send_failures.get(m.to, 0) + 1

    def _install_snapshot(self, snap: Snapshot) -> None:
        t0 = time.monotonic()
        addrs, sm_data, removed = decode_snapshot_envelope_full(snap.data)
        self._learn_addresses(addrs)
        self._removed_ids.update(removed)
        self._sm.restore(sm_data)
        self._applied = snap.meta.index
        # Proposals at or below the snapshot: applied or not, we cannot tell (Timeout).
        for index in [i for i in self._proposed_at if i <= snap.meta.index]:
            del self._proposed_at[index]
        self.stats["snapshots_installed"] += 1
        for observe in self.snapshot_observers:
            observe("install", time.monotonic() - t0)
        self.log.info("installed snapshot at %d (term %d) from the leader",
                      snap.meta.index, snap.meta.term)

    def _apply(self, e: Entry) -> None:
        if e.index <= self._applied:
            return
        if e.type == EntryType.CONF_CHANGE:
            self._apply_conf_change(e)
        elif e.data:
            tag = self._untag(e.data)
            if tag is None:
                entry, mine = e, None
            else:
                origin, inc, seq, payload = tag
                entry = Entry(e.term, e.index, e.type, payload)
                mine = seq if origin == self.node_id and inc == self._incarnation else None
            try:
                result: Any = self._sm.apply(entry)
                exc = None
            except Exception as err:  # deterministic: every member raises the same
                result, exc = None, err
                self.log.warning("state machine raised on entry %d: %r", e.index, err)
            if mine is not None:
                for fut in (self._result_to.pop(mine, None), self._waiters.get(mine)):
                    if fut is not None and not fut.done():
                        if exc is None:
                            fut.set_result(result)
                        else:
                            fut.set_exception(exc)
            self.stats["applied"] += 1
        if self._proposed_at:
            self._settle_superseded(e)
        self._applied = e.index

    def _settle_superseded(self, e: Entry) -> None:
        """An entry we appended as leader at ``e.index`` was replaced by ``e``: entries
        never move, so ours can never commit. Its proposer learns that now."""
        seq = self._proposed_at.pop(e.index, None)
        if seq is None:
            return
        tag = self._untag(e.data) if e.type == EntryType.NORMAL else None
        if tag is not None and tag[0] == self.node_id and tag[1] == self._incarnation \
                and tag[2] == seq:
            return
        fut = self._waiters.get(seq)
        if fut is not None and not fut.done():
            fut.set_exception(Unavailable(
                f"leadership changed before entry {e.index} committed; it was not applied"))

    def _learn_addresses(self, addrs: dict[str, Any]) -> None:
        for k, v in addrs.items():
            if k not in self._given:
                self._addresses[k] = norm_addr(v)

    def _apply_conf_change(self, e: Entry) -> None:
        try:
            cc = ConfChange.decode(e.data)
        except DecodeError as exc:
            self.log.error("undecodable conf change at %d: %s", e.index, exc)
            return
        try:
            address, tag = decode_member_context(cc.context)
        except ValueError as exc:
            self.log.warning("conf change at %d carries a bad context: %s", e.index, exc)
            address, tag = None, b""
        # The core itself applies the change to its configuration at advance().
        if address is not None and cc.type in (ConfChangeType.ADD_VOTER,
                                               ConfChangeType.ADD_LEARNER):
            self._learn_addresses({cc.node_id: address})
        self.log.info("membership: %s %s (%s) at %d", cc.type.name, cc.node_id,
                      address, e.index)
        parsed = self._untag(tag)
        if parsed is not None:
            origin, inc, seq, _ = parsed
            if origin == self.node_id and inc == self._incarnation:
                fut = self._waiters.get(seq)
                if fut is not None and not fut.done():
                    fut.set_result(None)
        if cc.type == ConfChangeType.REMOVE:
            self._removed_ids[cc.node_id] = e.index
            if cc.node_id == self.node_id:  # after answering our own request above
                self._mark_removed(e.index, "applied its own removal")
            else:
                self._notify_removed(cc.node_id)  # it may not learn the commit otherwise

    def _mark_removed(self, index: int, why: str) -> None:
        """This member is out of the cluster for good: persist that (so its old data is
        never reused), stop ticking, end every wait with Removed."""
        if self._removed:
            return
        self._removed = True
        self.log.warning("this member was removed from the cluster at index %d (%s); it "
                         "serves nothing more: wipe %s before using it for a new member",
                         index, why, self._data_dir)
        try:
            mark_removed(self._data_dir, self.node_id, index)
        except OSError as exc:
            self.log.error("cannot write the %s marker: %s", REMOVED_MARKER, exc)
        # Our own request to be removed did what it asked, however we learned it.
        own = self._waiters.get(self._own_removal) if self._own_removal is not None else None
        if own is not None and not own.done():
            own.set_result(None)
        self._fail_all(Removed(f"node {self.node_id} was removed from the cluster"))

    def _notify_removed(self, nid: str) -> None:
        """Tell member ``nid`` it was removed (a committed fact: ids are never reused)."""
        now = self._loop.time()
        if now - self._removed_notice_at.get(nid, -1e9) < REMOVED_NOTICE_EVERY:
            return
        addr = self._addresses.get(nid)
        if addr is None or self._transport is None:
            return
        self._removed_notice_at[nid] = now
        data = self._cluster.wrap(encode_removed_notice(
            RemovedNotice(nid, self.node_id, self._removed_ids[nid])))
        try:
            self._transport.sendto(data, addr)
        except (OSError, ValueError) as exc:
            self._count("send_error", f"removed notice to {nid}: {exc}", logging.DEBUG)

    def _on_control(self, data: bytes, addr: Any) -> None:
        try:
            notice = decode_removed_notice(data)
        except ValueError as exc:
            self._count("malformed", f"control datagram from {addr!r}: {exc}")
            return
        to, frm, index = notice.to, notice.frm, notice.index
        core = self._core
        # Only from a member we know, at the address we know it by.
        if (to != self.node_id or frm not in core.voters | core.learners
                or self._addresses.get(frm) != norm_addr(addr)):
            self._count("rejected", f"removed notice from {frm!r} at {addr!r}")
            return
        self._mark_removed(index, f"told by member {frm}")
        self._wake.set()

    def _release_applied(self) -> None:
        """Answer the reads and waits whose index is applied now."""
        if self._pending_reads:
            self._pending_reads = self._release_upto(self._pending_reads)
        if self._apply_waiters:
            self._apply_waiters = self._release_upto(self._apply_waiters)

    def _release_upto(self, waiters: list[tuple[int, asyncio.Future]]
                      ) -> list[tuple[int, asyncio.Future]]:
        """Resolve the waiters at or below the applied index; return the others."""
        applied = self._applied
        keep = []
        for idx, fut in waiters:
            if fut.done():
                continue
            if applied >= idx:
                fut.set_result(None)
            else:
                keep.append((idx, fut))
        return keep

    # ------------------------------------------------------------------------ snapshots

    def _maybe_snapshot(self) -> None:
        if self._snapshot_task is not None or self._stopping or self._failed is not None:
            return
        since = self._applied - self.storage.snapshot_meta.index
        if since <= 0:
            return
        if (since < self.config.snapshot_entries
                and self.storage.bytes_since_snapshot < self.config.snapshot_bytes):
            return
        if self._core.applied != self._applied or self.storage.term(self._applied) is None:
            return
        # Taken synchronously right after applying, so data and index agree; the core
        # records the configuration at that index and compacts its in-memory log
        # (keeping a margin for slightly lagging followers).
        index = self._applied
        if index < self._snapshot_retry_at:
            return
        try:
            data = encode_snapshot_envelope(self._addresses, self._sm.snapshot(),
                                            self._removed_ids)
        except Exception as exc:  # a state machine bug must not stop replication
            self._last_error = f"snapshot at {index} failed: {exc!r}"
            self.log.error("snapshot at %d failed (retrying after %d more entries): %r",
                           index, self.config.snapshot_entries, exc)
            self._snapshot_retry_at = index + self.config.snapshot_entries
            return
        try:
            snap = self._core.compact(index, data, retain=self.config.compaction_margin)
        except ValueError as exc:  # e.g. a snapshot from the leader got there first
            self.log.debug("no snapshot at %d: %s", index, exc)
            return
        self._snapshot_task = self._loop.create_task(self._write_snapshot(snap))

    async def _write_snapshot(self, snap: Snapshot) -> None:
        t0 = time.monotonic()
        index = snap.meta.index
        try:
            await self.storage.create_snapshot(index, snap.meta.conf_state, snap.data)
            self.stats["snapshots"] += 1
            took = time.monotonic() - t0
            for observe in self.snapshot_observers:
                observe("save", took)
            self.log.info("snapshot at %d (%d bytes) in %.3fs", index, len(snap.data), took)
        except StorageFailed as exc:
            self._on_storage_failed(str(exc))
        except Exception as exc:
            self._last_error = f"snapshot at {index} failed: {exc!r}"
            self.log.exception("snapshot at %d failed", index)
        finally:
            self._snapshot_task = None
            self._wake.set()

"""The sans-IO Raft core: one member's Raft state machine, in the style of etcd-io/raft.

This module owns every Raft rule: elections (PreVote, CheckQuorum, leader
stickiness, randomized timeouts), replication (progress, pipelining, byte-bounded
batches, fast backtracking), commitment, ReadIndex, leadership transfer,
single-server membership changes, and snapshots (compaction, chunked transfer,
restore). It must never do IO, read a clock, start a thread or use global
randomness: time is ``tick()``, randomness is the ``random.Random`` passed in,
and everything it wants done comes out of ``ready()``.

Driving it (what ``node.py`` does)::

    core = RaftCore("1", ConfState(voters=["1", "2", "3"]), rng=random.Random(seed))
    loop:
        core.tick() every tick interval; core.step(decode_message(datagram)) on receive;
        core.propose(data) / read_index(ctx) / transfer_leadership(id) / propose_conf_change(cc)
        while core.has_ready():
            rd = core.ready()
            persist rd.snapshot, rd.entries (replace any suffix from entries[0].index),
                    rd.hard_state
            send rd.messages                     # only after the write above is durable
            restore rd.snapshot; apply rd.committed_entries; serve rd.read_states
            core.advance(rd)

Whether a membership change may be proposed is decided here alone
(``check_conf_change`` -> ``ConfChangeVerdict``: allowed, refused, busy, not leader,
with the reason); drivers map the verdict to their errors. ``step`` raises
``InvalidMessage`` for a message it refuses before changing anything; any other
exception out of this module is a bug, and the driver must stop (fail-stop).

Only one Ready may be outstanding at a time; ``step``/``tick``/``propose`` may be
called between ``ready()`` and ``advance()`` (their output goes into the next Ready).
Proposals are batched: the appends (or forwards) for all proposals made since the
last call go out when the driver next calls ``has_ready()``/``ready()``.
"""

# Why this module is over 600 lines: it is one member's whole Raft state machine
# (elections, replication, commitment, ReadIndex, transfer, membership, snapshots),
# and these rules share one state (term, log, progress, role) that every handler reads
# and changes. Split across modules they would have to reach into each other's
# private state; kept together, each rule is a short method here. The pure parts
# live beside it: the log (log.py), progress tracking (progress.py), the data
# types (messages.py). See docs/architecture.md#layers.

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from .errors import Unavailable
from .log import LogSafetyError, RaftLog
from .messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    DecodeError,
    Entry,
    EntryType,
    HardState,
    InvalidMessage,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotChunk,
    SnapshotMeta,
    SoftState,
    entry_wire_size,
    validate_message,
)
from .progress import Progress, ProgressState

__all__ = [
    "ConfChangeOutcome",
    "ConfChangeRejected",
    "ConfChangeVerdict",
    "InvalidMessage",
    "LogSafetyError",
    "ProposalDropped",
    "RaftConfig",
    "RaftCore",
    "Role",
]

_log = logging.getLogger("meshraft.raft.core")

CAMPAIGN_TRANSFER = b"transfer"  # vote context: a campaign started by TimeoutNow
# What a leader may send before its own fsync (see RaftCore.split_early).
_EARLY_TYPES = frozenset({MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP})


class ProposalDropped(Unavailable):
    """The proposal (or read, or transfer request) certainly was not accepted:
    no leader is known, a leadership transfer is in progress, or this node cannot
    take it. The caller may retry later."""


class ConfChangeRejected(ProposalDropped):
    """A membership change the leader refuses now (one pending, no-op not yet
    committed, learner not caught up) or at all (invalid for the configuration)."""


class ConfChangeOutcome(Enum):
    ALLOWED = "allowed"
    REFUSED = "refused"  # can never succeed as asked (for this configuration)
    BUSY = "busy"  # must wait: the leader's no-op, or another change, is not applied yet
    NOT_LEADER = "not_leader"  # allowed by the configuration, but only the leader proposes


@dataclass(frozen=True, slots=True)
class ConfChangeVerdict:
    """Whether a membership change may be proposed now, and why not."""

    outcome: ConfChangeOutcome
    reason: str = ""
    leader: str | None = None  # with NOT_LEADER: the leader this member knows, if any

    @property
    def allowed(self) -> bool:
        return self.outcome is ConfChangeOutcome.ALLOWED


_ALLOWED = ConfChangeVerdict(ConfChangeOutcome.ALLOWED)


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass
class RaftConfig:
    election_ticks: int = 10  # election timeout is randomized in [e, 2e) ticks
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_bytes: int = 60 * 1024  # every message must fit one datagram
    max_inflight: int = 256  # appends in flight per follower in REPLICATE
    snapshot_window: int = 4  # snapshot chunks in flight per follower
    snapshot_retry_ticks: int = 3  # resend unacknowledged chunks after this many ticks
    promote_max_lag: int = 100  # a learner this far behind the leader is not promoted
    max_committed_bytes_per_ready: int = 8 << 20
    max_pending_reads: int = 10_000

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if self.max_msg_bytes < 4096:
            raise ValueError("max_msg_bytes must be at least 4096")
        if self.max_inflight < 1 or self.snapshot_window < 1:
            raise ValueError("max_inflight and snapshot_window must be >= 1")

    @property
    def max_entry_bytes(self) -> int:
        """The largest proposal payload that still fits one message."""
        return self.max_msg_bytes - 1024


@dataclass
class _ReadRequest:
    index: int
    context: bytes
    frm: str
    acks: set[str] = field(default_factory=set)


@dataclass
class _SnapRx:
    key: tuple
    meta: SnapshotMeta
    total: int
    buf: bytearray


def _copy_conf(voters: Iterable[str], learners: Iterable[str]) -> ConfState:
    return ConfState(sorted(voters), sorted(learners))


class RaftCore:
    def __init__(
        self,
        node_id: str,
        conf_state: ConfState | Iterable[str] | None = None,
        *,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: Iterable[Entry] = (),
        config: RaftConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Create a member from what storage gave back.

        ``conf_state`` bootstraps a brand-new cluster: a member with no hard state,
        no snapshot and no entries writes the initial configuration as its first log
        entries (term 1), exactly as every other initial member does. A member
        joining an existing cluster passes ``None`` and learns the configuration
        from the leader. On restart it is ignored: the configuration comes from
        ``snapshot`` (its ``conf_state``) and the committed CONF_CHANGE entries after it.

        ``entries`` are the persisted entries (contiguous; may start before the
        snapshot index if storage kept some). ``snapshot`` carries the state
        machine data, which the core keeps to send to lagging followers.
        """
        # Over 80 lines: it declares every field of the member's state in one place
        # (the handlers below rely on all of them), and rebuilds the configuration
        # from the snapshot and the committed log.
        self.id = node_id
        self.cfg = config or RaftConfig()
        self.rng = rng if rng is not None else random.Random(node_id)
        self.logger = logging.LoggerAdapter(_log, {"node": node_id})
        hs = hard_state or HardState()
        ents = list(entries)
        snap_meta = snapshot.meta if snapshot is not None else SnapshotMeta()

        if ents and ents[0].index <= snap_meta.index:
            off = ents[0].index - 1
            off_term: int | None = snap_meta.term if off == snap_meta.index else None
            if off == 0:
                off_term = 0
        else:
            off, off_term = snap_meta.index, snap_meta.term
            if ents and ents[0].index != off + 1:
                raise ValueError(f"entries start at {ents[0].index}, snapshot is at {off}")
        self.log = RaftLog(off, off_term, ents)
        if snapshot is not None and snap_meta.index > 0:
            self.log.snapshot = snapshot
        self.log.committed = min(max(hs.commit, snap_meta.index), self.log.last_index())
        self.log.committed = max(self.log.committed, snap_meta.index)
        self.log.applied = snap_meta.index

        self.term = hs.term
        self.vote = hs.vote
        self.role = Role.FOLLOWER
        self.prs: dict[str, Progress] = {}
        self.voters: set[str] = set(snap_meta.conf_state.voters)
        self.learners: set[str] = set(snap_meta.conf_state.learners)
        self.conf_applied_index = snap_meta.index
        self._conf_history: list[tuple[int, ConfState]] = [
            (snap_meta.index, _copy_conf(self.voters, self.learners))
        ]
        fresh = hs.term == 0 and not ents and snap_meta.index == 0
        boot_voters: list[str] = []
        boot_learners: list[str] = []
        if isinstance(conf_state, ConfState):
            boot_voters, boot_learners = list(conf_state.voters), list(conf_state.learners)
        elif conf_state is not None:
            boot_voters = list(conf_state)
        self._prev_hs = HardState(hs.term, hs.vote, hs.commit)
        if fresh and boot_voters:
            self._bootstrap(sorted(set(boot_voters)), sorted(set(boot_learners) - set(boot_voters)))
        else:
            # Configuration changes that are committed take effect now; they are
            # re-delivered for applying but not applied twice.
            lo = max(self.log.first_index(), snap_meta.index + 1)
            for i in range(lo, self.log.committed + 1):
                e = self.log.entry(i)
                if e.type == EntryType.CONF_CHANGE:
                    self._apply_conf_entry(e)

        self.lead: str | None = None
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.cfg.election_ticks
        self.lead_transferee: str | None = None
        self.pending_conf_index = 0
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self._read_queue: list[_ReadRequest] = []
        self._reads_by_ctx: dict[bytes, _ReadRequest] = {}
        self._reads_waiting_commit: list[tuple[bytes, str]] = []
        self._pending_snapshot: Snapshot | None = None  # received, not yet handed out
        self._snap_rx: _SnapRx | None = None
        self._outstanding: Ready | None = None
        self._early_ok = False
        self._bcast_pending = False
        self._hb_pending = False
        # Context of the ReadIndex heartbeat round in flight, if any: reads that arrive
        # meanwhile wait for the next round (one per round trip, however many reads).
        self._read_round: bytes | None = None
        self._prop_buf: list[Entry] = []
        self._prev_ss = SoftState(None, self.role_name)
        self._reset_randomized_timeout()

    # ==================================================================================
    # Inputs

    def tick(self) -> None:
        """One unit of logical time passed."""
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def step(self, m: Message) -> None:
        """Handle one message from a peer. Stale, duplicated and reordered messages are
        fine. A message whose fields contradict each other raises InvalidMessage before
        anything changes; any other exception is a bug (the driver must stop)."""
        if m.frm == self.id or m.to != self.id:
            return
        validate_message(m)
        if m.type in (MessageType.PROP, MessageType.READ_INDEX, MessageType.TRANSFER_LEADER):
            self._step_termless(m)
            return
        if m.term > self.term:
            if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead is not None
                    and self.election_elapsed < self.cfg.election_ticks
                )
                if in_lease and not force:
                    # Leader stickiness: we heard from a live leader recently.
                    self.logger.debug(
                        "%s ignores %s from %s at term %d: leader %s is live",
                        self.id, m.type.name, m.frm, m.term, self.lead,
                    )
                    return
            if m.type is MessageType.PRE_VOTE:
                pass  # a pre-vote never changes our term
            elif m.type is MessageType.PRE_VOTE_RESP and not m.reject:
                pass  # granted for our future term; the term moves when we win
            elif m.type in (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if m.type in (MessageType.APP, MessageType.HEARTBEAT) and (
                self.cfg.check_quorum or self.cfg.pre_vote
            ):
                # An old leader (e.g. behind a partition): tell it our term so it
                # steps down, instead of leaving it stuck.
                self._send(Message(MessageType.APP_RESP, m.frm, self.id))
            elif m.type is MessageType.PRE_VOTE:
                self._send(Message(MessageType.PRE_VOTE_RESP, m.frm, self.id, reject=True))
            return

        if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def propose(self, data: bytes) -> int | None:
        """Propose ``data`` for the log. Returns the entry's index on the leader,
        None on a follower (it was forwarded). Raises ProposalDropped when it
        certainly was not accepted, ValueError when it is too large for a message."""
        return self._propose_entry(EntryType.NORMAL, bytes(data))

    def propose_conf_change(self, cc: ConfChange) -> int | None:
        """Propose a single-server membership change. The leader raises
        ConfChangeRejected with the reason when :meth:`check_conf_change` does not
        allow it; a follower forwards it (the leader judges it again)."""
        data = cc.encode()
        if self.role is Role.LEADER:
            verdict = self.check_conf_change(cc.type, cc.node_id)
            if not verdict.allowed:
                raise ConfChangeRejected(verdict.reason)
        return self._propose_entry(EntryType.CONF_CHANGE, data)

    def check_conf_change(self, cc_type: ConfChangeType, node_id: str,
                          removed: Mapping[str, int] | None = None) -> ConfChangeVerdict:
        """The one place that decides whether a single-server membership change may
        be proposed here now. ``removed`` maps ids removed from the cluster (never
        to be reused) to the index of their removal, as the driver keeps them.

        On the leader: BUSY while its no-op of this term or another change is not
        applied; REFUSED for what the configuration can never take (an id already
        in it, one removed before, a non-member, the last voter, a learner too far
        behind to promote); else ALLOWED. On a follower, whose configuration is
        current once it passed a read barrier: REFUSED as above (except the
        learner's lag, which only the leader knows), else NOT_LEADER with the
        leader it knows. The reasons are the messages callers show."""
        n = node_id
        leader = self.role is Role.LEADER
        if leader:
            if self.log.term(self.log.committed) != self.term:
                # Before judging the configuration: a new leader may not have applied it.
                return ConfChangeVerdict(
                    ConfChangeOutcome.BUSY,
                    "busy: the leader's no-op of its term has not committed yet; retry")
            if self.pending_conf_index > self.log.applied:
                return ConfChangeVerdict(
                    ConfChangeOutcome.BUSY,
                    "busy: another membership change is pending, still in progress; "
                    "retry when it has been applied")
        refusal = self._conf_change_refusal(cc_type, n, removed or {})
        if refusal:
            return ConfChangeVerdict(ConfChangeOutcome.REFUSED, refusal)
        if not leader:
            if self.lead is None:
                return ConfChangeVerdict(
                    ConfChangeOutcome.NOT_LEADER,
                    "no leader known: membership changes need one; retry")
            return ConfChangeVerdict(
                ConfChangeOutcome.NOT_LEADER,
                f"membership changes go through the leader, member {self.lead}", self.lead)
        if cc_type is ConfChangeType.PROMOTE:
            pr = self.prs.get(n)
            match = pr.match if pr is not None else 0
            last = self.log.last_index()
            lag = self.cfg.promote_max_lag
            # Caught up: it has acknowledged entries (it runs and takes our log) and its
            # match index is within promote_max_lag entries of our last index.
            if match == 0 or match + lag < last:
                return ConfChangeVerdict(
                    ConfChangeOutcome.REFUSED,
                    f"learner {n} has not caught up: its match index is {match}, the "
                    f"leader's last index {last}; it can be promoted once it is within "
                    f"{lag} entries (see `member list`), retry then")
        return _ALLOWED

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point. A ReadState with ``ctx`` appears in a
        later Ready once confirmed; ``ctx`` must be unique among outstanding reads.
        Raises ProposalDropped if no leader is known."""
        ctx = bytes(ctx)
        if not ctx:
            raise ValueError("read context must not be empty")
        if self.role is Role.LEADER:
            self._leader_read(ctx, self.id)
        elif self.lead is None:
            raise ProposalDropped("no leader known")
        else:
            self._send(Message(MessageType.READ_INDEX, self.lead, self.id, context=ctx))

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter ``to`` (forwarded to the leader if we are not it)."""
        if self.role is Role.LEADER:
            if to not in self.voters:
                raise ValueError(f"{to} is not a voter")
            self._transfer(to)
        elif self.lead is None:
            raise ProposalDropped("no leader known")
        else:
            self._send(Message(MessageType.TRANSFER_LEADER, self.lead, self.id,
                               context=to.encode()))

    def campaign(self) -> None:
        """Start an election now (as if the election timeout had fired)."""
        if self.role is not Role.LEADER:
            self._campaign(pre=self.cfg.pre_vote)

    def compact(self, index: int, data: bytes, retain: int = 0) -> Snapshot:
        """The driver took a state-machine snapshot at applied index ``index``.

        The core keeps it (to send to followers that need compacted entries) and
        drops log entries up to ``index - retain``. The driver persists the snapshot
        itself before calling this; it is not repeated in a Ready. Returns it."""
        if index > self.log.applied:
            raise ValueError(f"snapshot index {index} beyond applied {self.log.applied}")
        cur = self.log.snapshot.meta.index if self.log.snapshot else self.log.offset
        if index <= cur:
            raise ValueError(f"snapshot index {index} not after the current one {cur}")
        t = self.log.term(index)
        if t is None:
            raise ValueError(f"no term known for index {index}")
        snap = Snapshot(SnapshotMeta(index, t, self._conf_at(index)), bytes(data))
        self.log.snapshot = snap
        self.log.compact_to(max(self.log.offset, index - max(0, retain)))
        self._conf_history = [h for h in self._conf_history if h[0] > index] or []
        self._conf_history.insert(0, (index, snap.meta.conf_state))
        return snap

    # ==================================================================================
    # Output

    def has_ready(self) -> bool:
        # Hot in every driver loop: compare fields, build nothing.
        self._flush()
        if self._outstanding is not None:
            return False
        if self.msgs or self.read_states or self._pending_snapshot is not None:
            return True
        lg = self.log
        if lg.persisted < lg.last_index() or lg.committed > max(lg.applied, lg.offset):
            return True
        hs = self._prev_hs
        if hs.term != self.term or hs.vote != self.vote or hs.commit != lg.committed:
            return True
        ss = self._prev_ss
        return ss.leader != self.lead or ss.role != self.role_name

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RuntimeError("ready() called again before advance()")
        self._flush()
        hs = self._hard_state()
        ss = self._soft_state()
        rd = Ready(
            soft_state=ss if ss != self._prev_ss else None,
            hard_state=hs if hs != self._prev_hs else None,
            entries=list(self.log.unstable()),
            snapshot=self._pending_snapshot,
            messages=list(self.msgs),
            committed_entries=self.log.next_committed(self.cfg.max_committed_bytes_per_ready),
            read_states=list(self.read_states),
        )
        self._outstanding = rd
        # A leader whose term and vote are already on disk may send its appends,
        # heartbeats and snapshot chunks before persisting this Ready (Raft thesis
        # 10.2.1): they depend on no unpersisted state, and it counts itself in a
        # commit quorum only for entries it has persisted (advance()). Decided here,
        # from the role at ready() time; never when this Ready carries a new term/vote.
        prev = self._prev_hs
        self._early_ok = (self.role is Role.LEADER and hs.term == prev.term
                          and hs.vote == prev.vote)
        return rd

    def split_early(self, rd: Ready) -> tuple[list[Message], list[Message]]:
        """Split the outstanding ``rd``'s messages into those the driver may send
        before persisting ``rd`` and those it must send only after."""
        if rd is not self._outstanding:
            raise RuntimeError("split_early() with a Ready that is not the outstanding one")
        if not self._early_ok:
            return [], rd.messages
        early = [m for m in rd.messages if m.type in _EARLY_TYPES]
        if not early:
            return [], rd.messages
        return early, [m for m in rd.messages if m.type not in _EARLY_TYPES]

    def advance(self, rd: Ready) -> None:
        """The driver finished ``rd``: persisted, sent, applied."""
        if rd is not self._outstanding:
            raise RuntimeError("advance() with a Ready that is not the outstanding one")
        self._outstanding = None
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.soft_state is not None:
            self._prev_ss = rd.soft_state
        if rd.snapshot is not None:
            if self._pending_snapshot is rd.snapshot:
                self._pending_snapshot = None
            self.log.applied = max(self.log.applied, rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER:
                me = self.prs.get(self.id)
                if me is not None and me.maybe_update(self.log.persisted) and self._maybe_commit():
                    self._bcast_append()
        del self.msgs[: len(rd.messages)]
        del self.read_states[: len(rd.read_states)]
        if rd.committed_entries:
            for e in rd.committed_entries:
                if e.index <= self.log.applied:
                    continue
                self.log.applied = e.index
                if e.type == EntryType.CONF_CHANGE and e.index > self.conf_applied_index:
                    self._apply_conf_entry(e)

    def _flush(self) -> None:
        """Send what proposals batched up: appends to followers, forwards to the leader."""
        if self._bcast_pending:
            self._bcast_pending = False
            if self.role is Role.LEADER:
                for p in sorted(self.prs):
                    # As much as the follower's window allows, in datagram-sized batches.
                    while p != self.id and self._send_append(p, send_if_empty=False):
                        pass
        if self._hb_pending:
            self._hb_pending = False
            if self.role is Role.LEADER and self._read_queue and not self._read_round_open():
                self._bcast_heartbeat()
        if self._prop_buf:
            buf, self._prop_buf = self._prop_buf, []
            if self.lead is None or self.role is Role.LEADER:
                self.logger.info("%s drops %d forwarded proposals: leader changed", self.id,
                                 len(buf))
                return
            limit = self.cfg.max_msg_bytes - 1024
            chunk: list[Entry] = []
            size = 0
            for e in buf:
                sz = entry_wire_size(e)
                if chunk and size + sz > limit:
                    self._send(Message(MessageType.PROP, self.lead, self.id, entries=chunk))
                    chunk, size = [], 0
                chunk.append(e)
                size += sz
            self._send(Message(MessageType.PROP, self.lead, self.id, entries=chunk))

    # ==================================================================================
    # Status

    @property
    def applied(self) -> int:
        return self.log.applied

    @property
    def commit(self) -> int:
        return self.log.committed

    @property
    def persisted_index(self) -> int:
        """The last index the driver said is on disk (advance() of a saved Ready)."""
        return self.log.persisted

    def status(self) -> dict:
        st = {
            "id": self.id,
            "role": self.role_name,
            "term": self.term,
            "vote": self.vote,
            "leader": self.lead,
            "commit_index": self.log.committed,
            "applied_index": self.log.applied,
            "last_index": self.log.last_index(),
            "first_index": self.log.first_index(),
            "snapshot_index": self.log.snapshot.meta.index if self.log.snapshot else 0,
            "voters": sorted(self.voters),
            "learners": sorted(self.learners),
            "lead_transferee": self.lead_transferee,
        }
        if self.role is Role.LEADER:
            st["progress"] = {p: pr.describe() for p, pr in sorted(self.prs.items())}
        return st

    def conf_state(self) -> ConfState:
        return _copy_conf(self.voters, self.learners)

    # ==================================================================================
    # Internals: state transitions

    @property
    def role_name(self) -> str:
        """leader, follower, candidate, pre-candidate or learner (cheap: no status())."""
        if self.role is Role.FOLLOWER and self.id in self.learners:
            return "learner"
        return self.role.value

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role_name)

    def _promotable(self) -> bool:
        return self.id in self.voters

    def _quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def _reset_randomized_timeout(self) -> None:
        e = self.cfg.election_ticks
        self.randomized_timeout = self.rng.randint(e, 2 * e - 1)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.lead_transferee = None
        self.votes = {}
        self.prs = {}
        self._read_queue = []
        self._reads_by_ctx = {}
        self._reads_waiting_commit = []

    def _become_follower(self, term: int, lead: str | None) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        self.logger.info("%s became follower at term %d (leader %s)", self.id, term, lead)

    def _become_pre_candidate(self) -> None:
        # Term and vote stay: a pre-candidate only asks whether it could win.
        self.role = Role.PRE_CANDIDATE
        self.votes = {}
        self.lead = None
        self.election_elapsed = 0
        self._reset_randomized_timeout()
        self.logger.info("%s became pre-candidate at term %d", self.id, self.term)

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.logger.info("%s became candidate at term %d", self.id, self.term)

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        last = self.log.last_index()
        for p in self.voters | self.learners:
            self.prs[p] = self._new_progress(p, last)
        if self.id in self.prs:
            # Only what is on our disk counts towards a quorum (see advance()).
            self.prs[self.id].match = min(last, self.log.persisted)
            self.prs[self.id].become_replicate()
        # No membership change before everything up to here is applied (and the
        # no-op below is committed, checked in _conf_change_refusal).
        self.pending_conf_index = last
        self.logger.info("%s became leader at term %d", self.id, self.term)
        self._append_entries([Entry(0, 0, EntryType.NORMAL, b"")])
        self._bcast_append()

    def _new_progress(self, p: str, last: int) -> Progress:
        pr = Progress(match=0, next=last + 1, is_learner=p in self.learners)
        pr.inflights.capacity = self.cfg.max_inflight
        pr.recent_active = False  # must be heard from within the first CheckQuorum round
        return pr

    # ==================================================================================
    # Elections

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self._campaign(pre=self.cfg.pre_vote)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = sum(
                    1 for v in self.voters
                    if v == self.id or (v in self.prs and self.prs[v].recent_active)
                )
                for p, pr in self.prs.items():
                    if p != self.id:
                        pr.recent_active = False
                if active < self._quorum():
                    self.logger.info("%s steps down: no quorum heard within an election "
                                     "timeout (CheckQuorum)", self.id)
                    self._become_follower(self.term, None)
                    return
            if self.lead_transferee is not None:
                self.logger.info("%s aborts transfer to %s: timed out", self.id,
                                 self.lead_transferee)
                self.lead_transferee = None
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()
            for p, pr in self.prs.items():
                if p != self.id and pr.state is ProgressState.SNAPSHOT:
                    pr.snap_idle_ticks += 1
                    if pr.snap_idle_ticks >= self.cfg.snapshot_retry_ticks:
                        pr.snap_idle_ticks = 0
                        self._retry_snapshot(p, pr)

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if not self._promotable():
            return
        if pre:
            self._become_pre_candidate()
            vote_term, mtype = self.term + 1, MessageType.PRE_VOTE
        else:
            self._become_candidate()
            vote_term, mtype = self.term, MessageType.VOTE
        self.votes = {self.id: True}
        if self._poll_won():
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for v in sorted(self.voters):
            if v == self.id:
                continue
            self.msgs.append(Message(
                mtype, v, self.id, term=vote_term, index=self.log.last_index(),
                log_term=self.log.last_term(), context=ctx,
            ))

    def _poll_won(self) -> bool:
        granted = sum(1 for v, g in self.votes.items() if g and v in self.voters)
        return granted >= self._quorum()

    def _poll_lost(self) -> bool:
        rejected = sum(1 for v, g in self.votes.items() if not g and v in self.voters)
        return rejected > len(self.voters) - self._quorum()

    def _handle_vote_request(self, m: Message) -> None:
        resp = (MessageType.VOTE_RESP if m.type is MessageType.VOTE
                else MessageType.PRE_VOTE_RESP)
        can_vote = (
            self.vote == m.frm
            or (self.vote is None and self.lead is None)
            or (m.type is MessageType.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # The response carries the request's term so a pre-candidate can count it.
            self.msgs.append(Message(resp, m.frm, self.id, term=m.term))
            if m.type is MessageType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp, m.frm, self.id, reject=True))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP):
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
            return
        pre = self.role is Role.PRE_CANDIDATE
        want = MessageType.PRE_VOTE_RESP if pre else MessageType.VOTE_RESP
        if t is want:
            self.votes.setdefault(m.frm, not m.reject)
            if self._poll_won():
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=m.context == CAMPAIGN_TRANSFER)
                else:
                    self._become_leader()
            elif self._poll_lost():
                self._become_follower(self.term, None)

    # ==================================================================================
    # Followers

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MessageType.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t is MessageType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(Message(MessageType.HEARTBEAT_RESP, m.frm, self.id, context=m.context))
        elif t is MessageType.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot_chunk(m)
        elif t is MessageType.TIMEOUT_NOW:
            if self._promotable():
                self.logger.info("%s got TimeoutNow from %s: campaigning", self.id, m.frm)
                self._campaign(pre=False, transfer=True)
        elif t is MessageType.READ_INDEX_RESP:
            if not m.reject:
                self.read_states.append(ReadState(m.index, m.context))

    def _handle_append(self, m: Message) -> None:
        # A well-formed append (contiguous entries after ``index``, terms that never
        # decrease nor exceed the sender's) was checked by step(): validate_message.
        if m.index < self.log.committed:
            self._send(Message(MessageType.APP_RESP, m.frm, self.id, index=self.log.committed))
            return
        try:
            last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        except LogSafetyError as e:
            # Only a broken or forged leader asks to overwrite committed entries.
            self.logger.error("%s refuses an append from %s: %s", self.id, m.frm, e)
            return
        if last_new is not None:
            self._send(Message(MessageType.APP_RESP, m.frm, self.id, index=last_new))
            return
        hint_index = min(m.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, m.log_term)
        self._send(Message(
            MessageType.APP_RESP, m.frm, self.id, index=m.index, reject=True,
            reject_hint=hint_index, log_term=hint_term,
        ))

    def _handle_snapshot_chunk(self, m: Message) -> None:
        c = m.snapshot
        if c is None:
            return
        if c.meta.index <= self.log.committed:
            self._snap_rx = None
            self._send(Message(MessageType.APP_RESP, m.frm, self.id, index=self.log.committed))
            return
        key = (m.frm, m.term, c.meta.index, c.meta.term)
        rx = self._snap_rx
        if rx is None or rx.key != key:
            if c.offset != 0:
                # We do not have the start of this snapshot (we restarted, or a newer
                # one is being sent): ask the leader to begin again.
                self._send(Message(MessageType.SNAP_RESP, m.frm, self.id,
                                   snapshot=SnapshotChunk(c.meta, 0, c.total, b"")))
                return
            rx = self._snap_rx = _SnapRx(key, c.meta, c.total, bytearray())
        if c.offset == len(rx.buf) and c.total == rx.total:
            rx.buf += c.data
        self._send(Message(MessageType.SNAP_RESP, m.frm, self.id,
                           snapshot=SnapshotChunk(c.meta, len(rx.buf), rx.total, b"")))
        if len(rx.buf) >= rx.total:
            self._snap_rx = None
            snap = Snapshot(rx.meta, bytes(rx.buf))
            if self._restore(snap):
                self.logger.info("%s restored snapshot at %d (term %d) from %s", self.id,
                                 snap.meta.index, snap.meta.term, m.frm)
                idx = self.log.last_index()
            else:
                idx = self.log.committed
            self._send(Message(MessageType.APP_RESP, m.frm, self.id, index=idx))

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.meta
        if meta.index <= self.log.committed:
            return False
        cs = meta.conf_state
        # We may not be in the snapshot's configuration (a new member: the entry that
        # added us comes after it); only a leader that counts us as a member sends it.
        if self.log.match_term(meta.index, meta.term):
            # We already have the entries: just move the commit forward.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self._pending_snapshot = snap
        self.voters, self.learners = set(cs.voters), set(cs.learners)
        self.conf_applied_index = meta.index
        self._conf_history = [(meta.index, _copy_conf(self.voters, self.learners))]
        return True

    # ==================================================================================
    # Leaders

    def _step_leader(self, m: Message) -> None:
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        t = m.type
        if t is MessageType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._read_ack(m.frm, m.context)
        elif t is MessageType.APP_RESP:
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif t is MessageType.SNAP_RESP:
            pr.recent_active = True
            self._handle_snapshot_response(m, pr)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            if (pr.state is ProgressState.PROBE and m.index == pr.next - 1
                    and m.reject_hint < pr.match):
                # It rejected our probe at its match index and its log ends below it:
                # it lost entries it had acknowledged (a disk that dropped fsynced
                # data, a data dir from an older copy). Probing never goes below
                # match, so without this we would probe the same index forever.
                self.logger.warning(
                    "%s: member %s lost entries it had acknowledged (its log ends at %d, "
                    "it had acknowledged %d): its storage is not durable; sending them "
                    "again", self.id, m.frm, m.reject_hint, pr.match)
                pr.match = 0  # we no longer know what it holds: probe down from its hint
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        if m.index > self.log.last_index():
            return  # acknowledges entries we never had: not from our term's log
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.snap is None or pr.match >= pr.snap.meta.index:
                pr.become_probe()
                pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._bcast_append()
        elif old_paused:
            self._send_append(m.frm)
        # Stream what else the follower lacks, as far as the window allows.
        while self._send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self.logger.info("%s sends TimeoutNow to %s: it is caught up", self.id, m.frm)
            self._send(Message(MessageType.TIMEOUT_NOW, m.frm, self.id))

    def _handle_snapshot_response(self, m: Message, pr: Progress) -> None:
        c = m.snapshot
        if pr.state is not ProgressState.SNAPSHOT or pr.snap is None or c is None:
            return
        if (c.meta.index, c.meta.term) != (pr.snap.meta.index, pr.snap.meta.term):
            return
        total = len(pr.snap.data)
        if c.offset == 0 and pr.snap_acked > 0:
            pr.snap_acked = pr.snap_sent = 0  # the follower lost what it had: start over
            pr.probe_sent = False
        elif c.offset > pr.snap_acked:
            pr.snap_acked = min(c.offset, total)
            pr.snap_idle_ticks = 0
        pr.snap_sent = max(pr.snap_sent, pr.snap_acked)
        self._send_snapshot_chunks(m.frm, pr)

    def _append_entries(self, ents: list[Entry]) -> int:
        last = self.log.last_index()
        for i, e in enumerate(ents):
            e.term, e.index = self.term, last + 1 + i
        last = self.log.append(ents)
        # The leader counts itself only for what it has persisted (see advance()):
        # its appends go out before its own fsync (Raft thesis 10.2.1).
        return last

    def _maybe_commit(self) -> bool:
        if not self.voters:
            return False
        matches = sorted((self.prs[v].match if v in self.prs else 0 for v in self.voters),
                         reverse=True)
        mci = matches[self._quorum() - 1]
        # Only an entry of our own term commits by counting replicas (Figure 8).
        if mci > self.log.committed and self.log.term(mci) == self.term:
            first_in_term = self.log.term(self.log.committed) != self.term
            self.log.commit_to(mci)
            if first_in_term:
                waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
                for ctx, frm in waiting:
                    self._leader_read(ctx, frm)
            return True
        return False

    def _bcast_append(self) -> None:
        for p in sorted(self.prs):
            if p != self.id:
                self._send_append(p)

    def _read_round_open(self) -> bool:
        return self._read_round is not None and self._read_round in self._reads_by_ctx

    def _bcast_heartbeat(self, ctx: bytes | None = None) -> None:
        if ctx is None:
            ctx = self._read_queue[-1].context if self._read_queue else b""
        if ctx:
            self._read_round = ctx  # an ack of it confirms every read queued up to it
        for p in sorted(self.prs):
            if p == self.id:
                continue
            pr = self.prs[p]
            self._send(Message(MessageType.HEARTBEAT, p, self.id,
                               commit=min(pr.match, self.log.committed), context=ctx))

    def _send_append(self, to: str, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None or pr.next < self.log.first_index():
            return self._start_snapshot(to, pr)
        ents = self.log.slice(pr.next, self.log.last_index() + 1, self.cfg.max_msg_bytes - 1024)
        if not ents and not send_if_empty:
            return False
        self._send(Message(MessageType.APP, to, self.id, index=prev, log_term=prev_term,
                           entries=ents, commit=self.log.committed))
        if pr.state is ProgressState.REPLICATE:
            if ents:
                last = ents[-1].index
                pr.optimistic_update(last)
                pr.inflights.add(last)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    # ---- snapshots to followers ---------------------------------------------------
    def _chunk_size(self, snap: Snapshot) -> int:
        ids = snap.meta.conf_state.voters + snap.meta.conf_state.learners
        overhead = 1024 + sum(len(i.encode()) + 4 for i in ids)
        return max(1024, self.cfg.max_msg_bytes - overhead)

    def _start_snapshot(self, to: str, pr: Progress) -> bool:
        snap = self.log.snapshot
        if snap is None:
            self.logger.warning("%s cannot send %s entries from %d: compacted, no snapshot",
                                self.id, to, pr.next)
            return False
        self.logger.info("%s sends snapshot at %d (%d bytes) to %s", self.id, snap.meta.index,
                         len(snap.data), to)
        pr.become_snapshot(snap)
        self._send_snapshot_chunks(to, pr)
        return True

    def _send_snapshot_chunks(self, to: str, pr: Progress) -> None:
        snap = pr.snap
        assert snap is not None
        total = len(snap.data)
        if total == 0:
            if not pr.probe_sent:
                pr.probe_sent = True
                self._send(Message(MessageType.SNAP, to, self.id,
                                   snapshot=SnapshotChunk(snap.meta, 0, 0, b"")))
            return
        cs = self._chunk_size(snap)
        while pr.snap_sent < total and pr.snap_sent - pr.snap_acked < self.cfg.snapshot_window * cs:
            data = snap.data[pr.snap_sent: pr.snap_sent + cs]
            self._send(Message(MessageType.SNAP, to, self.id,
                               snapshot=SnapshotChunk(snap.meta, pr.snap_sent, total, data)))
            pr.snap_sent += len(data)

    def _retry_snapshot(self, to: str, pr: Progress) -> None:
        snap = pr.snap
        if snap is None:
            return
        total = len(snap.data)
        if total == 0:
            pr.probe_sent = False
        elif pr.snap_acked >= total:
            pr.snap_sent = max(0, total - self._chunk_size(snap))  # resend the last chunk
            pr.snap_acked = pr.snap_sent
        else:
            pr.snap_sent = pr.snap_acked
        self._send_snapshot_chunks(to, pr)

    # ---- proposals ----------------------------------------------------------------
    def _propose_entry(self, etype: EntryType, data: bytes) -> int | None:
        if len(data) > self.cfg.max_entry_bytes:
            raise ValueError(f"proposal of {len(data)} bytes exceeds the limit of "
                             f"{self.cfg.max_entry_bytes}")
        if self.role is Role.LEADER:
            if self.lead_transferee is not None:
                raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")
            if etype == EntryType.CONF_CHANGE:
                self.pending_conf_index = self.log.last_index() + 1
            last = self._append_entries([Entry(0, 0, etype, data)])
            self._bcast_pending = True  # one append per follower for all proposals so far
            return last
        if self.lead is None:
            raise ProposalDropped("no leader known")
        self._prop_buf.append(Entry(0, 0, etype, data))  # forwarded in batches
        return None

    def _step_termless(self, m: Message) -> None:
        if self.role is not Role.LEADER:
            return  # forwarded once only; the sender times out and retries
        if m.type is MessageType.PROP:
            if self.lead_transferee is not None or not m.entries:
                return
            ents = []
            for e in m.entries:
                if len(e.data) > self.cfg.max_entry_bytes:
                    continue
                if e.type == EntryType.CONF_CHANGE:
                    try:
                        cc = ConfChange.decode(e.data)
                        reason = self.check_conf_change(cc.type, cc.node_id).reason
                    except DecodeError as err:
                        reason = str(err)
                    if reason:
                        self.logger.info("%s drops a conf change from %s: %s", self.id, m.frm,
                                         reason)
                        continue
                    self.pending_conf_index = self.log.last_index() + len(ents) + 1
                ents.append(Entry(0, 0, e.type, e.data))
            if ents:
                self._append_entries(ents)
                self._bcast_pending = True
        elif m.type is MessageType.READ_INDEX:
            if m.context and m.frm in self.prs:
                self._leader_read(m.context, m.frm)
        elif m.type is MessageType.TRANSFER_LEADER:
            try:
                to = m.context.decode()
            except UnicodeDecodeError:
                return
            if to in self.voters:
                self._transfer(to)

    # ---- ReadIndex ------------------------------------------------------------------
    def _leader_read(self, ctx: bytes, frm: str) -> None:
        if ctx in self._reads_by_ctx:
            return  # a duplicate; the first one will be answered
        if self.log.term(self.log.committed) != self.term:
            # Our commit index may be stale until our own no-op commits.
            if len(self._reads_waiting_commit) < self.cfg.max_pending_reads:
                self._reads_waiting_commit.append((ctx, frm))
            return
        if self.voters == {self.id}:
            self._release_read(self.log.committed, ctx, frm)
            return
        if len(self._read_queue) >= self.cfg.max_pending_reads:
            return
        req = _ReadRequest(self.log.committed, ctx, frm, {self.id})
        self._read_queue.append(req)
        self._reads_by_ctx[ctx] = req
        self._hb_pending = True  # one heartbeat round confirms every read queued so far

    def _read_ack(self, frm: str, ctx: bytes) -> None:
        req = self._reads_by_ctx.get(ctx)
        if req is None:
            return
        if frm in self.voters:
            req.acks.add(frm)
        if len(req.acks & self.voters) < self._quorum():
            return
        # A quorum confirmed we were leader after req arrived; so for all before it.
        i = self._read_queue.index(req)
        done, self._read_queue = self._read_queue[: i + 1], self._read_queue[i + 1:]
        for r in done:
            del self._reads_by_ctx[r.context]
            self._release_read(r.index, r.context, r.frm)
        if self._read_queue and not self._read_round_open():
            self._hb_pending = True  # the reads that queued meanwhile: the next round

    def _release_read(self, index: int, ctx: bytes, frm: str) -> None:
        if frm == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self._send(Message(MessageType.READ_INDEX_RESP, frm, self.id, index=index,
                               context=ctx))

    # ---- leadership transfer --------------------------------------------------------
    def _transfer(self, to: str) -> None:
        if to == self.id:
            self.lead_transferee = None
            return
        if self.lead_transferee == to or to not in self.prs:
            return
        self.lead_transferee = to
        self.election_elapsed = 0  # the transfer must finish within an election timeout
        self.logger.info("%s starts leadership transfer to %s", self.id, to)
        if self.prs[to].match == self.log.last_index():
            self._send(Message(MessageType.TIMEOUT_NOW, to, self.id))
        else:
            self._send_append(to)

    # ---- membership -----------------------------------------------------------------
    def _conf_change_refusal(self, t: ConfChangeType, n: str,
                             removed: Mapping[str, int]) -> str | None:
        """Why the configuration can never take this change (None: it can)."""
        adding = t in (ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER)
        if adding and n in removed:
            return (f"member id {n} was removed from the cluster (at index {removed[n]}) "
                    "and ids are never reused: add the new member under a new id, with an "
                    "empty data dir")
        voters, learners = self.voters, self.learners
        if adding and (n in voters or n in learners):
            return f"{n} is already a {'voter' if n in voters else 'learner'}"
        if t is ConfChangeType.PROMOTE:
            if n in voters:
                return f"{n} is already a voter"
            if n not in learners:
                return (f"{n} is not a member: add it as a learner first "
                        f"(`member add {n} HOST:PORT --learner`)")
        if t is ConfChangeType.REMOVE:
            if n not in voters and n not in learners:
                extra = f" (it was removed at index {removed[n]})" if n in removed else ""
                return f"{n} is not a member{extra}"
            if voters == {n}:
                return "cannot remove the last voter"
        return None

    def transfer_candidate(self, exclude: str) -> str | None:
        """The most caught-up voter other than ``exclude`` (lowest id on a tie), as
        this leader knows it; None if there is none or this member does not lead."""
        if self.role is not Role.LEADER:
            return None
        prs = self.prs
        others = [v for v in self.voters if v != exclude]
        if not others:
            return None
        return min(others, key=lambda v: (-(prs[v].match if v in prs else 0), v))

    def _apply_conf_entry(self, e: Entry) -> None:
        self.conf_applied_index = e.index
        try:
            cc = ConfChange.decode(e.data)
        except DecodeError as err:
            self.logger.error("%s skips undecodable conf change at %d: %s", self.id, e.index, err)
            return
        n = cc.node_id
        if cc.type in (ConfChangeType.ADD_VOTER, ConfChangeType.PROMOTE):
            if cc.type is ConfChangeType.ADD_VOTER or n in self.learners:
                self.learners.discard(n)
                self.voters.add(n)
        elif cc.type is ConfChangeType.ADD_LEARNER:
            if n not in self.voters:
                self.learners.add(n)
        elif cc.type is ConfChangeType.REMOVE:
            self.voters.discard(n)
            self.learners.discard(n)
        self._conf_history.append((e.index, _copy_conf(self.voters, self.learners)))
        self.logger.info("%s applied conf change %s %s at %d: voters %s learners %s", self.id,
                         cc.type.name, n, e.index, sorted(self.voters), sorted(self.learners))
        if self.role is not Role.LEADER:
            return
        members = self.voters | self.learners
        last = self.log.last_index()
        for p in list(self.prs):
            if p not in members:
                del self.prs[p]
        added = []
        for p in sorted(members):
            if p not in self.prs:
                self.prs[p] = self._new_progress(p, last)
                added.append(p)
            self.prs[p].is_learner = p in self.learners
        if self.id not in self.voters:
            self._step_down_removed()
            return
        if self.lead_transferee is not None and self.lead_transferee not in self.voters:
            self.lead_transferee = None
        if self._maybe_commit():
            self._bcast_append()
        for p in added:
            self._send_append(p)  # start probing the new member now, not at the next tick

    def _step_down_removed(self) -> None:
        # Hand over to a caught-up voter at once rather than waiting for a timeout.
        last = self.log.last_index()
        best = [p for p in sorted(self.voters) if p in self.prs and self.prs[p].match == last]
        self.logger.info("%s was removed: stepping down", self.id)
        term = self.term
        self._become_follower(term, None)
        if best:
            self._send(Message(MessageType.TIMEOUT_NOW, best[0], self.id))

    def _conf_at(self, index: int) -> ConfState:
        cs = self._conf_history[0][1]
        for i, c in self._conf_history:
            if i <= index:
                cs = c
        return ConfState(list(cs.voters), list(cs.learners))

    def _bootstrap(self, voters: list[str], learners: list[str]) -> None:
        ents = []
        for v in voters:
            ents.append(ConfChange(ConfChangeType.ADD_VOTER, v))
        for v in learners:
            ents.append(ConfChange(ConfChangeType.ADD_LEARNER, v))
        entries = [Entry(1, i + 1, EntryType.CONF_CHANGE, cc.encode()) for i, cc in enumerate(ents)]
        self.log.append(entries)
        self.log.persisted = 0
        self.term = 1
        self.log.committed = len(entries)
        for e in entries:
            self._apply_conf_entry(e)

    # ---- sending --------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        if m.term == 0 and m.type not in (MessageType.PROP, MessageType.READ_INDEX,
                                          MessageType.TRANSFER_LEADER):
            m.term = self.term
        self.msgs.append(m)

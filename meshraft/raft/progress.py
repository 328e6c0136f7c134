"""The leader's view of each follower: how far its log matches, what to send next,
and how much is in flight.

This module owns the per-peer replication state machine (probe / replicate /
snapshot) and the bounded in-flight window. It must never send anything itself
or do IO: the core asks it questions and tells it what was sent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from .messages import Snapshot


class ProgressState(Enum):
    PROBE = "probe"  # next is a guess: send one append per heartbeat until it matches
    REPLICATE = "replicate"  # next is known: stream appends, at most max_inflight unacked
    SNAPSHOT = "snapshot"  # the follower needs compacted entries: send snapshot chunks


class Inflights:
    """The last index of each append in flight, oldest first; bounded in count."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._q: deque[int] = deque()

    def add(self, last_index: int) -> None:
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        """Acknowledge every message whose last index is <= ``index``."""
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()


@dataclass
class Progress:
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False  # in PROBE: one append is out; wait for an answer or a heartbeat
    recent_active: bool = False  # heard from it since the last CheckQuorum round
    is_learner: bool = False
    inflights: Inflights = field(default_factory=lambda: Inflights(256))
    # SNAPSHOT state: the snapshot being streamed and how far it got.
    snap: Snapshot | None = None
    snap_acked: int = 0  # bytes the follower confirmed
    snap_sent: int = 0  # bytes we sent (offset of the next chunk)
    snap_idle_ticks: int = 0  # ticks without an acknowledgement

    def reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.state = state
        self.inflights.reset()
        self.snap = None
        self.snap_acked = self.snap_sent = self.snap_idle_ticks = 0

    def become_probe(self) -> None:
        # From SNAPSHOT, the follower has at least the snapshot's index.
        if self.state is ProgressState.SNAPSHOT and self.snap is not None:
            pending = self.snap.meta.index
            self.reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self.reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self.reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snap: Snapshot) -> None:
        self.reset_state(ProgressState.SNAPSHOT)
        self.snap = snap

    def maybe_update(self, n: int) -> bool:
        """The follower acknowledged index ``n``; False if that is old news."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at ``rejected``; back off using its hint.

        False when the rejection is stale (for an append we already moved past)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True  # SNAPSHOT: appends wait until the snapshot is in

    def describe(self) -> dict:
        return {
            "match": self.match,
            "next": self.next,
            "state": self.state.value,
            "learner": self.is_learner,
            "inflight": self.inflights.count(),
            "recent_active": self.recent_active,
        }

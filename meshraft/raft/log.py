"""The in-memory Raft log: every entry after the last compaction point, plus the
indexes that say how much of it is committed, persisted and applied.

This module owns the log-matching rules (find a conflict, append with
truncation, compaction, restore from a snapshot). It must never do IO: what is
on disk is the driver's business; ``persisted`` only records what the driver
said it wrote. The core keeps the whole uncompacted log here.
"""

from __future__ import annotations

from .messages import Entry, Snapshot, entry_wire_size


class LogSafetyError(AssertionError):
    """An invariant of the Raft log would be broken (a bug or a corrupted peer)."""


class RaftLog:
    def __init__(self, offset: int = 0, offset_term: int | None = 0,
                 entries: list[Entry] | None = None) -> None:
        # ``offset`` is the index just before entries[0]; its term is ``offset_term``
        # (None: unknown, i.e. treat it as compacted).
        self.offset = offset
        self.offset_term = offset_term
        self.entries: list[Entry] = list(entries or [])
        for i, e in enumerate(self.entries):
            if e.index != offset + 1 + i:
                raise LogSafetyError(f"entries not contiguous at {e.index}")
        self.committed = offset
        self.applied = offset
        self.persisted = self.last_index()
        # The latest snapshot (what a lagging follower is sent); None until the first.
        self.snapshot: Snapshot | None = None

    # ---- queries ------------------------------------------------------------------
    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def last_term(self) -> int:
        if self.entries:
            return self.entries[-1].term
        return self.offset_term or 0

    def term(self, i: int) -> int | None:
        """The term of entry ``i``; None if compacted away or beyond the end."""
        if i == self.offset:
            return self.offset_term
        if i < self.offset or i > self.last_index():
            return None
        return self.entries[i - self.offset - 1].term

    def entry(self, i: int) -> Entry:
        return self.entries[i - self.offset - 1]

    def match_term(self, i: int, t: int) -> bool:
        return self.term(i) == t

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        lt = self.last_term()
        return last_term > lt or (last_term == lt and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi), at most ``max_bytes`` on the wire but at least one."""
        lo = max(lo, self.first_index())
        hi = min(hi, self.last_index() + 1)
        out: list[Entry] = []
        size = 0
        base = self.offset + 1
        for i in range(lo, hi):
            e = self.entries[i - base]
            size += entry_wire_size(e)
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def find_conflict(self, ents: list[Entry]) -> int:
        """Index of the first entry of ``ents`` that is new or conflicts; 0 if none."""
        for e in ents:
            t = self.term(e.index)
            if t is None and e.index <= self.offset:
                continue  # compacted: it was committed, so it matches
            if t != e.term:
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term."""
        while index > 0:
            t = self.term(index)
            if t is None:
                return index, 0  # compacted or unknown: no further hint
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # ---- changes --------------------------------------------------------------------
    def append(self, ents: list[Entry]) -> int:
        """Append ``ents``, replacing any suffix from ents[0].index; returns last index."""
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise LogSafetyError(f"truncating committed {after + 1} (commit {self.committed})")
        if after < self.offset:
            raise LogSafetyError(f"append at {after + 1} before the log start {self.offset + 1}")
        del self.entries[after - self.offset:]
        self.entries.extend(ents)
        if self.persisted > after:
            self.persisted = after
        return self.last_index()

    def maybe_append(self, index: int, log_term: int, committed: int,
                     ents: list[Entry]) -> int | None:
        """Follower side of AppendEntries; the new last index, or None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise LogSafetyError(f"entry {ci} conflicts with committed entry")
            self.append(ents[ci - index - 1:])
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, i: int) -> bool:
        if i > self.committed:
            if i > self.last_index():
                raise LogSafetyError(f"commit {i} beyond last index {self.last_index()}")
            self.committed = i
            return True
        return False

    def stable_to(self, i: int, t: int) -> None:
        """The driver persisted entries up to ``i`` (term ``t``) as handed out."""
        if self.term(i) == t and i > self.persisted:
            self.persisted = i

    def unstable(self) -> list[Entry]:
        if self.persisted >= self.last_index():
            return []
        return self.entries[max(self.persisted, self.offset) - self.offset:]

    def next_committed(self, max_bytes: int) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        return self.slice(lo, self.committed + 1, max_bytes) if self.committed >= lo else []

    def compact_to(self, i: int) -> None:
        """Drop entries up to and including ``i`` (they are in a snapshot)."""
        if i <= self.offset:
            return
        if i > self.applied:
            raise LogSafetyError(f"compacting {i} beyond applied {self.applied}")
        t = self.term(i)
        del self.entries[: i - self.offset]
        self.offset, self.offset_term = i, t

    def restore(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a follower that fell behind a compaction)."""
        self.entries = []
        self.offset, self.offset_term = snap.meta.index, snap.meta.term
        self.committed = self.persisted = snap.meta.index
        # ``applied`` moves when the driver has restored its state machine (advance).
        self.snapshot = snap

"""The watch checker: etcd's watch guarantees over a ``--workload watch`` history.

Owns: reading the watch workload's ops out of a history (docs/architecture.md#jepsen-lite,
"watch workload") and deciding whether the watchers' event logs keep etcd's guarantees:

- **ordered**: within a watcher's log revisions never go down (the events of one
  revision are next to each other), across its sessions too;
- **unique**: no event (revision, key) twice in a watcher's log;
- **start**: a session delivers nothing below the revision it was opened at;
- **atomic**: a log that has a revision has all of that revision's events (the set
  every other log and the acknowledged writes show for it), never a part of it;
- **reliable**: every revision known to exist under the prefix (an acknowledged
  write's, or one another watcher saw) inside a session's span, from its start
  revision to the newest revision it knows it has seen everything up to, is in that
  session's log;
- **resumable**: the same, for the revisions between a reopened session's start
  (last delivered + 1) and its first event: a reopen continues without a gap;
- **agree**: every log shows the same key, type and value at a revision, and the same
  as the acknowledged write of that revision;
- **writes**: every event comes from a write that could have produced it: a write of
  that key and value (values are unique per key) that did not fail, acknowledged at
  that very revision or of unknown outcome (``info``), invoked before the event was
  delivered; acknowledged writes get distinct revisions that follow real time.

A write is a put or a transaction of puts to distinct keys: one revision, so its
events must come together (atomic), in every log, at one revision.

Must never: re-run or contact anything (a pure function of the history), or give a
verdict on a history that breaks the format (that is a HistoryError: exit 2).
Each violation is reported once with the processes, sessions, revisions and history
indices involved, at most MAX_REPORTED per kind (the count is always exact).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jepsen_lite.history import HistoryError, pair_operations, validate_events

#: violation kinds, in the order they are reported
KINDS = ("ordered", "unique", "start", "atomic", "reliable", "resumable", "agree", "writes")
#: violations listed per kind (all are counted)
MAX_REPORTED = 50

WRITE_F = "write"
WATCH_F = "watch"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One delivered event as the history records it: ``[revision, key, value, type]``."""

    revision: int
    key: Any
    value: Any
    type: str


@dataclass(slots=True)
class Session:
    """One open-read-close of a watch by one watcher process."""

    process: int
    number: int  # 0-based, per process, in invoke order
    start: int  # the revision it was opened at
    events: list[WatchEvent]
    status: str  # ok (closed by the workload) or fail (ended by an error)
    progress: int | None  # the watch's own "seen everything up to" revision at the close
    invoke_index: int
    complete_index: int | None
    error: str | None = None
    compacted: int | None = None  # the compaction revision, if it ended as "compacted"

    @property
    def last(self) -> int | None:
        return self.events[-1].revision if self.events else None

    @property
    def span_end(self) -> int:
        """The newest revision this session claims to have everything up to."""
        ends = [self.start - 1]
        if self.events:
            ends.append(max(e.revision for e in self.events))
        if self.progress is not None:
            ends.append(self.progress)
        return max(ends)

    def name(self) -> str:
        return f"watcher p{self.process} session #{self.number} (opened at {self.start})"


@dataclass(slots=True)
class Write:
    """A put, or a transaction of puts to distinct keys (one revision): ``pairs``."""

    process: int
    pairs: list[tuple[Any, Any]]  # (key, value)
    status: str
    revision: int | None
    invoke_index: int
    complete_index: int | None

    def name(self) -> str:
        rev = f" at revision {self.revision}" if self.revision is not None else ""
        what = (f"key {self.pairs[0][0]!r} = {self.pairs[0][1]!r}" if len(self.pairs) == 1
                else "transaction " + ", ".join(f"{k!r} = {v!r}" for k, v in self.pairs))
        return (f"write p{self.process} {what} ({self.status}{rev}, history "
                f"#{self.invoke_index}..#{self.complete_index})")


@dataclass(slots=True)
class Violation:
    kind: str
    message: str
    revision: int | None = None
    process: int | None = None
    session: int | None = None
    index: int | None = None  # the history index of the completion that shows it

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "revision": self.revision,
                "process": self.process, "session": self.session, "index": self.index}


@dataclass
class WatchCheckResult:
    valid: bool
    violations: list[Violation]
    counts: dict[str, int]  # violations by kind (exact; the list is capped)
    stats: dict[str, Any]
    elapsed: float = 0.0
    model: str = "watch"

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "model": self.model, "violations_by_kind": self.counts,
                "violations": [v.to_json() for v in self.violations], "stats": self.stats,
                "elapsed": round(self.elapsed, 3)}


class _Report:
    def __init__(self) -> None:
        self.counts = dict.fromkeys(KINDS, 0)
        self.items: list[Violation] = []

    def add(self, v: Violation) -> None:
        self.counts[v.kind] += 1
        if self.counts[v.kind] <= MAX_REPORTED:
            self.items.append(v)


# ---------------------------------------------------------------- reading the history


def _scalar(x: Any) -> bool:
    return x is None or isinstance(x, (int, str, float))


def _event(raw: Any, line: int | None) -> WatchEvent:
    if (not isinstance(raw, list) or len(raw) != 4 or type(raw[0]) is not int
            or raw[0] <= 0 or raw[3] not in ("PUT", "DELETE") or not _scalar(raw[1])
            or not _scalar(raw[2])):
        raise HistoryError(f"a watch event must be [revision > 0, key, value, 'PUT'|'DELETE'], "
                           f"got {raw!r}", line)
    return WatchEvent(raw[0], raw[1], raw[2], raw[3])


def read_ops(events: list[dict[str, Any]], lines: list[int] | None = None
             ) -> tuple[list[Write], list[Session]]:
    """The writes and watch sessions of a history (validated here: raises HistoryError
    naming the line; ``lines`` are the events' 1-based line numbers if not 1, 2, ...)."""
    validate_events(events, lines)
    ops = pair_operations(events, lines)
    by_index = {ev["index"]: (lines[n] if lines is not None else n + 1, ev)
                for n, ev in enumerate(events)}
    writes: list[Write] = []
    sessions: list[Session] = []
    per_process: dict[int, int] = {}
    for op in ops:
        done = by_index.get(op.complete_index) if op.complete_index is not None else None
        line, comp = done if done is not None else (None, {})
        if op.f == WRITE_F:
            rev = comp.get("revision") if op.status == "ok" else None
            if op.status == "ok" and (type(rev) is not int or rev <= 0):
                raise HistoryError(f"an ok write must carry its revision (an integer > 0), "
                                   f"got {rev!r}", line)
            writes.append(Write(op.process, _pairs(op.key, op.value, op.invoke_line),
                                op.status, rev, op.invoke_index, op.complete_index))
        elif op.f == WATCH_F:
            if type(op.value) is not int or op.value <= 0:
                raise HistoryError(f"a watch's value is its start revision (an integer > 0), "
                                   f"got {op.value!r}", op.invoke_line)
            raw = comp.get("events", [])
            if not isinstance(raw, list):
                raise HistoryError(f"'events' must be a list, got {raw!r}", line)
            progress = comp.get("progress")
            if progress is not None and type(progress) is not int:
                raise HistoryError(f"'progress' must be an integer, got {progress!r}", line)
            compacted = comp.get("compact_revision")
            if compacted is not None and type(compacted) is not int:
                raise HistoryError(f"'compact_revision' must be an integer, got {compacted!r}",
                                   line)
            n = per_process.get(op.process, 0)
            per_process[op.process] = n + 1
            sessions.append(Session(op.process, n, op.value, [_event(r, line) for r in raw],
                                    op.status, progress, op.invoke_index, op.complete_index,
                                    op.error, compacted))
    seen: dict[tuple[Any, Any], Write] = {}
    for w in writes:
        for k, v in w.pairs:
            other = seen.setdefault((k, v), w)
            if other is not w:
                raise HistoryError(f"two writes of key {k!r} value {v!r} (history "
                                   f"#{other.invoke_index} and #{w.invoke_index}): the watch "
                                   f"workload writes each value once per key")
    return writes, sessions


def _pairs(key: Any, value: Any, line: int | None) -> list[tuple[Any, Any]]:
    """A put is ``key``/``value``; a transaction has no key and ``value`` a list of
    ``[key, value]`` pairs with distinct keys."""
    if key is not None:
        if not _scalar(value):
            raise HistoryError(f"a write's value must be a number or string, got {value!r}",
                               line)
        return [(key, value)]
    if (not isinstance(value, list) or not value
            or not all(isinstance(p, list) and len(p) == 2 and _scalar(p[0])
                       and _scalar(p[1]) for p in value)):
        raise HistoryError(f"a write without a key must have as value a list of [key, value] "
                           f"pairs, got {value!r}", line)
    keys = [p[0] for p in value]
    if len(set(map(repr, keys))) != len(keys):
        raise HistoryError(f"a transaction writes a key twice: {value!r}", line)
    return [(p[0], p[1]) for p in value]


# ---------------------------------------------------------------- the checks


def _fmt_set(kv: dict[Any, tuple[str, Any]]) -> str:
    return ", ".join(f"{k!r}={v[1]!r}" if v[0] == "PUT" else f"{k!r} deleted"
                     for k, v in sorted(kv.items(), key=lambda x: repr(x[0])))


def _check_writes_order(writes: list[Write], rep: _Report) -> None:
    """Acknowledged writes: one per revision, and revisions follow real time (a write
    invoked after another was acknowledged has a higher revision)."""
    acked = [w for w in writes if w.status == "ok"]
    by_rev: dict[int, Write] = {}
    for w in acked:
        assert w.revision is not None
        other = by_rev.setdefault(w.revision, w)
        if other is not w:
            rep.add(Violation("writes", f"two acknowledged writes at revision {w.revision}: "
                              f"{other.name()} and {w.name()}", w.revision, w.process,
                              index=w.complete_index))
    by_complete = sorted(acked, key=lambda w: w.complete_index or 0)
    done_max: Write | None = None
    i = 0
    for w in sorted(acked, key=lambda w: w.invoke_index):
        while i < len(by_complete) and (by_complete[i].complete_index or 0) < w.invoke_index:
            c = by_complete[i]
            if done_max is None or (c.revision or 0) > (done_max.revision or 0):
                done_max = c
            i += 1
        if done_max is not None and (w.revision or 0) <= (done_max.revision or 0):
            rep.add(Violation("writes", f"revisions go back in real time: {w.name()} was "
                              f"invoked after {done_max.name()} was acknowledged",
                              w.revision, w.process, index=w.complete_index))


def _check_session_logs(sessions: list[Session], rep: _Report) -> None:
    """ordered, unique and start, per watcher over all its sessions."""
    by_process: dict[int, list[Session]] = {}
    for s in sessions:
        by_process.setdefault(s.process, []).append(s)
    for ss in by_process.values():
        high = 0  # the highest revision this watcher has delivered so far
        high_where = ""
        seen: set[tuple[int, Any]] = set()
        for s in ss:
            for pos, e in enumerate(s.events):
                where = f"{s.name()}, event {pos}"
                if e.revision < s.start:
                    rep.add(Violation("start", f"{where}: revision {e.revision} is below the "
                                      f"start revision {s.start}", e.revision, s.process,
                                      s.number, s.complete_index))
                if (e.revision, e.key) in seen:
                    rep.add(Violation("unique", f"{where}: revision {e.revision} key "
                                      f"{e.key!r} delivered a second time", e.revision,
                                      s.process, s.number, s.complete_index))
                elif e.revision < high:
                    rep.add(Violation("ordered", f"{where}: revision {e.revision} (key "
                                      f"{e.key!r}) after revision {high} ({high_where})",
                                      e.revision, s.process, s.number, s.complete_index))
                seen.add((e.revision, e.key))
                if e.revision > high:
                    high, high_where = e.revision, where


def _reference(writes: list[Write], sessions: list[Session], rep: _Report
               ) -> dict[int, dict[Any, tuple[str, Any]]]:
    """What happened at each revision under the prefix: the acknowledged writes and
    every delivered event; a second, different account of a key at a revision is a
    disagreement."""
    ref: dict[int, dict[Any, tuple[str, Any]]] = {}
    source: dict[tuple[int, Any], str] = {}
    for w in writes:
        if w.status == "ok" and w.revision is not None:
            for k, v in w.pairs:
                ref.setdefault(w.revision, {})[k] = ("PUT", v)
                source[(w.revision, k)] = w.name()
    for s in sessions:
        for e in s.events:
            at = ref.setdefault(e.revision, {})
            mine = (e.type, e.value)
            theirs = at.setdefault(e.key, mine)
            if theirs != mine:
                rep.add(Violation(
                    "agree", f"{s.name()}: revision {e.revision} key {e.key!r} is "
                    f"{_fmt_set({e.key: mine})}, but {source[(e.revision, e.key)]} says "
                    f"{_fmt_set({e.key: theirs})}", e.revision, s.process, s.number,
                    s.complete_index))
            else:
                source.setdefault((e.revision, e.key), s.name())
    # a transaction of unknown outcome that some watcher saw at R: all its puts are at R
    seen_at: dict[tuple[Any, Any], int] = {}
    for s in sessions:
        for e in s.events:
            seen_at.setdefault((e.key, e.value), e.revision)
    for w in writes:
        if w.status == "info" and len(w.pairs) > 1:
            revs = {seen_at[p] for p in w.pairs if p in seen_at}
            if len(revs) == 1:
                at = ref[revs.pop()]
                for k, v in w.pairs:
                    at.setdefault(k, ("PUT", v))
    return ref


def _check_atomic(sessions: list[Session], ref: dict[int, dict[Any, tuple[str, Any]]],
                  rep: _Report) -> None:
    for s in sessions:
        got: dict[int, set[Any]] = {}
        for e in s.events:
            got.setdefault(e.revision, set()).add(e.key)
        for rev, keys in got.items():
            missing = set(ref.get(rev, {})) - keys
            if missing:
                full = ref[rev]
                rep.add(Violation(
                    "atomic", f"{s.name()}: revision {rev} delivered only in part: "
                    f"{_fmt_set({k: full[k] for k in keys if k in full})} without "
                    f"{_fmt_set({k: full[k] for k in missing})}", rev, s.process, s.number,
                    s.complete_index))


def _check_coverage(writes: list[Write], sessions: list[Session],
                    ref: dict[int, dict[Any, tuple[str, Any]]], rep: _Report) -> None:
    """reliable and resumable: every known revision inside a session's span is in it."""
    known = sorted(ref)
    acked = {w.revision: w for w in writes if w.status == "ok" and w.revision is not None}
    previous: dict[int, Session] = {}
    high: dict[int, int] = {}  # per watcher: the highest revision delivered so far
    for s in sessions:
        prev = previous.get(s.process)
        previous[s.process] = s
        revs = {e.revision for e in s.events}
        first = s.events[0].revision if s.events else None
        end = s.span_end
        # a reopen continues at the watcher's last delivered revision + 1; only a
        # compaction lets it start later (the history before was gone)
        begin = s.start
        delivered = high.get(s.process, 0)
        if prev is not None and prev.compacted is None:
            begin = min(begin, max(delivered, prev.start - 1) + 1)
        if s.events:
            high[s.process] = max(high.get(s.process, 0), max(e.revision for e in s.events))
        else:
            high.setdefault(s.process, 0)
        lo, hi = bisect.bisect_left(known, begin), bisect.bisect_right(known, end)
        for rev in known[lo:hi]:
            if rev in revs:
                continue
            w = acked.get(rev)
            what = (w.name() if w is not None and w.revision == rev
                    else f"revision {rev} ({_fmt_set(ref[rev])}, seen by another watcher)")
            before = max((r for r in revs if r < rev), default=None)
            after = min((r for r in revs if r > rev), default=None)
            ctx = (f"delivered {before if before is not None else 'nothing'} before it and "
                   f"{after if after is not None else 'nothing'} after it, and knew every "
                   f"revision up to {end}")
            if prev is not None and (first is None or rev < first):
                rep.add(Violation(
                    "resumable", f"{s.name()} reopened after session #{prev.number} "
                    f"(the watcher had delivered up to {delivered or 'nothing'}"
                    f"{'' if begin == s.start else f', so it should reopen at {begin}'}) "
                    f"but misses {what}; it {ctx}", rev, s.process, s.number,
                    s.complete_index))
            else:
                rep.add(Violation("reliable", f"{s.name()} misses {what}; it {ctx}", rev,
                                  s.process, s.number, s.complete_index))


def _check_against_writes(writes: list[Write], sessions: list[Session],
                          rep: _Report) -> None:
    """Every delivered event comes from a write that could have produced it there."""
    by_kv = {p: w for w in writes for p in w.pairs}
    write_revs: dict[int, dict[int, Session]] = {}  # id(write) -> revision -> a session
    first_rev: dict[tuple[Any, Any], tuple[int, Session]] = {}
    for s in sessions:
        for e in s.events:
            where = f"{s.name()}: revision {e.revision}"
            if e.type != "PUT":
                rep.add(Violation("writes", f"{where}: a {e.type} of key {e.key!r}, but the "
                                  f"workload only puts", e.revision, s.process, s.number,
                                  s.complete_index))
                continue
            w = by_kv.get((e.key, e.value))
            if w is None:
                rep.add(Violation("writes", f"{where}: key {e.key!r} = {e.value!r}, a value "
                                  f"no write wrote", e.revision, s.process, s.number,
                                  s.complete_index))
                continue
            if w.status == "fail":
                rep.add(Violation("writes", f"{where}: key {e.key!r} = {e.value!r} comes from "
                                  f"{w.name()}, which certainly did not take effect",
                                  e.revision, s.process, s.number, s.complete_index))
            elif w.status == "ok" and w.revision != e.revision:
                rep.add(Violation("writes", f"{where}: key {e.key!r} = {e.value!r}, but that "
                                  f"write was acknowledged at revision {w.revision}: "
                                  f"{w.name()}", e.revision, s.process, s.number,
                                  s.complete_index))
            if s.complete_index is not None and w.invoke_index > s.complete_index:
                rep.add(Violation("writes", f"{where}: key {e.key!r} = {e.value!r} delivered "
                                  f"(by history #{s.complete_index}) before {w.name()} was "
                                  f"invoked", e.revision, s.process, s.number,
                                  s.complete_index))
            at = write_revs.setdefault(id(w), {})
            if e.revision not in at and at and len(w.pairs) > 1:
                other_rev, other = next(iter(at.items()))
                rep.add(Violation("atomic", f"{where}: key {e.key!r} = {e.value!r} of {w.name()}"
                                  f", whose puts are one revision, but {other.name()} got "
                                  f"its puts at revision {other_rev}", e.revision, s.process,
                                  s.number, s.complete_index))
            at.setdefault(e.revision, s)
            seen = first_rev.setdefault((e.key, e.value), (e.revision, s))
            if seen[0] != e.revision:
                rep.add(Violation("writes", f"{where}: key {e.key!r} = {e.value!r}, written "
                                  f"once, but {seen[1].name()} got it at revision {seen[0]}",
                                  e.revision, s.process, s.number, s.complete_index))


def check_watch(events: Iterable[dict[str, Any]],
                lines: list[int] | None = None) -> WatchCheckResult:
    """Check a watch workload's history. Raises HistoryError for a malformed one."""
    t = time.perf_counter()
    evs = list(events)
    writes, sessions = read_ops(evs, lines)
    rep = _Report()
    _check_writes_order(writes, rep)
    _check_session_logs(sessions, rep)
    ref = _reference(writes, sessions, rep)
    _check_atomic(sessions, ref, rep)
    _check_coverage(writes, sessions, ref, rep)
    _check_against_writes(writes, sessions, rep)
    by_status = {"ok": 0, "fail": 0, "info": 0}
    for w in writes:
        by_status[w.status] += 1
    sess_status: dict[str, int] = {"ok": 0, "fail": 0}
    for s in sessions:
        sess_status[s.status] = sess_status.get(s.status, 0) + 1
    delivered = {e.revision for s in sessions for e in s.events}
    acked_revs = [w.revision for w in writes if w.status == "ok" and w.revision is not None]
    kv_seen = {(e.key, e.value) for s in sessions for e in s.events}
    stats: dict[str, Any] = {
        "writes": len(writes), "writes_by_outcome": by_status,
        "unknown_writes_seen": sum(1 for w in writes
                                   if w.status == "info" and set(w.pairs) & kv_seen),
        "acknowledged_writes_seen": sum(1 for w in writes
                                        if w.status == "ok" and set(w.pairs) & kv_seen),
        "watchers": len({s.process for s in sessions}),
        "sessions": len(sessions), "sessions_by_outcome": sess_status,
        "session_errors": _error_kinds(sessions),
        "events_delivered": sum(len(s.events) for s in sessions),
        "revisions_delivered": len(delivered),
        "highest_acknowledged_revision": max(acked_revs, default=None),
    }
    return WatchCheckResult(valid=not any(rep.counts.values()), violations=rep.items,
                            counts=rep.counts, stats=stats,
                            elapsed=time.perf_counter() - t)


def _error_kinds(sessions: list[Session]) -> dict[str, int]:
    """Session errors by their exception name (the text before the first colon)."""
    out: dict[str, int] = {}
    for s in sessions:
        if s.status != "ok":
            kind = (s.error or "unknown").split(":", 1)[0][:60]
            out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def describe(result: WatchCheckResult, source: str | None = None) -> list[str]:
    """The human-readable verdict: a line of numbers, then each violation."""
    st = result.stats
    wo = st["writes_by_outcome"]
    head = (f"{source + ': ' if source else ''}{st['writes']} writes (ok {wo['ok']}, fail "
            f"{wo['fail']}, info {wo['info']}), {st['watchers']} watchers, {st['sessions']} "
            f"sessions, {st['events_delivered']} events delivered, checked in "
            f"{result.elapsed:.3f} s")
    lines = [head]
    if result.valid:
        lines.append("watch guarantees hold (ordered, unique, atomic, reliable, resumable, "
                     "agreeing with each other and with the writes)")
        return lines
    counts = ", ".join(f"{k} {n}" for k, n in result.counts.items() if n)
    lines.append(f"watch guarantees VIOLATED: {counts}")
    for v in result.violations:
        lines.append(f"  [{v.kind}] {v.message}")
    for k, n in result.counts.items():
        if n > MAX_REPORTED:
            lines.append(f"  ... and {n - MAX_REPORTED} more {k} violations")
    return lines

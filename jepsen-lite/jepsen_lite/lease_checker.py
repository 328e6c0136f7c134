"""The lease checker: a lease workload's history against meshraft's lease promise.

This module owns deciding whether a history of the ``lease`` workload
(``jepsen_lite.lease_workload``) keeps the two lease guarantees; it never talks to
a cluster and never changes the history.

A session is one lease and one key, all under one history ``key`` (the session
name). Its operations: ``grant`` (value: the TTL in seconds; ok output: the lease
id), ``put`` (the key attached to the lease), ``keepalive``, ``read`` (ok output:
the lease id the key is attached to, or None when the key is absent) and
``revoke``. Times are the history's monotonic nanoseconds.

1. Safety, "a lease lives at least TTL seconds after its last acknowledged
   keepalive", measured from the keepalive's *invocation* (the grant counts as
   the first keepalive): a read that completed before ``k.invoke + TTL`` for some
   acknowledged keepalive ``k`` invoked before it completed, after the put was
   acknowledged and before the holder invoked a revoke, must not find the key
   absent; a keepalive completing in that window must not be refused with "lease
   not found".
2. Liveness with a stated bound: once the holder stops keeping the lease alive
   (it lapses), the key is gone within ``TTL + bound`` (``DEFAULT_BOUND``) after
   the later of the last keepalive attempt's completion and the end of any fault
   in progress then (a new leader gives every lease its full TTL again, and while
   no quorum exists nothing can expire). A read invoked after that deadline must
   not find the key. Lapses whose deadline falls after the last read are counted
   as ``unchecked``, not as violations.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from jepsen_lite.history import Op, pair_operations
from jepsen_lite.nemesis import periods_from_history

__all__ = ["DEFAULT_BOUND", "LeaseCheck", "check_lease_history"]

NS = 1_000_000_000
# Seconds past the TTL (from the later of the last keepalive attempt and the end of a
# fault in progress) by which a lapsed lease's keys must be gone: an election (at most
# ~2 s here), the expiry tick and the revoke's commit, and the read that sees it.
DEFAULT_BOUND = 5.0
MAX_REPORTED = 50  # violations listed in the result


@dataclass
class LeaseCheck:
    valid: bool
    sessions: int = 0
    lapsed: int = 0
    revoked: int = 0
    checked_expiries: int = 0
    unchecked_expiries: int = 0
    # reads and keepalives that completed while an acknowledged keepalive was younger
    # than the TTL: the ops the safety rule actually constrained
    guarded_ops: int = 0
    # seconds from the last keepalive attempt's completion to the first read that
    # found the key gone (lapsed sessions with no fault in between)
    expiry_delays: list[float] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    bound: float = DEFAULT_BOUND

    def to_json(self) -> dict[str, Any]:
        d = sorted(self.expiry_delays)
        return {
            "valid": self.valid, "sessions": self.sessions, "lapsed": self.lapsed,
            "revoked": self.revoked, "checked_expiries": self.checked_expiries,
            "unchecked_expiries": self.unchecked_expiries, "guarded_ops": self.guarded_ops,
            "bound_s": self.bound,
            "expiry_delay_s": {"n": len(d), "min": round(d[0], 3) if d else None,
                               "median": round(d[len(d) // 2], 3) if d else None,
                               "max": round(d[-1], 3) if d else None},
            "violations": self.violations[:MAX_REPORTED],
            "violation_count": len(self.violations),
        }


def _fault_windows(events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    times = [e["time"] for e in events if e.get("time") is not None]
    if not times:
        return []
    t0, last = min(times), max(times)
    return sorted((t0 + int(p.start * NS), t0 + int(p.stop * NS) if p.stop is not None
                   else last) for p in periods_from_history(events))


def _extend_past_faults(t: int, windows: list[tuple[int, int]], span: int) -> int:
    """The later of ``t`` and the end of every fault that starts before the deadline
    measured from it (a fault can push the deadline on, into the next fault)."""
    for start, stop in windows:
        if start <= t + span and stop > t:
            t = stop
    return t


def _describe(op: Op) -> dict[str, Any]:
    return {"process": op.process, "f": op.f, "key": op.key, "status": op.status,
            "value": op.value, "output": op.output, "invoke_line": op.invoke_line,
            "complete_line": op.complete_line}


def check_lease_history(events: list[dict[str, Any]], *,
                        bound: float = DEFAULT_BOUND) -> LeaseCheck:
    """Check a lease workload's history (see the module docstring)."""
    ops = [op for op in pair_operations(events) if op.key is not None]
    windows = _fault_windows(events)
    by_session: dict[Any, list[Op]] = defaultdict(list)
    for op in ops:
        by_session[op.key].append(op)
    res = LeaseCheck(valid=True, bound=bound)
    for name, sops in by_session.items():
        _check_session(name, sops, windows, bound, res)
    res.valid = not res.violations
    return res


def _check_session(name: Any, sops: list[Op], windows: list[tuple[int, int]],
                   bound: float, res: LeaseCheck) -> None:
    grant = next((o for o in sops if o.f == "grant"), None)
    if grant is None or grant.status != "ok" or grant.invoke_time is None:
        return  # no lease was surely granted: nothing is promised
    res.sessions += 1
    ttl = int(grant.value) * NS
    put = next((o for o in sops if o.f == "put" and o.status == "ok"), None)
    revokes = [o.invoke_time for o in sops if o.f == "revoke" and o.invoke_time is not None]
    revoke_at = min(revokes) if revokes else None
    if revoke_at is not None:
        res.revoked += 1
    # acknowledged keepalives (the grant first), by invocation time
    acked = sorted([grant.invoke_time] + [o.invoke_time for o in sops
                                          if o.f == "keepalive" and o.status == "ok"
                                          and o.invoke_time is not None])

    def promised_until(t: int) -> int | None:
        """The latest k.invoke + TTL over acknowledged keepalives invoked before t."""
        best = None
        for k in acked:
            if k <= t:
                best = k + ttl
        return best

    for o in sops:
        if o.status != "ok" and not (o.f == "keepalive" and o.status == "fail"
                                     and o.error and "not found" in o.error):
            continue
        if o.complete_time is None or (revoke_at is not None and o.complete_time >= revoke_at):
            continue
        until = promised_until(o.complete_time)
        if until is None or o.complete_time >= until:
            continue
        if o.f in ("read", "keepalive"):
            res.guarded_ops += 1
        if o.f == "read" and o.output is None and put is not None and \
                put.complete_time is not None and put.complete_time <= o.invoke_time:
            res.violations.append({
                "kind": "key-lost-early", "session": name,
                "message": f"the key was gone {(until - o.complete_time) / NS:.3f}s before "
                           "TTL had passed since an acknowledged keepalive",
                "op": _describe(o)})
        elif o.f == "keepalive" and o.status == "fail":
            res.violations.append({
                "kind": "lease-lost-early", "session": name,
                "message": f"a keepalive was refused (lease not found) "
                           f"{(until - o.complete_time) / NS:.3f}s before TTL had passed "
                           "since an acknowledged keepalive", "op": _describe(o)})
    _check_expiry(name, sops, grant, ttl, put, revoke_at, windows, bound, res)


def _check_expiry(name: Any, sops: list[Op], grant: Op, ttl: int, put: Op | None,
                  revoke_at: int | None, windows: list[tuple[int, int]], bound: float,
                  res: LeaseCheck) -> None:
    lapse = next((o for o in sops if o.f == "lapse"), None)
    if lapse is None or revoke_at is not None or put is None or lapse.invoke_time is None:
        return
    res.lapsed += 1
    attempts = [o for o in sops if o.f in ("keepalive", "grant", "put")
                and o.invoke_index < lapse.invoke_index]
    last = max((o.complete_time or o.invoke_time or 0) for o in attempts)
    span = ttl + int(bound * NS)
    start = _extend_past_faults(last, windows, span)
    deadline = start + span
    reads = [o for o in sops if o.f == "read" and o.status == "ok"
             and o.invoke_index > lapse.invoke_index]
    late = [o for o in reads if o.invoke_time is not None and o.invoke_time > deadline
            and o.output is not None]
    if late:
        o = late[0]
        res.violations.append({
            "kind": "key-outlived-lease", "session": name,
            "message": f"the key was still there {(o.invoke_time - start) / NS:.3f}s after "
                       f"the lease lapsed (TTL {ttl / NS:g}s + bound {bound:g}s)",
            "op": _describe(o)})
        return
    gone = next((o for o in reads if o.output is None), None)
    if gone is None:
        res.unchecked_expiries += 1
        return
    res.checked_expiries += 1
    if start == last and gone.complete_time is not None:
        res.expiry_delays.append((gone.complete_time - last) / NS)

"""The checker of the lock-set and fenced-set workloads: no acknowledged add is lost.

Owns ``check_lockset_history``: given a history of ``jepsen_lite.lockset_workload``
(``add`` ops with their fencing ``token``, ``stalled`` on the adds whose holder
stalled, one ``final-read``),
the run is valid when there is an ok final read and every ``add`` acknowledged
``ok`` is in the final set. Adds that failed must not be there (a refused fenced
write applied anyway would be a bug too); adds of unknown outcome may or may not.
For each lost add it reports who lost it: the add acknowledged last before the
final write whose holder had stalled (the token order tells the story). It reads
the history only; it never talks to a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LockSetResult", "check_lockset_history"]

MAX_LISTED = 50


@dataclass
class LockSetResult:
    valid: bool
    acknowledged: int = 0
    failed: int = 0
    unknown: int = 0
    unknown_present: int = 0
    stalls: int = 0
    final_size: int | None = None
    lost: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "acknowledged_adds": self.acknowledged,
                "failed_adds": self.failed, "unknown_adds": self.unknown,
                "unknown_adds_present": self.unknown_present, "stalls": self.stalls,
                "final_size": self.final_size, "lost_count": len(self.lost),
                "lost": self.lost[:MAX_LISTED], "unexpected": self.unexpected[:MAX_LISTED],
                "error": self.error}

    def explain(self) -> str:
        if self.error:
            return self.error
        if self.valid:
            return (f"every acknowledged add is in the final set ({self.acknowledged} "
                    f"acknowledged, {self.failed} refused, {self.unknown} unknown; "
                    f"{self.stalls} stalled holders)")
        parts = []
        if self.lost:
            first = self.lost[0]
            parts.append(f"{len(self.lost)} acknowledged add(s) LOST from the final set, "
                         f"e.g. {first['value']} (token {first['token']}, process "
                         f"{first['process']}), overwritten by a holder that stalled "
                         f"past its lease and wrote without a fence ({self.stalls} stalls)")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} refused add(s) present in the final set")
        return "; ".join(parts)


def check_lockset_history(events: list[dict[str, Any]]) -> LockSetResult:
    invoked: dict[Any, dict[str, Any]] = {}
    outcome: dict[int, tuple[str, dict[str, Any]]] = {}
    final: list[int] | None = None
    stalls = 0
    for ev in events:
        f, t = ev.get("f"), ev.get("type")
        if f == "add":
            if t != "invoke" and ev.get("stalled"):
                stalls += 1
            if t == "invoke":
                invoked[ev["process"]] = ev
            else:
                inv = invoked.pop(ev["process"], ev)
                outcome[int(ev["value"])] = (t, {"value": ev["value"], "token": ev.get(
                    "token"), "process": ev["process"], "invoked_ns": inv.get("time"),
                    "completed_ns": ev.get("time")})
        elif f == "final-read" and t == "ok":
            final = [int(x) for x in ev["value"]]
    res = LockSetResult(valid=False, stalls=stalls)
    if final is None:
        res.error = "no final read of the set: cannot tell"
        return res
    present = set(final)
    res.final_size = len(present)
    for value, (t, info) in sorted(outcome.items(), key=lambda kv: kv[1][1]["token"] or 0):
        if t == "ok":
            res.acknowledged += 1
            if value not in present:
                res.lost.append(info)
        elif t == "fail":
            res.failed += 1
            if value in present:
                res.unexpected.append(info)
        else:
            res.unknown += 1
            res.unknown_present += value in present
    res.valid = not res.lost and not res.unexpected
    return res

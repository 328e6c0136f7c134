"""The ``txn`` model: multi-key conditional transactions, checked for linearizability.

This module owns the sequential specification of the ``--workload txn`` history (see
docs/architecture.md#jepsen-lite), the random choice of its transactions, and a
simulator of linearizable txn histories (for tests and benchmarks). Like every model
it never searches, never reads files and keeps no state between calls.

A history key is a *group* of registers (``"g0"``, ``"g1"``, ...); every transaction
touches the registers of one group only, so groups are independent (the checker's
P-compositionality holds per group) while a transaction is still multi-key. The state
of a group is its registers' values, a sorted tuple of ``(register, value)`` pairs
(an absent register is left out; values are small integers).

An op ``f = "txn"`` has the value ``[compares, then, else]``: ``compares`` is a list of
``[register, v]`` (the register holds v; v null: the register is absent), ``then``
and ``else`` are lists of micro-ops ``["r", register, null]`` (read) and ``["w",
register, v]`` (write). Like etcd's Txn: if every compare holds the ``then`` ops run,
else the ``else`` ops, in order, atomically (a read after a write in the same branch
sees it). An ok op's output is ``[succeeded, reads]``: which branch ran, and the
values its reads returned in order (null: absent). A transaction with no write in
either branch is read-only.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from typing import Any

from jepsen_lite.history import Op
from jepsen_lite.models import ILLEGAL, Model

__all__ = ["TxnModel", "random_txn", "simulate_txn"]

REGISTERS_PER_GROUP = 3
MAX_VALUE = 5  # register values are uniform in [0, MAX_VALUE)


def _run(state: Hashable, value: Any) -> tuple[bool, list[Any], tuple[Any, ...]]:
    """Run a transaction on a group's state: (succeeded, reads, new state)."""
    regs = dict(state)  # type: ignore[call-overload]
    compares, then, other = value
    succeeded = all(regs.get(r) == v for r, v in compares)
    reads = []
    changed = False
    for f, r, v in then if succeeded else other:
        if f == "r":
            reads.append(regs.get(r))
        else:
            regs[r] = v
            changed = True
    return succeeded, reads, (tuple(sorted(regs.items())) if changed else state)  # type: ignore[return-value]


def _micro_ok(m: Any) -> bool:
    return (isinstance(m, list) and len(m) == 3 and m[0] in ("r", "w")
            and isinstance(m[1], str) and (m[2] is None if m[0] == "r"
                                           else isinstance(m[2], int)))


class TxnModel(Model):
    """Registers of a group, read and written by conditional transactions."""

    name = "txn"

    def init(self) -> Hashable:
        return ()

    def step(self, state: Hashable, op: Op) -> Hashable:
        succeeded, reads, new = _run(state, op.value)
        if op.status == "ok" and op.output != [succeeded, reads]:
            return ILLEGAL
        return new

    def validate(self, op: Op) -> str | None:
        if op.f != "txn":
            return f"txn has no operation {op.f!r} (expected txn)"
        v = op.value
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, list) for x in v)):
            return f"a txn's value is [compares, then, else], got {v!r}"
        compares, then, other = v
        if not all(isinstance(c, list) and len(c) == 2 and isinstance(c[0], str)
                   and (c[1] is None or isinstance(c[1], int)) for c in compares):
            return f"compares are [register, value-or-null], got {compares!r}"
        for branch in (then, other):
            if not all(_micro_ok(m) for m in branch):
                return f"micro-ops are [\"r\", register, null] or [\"w\", register, int], " \
                       f"got {branch!r}"
            written = [m[1] for m in branch if m[0] == "w"]
            if len(set(written)) != len(written):
                return f"a branch writes a register twice: {branch!r}"
        if op.status == "ok":
            out = op.output
            if not (isinstance(out, list) and len(out) == 2 and isinstance(out[0], bool)
                    and isinstance(out[1], list)):
                return f"an ok txn's output is [succeeded, reads], got {out!r}"
            branch = then if out[0] else other
            if len(out[1]) != sum(1 for m in branch if m[0] == "r"):
                return f"an ok txn returns one value per read of its branch, got {out!r}"
        return None

    def read_only(self, op: Op) -> bool:
        _, then, other = op.value
        return not any(m[0] == "w" for m in (*then, *other))

    def describe(self, op: Op) -> str:
        compares, then, other = op.value

        def ops(branch: list[Any]) -> str:
            return ", ".join(f"{r}={v}" if f == "w" else f"r {r}" for f, r, v in branch) or "-"

        cmp = " and ".join(f"{r}=={'absent' if v is None else v}" for r, v in compares)
        text = f"if {cmp or 'true'} then {ops(then)} else {ops(other)}"
        if op.status == "ok":
            text += f" -> {'then' if op.output[0] else 'else'} {op.output[1]!r}"
        return text

    def describe_state(self, state: Hashable) -> str:
        return "{" + ", ".join(f"{r}={v}" for r, v in state) + "}"  # type: ignore[union-attr]


def random_txn(rng: random.Random, registers: int = REGISTERS_PER_GROUP,
               values: int = MAX_VALUE, read_share: float = 0.3) -> list[Any]:
    """A random transaction over registers r0..r{registers-1}: with probability
    ``read_share`` a read of every register (a multi-key snapshot read), else 0-2
    compares (values that are often there: absent or small), a then-branch of 1-3
    micro-ops and an else-branch of 0-2 (each branch writes a register at most once)."""
    regs = [f"r{i}" for i in range(registers)]
    if rng.random() < read_share:
        return [[], [["r", r, None] for r in regs], []]

    def value() -> int:
        return rng.randrange(values)

    compares = [[r, None if rng.random() < 0.2 else value()]
                for r in rng.sample(regs, rng.randint(0, min(2, registers)))]

    def branch(lo: int, hi: int) -> list[Any]:
        out: list[Any] = []
        written: set[str] = set()
        for _ in range(rng.randint(lo, hi)):
            r = rng.choice(regs)
            if rng.random() < 0.6 and r not in written:
                written.add(r)
                out.append(["w", r, value()])
            else:
                out.append(["r", r, None])
        return out

    return [compares, branch(1, 3), branch(0, 2)]


def simulate_txn(*, ops: int = 20, processes: int = 3, groups: int = 1,
                 registers: int = REGISTERS_PER_GROUP, values: int = 3, seed: int = 0,
                 crash: float = 0.0) -> list[dict[str, Any]]:
    """A linearizable txn history: each op is invoked, takes effect at a random later
    moment (computed on the true state), then completes; with probability ``crash`` it
    ends ``info`` instead (its effect may happen later or never) and its client goes
    on as a new process. For tests and benchmarks."""
    rng = random.Random(seed)
    state: dict[str, Hashable] = {}
    events: list[dict[str, Any]] = []
    slots: list[list[Any]] = [[p, None, 0] for p in range(processes)]  # process, op, phase
    next_proc = processes
    pending: list[dict[str, Any]] = []
    started = 0

    def emit(process: int, typ: str, key: str, value: Any, **kw: Any) -> None:
        events.append({"index": len(events), "time": len(events) * 1000, "process": process,
                       "type": typ, "f": "txn", "key": key, "value": value, **kw})

    def apply(op: dict[str, Any]) -> None:
        ok, reads, new = _run(state.get(op["key"], ()), op["value"])
        state[op["key"]] = new
        op["out"] = [ok, reads]

    while started < ops or any(s[1] is not None for s in slots):
        if pending and rng.random() < 0.05:
            apply(pending.pop(rng.randrange(len(pending))))
        slot = slots[rng.randrange(processes)]
        proc, op, phase = slot
        if op is None:
            if started >= ops:
                continue
            op = {"key": f"g{rng.randrange(groups)}",
                  "value": random_txn(rng, registers, values)}
            started += 1
            emit(proc, "invoke", op["key"], op["value"])
            slot[1], slot[2] = op, 0
        elif phase == 0:
            if crash and rng.random() < crash:
                emit(proc, "info", op["key"], op["value"], error="timeout")
                if rng.random() < 0.5:
                    pending.append(op)
                slot[0], slot[1] = next_proc, None
                next_proc += 1
            else:
                apply(op)
                slot[2] = 1
        else:
            emit(proc, "ok", op["key"], op["out"])
            slot[1] = None
    return events


def mutate_txn(events: Sequence[dict[str, Any]], rng: random.Random, n: int
               ) -> list[dict[str, Any]]:
    """``events`` with ``n`` random changes to ok outputs (a flipped branch, a read
    that returned something else) or completions (ok -> info): most results are not
    linearizable. For tests."""
    ev = [dict(e) for e in events]
    for _ in range(n):
        oks = [e for e in ev if e["type"] == "ok"]
        if not oks:
            break
        e = rng.choice(oks)
        succeeded, reads = e["value"]
        kind = rng.randrange(3)
        if kind == 0 and reads:
            reads = list(reads)
            i = rng.randrange(len(reads))
            reads[i] = rng.choice([None, 0, 1, 2])
            e["value"] = [succeeded, reads]
        elif kind == 1:
            inv = [x for x in ev if x["process"] == e["process"] and x["type"] == "invoke"
                   and x["index"] < e["index"]][-1]
            branch = inv["value"][2 if succeeded else 1]
            e["value"] = [not succeeded, [rng.choice([None, 0, 1]) for m in branch
                                          if m[0] == "r"]]
        else:
            inv = [x for x in ev if x["process"] == e["process"] and x["type"] == "invoke"
                   and x["index"] < e["index"]][-1]
            e["type"] = "info"
            e["value"] = inv["value"]
    return ev

"""The txn workload against in-process clients over a real meshraft state machine (no
cluster): the history it records checks as linearizable with the txn model; unknown
outcomes become info ops under a new process; a store that breaks atomicity is caught."""

from __future__ import annotations

import asyncio
import io
import json
import random
import time

from jepsen_lite.checker import check_history
from jepsen_lite.history import HistoryWriter, pair_operations
from jepsen_lite.txn_model import TxnModel
from jepsen_lite.txn_workload import TxnWorkload, to_client_txn
from jepsen_lite.workload import WorkloadConfig

from meshraft.kv.client import KeyValue, OutcomeUnknown, PutResult, TxnResult
from meshraft.kv.state_machine import KVStateMachine, encode_command
from meshraft.raft.messages import Entry


class StoreClient:
    """client.txn over one shared KVStateMachine, applied at once. ``unknown``: the
    share of writing txns that apply and then raise OutcomeUnknown; ``torn``: apply a
    txn's writes as separate revisions with a read in between (breaks atomicity)."""

    def __init__(self, sm: KVStateMachine, rng: random.Random, unknown: float = 0.0,
                 torn: bool = False) -> None:
        self.sm, self.rng, self.unknown, self.torn = sm, rng, unknown, torn
        self.index = 0

    def apply(self, cmd):
        self.index += 1
        return self.sm.apply(Entry(term=1, index=self.index, data=encode_command(cmd)))

    async def txn(self, compare, success, failure, *, timeout=None):  # noqa: ASYNC109
        await asyncio.sleep(0)
        cmd = {"op": "txn", "compare": [c.to_wire() for c in compare],
               "success": [o.to_wire() for o in success],
               "failure": [o.to_wire() for o in failure]}
        if self.torn:
            a = await self.torn_txn(cmd)
        else:
            a = self.apply(cmd)
        assert "error" not in a, a
        if self.unknown and any(o.wire["op"] == "put" for o in (*success, *failure)) \
                and self.rng.random() < self.unknown:
            raise OutcomeUnknown("no answer in time")
        out = []
        for r in a["responses"]:
            if r["op"] == "put":
                out.append(PutResult(r["revision"], r["create_revision"], r["version"]))
            else:
                out.append(None if r["kv"] is None else KeyValue.from_wire(r["kv"]))
        return TxnResult(a["succeeded"], a["revision"], out)

    async def torn_txn(self, cmd):
        """The compares and the first op of the success branch, then the rest of it a
        moment later, one op at a time: other clients may run in between."""
        a = self.apply({**cmd, "success": cmd["success"][:1]})
        if a["succeeded"]:
            for o in cmd["success"][1:]:
                await asyncio.sleep(0.01)
                a["responses"] += self.apply({"op": "txn", "success": [o]})["responses"]
        return a

    async def close(self):
        pass


def run_workload(seconds=1.0, rate=None, **client_kw):
    sm = KVStateMachine()
    rng = random.Random(3)
    buf = io.StringIO()
    with HistoryWriter(buf) as hist:
        wl = TxnWorkload(WorkloadConfig(concurrency=5, keys=6, op_timeout=1.0, rate=rate),
                         ["a:1", "b:2"], hist, random.Random(11),
                         client_factory=lambda ep, t: StoreClient(sm, rng, **client_kw))
        asyncio.run(wl.run(time.monotonic() + seconds))
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    return wl, events


def test_to_client_txn():
    cmp, then, other = to_client_txn("g1", [[["r0", None], ["r1", 3]],
                                            [["w", "r0", 1], ["r", "r1", None]],
                                            [["r", "r2", None]]])
    assert [c.to_wire() for c in cmp] == [
        {"key": b"jl/txn/g1/r0", "target": "version", "result": "=", "value": 0},
        {"key": b"jl/txn/g1/r1", "target": "value", "result": "=", "value": b"3"}]
    assert [o.to_wire() for o in then] == [
        {"op": "put", "key": b"jl/txn/g1/r0", "value": b"1"},
        {"op": "get", "key": b"jl/txn/g1/r1"}]
    assert [o.to_wire() for o in other] == [{"op": "get", "key": b"jl/txn/g1/r2"}]


def test_a_workload_history_is_linearizable_with_both_branches_and_reads():
    wl, events = run_workload()
    ops = pair_operations(events)
    assert len(ops) > 100 and wl.completed == len(ops)
    assert {o.key for o in ops} == {"g0", "g1"}
    outs = [o.output for o in ops if o.status == "ok"]
    assert any(out[0] for out in outs) and any(not out[0] for out in outs)
    assert any(any(v is not None for v in out[1]) for out in outs)
    assert check_history(events, TxnModel()).valid is True


def test_unknown_outcomes_are_info_under_a_new_process():
    # Paced: every unknown outcome stays open to the end of the history, so the search
    # grows with their number; unpaced, a fast machine made hundreds and the check ran
    # for many minutes.
    wl, events = run_workload(rate=100, unknown=0.1)
    ops = pair_operations(events)
    info = [o for o in ops if o.status == "info"]
    assert info
    assert all(len(s.processes) == 1 + sum(1 for o in info if o.process in s.processes)
               for s in wl.stats)
    assert check_history(events, TxnModel()).valid is True


def test_torn_transactions_are_caught():
    """A store that applies a transaction's writes one by one: some run (timing decides
    which ops interleave) shows a read of half a transaction; the checker refutes it."""
    verdicts = []
    for _ in range(5):
        _, events = run_workload(seconds=1.0, rate=300, torn=True)
        verdicts.append(check_history(events, TxnModel(), 60, explain=False).valid)
        if False in verdicts:
            break
    assert False in verdicts and "unknown" not in verdicts

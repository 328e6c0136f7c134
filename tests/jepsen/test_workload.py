"""The client workload against scripted in-process clients (no cluster): outcome
classification, a new process id after an unknown outcome, the per-op timeout,
serializable reads, and the shared rate limit."""

from __future__ import annotations

import asyncio
import io
import json
import random
import time

import pytest
from jepsen_lite.history import HistoryWriter, pair_operations
from jepsen_lite.workload import MAX_VALUE, RateLimiter, Workload, WorkloadConfig

from meshraft.kv.client import CasResult, KeyValue, OutcomeUnknown, Unavailable


class ScriptedClient:
    """Answers put/get/cas at once, except as ``script`` says: a list of actions per call
    ("ok", "unknown", "unavailable", "hang"), taken in order, then "ok" for ever."""

    def __init__(self, script: list[str], calls: list[tuple], endpoint: str) -> None:
        self.script = list(script)
        self.calls = calls
        self.endpoint = endpoint
        self.store: dict[str, bytes] = {}
        self.closed = False

    async def _act(self, name: str, **kw) -> None:
        self.calls.append((self.endpoint, name, kw))
        action = self.script.pop(0) if self.script else "ok"
        if action == "unknown":
            raise OutcomeUnknown("no answer in time")
        if action == "unavailable":
            raise Unavailable("no leader")
        if action == "hang":
            await asyncio.sleep(3600)

    # the real client's signatures: (..., *, timeout) and get's serializable flag
    async def get(self, key, serializable=False, **kw):
        await self._act("get", serializable=serializable, **kw)
        v = self.store.get(key)
        return None if v is None else KeyValue(key.encode(), v, 1, 1, 1)

    async def put(self, key, value, **kw):
        await self._act("put", **kw)
        self.store[key] = value.encode()

    async def cas(self, key, old, new, **kw):
        await self._act("cas", **kw)
        if self.store.get(key) != old.encode():
            return CasResult(succeeded=False, revision=1)
        self.store[key] = new.encode()
        return CasResult(succeeded=True, revision=2)

    async def close(self):
        self.closed = True


def run_workload(config: WorkloadConfig, scripts: dict[int, list[str]], seconds: float,
                 endpoints=("n1", "n2")):
    buf = io.StringIO()
    calls: list[tuple] = []
    made: list[ScriptedClient] = []

    def factory(endpoint: str, op_timeout: float) -> ScriptedClient:
        c = ScriptedClient(scripts.get(len(made), []), calls, endpoint)
        made.append(c)
        return c

    wl = Workload(config, list(endpoints), HistoryWriter(buf), random.Random(1),
                  client_factory=factory)

    async def go():
        await wl.run(time.monotonic() + seconds)

    asyncio.run(go())
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    return wl, events, calls, made


def test_unknown_outcome_is_info_and_the_worker_continues_as_a_new_process():
    # worker 0's first client: its first op's outcome is unknown (a write or cas) or,
    # for a read, a failure; a write or cas then gets a fresh client and process
    cfg = WorkloadConfig(concurrency=1, keys=2, mix=("write",), rate=200)
    wl, events, _, made = run_workload(cfg, {0: ["unknown"]}, 0.3)
    ops = pair_operations(events)
    assert ops[0].status == "info" and ops[0].process == 0
    assert "OutcomeUnknown" in ops[0].error
    assert len(ops) > 2 and all(o.status == "ok" for o in ops[1:])
    assert {o.process for o in ops[1:]} == {1}, "continues under process 0 + concurrency"
    assert wl.stats[0].processes == [0, 1]
    assert made[0].closed and len(made) == 2, "a new client session after info"


def test_unavailable_write_fails_and_keeps_its_process():
    cfg = WorkloadConfig(concurrency=1, keys=1, mix=("write",), rate=200)
    _, events, _, made = run_workload(cfg, {0: ["unavailable"]}, 0.2)
    ops = pair_operations(events)
    assert ops[0].status == "fail" and "Unavailable" in ops[0].error
    assert {o.process for o in ops} == {0} and len(made) == 1


def test_a_read_without_answer_fails_it_changes_nothing():
    cfg = WorkloadConfig(concurrency=1, keys=1, mix=("read",), rate=200)
    _, events, _, _ = run_workload(cfg, {0: ["unknown"]}, 0.2)
    ops = pair_operations(events)
    assert ops[0].status == "fail" and {o.process for o in ops} == {0}


def test_op_timeout_bounds_a_hanging_call_and_is_passed_to_the_client():
    cfg = WorkloadConfig(concurrency=1, keys=1, mix=("write",), op_timeout=0.1)
    t0 = time.monotonic()
    _, events, calls, _ = run_workload(cfg, {0: ["hang"]}, 0.05)
    assert time.monotonic() - t0 < 30  # the outer bound (op timeout + 2 s) ended it
    ops = pair_operations(events)
    assert ops[0].status == "info"
    assert all(kw["timeout"] == 0.1 for _, _, kw in calls)


@pytest.mark.parametrize("serializable", [False, True])
def test_ops_are_small_ints_over_the_keys_and_reads_follow_the_flag(serializable):
    cfg = WorkloadConfig(concurrency=4, keys=3, serializable_reads=serializable, rate=400)
    _, events, calls, _ = run_workload(cfg, {}, 0.3)
    ops = pair_operations(events)
    assert {o.f for o in ops} == {"read", "write", "cas"}
    assert {o.key for o in ops} <= {0, 1, 2}
    for o in ops:
        args = [o.value] if o.f == "write" else (o.value or [])
        assert all(isinstance(v, int) and 0 <= v < MAX_VALUE for v in args)
    gets = [kw for _, name, kw in calls if name == "get"]
    assert gets and all(kw["serializable"] is serializable for kw in gets)
    # worker w talks to endpoint w mod len(endpoints) only
    assert {e for e, _, _ in calls} == {"n1", "n2"}


def test_rate_limiter_spaces_invokes_over_all_clients(monkeypatch):
    slept: list[float] = []

    async def fake_sleep(d):
        slept.append(round(d, 6))

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    limiter = RateLimiter(10.0, clock=lambda: 100.0)  # the clock stands still

    async def go():
        for _ in range(4):
            await limiter.wait()

    asyncio.run(go())
    assert slept == [0.1, 0.2, 0.3]  # slots 0.1 s apart: 10 per second
    slept.clear()
    asyncio.run(RateLimiter(None).wait())
    assert slept == []

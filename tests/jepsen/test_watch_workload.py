"""The watch workload against an in-process fake cluster (no servers): writers and
watchers split and bound to their nodes, values increasing per key, every session
reopened at the last delivered revision + 1 (at the compaction point after
``Compacted``), unknown writes continuing under a new process, sessions that end even
when the watch swallows a cancellation, and a history the watch checker accepts."""

from __future__ import annotations

import asyncio
import io
import itertools
import random
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from jepsen_lite.history import HistoryWriter, loads_history, pair_operations
from jepsen_lite.watch_checker import check_watch, describe
from jepsen_lite.watch_workload import PREFIX, WatchWorkload, WatchWorkloadConfig

from meshraft.kv.client import OutcomeUnknown, PutResult, TxnResult
from meshraft.kv.errors import Compacted

ENDPOINTS = ["n1:1", "n2:1", "n3:1"]


@dataclass(frozen=True)
class Ev:
    revision: int
    key: bytes
    value: bytes
    type: str = "PUT"


class FakeCluster:
    """One store: puts get the next revision; watches read its event log."""

    def __init__(self) -> None:
        self.revision = 1  # the runner's ready key
        self.log: list[Ev] = []
        self.changed = asyncio.Event()
        self.put_script: list[str] = []  # per put: "ok", "unknown" (applied, no answer)
        self.watch_script: list[str] = []  # per watch: "ok", "compacted", "deaf"
        self.watches: list[tuple[int, int]] = []  # (home, start revision)
        self.compact_at = 0

    def apply(self, *puts: tuple[str, str]) -> int:
        self.revision += 1
        for key, value in puts:
            self.log.append(Ev(self.revision, key.encode(), value.encode()))
        self.changed.set()
        self.changed = asyncio.Event()
        return self.revision


class KVClient:
    def __init__(self, cluster: FakeCluster, endpoint: str) -> None:
        self.cluster = cluster
        self.endpoint = endpoint

    async def put(self, key: str, value: str, timeout: float) -> PutResult:  # noqa: ASYNC109
        await asyncio.sleep(0)
        action = self.cluster.put_script.pop(0) if self.cluster.put_script else "ok"
        rev = self.cluster.apply((key, value))
        if action == "unknown":
            raise OutcomeUnknown("no answer in time")
        return PutResult(rev, rev, 1)

    async def txn(self, *, success: list, timeout: float) -> TxnResult:  # noqa: ASYNC109
        await asyncio.sleep(0)
        rev = self.cluster.apply(*[(o.wire["key"].decode(), o.wire["value"].decode())
                                   for o in success])
        return TxnResult(True, rev, [])

    async def close(self) -> None:
        pass


class FakeWatch:
    def __init__(self, cluster: FakeCluster, start: int, action: str) -> None:
        self.cluster = cluster
        self.next = start
        self.pos = 0  # events of the log already looked at
        self.revision = start - 1
        self.action = action
        self.closed = False
        self.wake = asyncio.Event()

    def __aiter__(self) -> FakeWatch:
        return self

    async def __anext__(self) -> Ev:
        if self.action == "compacted" and self.next < self.cluster.compact_at:
            raise Compacted("compacted", compact_revision=self.cluster.compact_at)
        while True:
            if self.closed:
                raise StopAsyncIteration
            if self.action == "slow":  # let the session's end fall inside a revision
                await asyncio.sleep(0.002)
            log = self.cluster.log
            while self.pos < len(log):
                ev = log[self.pos]
                self.pos += 1
                if ev.revision >= self.next:
                    # as the real watch: every event up to `revision` delivered
                    if self.pos == len(log) or log[self.pos].revision != ev.revision:
                        self.revision = ev.revision
                    return ev
            waiter = asyncio.ensure_future(self.cluster.changed.wait())
            closer = asyncio.ensure_future(self.wake.wait())
            try:
                await asyncio.wait({waiter, closer}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                if self.action != "deaf":
                    raise
                # a cancellation lost, as in a wait_for race: the task keeps reading
            finally:
                waiter.cancel()
                closer.cancel()

    async def cancel(self) -> None:
        self.closed = True
        self.wake.set()


class WatchClient:
    def __init__(self, cluster: FakeCluster, home: int) -> None:
        self.cluster = cluster
        self.home = home

    def watch(self, key: str, *, prefix: bool, start_revision: int) -> FakeWatch:
        assert key == PREFIX and prefix
        self.cluster.watches.append((self.home, start_revision))
        action = self.cluster.watch_script.pop(0) if self.cluster.watch_script else "ok"
        return FakeWatch(self.cluster, start_revision, action)

    async def close(self) -> None:
        pass


def run_workload(cluster: FakeCluster, seconds: float, **cfg) -> tuple[list[dict], WatchWorkload]:
    buf = io.StringIO()
    hist = HistoryWriter(buf)
    config = WatchWorkloadConfig(**{"concurrency": 6, "keys": 3, "rate": 300.0,
                                    "op_timeout": 0.5, "session": (0.05, 0.25),
                                    "pause": (0.0, 0.05), **cfg})
    wl = WatchWorkload(config, ENDPOINTS, hist, random.Random(7),
                       client_factory=lambda ep, t: KVClient(cluster, ep),
                       watch_client_factory=lambda eps, home, t: WatchClient(cluster, home))

    async def go() -> None:
        await wl.run(time.monotonic() + seconds)

    asyncio.run(go())
    return loads_history(buf.getvalue()), wl


def sessions_of(events: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for e in events:
        if e["f"] == "watch" and e["type"] != "invoke":
            out.setdefault(e["process"], []).append(e)
    return out


def test_a_run_is_split_bound_and_accepted_by_the_checker():
    cluster = FakeCluster()
    events, wl = run_workload(cluster, 1.5)
    assert (wl.n_watchers, wl.n_writers) == (3, 3)
    res = check_watch(events)
    assert res.valid, describe(res)
    ops = pair_operations(events)
    writes = [o for o in ops if o.f == "write"]
    assert writes and {o.process for o in writes} == {3, 4, 5}
    per_key: dict[int, list[int]] = {}
    for o in writes:
        for k, v in ([(o.key, o.value)] if o.key is not None else o.value):
            per_key.setdefault(k, []).append(v)
    assert all(v == list(range(1, len(v) + 1)) for v in per_key.values())
    txns = [o for o in writes if o.key is None]
    assert txns and all(len(o.value) == 2 and o.value[0][0] != o.value[1][0] for o in txns)
    assert 0.1 < len(txns) / len(writes) < 0.4  # TXN_SHARE of the writes
    by_proc = sessions_of(events)
    assert set(by_proc) == {0, 1, 2}
    for ss in by_proc.values():
        assert len(ss) >= 3, "sessions of 0.05-0.25 s over 1.5 s"
        assert ss[0]["value"] == 1
        last = 0
        for s in ss:
            if last:
                assert s["value"] == last + 1, "a reopen starts at last delivered + 1"
            if s["events"]:
                last = s["events"][-1][0]
            assert s["type"] == "ok" and isinstance(s["progress"], int)
    # a watcher's client opens on its own node first
    assert {home for home, _ in cluster.watches} == {0, 1, 2}
    assert res.stats["events_delivered"] == sum(len(s["events"]) for ss in by_proc.values()
                                               for s in ss) > 100


def test_an_unknown_write_continues_under_a_new_process():
    cluster = FakeCluster()
    cluster.put_script = ["unknown"]
    events, _ = run_workload(cluster, 0.6)
    infos = [e for e in events if e["type"] == "info"]
    assert len(infos) == 1 and infos[0]["f"] == "write"
    p = infos[0]["process"]
    assert any(e["process"] == p + 6 and e["f"] == "write" for e in events)
    res = check_watch(events)
    assert res.valid, describe(res)
    assert res.stats["unknown_writes_seen"] == 1


def test_a_compacted_session_is_recorded_and_reopens_at_the_compaction_point():
    cluster = FakeCluster()
    cluster.compact_at = 5  # the first watch asks for 1: history below 5 is gone
    cluster.watch_script = ["compacted"]
    events, _ = run_workload(cluster, 0.8, concurrency=2)
    (ss,) = sessions_of(events).values()
    assert ss[0]["type"] == "fail" and ss[0]["compact_revision"] == 5
    assert ss[0]["error"].startswith("Compacted")
    assert ss[1]["value"] == 5
    assert check_watch(events).valid


def test_sessions_end_even_when_the_watch_swallows_a_cancellation():
    cluster = FakeCluster()
    cluster.watch_script = ["deaf"] * 1000
    t = time.monotonic()
    events, _ = run_workload(cluster, 1.0, concurrency=2)
    assert time.monotonic() - t < 4.0
    ss = next(iter(sessions_of(events).values()))
    assert len(ss) >= 3 and all(s["type"] == "ok" for s in ss)
    assert check_watch(events).valid


def test_a_session_never_ends_inside_a_revision():
    """Every write a transaction of two puts, a watch that hands out events slowly: the
    sessions' ends fall between a revision's two events, and the workload reads on to
    the end of the revision before it closes, so the reopen at last + 1 loses nothing."""
    cluster = FakeCluster()
    cluster.watch_script = ["slow"] * 1000
    events, _ = run_workload(cluster, 1.5, concurrency=4, txn_share=1.0, rate=400.0,
                             session=(0.02, 0.06))
    res = check_watch(events)
    assert res.valid, describe(res)
    sessions = [s for ss in sessions_of(events).values() for s in ss]
    assert len(sessions) > 20
    assert all(len(s["events"]) % 2 == 0 for s in sessions)  # whole revisions only
    for ss in sessions_of(events).values():
        for s, nxt in itertools.pairwise(ss):
            if s.get("unfinished"):  # closed inside a revision: the next one opens at it
                assert nxt["value"] == s["unfinished"][0][0]


def test_sessions_are_bounded_in_events(monkeypatch):
    import jepsen_lite.watch_workload as ww

    monkeypatch.setattr(ww, "MAX_SESSION_EVENTS", 10)
    cluster = FakeCluster()
    events, _ = run_workload(cluster, 0.8, concurrency=2, session=(5.0, 5.0), rate=500.0)
    ss = next(iter(sessions_of(events).values()))
    # ten, or eleven when the tenth was the first put of a transaction's two
    assert len(ss) >= 2 and all(len(s["events"]) <= 11 for s in ss)
    assert check_watch(events).valid


def test_one_worker_is_not_enough(tmp_path):
    with pytest.raises(ValueError, match="concurrency 2 or more"):
        WatchWorkloadConfig(concurrency=1).split()
    res = subprocess.run([sys.executable, "-m", "jepsen_lite.cli", "run", "--workload", "watch",
                          "--net", "local", "--concurrency", "1", "--time", "5", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--concurrency 2 or more" in res.stderr

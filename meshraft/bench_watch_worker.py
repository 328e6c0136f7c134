"""The worker processes of the watch benchmark (:mod:`meshraft.bench_watch`): each
holds a share of the watchers and records what reached them.

This module owns, on the worker's side: opening its watchers through a driver
(``"module:Class"``, made here as ``cls(endpoints, timeout)``), recording every
delivery as (watcher, revision, ``time.monotonic_ns()``), checking per watcher that
revisions only grow, waiting until every watcher has reached a revision (the marker,
the drain), and turning its samples into a compact report once the writer's
acknowledgement times arrive: latency histograms (1 % buckets), deliveries per
second, completeness. The parent talks to it over stdin/stdout in length-prefixed
pickles (both ends are this benchmark's own processes).

It must never print to stdout (the pipe), keep more than ``MAX_SAMPLES_PER_PROC``
samples, or outlive its parent (which stops it by PID and started it with
``PR_SET_PDEATHSIG``). See docs/architecture.md#benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import os
import pickle
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger("meshraft.bench.watch")

# Per worker process: (watcher, revision, time) samples kept for the latency report.
MAX_SAMPLES_PER_PROC = 8_000_000
HIST_BASE = 1.01  # latency histogram: buckets 1 % wide (percentiles within 1 %)
OnEvent = Callable[[int, int], None]  # (watcher index, revision)


# --------------------------------------------------------------------------------------
# Latency histogram: compact enough to send back from a worker, percentiles within 1 %.
# --------------------------------------------------------------------------------------

def hist_bucket(ns: int) -> int:
    """Bucket of a latency in ns: 0 for <= 1 µs, else ceil(log_1.01(µs))."""
    us = ns / 1000.0
    if us <= 1.0:
        return 0
    return math.ceil(math.log(us) / math.log(HIST_BASE))


def hist_percentile(hist: dict[int, int], q: float) -> float:
    """Nearest-rank percentile of a histogram, in ms (the bucket's upper bound)."""
    total = sum(hist.values())
    if total == 0:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * total))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return HIST_BASE ** b / 1000.0 if b else 0.001
    return HIST_BASE ** max(hist) / 1000.0


# --------------------------------------------------------------------------------------
# The worker process: its share of the watchers, and their samples.
# --------------------------------------------------------------------------------------

def load_driver(path: str) -> type:
    """``"module:Class"`` -> the class."""
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)


def driver_dir(path: str) -> str:
    """The directory a worker needs on its PYTHONPATH to import the driver of
    ``path`` (a top-level module such as benchmarks/watch_etcd.py); "" for a
    module inside a package."""
    mod = path.partition(":")[0]
    if "." in mod:
        return ""
    f = getattr(importlib.import_module(mod), "__file__", None)
    return os.path.dirname(os.path.abspath(f)) if f else ""


class _WatcherSet:
    """The watchers of one worker process and what they received."""

    def __init__(self, first: int, count: int, cap: int) -> None:
        self.first = first
        self.count = count
        self.cap = cap
        self.last = [0] * count  # newest revision per watcher
        self.seen = [0] * count  # events per watcher with revision > base
        self.disorder = [0] * count
        self.base = 1 << 62  # set at the sync marker: events above it are the load
        self.who = array("i")
        self.revs = array("q")
        self.times = array("q")
        self.dropped_samples = 0
        self.errors: Counter[str] = Counter()
        self.ended: set[int] = set()

    def on_event(self, watcher: int, revision: int) -> None:
        t = time.monotonic_ns()
        i = watcher - self.first
        if revision <= self.last[i]:
            self.disorder[i] += 1
        else:
            self.last[i] = revision
        if revision > self.base:
            self.seen[i] += 1
            if len(self.revs) < self.cap:
                self.who.append(i)
                self.revs.append(revision)
                self.times.append(t)
            else:
                self.dropped_samples += 1

    def behind(self, revision: int) -> int:
        return sum(1 for x in self.last if x < revision)

    def report(self, acks: dict[int, tuple[int, int]], window: tuple[int, int],
               measured: tuple[int, int]) -> dict[str, Any]:
        """Latency histograms (from acknowledgement, from send) of the puts acknowledged
        in ``measured``; deliveries inside ``window`` per second; completeness."""
        from_ack: Counter[int] = Counter()
        from_send: Counter[int] = Counter()
        in_acks = [0] * self.count
        before_ack = 0
        w0, w1 = window
        m0, m1 = measured
        per_second: Counter[int] = Counter()
        in_window = 0
        last_t = 0
        for who, rev, t in zip(self.who, self.revs, self.times, strict=True):
            a = acks.get(rev)
            if a is None:
                continue
            in_acks[who] += 1
            sent, acked = a
            if t > last_t:
                last_t = t
            if m0 <= acked <= m1:
                if t < acked:
                    before_ack += 1
                    from_ack[0] += 1
                else:
                    from_ack[hist_bucket(t - acked)] += 1
                from_send[hist_bucket(t - sent)] += 1
            if w0 <= t <= w1:
                in_window += 1
                per_second[(t - w0) // 1_000_000_000] += 1
        n = len(acks)
        complete = sum(1 for i in range(self.count)
                       if in_acks[i] == n and not self.disorder[i])
        return {
            "from_ack": dict(from_ack), "from_send": dict(from_send),
            "before_ack": before_ack, "in_window": in_window,
            "per_second": dict(per_second), "delivered": sum(in_acks),
            "missing": sum(max(0, n - c) for c in in_acks),
            "disorder": sum(self.disorder), "complete": complete,
            "dropped_samples": self.dropped_samples, "last_delivery": last_t,
            "errors": dict(self.errors), "cpu_s": time.process_time(),
        }


def _read_msg(stream: Any) -> Any:
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError("the parent closed the pipe")
    n = int.from_bytes(head, "big")
    body = stream.read(n)
    if len(body) < n:
        raise EOFError("the parent closed the pipe")
    return pickle.loads(body)


def _write_msg(stream: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(4, "big") + data)
    stream.flush()


async def _worker_async(inp: Any, out: Any) -> None:
    init = await asyncio.to_thread(_read_msg, inp)
    first, count, prefix = init["first"], init["count"], init["prefix"]
    driver = load_driver(init["driver"])(init["endpoints"], init["timeout"])
    ws = _WatcherSet(first, count, MAX_SAMPLES_PER_PROC)
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        try:
            await driver.watch(i, prefix, init["start_revision"], ws.on_event)
            ws.errors["ended"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported, never silent
            ws.errors[type(exc).__name__] += 1
            log.warning("watcher %d: %r", i, exc)
        ws.ended.add(i)

    async def wait_for(revision: int, within: float) -> int:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if ws.behind(revision) == 0:
                return 0
            await asyncio.sleep(0.01)
        return ws.behind(revision)

    try:
        for k in range(count):  # started in a trickle, so connects do not all collide
            tasks.append(asyncio.create_task(one(first + k)))
            if k % 50 == 49:
                await asyncio.sleep(0.01)
        _write_msg(out, {"opened": count})
        while True:
            msg = await asyncio.to_thread(_read_msg, inp)
            cmd = msg["cmd"]
            if cmd == "sync":
                ws.base = msg["revision"]
                behind = await wait_for(msg["revision"], msg["timeout"])
                _write_msg(out, {"behind": behind, "errors": dict(ws.errors)})
            elif cmd == "drain":
                behind = await wait_for(msg["revision"], msg["timeout"])
                _write_msg(out, {"behind": behind})
            elif cmd == "report":
                _write_msg(out, ws.report(msg["acks"], msg["window"], msg["measured"]))
                return
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await driver.close()


def worker_main() -> None:
    """A worker process (``python -m meshraft.bench_watch_worker``): commands arrive on
    stdin, answers leave on stdout, both length-prefixed pickles from and to the
    parent that started it (nothing else may print to stdout)."""
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(asctime)s watch-worker[{os.getpid()}] %(name)s %(message)s")
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the pipe
    try:
        asyncio.run(_worker_async(inp, out))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent went away or stopped us


if __name__ == "__main__":
    worker_main()

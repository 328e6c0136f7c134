"""The watch benchmark behind ``meshraft bench --ops watch``: many watchers on one
prefix, a paced writer, and what reached whom how fast.

This module owns:

- the harness (:func:`run_watch`), the same for every system: a writer in this
  process puts ``rate`` values per second under one prefix (open loop: each put has
  its scheduled time, up to ``writers`` in flight, spread over the members) and
  records each put's revision with its send and acknowledgement times; ``watchers``
  watchers on the prefix, each on a connection of its own, spread over the members
  and over ``procs`` worker processes, record when each event arrived;
- the measurements: event latency from the put's acknowledgement to its delivery at
  every watcher (p50/p90/p99/max over all (watcher, event) pairs; a delivery that
  beat the acknowledgement counts as 0 and is counted), delivered events per second,
  whether every watcher got every event exactly once and in order, the CPU time of
  every process (members, writer, each worker: who was the bottleneck), and memory
  per idle watcher on the members (RSS before and after opening the watchers);
- the meshraft driver (:class:`MeshraftWatchDriver`, over the public
  ``AsyncClient.watch``); ``benchmarks/watch_etcd.py`` is etcd's, through the same
  :class:`WatchDriver` interface, so both see the same load and the same clock.

Why several processes: 1,000 watchers x 1,000 events/s is 1,000,000 deliveries/s,
more than one Python process can read. Each worker process reads its share and
keeps its samples; only a compact histogram travels back. Times are
``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for all processes of a Linux
machine), so a writer's acknowledgement and a worker's delivery compare directly.

The worker processes' side (recording, histograms) is :mod:`meshraft.bench_watch_worker`.
Why this module is still about 700 lines: the run's phases, its summary and report,
meshraft's driver and the ``--ops watch`` entry are one measuring tool whose numbers
must mean the same for every system ``benchmarks/watch_compare.py`` drives.

Deliveries are matched to puts by revision. Only the writer writes under the
prefix; a watcher starts at the revision after the one read before the watchers
were opened, and a marker put under the prefix after opening proves every watcher
is live and caught up before the load starts (its latency is not measured).

It must never reach into raft, mesh or kv internals (the public client only), and
every loop is bounded in count and time. Worker processes are stopped by PID in
``finally``. See docs/architecture.md#benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import os
import pickle
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import click

from meshraft.bench_watch_worker import (
    HIST_BASE,
    OnEvent,
    driver_dir,
    hist_percentile,
    load_driver,
)

log = logging.getLogger("meshraft.bench.watch")

MAX_WATCHERS = 20_000


class WatchDriver(Protocol):
    """What the harness needs from a system. A driver is made in the writer's
    process and in every worker process as ``cls(endpoints, timeout)``, so it must
    be importable by a ``"module:Class"`` path."""

    async def put(self, writer: int, key: bytes, value: bytes) -> int:
        """Put through writer connection ``writer``; the revision it created."""
        ...

    async def watch(self, watcher: int, prefix: bytes, start_revision: int,
                    on_event: OnEvent) -> None:
        """Watch ``prefix`` from ``start_revision`` on a connection of its own and call
        ``on_event(watcher, revision)`` for every event as it arrives. Runs until
        cancelled; returning or raising means the watch ended."""
        ...

    async def close(self) -> None: ...


@dataclass
class WatchSpec:
    """The load. ``duration``, ``rate`` and ``max_puts`` bound the writer."""

    watchers: int = 1000
    rate: float = 1000.0  # puts per second, offered
    duration: float = 10.0
    warmup: float = 1.0
    procs: int = 4  # worker processes the watchers are spread over
    writers: int = 16  # writer connections (each with one put in flight)
    value_size: int = 100
    keys: int = 100  # distinct keys under the prefix
    prefix: bytes = b"bench-watch/"
    max_puts: int = 1_000_000
    op_timeout: float = 10.0
    drain: float = 60.0  # seconds to wait after the last put for every delivery
    open_timeout: float = 120.0
    seed: int = 1

    def validate(self) -> None:
        from meshraft.bench import BenchError

        if not 1 <= self.watchers <= MAX_WATCHERS:
            raise BenchError(f"--watchers must be between 1 and {MAX_WATCHERS}, "
                             f"got {self.watchers}")
        if not 0 < self.rate <= 100_000:
            raise BenchError(f"--rate must be in (0, 100000] puts/s, got {self.rate}")
        if not 0 < self.duration <= 3600:
            raise BenchError(f"--duration must be in (0, 3600] seconds, got {self.duration}")
        if not 0 <= self.warmup <= 600:
            raise BenchError(f"--warmup must be in [0, 600] seconds, got {self.warmup}")
        if not 1 <= self.procs <= 64:
            raise BenchError(f"--watch-procs must be between 1 and 64, got {self.procs}")
        if not 1 <= self.writers <= 1024:
            raise BenchError(f"writers (--clients) must be between 1 and 1024, "
                             f"got {self.writers}")
        if not 1 <= self.value_size <= 1 << 20:
            raise BenchError(f"--value-size must be in [1, 1048576], got {self.value_size}")
        if not 1 <= self.keys <= 1_000_000:
            raise BenchError(f"--keyspace must be in [1, 1000000], got {self.keys}")
        if self.max_puts < 1:
            raise BenchError(f"--max-ops must be positive, got {self.max_puts}")


@dataclass
class WatchResult:
    """One run. Latencies in ms over every (watcher, event) pair of the puts
    acknowledged in the measured window; rates per second of that window."""

    system: str
    watchers: int
    procs: int
    nodes: int | None
    rate: float  # offered puts/s
    duration_s: float
    puts: int  # acknowledged in the measured window
    put_errors: int
    put_rate: float
    put_lag_ms_max: float  # how late the writer started a put against its schedule
    deliveries: int  # (watcher, event) pairs delivered inside the window
    deliveries_per_s: float
    required_deliveries_per_s: float  # put_rate x watchers
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    p50_from_send_ms: float
    p99_from_send_ms: float
    before_ack: int  # deliveries that arrived before the writer saw the acknowledgement
    # every watcher, every put (whole run, warmup included), after the drain:
    total_puts: int
    expected_deliveries: int
    delivered: int
    missing: int
    out_of_order: int  # duplicates or reorders
    complete_watchers: int
    drain_s: float | None  # after the last acknowledgement, until the last delivery
    watch_errors: dict[str, int] = field(default_factory=dict)
    idle_bytes_per_watcher: float | None = None
    rss_before_kb: list[int] = field(default_factory=list)
    rss_after_kb: list[int] = field(default_factory=list)
    cpu: dict[str, Any] = field(default_factory=dict)  # seconds of the window, per process
    timeline: list[int] = field(default_factory=list)  # deliveries per second of the window
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# --------------------------------------------------------------------------------------
# The harness (writer's process).
# --------------------------------------------------------------------------------------

def rss_kb(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (Linux /proc), None if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class _Workers:
    """The worker processes and their pipes; stopped by PID on close."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, n: int, pythonpath: str) -> asyncio.subprocess.Process:
        from meshraft.localcluster import die_with_parent

        env = {**os.environ, "PYTHONPATH": pythonpath}
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshraft.bench_watch_worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env, start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM))
        self.procs.append(p)
        return p

    @staticmethod
    def send(p: asyncio.subprocess.Process, msg: Any) -> None:
        assert p.stdin is not None
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        p.stdin.write(len(data).to_bytes(4, "big") + data)

    async def ask_all(self, msg: dict[str, Any] | None, within: float) -> list[Any]:
        """Send ``msg`` to every worker (None: send nothing) and wait for each reply."""
        from meshraft.bench import BenchUnavailable

        async def ask(p: asyncio.subprocess.Process) -> Any:
            assert p.stdout is not None and p.stdin is not None
            if msg is not None:
                self.send(p, msg)
                await p.stdin.drain()
            try:
                async with asyncio.timeout(within):
                    head = await p.stdout.readexactly(4)
                    body = await p.stdout.readexactly(int.from_bytes(head, "big"))
            except TimeoutError:
                raise BenchUnavailable(f"watch worker {p.pid} did not answer in "
                                       f"{within:g}s") from None
            except asyncio.IncompleteReadError:
                code = await p.wait()
                raise BenchUnavailable(f"watch worker {p.pid} exited ({code})") from None
            return pickle.loads(body)

        return await asyncio.gather(*(ask(p) for p in self.procs))

    async def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in self.procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    async with asyncio.timeout(5.0):
                        await p.wait()
                    break
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        p.send_signal(sig)  # this PID only
            if p.returncode is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await p.wait()


@dataclass
class _WriterLog:
    acks: dict[int, tuple[int, int]] = field(default_factory=dict)  # rev -> (sent, acked)
    errors: Counter[str] = field(default_factory=Counter)
    lag_ns_max: int = 0
    started: int = 0


async def _write_load(driver: WatchDriver, spec: WatchSpec, t0: int,
                      progress: Any | None) -> _WriterLog:
    """Paced puts from ``t0`` for warmup + duration seconds (open loop, up to
    ``spec.writers`` in flight); bounded by ``max_puts`` and by time."""
    wl = _WriterLog()
    rng = random.Random(spec.seed)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789"
    values = [bytes(rng.choice(alphabet) for _ in range(spec.value_size)) for _ in range(16)]
    total_s = spec.warmup + spec.duration
    n_total = min(spec.max_puts, int(spec.rate * total_s))
    interval_ns = int(1e9 / spec.rate)
    next_i = 0

    stop_at = t0 + int(total_s * 1e9)

    async def writer(w: int) -> None:
        nonlocal next_i
        while next_i < n_total and time.monotonic_ns() < stop_at:
            i = next_i
            next_i += 1
            due = t0 + i * interval_ns
            now = time.monotonic_ns()
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
            sent = time.monotonic_ns()
            wl.lag_ns_max = max(wl.lag_ns_max, sent - due)
            wl.started += 1
            key = spec.prefix + b"k%06d" % (i % spec.keys)
            try:
                async with asyncio.timeout(spec.op_timeout):
                    rev = await driver.put(w, key, values[i % len(values)])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                wl.errors[type(exc).__name__] += 1
                continue
            wl.acks[rev] = (sent, time.monotonic_ns())

    tasks = [asyncio.create_task(writer(w)) for w in range(spec.writers)]
    try:
        hard_stop = t0 + int((total_s + spec.op_timeout + 5) * 1e9)
        while not all(t.done() for t in tasks) and time.monotonic_ns() < hard_stop:
            await asyncio.wait(tasks, timeout=0.25)
            if progress is not None:
                el = (time.monotonic_ns() - t0) / 1e9
                progress.update(el, f"{len(wl.acks):>8,} puts {len(wl.acks) / max(el, 1e-9):>7,.0f}"
                                    f"/s  errors {sum(wl.errors.values())}")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if progress is not None:
            progress.done()
    return wl


def _cpu_mark(pids: Sequence[int]) -> list[float | None]:
    from meshraft.bench import cpu_seconds

    return [cpu_seconds(p) for p in pids] + [machine_busy_seconds()]


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy (every process, not only ours:
    /proc/stat), so a report can say how much of the machine others took."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _diff(a: list[float | None], b: list[float | None]) -> list[float | None]:
    return [None if x is None or y is None else round(y - x, 3)
            for x, y in zip(a, b, strict=True)]


async def run_watch(driver_path: str, endpoints: Sequence[tuple[str, int]], spec: WatchSpec, *,
                    system: str, member_pids: Sequence[int] = (), progress: bool = False,
                    sync_key: bytes = b"_sync") -> WatchResult:
    """One run of the watch benchmark against a running cluster. ``member_pids``
    (when the members are local): their RSS and CPU are measured. The over-80-line
    body is the run's phases in order (open, sync, idle memory, load, drain, report),
    which share the run's clocks and processes."""
    from meshraft.bench import BenchUnavailable, TimeProgress

    spec.validate()
    eps = list(endpoints)
    driver: WatchDriver = load_driver(driver_path)(eps, spec.op_timeout)
    workers = _Workers()
    pythonpath = os.pathsep.join(p for p in [driver_dir(driver_path),
                                             os.environ.get("PYTHONPATH", "")] if p)
    try:
        # the revision before any watcher exists: every watcher starts right after it
        try:
            async with asyncio.timeout(spec.op_timeout):
                r0 = await driver.put(0, b"bench-watch-r0", b"0")
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise BenchUnavailable(f"the cluster ({', '.join(f'{h}:{p}' for h, p in eps)}) "
                                   f"took no write within {spec.op_timeout:g}s: {why}") from None
        rss_before = [rss_kb(p) or 0 for p in member_pids]
        per = [spec.watchers // spec.procs + (1 if k < spec.watchers % spec.procs else 0)
               for k in range(spec.procs)]
        first = 0
        for n in per:
            if n == 0:
                continue
            p = await workers.start(n, pythonpath)
            workers.send(p, {"prefix": spec.prefix, "timeout": spec.op_timeout,
                             "first": first, "count": n,
                             "driver": driver_path, "endpoints": eps,
                             "start_revision": r0 + 1})
            first += n
        await workers.ask_all(None, spec.open_timeout)
        # a marker under the prefix: once every watcher saw it, all are live and caught up
        t_open = time.monotonic()
        try:
            async with asyncio.timeout(spec.op_timeout):
                rm = await driver.put(0, spec.prefix + sync_key, b"1")
        except Exception as exc:
            raise BenchUnavailable(f"the marker put failed: {exc!r}") from None
        synced = await workers.ask_all({"cmd": "sync", "revision": rm,
                                        "timeout": spec.open_timeout}, spec.open_timeout + 10)
        behind = sum(s["behind"] for s in synced)
        if behind:
            errs = Counter[str]()
            for s in synced:
                errs.update(s["errors"])
            raise BenchUnavailable(f"{behind} of {spec.watchers} watchers did not see the "
                                   f"marker within {spec.open_timeout:g}s (errors: "
                                   f"{dict(errs) or 'none'})")
        log.info("all %d watchers live after %.1fs", spec.watchers, time.monotonic() - t_open)
        await asyncio.sleep(1.0)  # let the members settle before reading their RSS
        rss_after = [rss_kb(p) or 0 for p in member_pids]

        wpids = [p.pid for p in workers.procs]
        all_pids = list(member_pids) + wpids
        t0 = time.monotonic_ns() + 50_000_000
        m0 = t0 + int(spec.warmup * 1e9)
        loop = asyncio.get_running_loop()
        marks: dict[str, tuple[list[float | None], float]] = {}

        def mark(which: str) -> None:
            marks[which] = (_cpu_mark(all_pids), time.process_time())

        loop.call_at(loop.time() + (t0 - time.monotonic_ns()) / 1e9, mark, "load")
        loop.call_at(loop.time() + (m0 - time.monotonic_ns()) / 1e9, mark, "start")
        bar = TimeProgress(spec.warmup + spec.duration, f"watch x{spec.watchers}",
                           "{desc} [{bar:30}] {n:5.1f}/{total:.0f}s {status}", enabled=progress)
        wl = await _write_load(driver, spec, t0, bar)
        t_end = time.monotonic_ns()
        mark("end")
        if not wl.acks:
            raise BenchUnavailable(f"no put succeeded (errors: {dict(wl.errors)})")
        last_rev = max(wl.acks)
        last_ack = max(a for _, a in wl.acks.values())
        drained = await workers.ask_all({"cmd": "drain", "revision": last_rev,
                                         "timeout": spec.drain}, spec.drain + 10)
        still_behind = sum(d["behind"] for d in drained)
        mark("drained")
        reports = await workers.ask_all({"cmd": "report", "acks": wl.acks,
                                         "window": (m0, t_end), "measured": (m0, t_end)},
                                        120.0)
    finally:
        await workers.close()
        with contextlib.suppress(Exception):
            await driver.close()
    return _summarise(spec, system, eps, member_pids, wl, reports, marks, m0, t_end, last_ack,
                      still_behind, rss_before, rss_after)


def _summarise(spec: WatchSpec, system: str, eps: list[tuple[str, int]],
               member_pids: Sequence[int], wl: _WriterLog, reports: list[dict[str, Any]],
               marks: dict[str, tuple[list[float | None], float]], m0: int, t_end: int,
               last_ack: int, still_behind: int, rss_before: list[int],
               rss_after: list[int]) -> WatchResult:
    """The run's result from the workers' reports, the writer's log and the CPU marks
    (over 80 lines: one measured field after another, kept in one place so each is
    defined once)."""
    from_ack: Counter[int] = Counter()
    from_send: Counter[int] = Counter()
    per_second: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for r in reports:
        from_ack.update(r["from_ack"])
        from_send.update(r["from_send"])
        per_second.update(r["per_second"])
        errors.update(r["errors"])
    window_s = max(1e-9, (t_end - m0) / 1e9)
    measured_puts = sum(1 for _, a in wl.acks.values() if m0 <= a <= t_end)
    in_window = sum(r["in_window"] for r in reports)
    n_lat = sum(from_ack.values())
    mean_ms = (sum((HIST_BASE ** b if b else 0.0) * c for b, c in from_ack.items())
               / n_lat / 1000.0) if n_lat else 0.0
    last_delivery = max(r["last_delivery"] for r in reports)
    delivered = sum(r["delivered"] for r in reports)
    expected = len(wl.acks) * spec.watchers
    cpu: dict[str, Any] = {"window_s": round(window_s, 3)}
    if "start" in marks and "end" in marks:
        (a, wa), (b, wb) = marks["start"], marks["end"]
        per = _diff(a, b)
        busy = per.pop()
        n_members = len(member_pids)
        cpu["members_s"] = per[:n_members]
        cpu["workers_s"] = per[n_members:]
        cpu["writer_s"] = round(wb - wa, 3)
        known = [c for c in per if c is not None]
        cpu["total_cores"] = round((sum(known) + (wb - wa)) / window_s, 2)
        cpu["machine_cores"] = os.cpu_count()
        if busy is not None:  # everything the machine did, ours and other people's
            cpu["machine_busy_cores"] = round(busy / window_s, 2)
    cpu["workers_total_s"] = [round(r["cpu_s"], 3) for r in reports]
    if "load" in marks and "drained" in marks and delivered:
        # from the first put until every watcher had every event: the cost of a delivery,
        # which other people's load on the machine changes far less than the rates
        per = _diff(marks["load"][0], marks["drained"][0])[:-1]
        n_members = len(member_pids)
        members, workers = per[:n_members], per[n_members:]
        if member_pids and None not in members:
            cpu["members_us_per_delivery"] = round(
                sum(c for c in members if c is not None) / delivered * 1e6, 2)
        if None not in workers:
            cpu["workers_us_per_delivery"] = round(
                sum(c for c in workers if c is not None) / delivered * 1e6, 2)
    idle = None
    if member_pids and spec.watchers:
        idle = (sum(rss_after) - sum(rss_before)) * 1024 / spec.watchers
    dropped = sum(r["dropped_samples"] for r in reports)
    return WatchResult(
        system=system, watchers=spec.watchers, procs=len(reports), nodes=len(eps),
        rate=spec.rate, duration_s=round(window_s, 3), puts=measured_puts,
        put_errors=sum(wl.errors.values()), put_rate=measured_puts / window_s,
        put_lag_ms_max=wl.lag_ns_max / 1e6, deliveries=in_window,
        deliveries_per_s=in_window / window_s,
        required_deliveries_per_s=measured_puts / window_s * spec.watchers,
        p50_ms=hist_percentile(from_ack, 50), p90_ms=hist_percentile(from_ack, 90),
        p99_ms=hist_percentile(from_ack, 99), max_ms=hist_percentile(from_ack, 100),
        mean_ms=mean_ms,
        p50_from_send_ms=hist_percentile(from_send, 50),
        p99_from_send_ms=hist_percentile(from_send, 99),
        before_ack=sum(r["before_ack"] for r in reports),
        total_puts=len(wl.acks), expected_deliveries=expected, delivered=delivered,
        missing=sum(r["missing"] for r in reports),
        out_of_order=sum(r["disorder"] for r in reports),
        complete_watchers=sum(r["complete"] for r in reports),
        drain_s=(round(max(0, last_delivery - last_ack) / 1e9, 3)
                 if not still_behind else None),
        watch_errors=dict(errors), idle_bytes_per_watcher=idle,
        rss_before_kb=rss_before, rss_after_kb=rss_after, cpu=cpu,
        timeline=[per_second.get(i, 0) for i in range(math.ceil(window_s))],
        extra={"writers": spec.writers, "value_size": spec.value_size, "keys": spec.keys,
               "warmup_s": spec.warmup, "put_error_kinds": dict(wl.errors),
               "samples_dropped": dropped, "still_behind_after_drain": still_behind,
               "loadavg_1min_after": round(os.getloadavg()[0], 2),
               "drain_limit_s": spec.drain},
    )


def format_watch(r: WatchResult) -> str:
    """A short plain-text report."""
    lines = [
        f"{r.system}: {r.watchers} watchers in {r.procs} processes, {r.nodes} members, "
        f"{r.rate:g} puts/s offered",
        f"  puts          {r.puts:,} acknowledged in {r.duration_s:g} s ({r.put_rate:,.0f}/s), "
        f"errors {r.put_errors}, writer lag max {r.put_lag_ms_max:.1f} ms",
        f"  deliveries    {r.deliveries_per_s:,.0f}/s of {r.required_deliveries_per_s:,.0f}/s "
        f"needed",
        f"  latency ms    p50 {r.p50_ms:.2f}  p90 {r.p90_ms:.2f}  p99 {r.p99_ms:.2f}  "
        f"max {r.max_ms:.1f}  (from ack; from send: p50 {r.p50_from_send_ms:.2f} "
        f"p99 {r.p99_from_send_ms:.2f})",
        f"  every event   {r.delivered:,} of {r.expected_deliveries:,} delivered, "
        f"missing {r.missing}, out of order {r.out_of_order}, "
        f"{r.complete_watchers}/{r.watchers} watchers complete"
        + (f", drained {r.drain_s:.2f} s after the last ack" if r.drain_s is not None
           else f", NOT drained within {r.extra.get('drain_limit_s', '?')} s (latencies "
                "are of what arrived)"),
    ]
    if r.watch_errors:
        lines.append("  watch errors  " + ", ".join(f"{k}={v}"
                                                   for k, v in sorted(r.watch_errors.items())))
    if r.idle_bytes_per_watcher is not None:
        lines.append(f"  idle watcher  {r.idle_bytes_per_watcher / 1024:,.1f} KiB of member RSS "
                     f"each (sum over members)")
    if r.cpu.get("members_s") is not None:
        if "members_us_per_delivery" in r.cpu:
            lines.append(f"  CPU/delivery  members {r.cpu['members_us_per_delivery']:.2f} µs, "
                         f"watch workers {r.cpu.get('workers_us_per_delivery', 0):.2f} µs "
                         "(first put until drained)")
        lines.append(f"  CPU s         members {r.cpu['members_s']}, workers "
                     f"{r.cpu['workers_s']}, writer {r.cpu['writer_s']} in "
                     f"{r.cpu['window_s']} s ({r.cpu['total_cores']} of "
                     f"{r.cpu['machine_cores']} cores; the machine was busy "
                     f"{r.cpu.get('machine_busy_cores', '?')} cores)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# meshraft's driver and the `meshraft bench --ops watch` entry.
# --------------------------------------------------------------------------------------

class MeshraftWatchDriver:
    """meshraft through :class:`meshraft.kv.client.AsyncClient`: a client per writer
    connection and per watcher, client ``i`` preferring member ``i % n``."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], timeout: float) -> None:
        self.eps = list(endpoints)
        self.timeout = timeout
        self.writers: dict[int, Any] = {}

    def _client(self, i: int) -> Any:
        from meshraft.kv.client import AsyncClient

        k = i % len(self.eps)
        return AsyncClient(self.eps[k:] + self.eps[:k], timeout=self.timeout)

    async def put(self, writer: int, key: bytes, value: bytes) -> int:
        c = self.writers.get(writer)
        if c is None:
            c = self.writers[writer] = self._client(writer)
        return (await c.put(key, value)).revision

    async def watch(self, watcher: int, prefix: bytes, start_revision: int,
                    on_event: OnEvent) -> None:
        c = self._client(watcher)
        try:
            w = c.watch(prefix, prefix=True, start_revision=start_revision)
            if inspect.isawaitable(w):
                w = await w
            async for ev in w:
                on_event(watcher, ev.revision)
        finally:
            await c.close()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.writers.values()),
                             return_exceptions=True)
        self.writers.clear()


MESHRAFT_DRIVER = "meshraft.bench_watch:MeshraftWatchDriver"


async def bench_watch_meshraft(spec: WatchSpec, *,
                               endpoints: Sequence[tuple[str, int]] | None = None,
                               nodes: int = 3, transport: str = "mesh",
                               progress: bool = False,
                               extra_args: Sequence[str] = ()) -> WatchResult:
    """Against ``endpoints`` (no RSS/CPU of the members then), or a local cluster
    started for the run."""
    from meshraft.bench import LocalCluster

    spec.validate()
    if endpoints:
        return await run_watch(MESHRAFT_DRIVER, endpoints, spec, system="meshraft",
                               progress=progress)
    async with LocalCluster(nodes=nodes, transport=transport,
                            extra_args=list(extra_args)) as cluster:
        return await run_watch(MESHRAFT_DRIVER, cluster.endpoints, spec,
                               system=f"meshraft-{transport}",
                               member_pids=[p.pid for p in cluster.procs], progress=progress)


def watch_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options only ``--ops watch`` reads, for the ``meshraft bench`` command."""
    f = click.option("--watch-procs", type=int, default=4, show_default=True,
                     help="--ops watch: worker processes the watchers are spread over.")(f)
    f = click.option("--rate", type=float, default=1000.0, show_default=True,
                     help="--ops watch: puts per second under the watched prefix.")(f)
    f = click.option("--watchers", type=int, default=1000, show_default=True,
                     help="--ops watch: watchers on one prefix, spread over the members.")(f)
    return f


def watch_spec_from_cli(*, watchers: int, rate: float, watch_procs: int, clients: int,
                        duration: float, warmup: float, value_size: int, keyspace: int,
                        max_ops: int, op_timeout: float, seed: int) -> WatchSpec:
    """``meshraft bench --ops watch``'s options as a spec: ``--clients`` is the number
    of writer connections (at most 64), ``--keyspace`` the keys under the prefix."""
    return WatchSpec(watchers=watchers, rate=rate, procs=min(watch_procs, watchers),
                     writers=min(clients, 64), duration=duration, warmup=warmup,
                     value_size=value_size, keys=keyspace, max_puts=max_ops,
                     op_timeout=op_timeout, seed=seed)



def watch_cli(*, endpoints: str | None, nodes: int, transport: str, clients: int,
              duration: float, warmup: float, value_size: int, keyspace: int, max_ops: int,
              op_timeout: float, seed: int, as_json: bool, progress: bool | None,
              unsupported: Sequence[str], watchers: int, rate: float,
              watch_procs: int) -> None:
    """``meshraft bench --ops watch``: run, print, exit 2 for bad options, 3 when the
    cluster is unreachable or nothing was delivered, 1 when an event went missing."""
    from meshraft.bench import BenchError, BenchUnavailable, exit_on_sigterm

    spec = watch_spec_from_cli(watchers=watchers, rate=rate, watch_procs=watch_procs,
                               clients=clients, duration=duration, warmup=warmup,
                               value_size=value_size, keyspace=keyspace, max_ops=max_ops,
                               op_timeout=op_timeout, seed=seed)
    try:
        if unsupported:
            raise BenchError(f"--ops watch does not take {', '.join(unsupported)} "
                             f"(a plain local cluster, or --endpoints of a plain one)")
        spec.validate()
        eps = None
        if endpoints:
            from meshraft.kv.client import parse_endpoints

            try:
                eps = parse_endpoints(endpoints)
            except ValueError as exc:
                raise BenchError(str(exc)) from None
        show = sys.stderr.isatty() if progress is None else progress
        exit_on_sigterm()
        result = asyncio.run(bench_watch_meshraft(spec, endpoints=eps, nodes=nodes,
                                                  transport=transport, progress=show))
    except BenchUnavailable as exc:
        click.echo(f"meshraft bench: {exc}", err=True)
        sys.exit(3)
    except BenchError as exc:
        click.echo(f"meshraft bench: {exc}", err=True)
        sys.exit(2)
    click.echo(result.to_json() if as_json else format_watch(result))
    if result.delivered == 0:
        click.echo("meshraft bench: no event was delivered", err=True)
        sys.exit(3)
    if result.missing or result.out_of_order:
        click.echo(f"meshraft bench: {result.missing} deliveries not made within "
                   f"{spec.drain:g} s of the last put, {result.out_of_order} out of order",
                   err=True)
        sys.exit(1)

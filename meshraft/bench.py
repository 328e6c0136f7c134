"""Load generator and report behind ``meshraft bench``.

This module owns three things:

- a system-agnostic closed-loop load runner (:func:`run_load`): N clients, each with
  one operation in flight, for a bounded duration, recording per-operation latency;
  ``benchmarks/compare.py`` drives etcd and PySyncObj through the very same runner so
  the three systems see the same load shape;
- the report (:class:`BenchResult`: ops/s, p50/p90/p99/max, as a table or JSON) and
  the progress bar shown while a run is going;
- the meshraft side: starting a throw-away local cluster of ``meshraft serve``
  processes (or targeting ``--endpoints``) and adapting the kv Python client.

``--ops watch`` is a different load shape (watchers, a paced writer, several worker
processes) and lives in :mod:`meshraft.bench_watch`; this command only hands it on.

Why over 600 lines: the runner, its report and the ``meshraft bench`` command are
one measuring tool whose numbers must mean the same for all three systems
``benchmarks/compare.py`` drives; the processes of a local cluster live in
:mod:`meshraft.localcluster`. See docs/architecture.md#benchmarks.

It must never reach into raft, mesh or kv internals: it talks to a cluster only
through the public client (:mod:`meshraft.kv.client`) and the ``meshraft`` CLI, and
every load loop is bounded in time and in operation count. Processes it starts are
stopped by PID in ``finally`` blocks; temporary data directories are removed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import click
from tqdm import tqdm

from meshraft import localcluster
from meshraft.bench_watch import watch_cli, watch_options
from meshraft.localcluster import ClusterContext, ClusterNotReady, MemberProcess, stop_processes

log = logging.getLogger("meshraft.bench")

OPS = ("put", "get", "serializable-get", "mixed", "cas")
# Latency samples are kept exactly (for honest percentiles); this caps memory.
MAX_SAMPLES = 5_000_000
MAX_OP_TIMEOUT_S = 60.0


class BenchError(Exception):
    """A benchmark that cannot run because of its parameters (exit code 2)."""


class BenchUnavailable(BenchError):
    """The system under test never came up or could not be reached (exit code 3)."""


class BenchClient(Protocol):
    """What the runner needs from a system under test: one logical client that has
    at most one operation in flight at a time (the runner never overlaps calls)."""

    async def put(self, key: bytes, value: bytes) -> None: ...

    async def get(self, key: bytes, serializable: bool = False) -> bytes | None: ...

    async def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool: ...

    async def close(self) -> None: ...


ClientFactory = Callable[[int], Awaitable[BenchClient]]


@dataclass
class LoadSpec:
    """The load shape. ``duration`` and ``max_ops`` both bound a run."""

    ops: str = "put"
    clients: int = 64
    duration: float = 10.0
    warmup: float = 1.0
    key_size: int = 16
    value_size: int = 100
    keyspace: int = 1000
    max_ops: int = 2_000_000
    op_timeout: float = 10.0
    seed: int = 1

    def validate(self) -> None:
        if self.ops not in OPS:
            raise BenchError(f"unknown --ops {self.ops!r}; choose one of {', '.join(OPS)}")
        if not 1 <= self.clients <= 4096:
            raise BenchError(f"--clients must be between 1 and 4096, got {self.clients}")
        if not 0 < self.duration <= 3600:
            raise BenchError(f"--duration must be in (0, 3600] seconds, got {self.duration}")
        if not 0 <= self.warmup <= 600:
            raise BenchError(f"--warmup must be in [0, 600] seconds, got {self.warmup}")
        if not 1 <= self.value_size <= 1 << 20:
            raise BenchError(f"--value-size must be in [1, 1048576], got {self.value_size}")
        if not 1 <= self.keyspace <= 10_000_000:
            raise BenchError(f"--keyspace must be in [1, 10000000], got {self.keyspace}")
        if not 0 < self.op_timeout <= MAX_OP_TIMEOUT_S:
            raise BenchError(
                f"op timeout must be in (0, {MAX_OP_TIMEOUT_S}], got {self.op_timeout}")
        if self.max_ops < 1:
            raise BenchError(f"--max-ops must be positive, got {self.max_ops}")
        # cas gives every client a key of its own; the others share the keyspace.
        needed = max(self.keyspace, self.clients) if self.ops == "cas" else self.keyspace
        digits = len(str(needed - 1))
        if self.key_size < digits + 1 or self.key_size > 1024:
            raise BenchError(
                f"--key-size must be in [{digits + 1}, 1024] to number {needed} keys, "
                f"got {self.key_size}"
            )


def make_key(i: int, key_size: int) -> bytes:
    """Key number ``i``, exactly ``key_size`` ASCII bytes: ``k`` then zero-padded digits."""
    return b"k" + str(i).zfill(key_size - 1).encode()


def make_values(rng: random.Random, value_size: int, count: int = 64) -> list[bytes]:
    """A small pool of printable values (ASCII, so every system's API takes them)."""
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return [bytes(rng.choice(alphabet) for _ in range(value_size)) for _ in range(count)]


@dataclass
class BenchResult:
    """One run's numbers. Latencies in milliseconds; ``ops`` counts successes that
    completed inside the measured window; ``errors`` counts failures in it."""

    system: str
    op: str
    clients: int
    duration_s: float
    ops: int
    errors: int
    ops_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    key_size: int
    value_size: int
    nodes: int | None = None
    transport: str | None = None
    unfinished: int = 0  # in flight when the window closed (normally <= clients)
    error_kinds: dict[str, int] = field(default_factory=dict)
    timeline: list[int] = field(default_factory=list)  # ops completed per second
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def percentile(sorted_values: Sequence[int | float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


class TimeProgress:
    """Progress through a run of ``total_s`` seconds on a stream (stderr): a tqdm bar
    redrawn in place on a terminal; in a log, a line every ``log_every`` seconds of the
    run (the first at once with ``log_first``) and one when ``force``d or
    (``log_at_end``) at the end, unless the last line said just that. ``bar_format`` is
    tqdm's, with ``{status}`` for the caller's text. Callers update it from a monitor
    loop a few times a second, never per operation, so it costs the load nothing. Also
    used by jepsen-lite."""

    def __init__(self, total_s: float, label: str, bar_format: str, *,
                 stream: TextIO | None = None, enabled: bool = True,
                 log_every: float = 5.0, log_first: bool = False,
                 log_at_end: bool = True) -> None:
        self.total_s = total_s
        self.label = label
        self.bar_format = bar_format
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.log_every = log_every
        self.log_at_end = log_at_end
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_line = -math.inf if log_first else 0.0
        self._last_status = ""
        self._bar: _StatusBar | None = None
        if enabled and self.tty:
            self._bar = _StatusBar(total=total_s, desc=label, file=self.stream,
                                   bar_format=bar_format, ascii=".#", delay=1e-9,
                                   mininterval=0, miniters=0, dynamic_ncols=False)

    def update(self, elapsed: float, status: str, force: bool = False) -> None:
        if not self.enabled:
            return
        elapsed = min(max(0.0, elapsed), self.total_s)
        if self._bar is not None:
            self._bar.status = status
            self._bar.n = elapsed
            self._bar.refresh()
        elif (elapsed - self._last_line >= self.log_every
              or ((force or (self.log_at_end and elapsed >= self.total_s))
                  and (elapsed, status) != (self._last_line, self._last_status))):
            self._last_line, self._last_status = elapsed, status
            self.stream.write(_StatusBar.format_meter(
                elapsed, self.total_s, 0, prefix=self.label, ascii=".#",
                bar_format=self.bar_format, status=status) + "\n")
            self.stream.flush()

    def done(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _StatusBar(tqdm):
    """tqdm with a ``{status}`` field of our own in its ``bar_format`` (tqdm's
    ``{postfix}`` would prepend a comma)."""

    status = ""

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        d["status"] = self.status
        return d


class Progress(TimeProgress):
    """``meshraft bench``'s progress: phase, operations and rate; a line every 5 s
    in a log."""

    def __init__(self, total_s: float, label: str, stream: TextIO | None = None,
                 enabled: bool = True) -> None:
        super().__init__(total_s, label, "{desc} [{bar:30}] {n:5.1f}/{total:.0f}s {status}",
                         stream=stream, enabled=enabled)

    def update(self, elapsed: float, ops: int, rate: float,  # type: ignore[override]
               phase: str) -> None:
        if self.enabled:
            super().update(elapsed, f"{phase:7s} {ops:>9,} ops {rate:>9,.0f} ops/s")


class _Recorder:
    """Shared by all workers: the window, latency samples, counts. One event loop,
    so no locks."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.record_from = 0.0
        self.record_until = 0.0
        self.stop_at = 0.0
        self.latencies = array("q")
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.started = 0
        self.in_flight = 0
        self.late = 0  # completed after the window closed
        self.completed_total = 0
        self.per_second: Counter[int] = Counter()

    def record_ok(self, t0: int, t1: int) -> None:
        self.in_flight -= 1
        self.completed_total += 1
        self.late += t1 / 1e9 > self.record_until
        if self.record_from <= t1 / 1e9 <= self.record_until:
            self.ok += 1
            if len(self.latencies) < MAX_SAMPLES:
                self.latencies.append(t1 - t0)
            self.per_second[int(t1 / 1e9 - self.record_from)] += 1

    def record_error(self, t1: int, exc: BaseException) -> None:
        self.in_flight -= 1
        self.completed_total += 1
        self.late += t1 / 1e9 > self.record_until
        if self.record_from <= t1 / 1e9 <= self.record_until:
            self.errors[_error_kind(exc)] += 1


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


async def _preload(clients: Sequence[BenchClient], spec: LoadSpec, values: list[bytes]) -> None:
    """Write every key of the keyspace once, so gets find something. Spread over
    the clients; bounded by the keyspace and by a deadline."""
    deadline = time.monotonic() + max(60.0, spec.keyspace / 100)
    next_key = 0

    async def loader(c: BenchClient) -> None:
        nonlocal next_key
        while next_key < spec.keyspace:
            if time.monotonic() > deadline:
                raise BenchUnavailable("preloading the keyspace timed out")
            i = next_key
            next_key += 1
            for attempt in range(5):
                try:
                    async with asyncio.timeout(spec.op_timeout):
                        await c.put(make_key(i, spec.key_size), values[i % len(values)])
                    break
                except Exception as exc:  # a cluster still settling; retry a few times
                    if attempt == 4:
                        raise BenchUnavailable(f"preload put failed: {exc!r}") from exc
                    await asyncio.sleep(0.1 * (attempt + 1))

    await asyncio.gather(*(loader(c) for c in clients))


async def run_load(
    factory: ClientFactory,
    spec: LoadSpec,
    *,
    system: str = "meshraft",
    progress: Progress | None = None,
    nodes: int | None = None,
    transport: str | None = None,
    cpu_pids: Sequence[int] = (),
) -> BenchResult:
    """Create ``spec.clients`` clients with ``factory(i)``, preload when reading,
    run the closed loop for ``warmup + duration`` seconds and report the measured
    window. Always closes the clients it made.

    ``cpu_pids``: server processes whose CPU time (user + system) during the
    window is reported in ``extra`` as ``server_cpu_us_per_op`` — a cost per
    operation that a busy, shared machine distorts far less than ops/s — next to
    the load generator's own ``loadgen_cpu_us_per_op``."""
    spec.validate()
    rng = random.Random(spec.seed)
    values = make_values(rng, spec.value_size)
    clients: list[BenchClient] = []
    try:
        made = await asyncio.gather(*(factory(i) for i in range(spec.clients)),
                                    return_exceptions=True)
        failures = [m for m in made if isinstance(m, BaseException)]
        clients = [m for m in made if not isinstance(m, BaseException)]
        if failures:
            raise BenchUnavailable(f"could not connect {len(failures)} of {spec.clients} clients: "
                             f"{failures[0]!r}")
        if spec.ops in ("get", "serializable-get", "mixed"):
            await _preload(clients, spec, values)
        return await _run_window(clients, spec, values, system, progress, nodes, transport,
                                 list(cpu_pids))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def _run_window(
    clients: list[BenchClient], spec: LoadSpec, values: list[bytes], system: str,
    progress: Progress | None, nodes: int | None, transport: str | None,
    cpu_pids: list[int],
) -> BenchResult:
    """The measured run. Over 80 lines because the workers (closures over the
    window's recorder, their hot loop written out so an operation costs no extra
    call) and the monitor loop that ends the window share the window's state."""
    rec = _Recorder(spec)
    now = time.perf_counter()  # one clock for the window and the samples
    rec.record_from = now + spec.warmup
    rec.record_until = rec.record_from + spec.duration
    rec.stop_at = rec.record_until
    cpu: dict[str, list[float | None]] = {}

    def cpu_mark(which: str) -> None:
        cpu[which] = [cpu_seconds(pid) for pid in cpu_pids] + [time.process_time()]

    loop = asyncio.get_running_loop()
    loop.call_later(spec.warmup, cpu_mark, "start")
    loop.call_later(spec.warmup + spec.duration, cpu_mark, "end")
    total_cap = spec.max_ops + spec.clients  # bounded in count as well as time

    async def worker(idx: int, c: BenchClient) -> None:
        wrng = random.Random(spec.seed * 1_000_003 + idx)
        ks, kspace, nvals = spec.key_size, spec.keyspace, len(values)
        op = spec.ops
        own_key = make_key(idx, ks)
        own_value: bytes | None = None
        if op == "cas":
            own_value = values[idx % nvals]
            async with asyncio.timeout(spec.op_timeout):
                await c.put(own_key, own_value)
        n = 0
        while time.perf_counter() < rec.stop_at and rec.started < total_cap:
            rec.started += 1
            rec.in_flight += 1
            n += 1
            key = make_key(wrng.randrange(kspace), ks)
            t0 = time.perf_counter_ns()
            try:
                async with asyncio.timeout(spec.op_timeout):
                    if op == "put":
                        await c.put(key, values[n % nvals])
                    elif op == "get":
                        await c.get(key, False)
                    elif op == "serializable-get":
                        await c.get(key, True)
                    elif op == "mixed":
                        if n & 1:
                            await c.put(key, values[n % nvals])
                        else:
                            await c.get(key, False)
                    else:  # cas: swap this client's own key from the value it last wrote
                        new = values[n % nvals]
                        if new == own_value:
                            new = values[(n + 1) % nvals]
                        if not await c.cas(own_key, own_value, new):
                            raise CasMismatch("cas mismatch on a key only this client writes")
                        own_value = new
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                rec.record_error(time.perf_counter_ns(), exc)
                await asyncio.sleep(0.01)  # do not spin on a failing cluster
                continue
            rec.record_ok(t0, time.perf_counter_ns())

    tasks = [asyncio.create_task(worker(i, c)) for i, c in enumerate(clients)]
    total = spec.warmup + spec.duration
    start = now
    try:
        last_done, last_t = 0, start
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=0.25)
            t = time.perf_counter()
            if progress is not None:
                rate = (rec.completed_total - last_done) / max(1e-9, t - last_t)
                phase = "warmup" if t < start + spec.warmup else "measure"
                progress.update(min(t - start, total), rec.ok, rate, phase)
                last_done, last_t = rec.completed_total, t
            if t > rec.stop_at + spec.op_timeout + 5:
                break  # a client stuck past its own timeout: give up on it
    finally:
        unfinished = rec.in_flight + rec.late
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if progress is not None:
            progress.done()
    setup_errors = [r for r in results
                    if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    for r in setup_errors:
        rec.errors["setup:" + _error_kind(r)] += 1

    lat = sorted(rec.latencies)
    ms = 1e-6
    window = spec.duration
    timeline = [rec.per_second.get(i, 0) for i in range(math.ceil(window))]
    extra: dict[str, Any] = {}
    if "start" in cpu and "end" in cpu and rec.ok:
        a, b = cpu["start"], cpu["end"]
        per_proc = [None if x is None or y is None else y - x for x, y in zip(a, b, strict=True)]
        gen = per_proc.pop()
        servers = [c for c in per_proc if c is not None]
        if cpu_pids and len(servers) == len(cpu_pids):
            extra["server_cpu_s"] = [round(c, 3) for c in servers]
            extra["server_cpu_us_per_op"] = sum(servers) / rec.ok * 1e6
        if gen is not None:
            extra["loadgen_cpu_us_per_op"] = gen / rec.ok * 1e6
    return BenchResult(
        system=system, op=spec.ops, clients=spec.clients, duration_s=window,
        ops=rec.ok, errors=sum(rec.errors.values()),
        ops_per_s=rec.ok / window,
        p50_ms=percentile(lat, 50) * ms, p90_ms=percentile(lat, 90) * ms,
        p99_ms=percentile(lat, 99) * ms, max_ms=(lat[-1] * ms if lat else 0.0),
        mean_ms=(sum(lat) / len(lat) * ms if lat else 0.0),
        key_size=spec.key_size, value_size=spec.value_size, nodes=nodes, transport=transport,
        unfinished=unfinished, error_kinds=dict(rec.errors), timeline=timeline, extra=extra,
    )


class CasMismatch(Exception):
    """A cas that found a value other than the one this client last wrote."""


def format_table(results: Sequence[BenchResult]) -> str:
    """A plain-text table, one row per result."""
    header = ("system", "op", "clients", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors")
    rows = [header]
    for r in results:
        rows.append((r.system, r.op, str(r.clients), f"{r.ops_per_s:,.0f}", f"{r.p50_ms:.2f}",
                     f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.max_ms:.1f}", str(r.errors)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                     strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux /proc), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def machine_description() -> str:
    """One line about the machine the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPU ({cpu}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")


# --------------------------------------------------------------------------------------
# Process helpers: SIGTERM as an unwind, temp dirs.
# --------------------------------------------------------------------------------------

def exit_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C (SystemExit), so the ``finally`` blocks and
    async context managers that stop our child processes run."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def make_tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_tree(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------
# meshraft: a local cluster of `meshraft serve` processes, and the kv client adapter.
# --------------------------------------------------------------------------------------

@dataclass
class LocalCluster(ClusterContext):
    """A throw-away cluster for a run: ``nodes`` members of ``meshraft serve`` on
    loopback ports from the OS (:mod:`meshraft.localcluster`), with data in
    ``data_dir`` (a temp dir, removed on stop, unless one is given).
    ``wrap(id, argv)`` may rewrite a member's command line (to run it under a profiler)."""

    nodes: int = 3
    transport: str = "mesh"
    data_dir: Path | None = None
    host: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    wrap: Callable[[int, list[str]], list[str]] | None = None
    # Run the members from another source tree (A/B experiments): its root goes on
    # PYTHONPATH and becomes the working dir, so `python -m meshraft.cli` imports it.
    source_tree: Path | None = None
    procs: list[MemberProcess] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)
    own_dir: bool = False
    cluster: localcluster.LocalCluster | None = None

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [(self.host, p) for p in self.client_ports]

    async def start(self, ready_within: float = 60.0) -> None:
        if not 1 <= self.nodes <= 9:
            raise BenchError(f"--nodes must be between 1 and 9, got {self.nodes}")
        if self.transport not in ("mesh", "udp"):
            raise BenchError(f"--transport must be mesh or udp, got {self.transport!r}")
        if self.data_dir is None:
            self.data_dir = make_tempdir("meshraft-bench-")
            self.own_dir = True
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        root = self.data_dir
        members = localcluster.plan_members(self.nodes, self.host)
        self.client_ports = [int(m.client.rsplit(":", 1)[1]) for m in members]
        wrap = self.wrap
        cl = self.cluster = localcluster.LocalCluster(
            members, root, transport=self.transport, extra_args=self.extra_args,
            data_dir_of=lambda m: root / f"n{m}", log_of=lambda m: root / f"node{m}.log",
            wrap=(lambda m, argv: wrap(int(m), argv)) if wrap is not None else None,
            env={"PYTHONPATH": str(self.source_tree)} if self.source_tree is not None else None,
            cwd=self.source_tree, append_logs=False)
        for m in cl.ids:
            self.procs.append(cl.start(m))
        await self._wait_ready(ready_within)

    async def _wait_ready(self, ready_within: float) -> None:
        """Every member answers, one is leader, and a write commits through each."""
        assert self.cluster is not None
        try:
            await self.cluster.wait_ready(ready_within, write_key=b"bench-ready",
                                          through_each=True, poll=0.2)
        except ClusterNotReady as exc:
            if exc.exited:
                p = self.cluster.procs[exc.exited[0]]
                raise BenchUnavailable(
                    f"{p.name} exited ({p.returncode}):\n{p.log_tail()}") from None
            raise BenchUnavailable(
                f"cluster not ready after {ready_within:g}s: {exc.last or None}") from None

    async def leader_index(self) -> int | None:
        """Index (0-based) of the member that says it is leader."""
        if self.cluster is None:
            return None
        leader = await self.cluster.find_leader(hearsay=False, wait=2.0)
        return None if leader is None else self.cluster.ids.index(leader)

    def stop(self) -> None:
        stop_processes(self.procs)
        if self.own_dir:
            remove_tree(self.data_dir)
            self.data_dir = None


class MeshraftBenchClient:
    """A bench client over :class:`meshraft.kv.client.AsyncClient`. Client ``i``
    prefers member ``i % n`` (the endpoint list is rotated), so load is spread."""

    def __init__(self, client: Any) -> None:
        self.c = client

    async def put(self, key: bytes, value: bytes) -> None:
        await self.c.put(key, value)

    async def get(self, key: bytes, serializable: bool = False) -> bytes | None:
        kv = await self.c.get(key, serializable=serializable)
        return None if kv is None else kv.value

    async def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        return (await self.c.cas(key, expected, new)).succeeded

    async def close(self) -> None:
        await self.c.close()


def meshraft_factory(endpoints: Sequence[tuple[str, int]], op_timeout: float = 10.0,
                     **client_kwargs: Any) -> ClientFactory:
    """Bench clients for ``endpoints``; ``client_kwargs`` go to every AsyncClient
    (``ssl``, ``token`` for a secured cluster)."""
    from meshraft.kv.client import AsyncClient

    eps = list(endpoints)

    async def make(i: int) -> BenchClient:
        k = i % len(eps)
        return MeshraftBenchClient(AsyncClient(eps[k:] + eps[:k], timeout=op_timeout,
                                               **client_kwargs))

    return make


async def bench_meshraft(spec: LoadSpec, *, endpoints: Sequence[tuple[str, int]] | None = None,
                         nodes: int = 3, transport: str = "mesh", data_dir: Path | None = None,
                         progress: bool = True,
                         client_kwargs: dict[str, Any] | None = None,
                         password_file: Path | None = None) -> BenchResult:
    """``meshraft bench``: against ``endpoints`` (with ``client_kwargs`` for TLS or a
    token), or a local cluster started for the run (its mesh authenticated and
    encrypted with ``password_file`` when given)."""
    spec.validate()
    bar = Progress(spec.warmup + spec.duration, f"{spec.ops}x{spec.clients}", enabled=progress)
    if endpoints:
        return await run_load(meshraft_factory(endpoints, spec.op_timeout,
                                               **(client_kwargs or {})), spec,
                              system="meshraft", progress=bar, nodes=len(endpoints))
    extra = ["--password-file", str(password_file)] if password_file else []
    async with LocalCluster(nodes=nodes, transport=transport, data_dir=data_dir,
                            extra_args=extra) as cluster:
        return await run_load(meshraft_factory(cluster.endpoints, spec.op_timeout), spec,
                              system=f"meshraft-{transport}", progress=bar, nodes=nodes,
                              transport=transport, cpu_pids=[p.pid for p in cluster.procs])


# --------------------------------------------------------------------------------------
# The `meshraft bench` command (registered by meshraft.cli).
# --------------------------------------------------------------------------------------

_FILE = click.Path(dir_okay=False, exists=True)


def _client_security(remote: bool, cacert: str | None, cert: str | None, key: str | None,
                     token_file: str | None) -> dict[str, Any]:
    """AsyncClient arguments for a secured cluster; BenchError for a bad combination."""
    from meshraft.client_args import client_security_kwargs

    if not remote:
        if cacert or cert or key or token_file:
            raise BenchError("--cacert, --cert, --key and --token-file are for a cluster "
                             "given with --endpoints (the local one bench starts is plain)")
        return {}
    try:
        return client_security_kwargs(cacert, cert, key, token_file)
    except ValueError as exc:
        raise BenchError(str(exc)) from None


@click.command("bench")
@click.option("--endpoints", envvar="MESHRAFT_ENDPOINTS", default=None,
              help="HOST:PORT,... of a running cluster; without it a local cluster is "
                   "started for the run and removed afterwards.")
@click.option("--nodes", type=int, default=3, show_default=True,
              help="Members of the local cluster.")
@click.option("--transport", type=click.Choice(["mesh", "udp"]), default="mesh",
              show_default=True, help="Raft transport of the local cluster.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data dir of the local cluster (default: a temp dir, removed).")
@click.option("--clients", type=int, default=64, show_default=True,
              help="Concurrent clients, each with one operation in flight.")
@click.option("--duration", type=float, default=10.0, show_default=True,
              help="Seconds measured.")
@click.option("--warmup", type=float, default=1.0, show_default=True,
              help="Seconds of load before measuring.")
@click.option("--ops", type=click.Choice([*OPS, "watch"]), default="put", show_default=True,
              help="put; get (linearizable); serializable-get; mixed (1:1 put/get); cas; "
                   "watch (watchers on one prefix under a paced writer: meshraft.bench_watch).")
@click.option("--key-size", type=int, default=16, show_default=True, help="Bytes per key.")
@click.option("--value-size", type=int, default=100, show_default=True,
              help="Bytes per value.")
@click.option("--keyspace", type=int, default=1000, show_default=True,
              help="Distinct keys the load picks from (preloaded for gets).")
@click.option("--max-ops", type=int, default=2_000_000, show_default=True,
              help="Upper bound on operations started.")
@click.option("--timeout", "op_timeout", type=float, default=10.0, show_default=True,
              help="Seconds one operation may take, retries included.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@click.option("--cacert", envvar="MESHRAFT_CACERT", type=_FILE, default=None,
              help="With --endpoints: use TLS, verifying the servers with this CA bundle.")
@click.option("--cert", envvar="MESHRAFT_CERT", type=_FILE, default=None,
              help="With --endpoints: client certificate for mutual TLS (with --key).")
@click.option("--key", "cert_key", envvar="MESHRAFT_KEY", type=_FILE, default=None,
              help="Private key of --cert.")
@click.option("--token-file", type=_FILE, default=None,
              help="With --endpoints: send the client token in this file "
                   "[env MESHRAFT_TOKEN holds the token itself].")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None,
              help="Local cluster only: authenticate and encrypt its mesh with the "
                   "password in this file (to measure what encryption costs).")
@watch_options
def bench(endpoints: str | None, nodes: int, transport: str, data_dir: Path | None,
          clients: int, duration: float, warmup: float, ops: str, key_size: int,
          value_size: int, keyspace: int, max_ops: int, op_timeout: float, seed: int,
          as_json: bool, progress: bool | None, cacert: str | None, cert: str | None,
          cert_key: str | None, token_file: str | None,
          password_file: Path | None, watchers: int, rate: float, watch_procs: int) -> None:
    """Drive a bounded load and report ops/s and latency p50/p90/p99/max."""
    if ops == "watch":
        watch_cli(endpoints=endpoints, nodes=nodes, transport=transport, clients=clients,
                  duration=duration, warmup=warmup, value_size=value_size, keyspace=keyspace,
                  max_ops=max_ops, op_timeout=op_timeout, seed=seed, as_json=as_json,
                  progress=progress,
                  unsupported=[n for n, v in (("--cacert", cacert), ("--cert", cert),
                                              ("--key", cert_key), ("--token-file", token_file),
                                              ("--password-file", password_file),
                                              ("--data-dir", data_dir)) if v],
                  watchers=watchers, rate=rate, watch_procs=watch_procs)
        return
    spec = LoadSpec(ops=ops, clients=clients, duration=duration, warmup=warmup,
                    key_size=key_size, value_size=value_size, keyspace=keyspace,
                    max_ops=max_ops, op_timeout=op_timeout, seed=seed)
    eps: list[tuple[str, int]] | None = None
    try:
        spec.validate()
        if endpoints:
            from meshraft.kv.client import parse_endpoints

            try:
                eps = parse_endpoints(endpoints)
            except ValueError as exc:
                raise BenchError(str(exc)) from None
        security = _client_security(eps is not None, cacert, cert, cert_key, token_file)
        if password_file is not None and (eps is not None or transport != "mesh"):
            raise BenchError("--password-file is for the local cluster bench starts, with "
                             "--transport mesh (a running cluster has its own password)")
        show = sys.stderr.isatty() if progress is None else progress
        exit_on_sigterm()
        result = asyncio.run(bench_meshraft(spec, endpoints=eps, nodes=nodes,
                                            transport=transport, data_dir=data_dir,
                                            progress=show, client_kwargs=security,
                                            password_file=password_file))
    except BenchUnavailable as exc:
        click.echo(f"meshraft bench: {exc}", err=True)
        sys.exit(3)
    except BenchError as exc:
        click.echo(f"meshraft bench: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(result.to_json())
    else:
        click.echo(format_table([result]))
        if result.error_kinds:
            kinds = ", ".join(f"{k}={v}" for k, v in sorted(result.error_kinds.items()))
            click.echo(f"errors: {kinds}")
    if result.ops == 0:
        click.echo("meshraft bench: no operation succeeded", err=True)
        sys.exit(3)


bench_command = bench

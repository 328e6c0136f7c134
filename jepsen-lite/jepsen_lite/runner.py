"""``jepsen-lite run`` and ``jepsen-lite clean``.

Owns: starting the cluster (real ``meshraft serve`` processes through
:mod:`meshraft.localcluster`, one per network namespace with ``--net netns``, on
loopback with ``--net local``), running the
workload and the nemesis side by side, the final heal and quiet period, the
out dir (history.jsonl, results.json, report.html, latency.png, rate.png, node
logs), the verdict's exit code, and cleaning up on every path: normal end,
exception, SIGINT/SIGTERM. A SIGKILLed runner is covered by the run registry and
``jepsen-lite clean`` (and its servers die with it: they get PR_SET_PDEATHSIG).

Must never: signal a process it did not start and record, touch the network
outside what netns.py creates, or leave a namespace behind on an exit path it sees.

Why over 600 lines: a run is one life cycle (cluster, workload and nemesis side by
side, heal, summary, check, out dir, clean-up on every exit path) whose parts share
the run's state and its exit codes; the summary's numbers are computed here because
they need the nemesis periods the run recorded. The HTML lives in report.py, the
processes in meshraft.localcluster, faults in nemesis.py, the network in netns.py.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import os
import random
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from jepsen_lite import netns
from jepsen_lite.history import HistoryWriter, pair_operations, read_history
from jepsen_lite.nemesis import (
    Nemesis,
    Period,
    Schedule,
    families_for,
    nemesis_names,
    periods_from_history,
)
from jepsen_lite.netns import Net, NetError
from jepsen_lite.workload import Workload, WorkloadConfig
from meshraft.bench import TimeProgress
from meshraft.localcluster import ClusterNotReady, LocalCluster, MemberAddr

log = logging.getLogger("jepsen_lite.runner")

EXIT_OK, EXIT_INVALID, EXIT_FAILED = 0, 1, 2
READY_KEY = "jl-ready"  # outside the workload's key space: not part of the history
RECOVERY_WINDOW = 5.0  # seconds after a heal in which the write outage is measured


class RunFailed(Exception):
    """The run could not be carried out (as opposed to a history that is not linearizable)."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while the run was going on."""


# ---------------------------------------------------------------- the cluster


class ServerCluster(LocalCluster):
    """The ``meshraft serve`` processes of a run (:class:`meshraft.localcluster.LocalCluster`):
    each member bound to its address in the run's network and wrapped by it (``ip
    netns exec`` with ``--net netns``), its PID recorded in the run registry, in a
    session of its own (a terminal's Ctrl-C reaches the runner only, which then stops
    the servers in order) and SIGKILLed by Linux if the runner dies
    (PR_SET_PDEATHSIG). Logs: ``out/nodes/nID.log``, appended to on every restart."""

    def __init__(self, net: Net, out_dir: Path, transport: str = "mesh",
                 extra_args: Sequence[str] = (), python: str = sys.executable) -> None:
        self.net = net
        self.out_dir = out_dir
        nodes = out_dir / "nodes"
        super().__init__(
            self.addrs(), nodes, transport=transport, extra_args=extra_args,
            data_dir_of=lambda n: nodes / f"n{n}" / "data",
            log_of=lambda n: nodes / f"n{n}.log",
            wrap=net.wrap, python=python, append_logs=True, log_header="jepsen-lite",
            new_session=True, pdeathsig=signal.SIGKILL,
            on_spawn=lambda p: net.state.add_pid(p.pid))

    def addrs(self) -> list[MemberAddr]:
        """From the run's network, each time: the member nemesis replaces a node there
        by a new one (a new id in the old one's place)."""
        return [MemberAddr(n, a.peer_addr, a.client_addr, listen=a.peer_addr)
                for n, a in self.net.nodes.items()]

    @property
    def node_ids(self) -> list[str]:
        return self.ids

    async def node_status(self, node: str, wait: float = 1.0) -> dict[str, Any] | None:
        """``node``'s status, None if it does not answer within ``wait`` seconds."""
        return await self.status(node, wait)

    def restart(self, node: str) -> None:
        self.kill(node)
        self.start(node)

    def pause(self, node: str) -> None:
        if self.alive(node):
            self.signal(node, signal.SIGSTOP)

    def resume(self, node: str) -> None:
        if self.alive(node):
            self.signal(node, signal.SIGCONT)

    async def heal_all(self) -> dict[str, Any]:
        """No network fault; every node resumed; every dead node started again."""
        await asyncio.to_thread(self.net.heal)
        restarted = []
        for node in self.node_ids:
            self.resume(node)
            if not self.alive(node):
                self.start(node)
                restarted.append(node)
        return {"restarted": restarted}

    def stop_all(self, timeout: float = 5.0) -> None:
        self.stop(timeout)

    async def wait_until_ready(self, within: float) -> str:
        """Until a leader is known and a write through it succeeds; returns the leader."""
        try:
            leader = await self.wait_ready(within, write_key=READY_KEY)
        except ClusterNotReady as exc:
            if exc.exited:
                raise RunFailed(f"node(s) {', '.join(exc.exited)} exited during start-up; see "
                                f"{self.log_path(exc.exited[0])}") from None
            raise RunFailed(str(exc)) from None
        assert leader is not None  # no stopping() given: only an exception ends it early
        return leader


# ---------------------------------------------------------------- results


def _f_status_counts(ops) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for op in ops:
        d = out.setdefault(op.f, {"ok": 0, "fail": 0, "info": 0})
        d[op.status] = d.get(op.status, 0) + 1
    return out


def summarize(events: list[dict[str, Any]], periods: list[Period],
              node_of: Callable[[int], str] | None = None) -> dict[str, Any]:
    """Ops by type and outcome, availability with and without a fault, failover times.

    (Over 80 lines: one pass over the ops fills every bucket, and the numbers it
    returns share those buckets; split up, each part would walk the history again.)

    An op counts as *during a fault* if it was invoked while one was active.
    ``during_faults``: the share of ok ops; ``answered_*``: ok or a cas mismatch (the
    cluster answered); ``answered_client_time_*``: the share of client time spent in
    ops that got an answer (a client stuck in timeouts makes few ops, so op counts
    understate its outage).
    Failover time of a fault (``write_outage_s``): the longest stretch within the fault
    during which no client completed an ok write or cas, i.e. how long the cluster
    could not commit (about 0 when the leader kept a majority); ``write_outage_after_stop_s``:
    the same over the RECOVERY_WINDOW seconds after the fault was healed.
    ``node_of`` (process -> the node its client talks to) adds the answered client time
    per node, which shows which side of a partition lost service."""
    ops = pair_operations(events)
    times = [e["time"] for e in events if e.get("time") is not None]
    t0 = min(times) if times else 0

    def sec(t: int | None) -> float | None:
        return None if t is None else (t - t0) / 1e9

    def in_fault(t: float) -> bool:
        return any(p.start <= t <= (p.stop if p.stop is not None else float("inf"))
                   for p in periods)

    buckets = {"fault": {"ok": 0, "fail": 0, "info": 0},
               "no_fault": {"ok": 0, "fail": 0, "info": 0}}
    # a cas mismatch is an answer: the cluster was available to give it
    answered = {"fault": 0, "no_fault": 0}
    # closed-loop clients: a client stuck in 2 s timeouts makes few ops, so op counts
    # hide it; client time spent in ops that got an answer does not
    answered_time = {"fault": 0.0, "no_fault": 0.0}
    op_time = {"fault": 0.0, "no_fault": 0.0}
    per_node: dict[str, dict[str, list[float]]] = {}
    end_t = max(times) if times else 0
    for op in ops:
        t = sec(op.invoke_time)
        b = "fault" if t is not None and in_fault(t) else "no_fault"
        buckets[b][op.status] += 1
        ok = op.status == "ok" or (op.status == "fail" and op.error == "cas-mismatch")
        if ok:
            answered[b] += 1
        if op.invoke_time is not None:
            dur = ((op.complete_time if op.complete_time is not None else end_t)
                   - op.invoke_time) / 1e9
            op_time[b] += dur
            if ok:
                answered_time[b] += dur
            if node_of is not None:
                slot = per_node.setdefault(node_of(op.process),
                                           {"fault": [0.0, 0.0], "no_fault": [0.0, 0.0]})[b]
                slot[0] += dur if ok else 0.0
                slot[1] += dur

    def share(b: dict[str, int]) -> float | None:
        total = sum(b.values())
        return round(b["ok"] / total, 4) if total else None

    def answered_share(name: str) -> float | None:
        total = sum(buckets[name].values())
        return round(answered[name] / total, 4) if total else None

    def time_share(name: str) -> float | None:
        return round(answered_time[name] / op_time[name], 4) if op_time[name] else None

    commits = sorted(c for c in (sec(op.complete_time) for op in ops
                                 if op.status == "ok" and op.f in ("write", "cas"))
                     if c is not None)
    end_s = (end_t - t0) / 1e9

    def outage(a: float, b: float) -> float | None:
        """The longest gap between ok write completions within [a, b]."""
        b = min(b, end_s)
        if b <= a:
            return None
        lo, hi = bisect.bisect_left(commits, a), bisect.bisect_right(commits, b)
        points = [a, *commits[lo:hi], b]
        return round(max(y - x for x, y in itertools.pairwise(points)), 3)

    def worst_node(p: Period) -> tuple[str, float] | None:
        """The node whose clients got answers for the least of their time in ``p``."""
        if node_of is None:
            return None
        stop = p.stop if p.stop is not None else float("inf")
        acc: dict[str, list[float]] = {}
        # ops are in invoke order: only those invoked within the period are visited
        for op in ops[bisect.bisect_left(invokes, p.start):]:
            t = sec(op.invoke_time)
            if t is None:
                continue
            if t > stop:
                break
            dur = ((op.complete_time if op.complete_time is not None else end_t)
                   - op.invoke_time) / 1e9
            a = acc.setdefault(node_of(op.process), [0.0, 0.0])
            a[1] += dur
            if op.status == "ok" or (op.status == "fail" and op.error == "cas-mismatch"):
                a[0] += dur
        shares = [(n, v[0] / v[1]) for n, v in acc.items() if v[1] > 0]
        if not shares:
            return None
        n, share = min(shares, key=lambda x: x[1])
        return n, round(share, 4)

    invokes = [sec(op.invoke_time) or 0.0 for op in ops]
    failovers = []
    for p in periods:
        fo: dict[str, Any] = {
            "fault": p.f, "start": round(p.start, 3),
            "stop": None if p.stop is None else round(p.stop, 3),
            "write_outage_s": outage(p.start, p.stop if p.stop is not None else end_s),
            "write_outage_after_stop_s": (None if p.stop is None
                                          else outage(p.stop, p.stop + RECOVERY_WINDOW)),
        }
        worst = worst_node(p)
        if worst is not None:
            fo["worst_node"], fo["worst_node_answered_client_time"] = worst
        failovers.append(fo)
    by_fault: dict[str, list[float]] = {}
    for fo in failovers:
        if fo["write_outage_s"] is not None:
            by_fault.setdefault(fo["fault"], []).append(fo["write_outage_s"])
    total = {"ok": 0, "fail": 0, "info": 0}
    for op in ops:
        total[op.status] += 1
    return {
        "ops": len(ops),
        "ops_by_outcome": total,
        "ops_by_type": _f_status_counts(ops),
        "availability": {
            "during_faults": share(buckets["fault"]),
            "without_faults": share(buckets["no_fault"]),
            "answered_during_faults": answered_share("fault"),
            "answered_without_faults": answered_share("no_fault"),
            "answered_client_time_during_faults": time_share("fault"),
            "answered_client_time_without_faults": time_share("no_fault"),
            "ops_during_faults": buckets["fault"],
            "ops_without_faults": buckets["no_fault"],
        },
        "failover": {
            "per_fault": failovers,
            "median_by_fault": {k: _median(v) for k, v in sorted(by_fault.items())},
            "max_by_fault": {k: max(v) for k, v in sorted(by_fault.items())},
        },
        "duration_s": round(((max(times) - t0) / 1e9) if times else 0.0, 3),
    } | ({"availability_by_node": {
        node: {f"answered_client_time_{'during' if b == 'fault' else 'without'}_faults":
               (round(v[b][0] / v[b][1], 4) if v[b][1] else None) for b in ("fault", "no_fault")}
        for node, v in sorted(per_node.items(), key=lambda kv: _node_sort(kv[0]))}}
        if node_of is not None else {})


def _node_sort(n: str) -> tuple[int, str]:
    return (int(n), n) if n.isdigit() else (1 << 30, n)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    m = len(s) // 2
    return round(s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2, 3)


# ---------------------------------------------------------------- the run


@dataclass
class RunConfig:
    nodes: int = 5
    time: float = 60.0
    concurrency: int = 10
    keys: int = 8
    rate: float | None = None
    nemesis: str = "all"
    reads: str = "linearizable"
    net: str = "netns"
    seed: int | None = None
    out: Path | None = None
    transport: str = "mesh"
    quiet_period: float = 5.0
    op_timeout: float = 2.0
    start_timeout: float = 60.0
    check_time_limit: float | None = 600.0
    progress: bool = True
    workload: str = "register"  # register | lease | watch (jepsen_lite.*_workload)
    lease_ttl: int = 2  # seconds, with --workload lease


def _progress(enabled: bool, total: float) -> TimeProgress:
    """One status line on stderr: a bar on a terminal, a line every 10 s otherwise."""
    return TimeProgress(total, "", "[{bar:30}] {n:5.1f}/{total:g}s  {status}",
                        enabled=enabled, log_every=10.0, log_first=True, log_at_end=False)


def _progress_status(ops: int, fault: str | None) -> str:
    return f"ops {ops}  nemesis: {fault or '-'}"


def _say(msg: str) -> None:
    click.echo(f"jepsen-lite: {msg}", err=True)


async def _drive(cfg: RunConfig, cluster: ServerCluster, hist: HistoryWriter,
                 families: list[str], rng: random.Random) -> Nemesis:
    """Start the cluster, run workload and nemesis, final heal, quiet period."""
    cluster.start_all()
    leader = await cluster.wait_until_ready(cfg.start_timeout)
    _say(f"cluster ready, leader {leader}; running {cfg.time:g}s")
    wl_rng = random.Random(rng.getrandbits(64))
    nem_rng = random.Random(rng.getrandbits(64))
    workload: Any
    if cfg.workload == "watch":
        from jepsen_lite.watch_workload import DEFAULT_RATE, WatchWorkload, WatchWorkloadConfig

        workload = WatchWorkload(
            WatchWorkloadConfig(concurrency=cfg.concurrency, keys=cfg.keys,
                                rate=cfg.rate or DEFAULT_RATE, op_timeout=cfg.op_timeout),
            cluster.endpoints(), hist, wl_rng)
    elif cfg.workload == "txn":
        from jepsen_lite.txn_workload import TxnWorkload

        workload = TxnWorkload(
            WorkloadConfig(concurrency=cfg.concurrency, keys=cfg.keys, rate=cfg.rate,
                           op_timeout=cfg.op_timeout),
            cluster.endpoints(), hist, wl_rng)
    elif cfg.workload == "lease":
        from jepsen_lite.lease_workload import LeaseWorkload, LeaseWorkloadConfig

        workload = LeaseWorkload(
            LeaseWorkloadConfig(concurrency=cfg.concurrency, ttl=cfg.lease_ttl, rate=cfg.rate,
                                op_timeout=cfg.op_timeout),
            cluster.endpoints(), hist, wl_rng)
    elif cfg.workload in ("lock-set", "fenced-set"):
        from jepsen_lite.lockset_workload import LockSetConfig, LockSetWorkload

        workload = LockSetWorkload(
            LockSetConfig(concurrency=cfg.concurrency, ttl=cfg.lease_ttl,
                          op_timeout=cfg.op_timeout, fenced=cfg.workload == "fenced-set",
                          stall="pause" in families),
            cluster.endpoints(), hist, wl_rng)
    else:
        workload = Workload(
            WorkloadConfig(concurrency=cfg.concurrency, keys=cfg.keys, rate=cfg.rate,
                           op_timeout=cfg.op_timeout,
                           serializable_reads=cfg.reads == "serializable"),
            cluster.endpoints(), hist, wl_rng)
    t0 = time.monotonic()
    fault_time = max(0.0, cfg.time - cfg.quiet_period)
    nem = Nemesis(families, cluster, nem_rng, hist, schedule=Schedule.for_duration(fault_time),
                  t0=t0)
    progress = _progress(cfg.progress, cfg.time)
    wl_task = asyncio.create_task(workload.run(t0 + cfg.time), name="workload")

    async def nemesis_then_heal() -> None:
        try:
            await nem.run(fault_time)
        finally:
            await asyncio.shield(nem.final_heal(cluster.heal_all))

    nem_task = asyncio.create_task(nemesis_then_heal(), name="nemesis")
    try:
        while not wl_task.done():
            progress.update(time.monotonic() - t0,
                            _progress_status(workload.completed, nem.active))
            await asyncio.wait({wl_task}, timeout=0.5)
            if nem_task.done() and nem_task.exception() is not None:
                raise RunFailed(f"nemesis failed: {nem_task.exception()!r}")
        progress.update(time.monotonic() - t0, _progress_status(workload.completed, None),
                        force=True)
        progress.done()
        wl_task.result()
        await nem_task
    finally:
        for t in (wl_task, nem_task):
            if not t.done():
                t.cancel()
        await asyncio.gather(wl_task, nem_task, return_exceptions=True)
    return nem


async def _run_async(cfg: RunConfig, cluster: ServerCluster, hist: HistoryWriter,
                     families: list[str], rng: random.Random) -> Nemesis:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    interrupted: list[int] = []

    def on_signal(signum: int) -> None:
        if not interrupted:
            _say(f"{signal.Signals(signum).name}: stopping the run and cleaning up")
            interrupted.append(signum)
            main.cancel()

    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, on_signal, s)
    try:
        return await _drive(cfg, cluster, hist, families, rng)
    except asyncio.CancelledError:
        if interrupted:
            raise Interrupted(signal.Signals(interrupted[0]).name) from None
        raise
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(s)


def run(cfg: RunConfig) -> tuple[int, dict[str, Any]]:
    """Carry out one run; returns (exit code, results)."""
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1 << 31)
    rng = random.Random(seed)
    run_id = netns.new_run_id()
    out = cfg.out or Path("jepsen-lite-runs") / f"{time.strftime('%Y%m%dT%H%M%S')}-{run_id}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "nodes").mkdir(exist_ok=True)
    history_path = out / "history.jsonl"
    if history_path.exists():
        raise RunFailed(f"{history_path} exists: choose an empty --out dir")
    try:
        families = families_for(cfg.nemesis, network_faults=cfg.net == "netns")
    except ValueError as exc:
        raise RunFailed(str(exc)) from None
    if cfg.workload == "watch" and cfg.concurrency < 2:
        raise RunFailed("--workload watch needs --concurrency 2 or more (a writer and a "
                        "watcher)")
    if cfg.net == "local":
        _say("--net local: nodes on loopback; network faults (partitions, loss) are not "
             "available, only kill and pause" + (f"; nemesis draws from {families}"
                                                   if families else ""))
    _say(f"run {run_id}: {cfg.nodes} nodes, --net {cfg.net}, --transport {cfg.transport}, "
         f"--nemesis {cfg.nemesis}, --reads {cfg.reads}, seed {seed}, out {out}")
    results: dict[str, Any] = {
        "run_id": run_id, "seed": seed, "out_dir": str(out),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
        "replay": _replay_command(cfg, seed),
    }
    net: Net | None = None
    cluster: ServerCluster | None = None
    nem: Nemesis | None = None
    failure: str | None = None
    # a SIGTERM before the loop installs its handler must still clean up
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with HistoryWriter(history_path) as hist:
            try:
                net = netns.create_net(cfg.net, cfg.nodes, out_dir=str(out), run_id=run_id)
                cluster = ServerCluster(net, out, transport=cfg.transport)
                nem = asyncio.run(_run_async(cfg, cluster, hist, families, rng))
            except (Interrupted, KeyboardInterrupt) as exc:
                failure = f"interrupted ({exc or 'SIGINT'})"
            except (RunFailed, NetError) as exc:
                failure = str(exc)
            except Exception as exc:  # a bug here must not pass for a verdict (exit 1)
                log.exception("the run failed")
                failure = f"internal error: {exc!r}"
            finally:
                with _signals_ignored():
                    if cluster is not None:
                        cluster.stop_all()
                    if net is not None:
                        net.teardown()
    finally:
        signal.signal(signal.SIGTERM, old_term)
    events = read_history(history_path)
    if nem is not None:
        periods = _periods_in_history_time(events, nem.periods, nem)
    else:
        periods = periods_from_history(events)
    node_ids = list(net.nodes) if net is not None else []
    summarized = events
    if cfg.workload == "watch":  # availability and failover from the writes; sessions apart
        summarized = [e for e in events if e.get("f") != "watch"]
    results.update(summarize(
        summarized, periods,
        (lambda p: node_ids[(p % cfg.concurrency) % len(node_ids)]) if node_ids else None))
    # seconds since the history's first event, as in the plots and the summary
    results["nemesis_periods"] = [vars(p) for p in periods]
    if failure is not None:
        results["valid"] = "unknown"
        results["error"] = failure
        _write_results(out, results)
        _say(f"run failed: {failure}")
        return EXIT_FAILED, results
    code, check, res = _check(events, cfg.check_time_limit, cfg.workload)
    results.update(check)
    _plots(out, summarized, results)
    if cfg.workload == "watch":
        _watch_report(out, res, results)
    elif cfg.workload not in ("lease", "lock-set", "fenced-set"):  # a linearizability verdict
        _report(out, events, res, results)
    _write_results(out, results)
    return code, results


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def _signals_ignored():
    """Teardown must finish: a second Ctrl-C waits until it has."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _periods_in_history_time(events: list[dict[str, Any]], periods: list[Period],
                             nem: Nemesis | None) -> list[Period]:
    """The nemesis keeps time from its own t0; summaries count from the first event."""
    if nem is None or not events:
        return periods
    times = [e["time"] for e in events if e.get("time") is not None]
    if not times:
        return periods
    shift = nem.t0 - min(times) / 1e9  # both are time.monotonic seconds
    return [Period(p.f, p.start + shift, None if p.stop is None else p.stop + shift, p.value)
            for p in periods]


def _check(events: list[dict[str, Any]], time_limit: float | None,
           workload: str = "register") -> tuple[int, dict[str, Any], Any]:
    from jepsen_lite.checker import UNKNOWN, check_history

    if workload == "watch":
        return _check_watch(events)
    if workload in ("lock-set", "fenced-set"):
        from jepsen_lite.lockset_checker import check_lockset_history

        started = time.monotonic()
        sres = check_lockset_history(events)
        return (EXIT_OK if sres.valid else EXIT_INVALID if sres.error is None else EXIT_FAILED,
                {"valid": sres.valid if sres.error is None else "unknown",
                 "check": sres.to_json(), "explanation": sres.explain(),
                 "check_time_s": round(time.monotonic() - started, 3)}, sres)
    if workload == "lease":
        from jepsen_lite.lease_checker import check_lease_history

        started = time.monotonic()
        lres = check_lease_history(events)
        ldata = lres.to_json()
        return (EXIT_OK if lres.valid else EXIT_INVALID,
                {"valid": lres.valid, "check": ldata,
                 "check_time_s": round(time.monotonic() - started, 3)}, lres)

    model: Any = "cas-register"
    if workload == "txn":
        from jepsen_lite.txn_model import TxnModel

        model = TxnModel()
    res = check_history(events, model, time_limit)
    data = res.to_json()
    valid = data["valid"]
    check = {"valid": valid, "check": {k: v for k, v in data.items() if k != "keys"},
             "check_time_s": round(res.elapsed, 3)}
    if valid is True:
        return EXIT_OK, check, res
    if valid is False:
        return EXIT_INVALID, check, res
    assert valid == UNKNOWN
    return EXIT_FAILED, check, res


def _check_watch(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any], Any]:
    """The watch checker (jepsen_lite.watch_checker): exit 0 the guarantees hold, 1 not,
    2 a history it cannot read (then there is no result to report)."""
    from jepsen_lite.history import HistoryError
    from jepsen_lite.watch_checker import check_watch

    try:
        res = check_watch(events)
    except HistoryError as exc:
        return EXIT_FAILED, {"valid": "unknown", "error": f"history: {exc}"}, None
    data = res.to_json()
    check = {"valid": res.valid, "check": data, "check_time_s": round(res.elapsed, 3),
             "watch": data["stats"]}
    return (EXIT_OK if res.valid else EXIT_INVALID), check, res


def _watch_report(out: Path, res: Any, results: dict[str, Any]) -> None:
    """report.html of a watch run: the watch checker's page with the run's section."""
    from jepsen_lite.report import run_html, write_watch_report

    if res is None:
        return
    write_watch_report(out / "report.html", res,
                       title=f"jepsen-lite run {results['run_id']} (watch)",
                       source=str(out / "history.jsonl"),
                       extra_html=run_html(results, [out / "latency.png", out / "rate.png"]))


def _report(out: Path, events: list[dict[str, Any]], res: Any,
            results: dict[str, Any]) -> None:
    """report.html: the checker's report, fault periods shaded on every timeline, with
    the run's numbers and both plots (embedded, so the page stands alone)."""
    from jepsen_lite.report import run_html, write_report

    times = [e["time"] for e in events if e.get("time") is not None]
    t0 = min(times) if times else 0
    end = max(times) if times else 0
    periods = [(t0 + p["start"] * 1e9, t0 + p["stop"] * 1e9 if p["stop"] is not None else end,
                p["f"]) for p in results["nemesis_periods"]]
    write_report(out / "report.html", res, events, nemesis_periods=periods,
                 title=f"jepsen-lite run {results['run_id']}", source=str(out / "history.jsonl"),
                 extra_html=run_html(results, [out / "latency.png", out / "rate.png"]))


def _plots(out: Path, events: list[dict[str, Any]], results: dict[str, Any]) -> None:
    try:
        from jepsen_lite import plots
    except ImportError as exc:  # matplotlib missing: say so, the verdict stands
        log.warning("no plots: %s", exc)
        return
    plots.write_plots(out, events, [Period(**p) for p in results["nemesis_periods"]])


def _write_results(out: Path, results: dict[str, Any]) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, out / "results.json")


def _replay_command(cfg: RunConfig, seed: int) -> str:
    args = ["jepsen-lite", "run", "--nodes", str(cfg.nodes), "--time", f"{cfg.time:g}",
            "--concurrency", str(cfg.concurrency), "--keys", str(cfg.keys),
            "--nemesis", cfg.nemesis, "--reads", cfg.reads, "--net", cfg.net,
            "--transport", cfg.transport, "--seed", str(seed),
            "--quiet-period", f"{cfg.quiet_period:g}", "--op-timeout", f"{cfg.op_timeout:g}"]
    if cfg.workload != "register":
        args += ["--workload", cfg.workload]
    if cfg.workload in ("lease", "lock-set", "fenced-set"):
        args += ["--lease-ttl", str(cfg.lease_ttl)]
    if cfg.rate:
        args += ["--rate", f"{cfg.rate:g}"]
    return shlex.join(args)


# ---------------------------------------------------------------- commands


@click.command("run")
@click.option("--nodes", default=5, show_default=True, type=click.IntRange(1, netns.MAX_NODES),
              help="Cluster size.")
@click.option("--time", "duration", default=60.0, show_default=True,
              type=click.FloatRange(1, 24 * 3600), help="Seconds of workload.")
@click.option("--concurrency", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Client workers; worker w talks to node w mod nodes.")
@click.option("--keys", default=8, show_default=True, type=click.IntRange(1, 100000),
              help="Registers the workload spreads over (fewer: more contention).")
@click.option("--rate", default=None, type=click.FloatRange(0, min_open=True),
              help="Operations per second over all clients (default: no limit).")
@click.option("--nemesis", default="all", show_default=True,
              type=click.Choice(nemesis_names()),
              help="Fault family (all: a mix; with --net local, kill and pause only).")
@click.option("--reads", default="linearizable", show_default=True,
              type=click.Choice(["linearizable", "serializable"]),
              help="serializable: local, possibly stale reads (the checker should object).")
@click.option("--net", default="netns", show_default=True, type=click.Choice(["netns", "local"]),
              help="netns: a namespace per node (root); local: loopback, no network faults.")
@click.option("--seed", default=None, type=int, help="Seed of every random choice.")
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Out dir (default: ./jepsen-lite-runs/TIME-RUNID).")
@click.option("--transport", default="mesh", show_default=True,
              type=click.Choice(["mesh", "udp"]), help="Passed to meshraft serve.")
@click.option("--quiet-period", default=5.0, show_default=True, type=click.FloatRange(0),
              help="Seconds at the end with every fault healed.")
@click.option("--op-timeout", default=2.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds one operation may take before its outcome is unknown.")
@click.option("--check-time-limit", default=600.0, show_default=True,
              type=click.FloatRange(1), help="Seconds the checker may take (then: unknown).")
@click.option("--no-progress", is_flag=True, help="No progress line on stderr.")
@click.option("--workload", default="register", show_default=True,
              type=click.Choice(["register", "lease", "watch", "txn", "lock-set",
                                 "fenced-set"]),
              help="register: read/write/cas, checked for linearizability; lease: grant, "
                   "keep alive, revoke and let lapse, checked against the lease promise; "
                   "watch: writers put increasing integers while watchers follow the keys "
                   "in sessions, checked against etcd's watch guarantees (default --rate "
                   "200); txn: conditional multi-key transactions and multi-key reads over "
                   "groups of 3 registers (--keys / 3 groups), checked for linearizability "
                   "with the txn model; lock-set: a read-modify-write of a set outside "
                   "meshraft under meshraft.recipes.Lock, holders stalling past their "
                   "lease when the nemesis has pause (expected to LOSE updates, exit 1); "
                   "fenced-set: the same with the set in meshraft and each write guarded "
                   "by the fencing token (must keep every acknowledged add).")
@click.option("--lease-ttl", default=2, show_default=True, type=click.IntRange(1, 60),
              help="Seconds of TTL of every lease (--workload lease, lock-set, "
                   "fenced-set).")
def run_cmd(nodes: int, duration: float, concurrency: int, keys: int, rate: float | None,
            nemesis: str, reads: str, net: str, seed: int | None, out: Path | None,
            transport: str, quiet_period: float, op_timeout: float,
            check_time_limit: float, no_progress: bool, workload: str,
            lease_ttl: int) -> None:
    """Run a real meshraft cluster under faults; record and check the history.

    Exit codes: 0 linearizable (lease: the promise kept), 1 not linearizable (lease:
    broken), 2 unknown or the run failed."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = RunConfig(nodes=nodes, time=duration, concurrency=concurrency, keys=keys, rate=rate,
                    nemesis=nemesis, reads=reads, net=net, seed=seed, out=out,
                    transport=transport, quiet_period=min(quiet_period, duration / 2),
                    op_timeout=op_timeout, check_time_limit=check_time_limit,
                    progress=not no_progress, workload=workload, lease_ttl=lease_ttl)
    try:
        code, results = run(cfg)
    except RunFailed as exc:
        click.echo(f"jepsen-lite run: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:  # during the check: no verdict
        click.echo("jepsen-lite run: interrupted", err=True)
        sys.exit(EXIT_FAILED)
    except Exception as exc:  # exit 1 means "not linearizable": a crash must not say that
        log.exception("jepsen-lite run failed")
        click.echo(f"jepsen-lite run: internal error: {exc!r}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(_summary_line(results))
    if cfg.workload == "watch" and results.get("valid") is False:
        # the first violations here; all of them (up to 50 per kind) in report.html
        for v in results.get("check", {}).get("violations", [])[:10]:
            click.echo(f"  [{v['kind']}] {v['message']}")
    sys.exit(code)


def _summary_line(r: dict[str, Any]) -> str:
    o = r.get("ops_by_outcome", {})
    a = r.get("availability", {})
    verdict = {True: "linearizable", False: "NOT linearizable"}.get(r.get("valid"), "unknown")
    if r.get("config", {}).get("workload") == "watch":
        verdict = {True: "watch guarantees hold", False: "watch guarantees VIOLATED"}.get(
            r.get("valid"), "unknown")
        w = r.get("watch") or {}
        if w:
            verdict += (f"; {w.get('watchers')} watchers, {w.get('sessions')} sessions, "
                        f"{w.get('events_delivered')} events delivered")
    if r.get("config", {}).get("workload") == "lease":
        verdict = {True: "lease promise kept", False: "lease promise BROKEN"}.get(
            r.get("valid"), "unknown")
    if r.get("config", {}).get("workload") in ("lock-set", "fenced-set"):
        verdict = {True: "no acknowledged add lost", False: "acknowledged adds LOST"}.get(
            r.get("valid"), "unknown") + f" ({r.get('explanation', '')})"
    parts = [f"{verdict}", f"ops {r.get('ops', 0)} (ok {o.get('ok', 0)}, fail "
             f"{o.get('fail', 0)}, info {o.get('info', 0)})",
             f"ok share during faults {a.get('during_faults')}, without "
             f"{a.get('without_faults')} (answered: {a.get('answered_during_faults')} / "
             f"{a.get('answered_without_faults')})"]
    if "check_time_s" in r:
        parts.append(f"check {r['check_time_s']}s")
    if r.get("error"):
        parts.append(f"error: {r['error']}")
    parts.append(f"out {r.get('out_dir')}")
    return "; ".join(parts)


@click.command("clean")
@click.option("--force", is_flag=True,
              help="Also remove runs whose runner process is still alive.")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
def clean_cmd(force: bool, as_json: bool) -> None:
    """Remove namespaces, veths, rules and processes that crashed runs left behind."""
    removed = netns.clean_stale(force=force)
    if as_json:
        click.echo(json.dumps(removed))
        return
    if not any(removed.values()):
        click.echo("nothing to clean")
        return
    for what, items in removed.items():
        if items:
            click.echo(f"removed {what}: {' '.join(items)}")

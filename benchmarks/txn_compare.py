"""Transaction throughput, meshraft vs etcd 3.4, side by side on one machine.

    python benchmarks/txn_compare.py [--runs 3] [--duration 10] [--warmup 2]
        [--clients 64] [--out benchmarks/results]

Each run starts a fresh 3-member cluster of each system in turn (meshraft over the
mesh, etcd through its JSON gateway ``/v3/kv/txn``; the order alternates between runs)
and drives it with ``--clients`` closed-loop clients (client i starts at member i mod
3; meshraft's client then follows the leader, etcd forwards to its leader itself).
Every client sends the same transaction to both systems, on two distinct random keys
of 1,000 with a 64-byte value::

    compare: version(A) != 123456789          (always holds, but is evaluated)
    success: put A value, put B value         (two writes, one revision)
    failure: get A

The report gives transactions/s and latency (p50, p99) per run, the median of the
runs, and every run's meshraft/etcd throughput ratio (the goal: >= 1.0), written to
``--out`` as ``txn-DATE.json`` and ``txn-DATE.md`` with the command line.

This script starts and stops only its own processes (by PID, in ``finally``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import random
import shlex
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import etcd_driver

from meshraft.bench import LocalCluster, cpu_seconds, exit_on_sigterm, machine_description

HERE = Path(__file__).resolve().parent
KEYS = 1000
VALUE = b"v" * 64
NEVER = 123456789


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _keys(rng: random.Random) -> tuple[bytes, bytes]:
    a, b = rng.sample(range(KEYS), 2)
    return b"txn-%04d" % a, b"txn-%04d" % b


async def _meshraft_clients(endpoints: list[tuple[str, int]], n: int
                            ) -> tuple[list[Any], Callable[[Any, bytes, bytes], Awaitable[None]]]:
    from meshraft.kv.client import AsyncClient, Compare, Op

    clients = [AsyncClient(endpoints[i % 3:] + endpoints[:i % 3], timeout=10.0)
               for i in range(n)]

    async def txn(c: Any, a: bytes, b: bytes) -> None:
        r = await c.txn([Compare.version(a) != NEVER], [Op.put(a, VALUE), Op.put(b, VALUE)],
                        [Op.get(a)])
        if not r.succeeded:
            raise RuntimeError("the compare did not hold")

    return clients, txn


async def _etcd_clients(endpoints: list[tuple[str, int]], n: int
                        ) -> tuple[list[Any], Callable[[Any, bytes, bytes], Awaitable[None]]]:
    make = etcd_driver.client_factory(endpoints)
    clients = [await make(i) for i in range(n)]

    async def txn(c: Any, a: bytes, b: bytes) -> None:
        body = json.dumps({
            "compare": [{"key": _b64(a), "target": "VERSION", "result": "NOT_EQUAL",
                         "version": str(NEVER)}],
            "success": [{"request_put": {"key": _b64(a), "value": _b64(VALUE)}},
                        {"request_put": {"key": _b64(b), "value": _b64(VALUE)}}],
            "failure": [{"request_range": {"key": _b64(a)}}]}).encode()
        status, resp = await c.conn.post("/v3/kv/txn", body)
        if status != 200 or not json.loads(resp).get("succeeded"):
            raise RuntimeError(f"etcd txn: HTTP {status}: {resp[:200]!r}")

    return clients, txn


async def _load(clients: list[Any], txn: Callable[[Any, bytes, bytes], Awaitable[None]],
                duration: float, warmup: float, seed: int, pids: list[int]) -> dict[str, Any]:
    """Closed loop: every client sends its next transaction when the last one returns.
    ``pids``: the members, whose CPU time per transaction is reported."""
    start = time.monotonic()
    measure_from, end = start + warmup, start + warmup + duration
    cpu0 = time.process_time()
    servers0 = [cpu_seconds(p) or 0.0 for p in pids]
    lat: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        rng = random.Random(seed * 1000 + i)
        c = clients[i]
        while True:
            t0 = time.monotonic()
            if t0 >= end:
                return
            a, b = _keys(rng)
            try:
                await txn(c, a, b)
            except Exception:  # counted; the benchmark goes on
                errors += 1
                continue
            t1 = time.monotonic()
            if t0 >= measure_from and t1 <= end:
                lat.append(t1 - t0)

    await asyncio.gather(*(one(i) for i in range(len(clients))))
    cpu = time.process_time() - cpu0
    servers = sum(cpu_seconds(p) or 0.0 for p in pids) - sum(servers0)
    done = len(lat) * (warmup + duration) / duration  # about every txn, warmup included
    lat.sort()

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else 0.0

    return {"txn_per_s": round(len(lat) / duration, 1), "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "errors": errors, "measured": len(lat),
            # the load generator's own CPU per transaction (it shares the machine)
            "client_cpu_us": round(cpu / done * 1e6) if done else 0,
            "server_cpu_us": round(servers / done * 1e6) if done else 0}


async def _run_system(system: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    if system == "meshraft":
        async with LocalCluster(nodes=3, transport="mesh") as c:
            clients, txn = await _meshraft_clients(list(c.endpoints), args.clients)
            try:
                r = await _load(clients, txn, args.duration, args.warmup, seed,
                                [p.pid for p in c.procs])
            finally:
                await asyncio.gather(*(x.close() for x in clients), return_exceptions=True)
            return {**r, "transport": "mesh"}
    async with etcd_driver.EtcdCluster(nodes=3) as c:
        clients, txn = await _etcd_clients(list(c.endpoints), args.clients)
        try:
            r = await _load(clients, txn, args.duration, args.warmup, seed,
                            [p.pid for p in c.procs])
        finally:
            await asyncio.gather(*(x.close() for x in clients), return_exceptions=True)
        return {**r, "version": c.version}


def markdown(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# Transaction throughput, {meta['clients']} clients: meshraft vs etcd",
             "", f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
             f"Machine: {meta['machine']}  ", f"etcd: {meta.get('etcd_version', '?')}", "",
             "Transaction: compare version(A) != 123456789; success: put A, put B (64-byte "
             "values, 2 of 1,000 keys); failure: get A.", "",
             "| run | system | txn/s | p50 ms | p99 ms | errors | members' CPU µs/txn | "
             "load generator CPU µs/txn |", "|---|---|---|---|---|---|---|---|"]
    for i, run in enumerate(runs, 1):
        for system in ("meshraft", "etcd"):
            r = run[system]
            lines.append(f"| {i} | {system} | {r['txn_per_s']:,.0f} | {r['p50_ms']} | "
                         f"{r['p99_ms']} | {r['errors']} | {r.get('server_cpu_us', '')} | "
                         f"{r.get('client_cpu_us', '')} |")
    med = meta["median"]
    lines += ["", "| median | txn/s | p50 ms | p99 ms |", "|---|---|---|---|"]
    for system in ("meshraft", "etcd"):
        m = med[system]
        lines.append(f"| {system} | {m['txn_per_s']:,.0f} | {m['p50_ms']} | {m['p99_ms']} |")
    lines += ["", f"meshraft/etcd throughput: median of the runs "
                  f"{meta['ratio_of_medians']:.2f}x; per run "
                  f"{', '.join(f'{x:.2f}x' for x in meta['ratios'])} (goal >= 1.0)", ""]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        order = ("meshraft", "etcd") if i % 2 == 0 else ("etcd", "meshraft")
        run: dict[str, Any] = {}
        for system in order:
            run[system] = await _run_system(system, args, seed=i)
            r = run[system]
            print(f"run {i + 1} {system:9s} {r['txn_per_s']:9,.0f} txn/s  p50 {r['p50_ms']} ms "
                  f" p99 {r['p99_ms']} ms  errors {r['errors']}  members' CPU "
                  f"{r['server_cpu_us']} us/txn  load generator CPU {r['client_cpu_us']} us/txn",
                  flush=True)
        runs.append(run)
    med = {s: {m: statistics.median(r[s][m] for r in runs)
               for m in ("txn_per_s", "p50_ms", "p99_ms")} for s in ("meshraft", "etcd")}
    ratios = [r["meshraft"]["txn_per_s"] / r["etcd"]["txn_per_s"] if r["etcd"]["txn_per_s"]
              else 0.0 for r in runs]
    meta = {"command": args.command, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_description(), "clients": args.clients,
            "duration_s": args.duration, "warmup_s": args.warmup, "median": med,
            "ratios": [round(x, 3) for x in ratios],
            "ratio_of_medians": (med["meshraft"]["txn_per_s"] / med["etcd"]["txn_per_s"]
                                 if med["etcd"]["txn_per_s"] else 0.0),
            "etcd_version": runs[0]["etcd"].get("version")}
    return {"meta": meta, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.clients < 1 or args.duration <= 0 or args.warmup < 0:
        ap.error("--runs and --clients must be >= 1, --duration > 0, --warmup >= 0")
    args.command = shlex.join(["python", "benchmarks/txn_compare.py",
                               *(argv if argv is not None else sys.argv[1:])])
    exit_on_sigterm()
    report = asyncio.run(main_async(args))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d-%H%M")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"txn-{stamp}.json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report["runs"], report["meta"])
    (args.out / f"txn-{stamp}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

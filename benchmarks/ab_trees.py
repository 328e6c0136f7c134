"""A/B: the same load against meshraft clusters built from different source trees.

    python benchmarks/ab_trees.py --tree base=/tmp/mr-base --tree coalesce=/tmp/mr-e4 \\
        [--workloads put64,get64,seq] [--runs 3] [--duration 6] [--transport udp]

Each tree is a checkout of this repository (e.g. ``git archive HEAD | tar -x -C DIR``
and a patch on top). For every run, tree and workload it starts a fresh local
3-node cluster whose members import meshraft from that tree, drives the load with
:func:`meshraft.bench.run_load` (the load generator itself is this checkout), and
records, besides ops/s and latency, what a busy shared machine distorts least: the
CPU time each member spent per operation and the members' own counters per
operation (fsyncs, datagrams sent, Readies). The trees and workloads interleave, and
the table shows medians. This is how the suggestions in results/PROFILE.md were
measured.

It starts and stops only its own processes, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path
from typing import Any

from meshraft.bench import (
    LoadSpec,
    LocalCluster,
    cpu_seconds,
    exit_on_sigterm,
    meshraft_factory,
    run_load,
)

WORKLOADS = {"put64": ("put", 64), "get64": ("get", 64), "seq": ("put", 1),
             "put16": ("put", 16), "mixed64": ("mixed", 64)}
KEYS = ("ops_per_s", "p50_ms", "p99_ms", "leader_cpu_us", "follower_cpu_us", "total_cpu_us",
        "loadgen_cpu_us", "leader_fsyncs", "follower_fsyncs", "leader_sent", "leader_readies")


async def _counters(endpoints: list[tuple[str, int]]) -> list[dict[str, float]]:
    from meshraft.kv.client import AsyncClient

    out: list[dict[str, float]] = []
    for ep in endpoints:
        c = AsyncClient([ep], timeout=2.0)
        try:
            st = await c.status()
            d = {k: float(v) for k, v in (st.get("stats") or {}).items()
                 if isinstance(v, int | float)}
            fs = (st.get("storage") or {}).get("fsyncs")
            if isinstance(fs, int | float):
                d["fsyncs"] = float(fs)
            out.append(d)
        except Exception:
            out.append({})
        finally:
            await c.close()
    return out


async def one(tree: Path, workload: str, transport: str, duration: float) -> dict[str, float]:
    ops, clients = WORKLOADS[workload]
    spec = LoadSpec(ops=ops, clients=clients, duration=duration, warmup=1.0)
    async with LocalCluster(transport=transport, source_tree=tree) as c:
        leader = None
        for _ in range(50):
            leader = await c.leader_index()
            if leader is not None:
                break
            await asyncio.sleep(0.1)
        if leader is None:
            raise RuntimeError("no leader")
        pids = [p.pid for p in c.procs]
        box: dict[str, Any] = {}

        async def sample() -> None:
            await asyncio.sleep(spec.warmup)
            box["cpu0"] = [cpu_seconds(p) or 0.0 for p in pids]
            box["n0"] = await _counters(c.endpoints)
            await asyncio.sleep(spec.duration)
            box["cpu1"] = [cpu_seconds(p) or 0.0 for p in pids]
            box["n1"] = await _counters(c.endpoints)

        sampler = asyncio.create_task(sample())
        r = await run_load(meshraft_factory(c.endpoints), spec, nodes=3, transport=transport)
        await sampler
    n = max(1, r.ops)
    cpu = [(b - a) / n * 1e6 for a, b in zip(box["cpu0"], box["cpu1"], strict=True)]

    def per(key: str) -> list[float]:
        return [(b.get(key, 0.0) - a.get(key, 0.0)) / n
                for a, b in zip(box["n0"], box["n1"], strict=True)]

    fs, sent, readies = per("fsyncs"), per("sent"), per("readies")
    followers = [i for i in range(len(pids)) if i != leader]
    return {
        "ops_per_s": r.ops_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
        "leader_cpu_us": cpu[leader],
        "follower_cpu_us": statistics.mean(cpu[i] for i in followers),
        "total_cpu_us": sum(cpu),
        "loadgen_cpu_us": float(r.extra.get("loadgen_cpu_us_per_op", 0.0)),
        "leader_fsyncs": fs[leader],
        "follower_fsyncs": statistics.mean(fs[i] for i in followers),
        "leader_sent": sent[leader], "leader_readies": readies[leader],
    }


def parse_trees(specs: list[str]) -> dict[str, Path]:
    trees: dict[str, Path] = {}
    for t in specs:
        name, sep, path = t.partition("=")
        if not sep or not Path(path, "meshraft", "cli.py").exists():
            raise SystemExit(f"--tree NAME=DIR, DIR a meshraft checkout: {t!r}")
        trees[name] = Path(path).resolve()
    return trees


async def main_async(args: argparse.Namespace, trees: dict[str, Path]) -> None:
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for run in range(args.runs):
        for name, tree in trees.items():
            for w in workloads:
                try:
                    d = await one(tree, w, args.transport, args.duration)
                except Exception as exc:
                    print(f"run {run + 1} {name} {w}: FAILED {exc!r}"[:400], flush=True)
                    continue
                results.setdefault((name, w), []).append(d)
                print(f"run {run + 1} {name:10s} {w:7s} "
                      + " ".join(f"{k}={v:.2f}" for k, v in d.items()), flush=True)
    print()
    print(f"medians of {args.runs} runs, {args.duration:g} s each, transport {args.transport}; "
          "CPU in us per operation, counters per operation")
    print(f"{'tree':10s} {'load':7s} " + " ".join(f"{k:>15s}" for k in KEYS))
    for (name, w), ds in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{name:10s} {w:7s} "
              + " ".join(f"{statistics.median(d[k] for d in ds):15.2f}" for k in KEYS))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", required=True, help="NAME=DIR (repeatable)")
    ap.add_argument("--workloads", default="put64,get64,seq")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--transport", choices=["mesh", "udp"], default="udp")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    asyncio.run(main_async(args, parse_trees(args.tree)))


if __name__ == "__main__":
    main()

"""What metrics cost: put throughput at 64 clients with ``serve --metrics`` on and off.

    python benchmarks/metrics_cost.py [--runs 3] [--duration 10] [--clients 64]
        [--scrape-interval 1] [--out benchmarks/results]

Each run starts a fresh 3-member cluster (mesh transport, data in a temp dir) without
``--metrics`` and one with ``--metrics 127.0.0.1:0``, in turn, and drives the same
closed-loop put load through each (:func:`meshraft.bench.run_load`, as
``meshraft bench`` and benchmarks/compare.py do). With metrics on, a scraper GETs every
member's ``/metrics`` every ``--scrape-interval`` seconds during the run (1 s: 15 times
Prometheus's default rate, so the cost measured includes scraping, generously). The
order of the two modes alternates between runs so slow drift on a shared machine does
not always hit the same one. The report gives every run's throughputs and on/off
ratio, the medians of the runs, and the cost (1 - median on / median off; goal: at
most 3 %), and is written to ``--out``: ``metrics-cost.md`` and ``metrics-cost.json``.

This script starts and stops only its own processes (by PID, in ``finally``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from meshraft.bench import (
    LoadSpec,
    LocalCluster,
    Progress,
    exit_on_sigterm,
    machine_description,
    meshraft_factory,
    run_load,
)
from meshraft.kv.client import AsyncClient

HERE = Path(__file__).resolve().parent
GOAL = 0.03


async def _metrics_addresses(endpoints: list[tuple[str, int]]) -> list[str]:
    out = []
    for ep in endpoints:
        async with AsyncClient([ep], timeout=10) as c:
            st = await c.status()
        addr = st.get("metrics")
        if not addr:
            raise SystemExit(f"member at {ep} serves no metrics (status has no 'metrics')")
        out.append(addr)
    return out


async def _scrape_loop(addresses: list[str], interval: float, counts: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as s:
        while True:
            for a in addresses:
                t0 = time.perf_counter()
                try:
                    async with s.get(f"http://{a}/metrics",
                                     timeout=aiohttp.ClientTimeout(total=5)) as r:
                        body = await r.read()
                        counts["ok" if r.status == 200 else "failed"] += 1
                        counts["ms"].append((time.perf_counter() - t0) * 1000)
                        counts["bytes"] = len(body)
                except (aiohttp.ClientError, TimeoutError, OSError):
                    counts["failed"] += 1
            await asyncio.sleep(interval)


def micro(n: int = 200_000) -> dict[str, float]:
    """Per-request cost of the metrics' request hook, measured in this process: what a
    member with --metrics pays on every client request (a dict update and a bisect)."""
    from meshraft.ops.metrics import RequestStats

    stats = RequestStats()
    observe = stats.observe
    ops = [("put", "ok", 0.002), ("get", "ok", 0.0007), ("put", "timeout", 5.0)]
    t0 = time.perf_counter()
    for i in range(n):
        op, code, s = ops[i % 3]
        observe(op, code, s)
    per_call = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):
        op, code, s = ops[i % 3]
    loop_only = (time.perf_counter() - t0) / n
    return {"request_hook_us": max(0.0, per_call - loop_only) * 1e6}


async def one_mode(metrics: bool, spec: LoadSpec, scrape_interval: float,
                   progress: bool) -> dict[str, Any]:
    extra = ["--metrics", "127.0.0.1:0"] if metrics else []
    label = "metrics on " if metrics else "metrics off"
    async with LocalCluster(nodes=3, transport="mesh", extra_args=extra) as c:
        scrapes: dict[str, Any] = {"ok": 0, "failed": 0, "ms": [], "bytes": 0}
        scraper = None
        if metrics:
            addresses = await _metrics_addresses(c.endpoints)
            scraper = asyncio.ensure_future(_scrape_loop(addresses, scrape_interval, scrapes))
        try:
            bar = Progress(spec.warmup + spec.duration, label, enabled=progress)
            r = await run_load(meshraft_factory(c.endpoints), spec, system="meshraft-mesh",
                               progress=bar, nodes=3, transport="mesh",
                               cpu_pids=[p.pid for p in c.procs])
        finally:
            if scraper is not None:
                scraper.cancel()
                await asyncio.gather(scraper, return_exceptions=True)
    out = {"metrics": metrics, "ops_per_s": r.ops_per_s, "p50_ms": r.p50_ms,
           "p99_ms": r.p99_ms, "errors": r.errors,
           "server_cpu_us_per_op": r.extra.get("server_cpu_us_per_op"),
           "scrapes": {"ok": scrapes["ok"], "failed": scrapes["failed"],
                       "median_ms": statistics.median(scrapes["ms"]) if scrapes["ms"] else None,
                       "bytes": scrapes["bytes"]} if metrics else None}
    print(f"  {label}: {r.ops_per_s:9,.0f} puts/s  p50 {r.p50_ms:6.2f} ms  p99 "
          f"{r.p99_ms:6.2f} ms  errors {r.errors}  server CPU "
          f"{out['server_cpu_us_per_op'] or 0:5.0f} us/op"
          + (f"  scrapes {scrapes['ok']} ok / {scrapes['failed']} failed" if metrics else ""),
          flush=True)
    return out


async def measure(runs: int, spec: LoadSpec, scrape_interval: float,
                  progress: bool) -> list[dict[str, Any]]:
    results = []
    for i in range(runs):
        order = (False, True) if i % 2 == 0 else (True, False)
        print(f"run {i + 1}/{runs}", flush=True)
        by_mode = {}
        for metrics in order:
            by_mode[metrics] = await one_mode(metrics, spec, scrape_interval, progress)
        on, off = by_mode[True], by_mode[False]
        results.append({"run": i + 1, "order": ["on" if m else "off" for m in order],
                        "off": off, "on": on,
                        "ratio_on_off": on["ops_per_s"] / off["ops_per_s"]
                        if off["ops_per_s"] else None})
    return results


def report(results: list[dict[str, Any]], meta: dict[str, Any],
           hook: dict[str, float]) -> tuple[str, dict[str, Any]]:
    med_off = statistics.median(r["off"]["ops_per_s"] for r in results)
    med_on = statistics.median(r["on"]["ops_per_s"] for r in results)
    ratios = [r["ratio_on_off"] for r in results if r["ratio_on_off"] is not None]
    cost = 1 - med_on / med_off if med_off else None
    summary = {"median_off_ops_per_s": med_off, "median_on_ops_per_s": med_on,
               "median_ratio_on_off": statistics.median(ratios) if ratios else None,
               "cost": cost, "goal": GOAL, "met": cost is not None and cost <= GOAL}
    lines = [
        "# What metrics cost: put throughput, 64 clients, `--metrics` on and off",
        "",
        f"{meta['when']} — {meta['machine']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"{meta['runs']} runs; each a fresh 3-member mesh cluster per mode, "
        f"{meta['clients']} clients, {meta['duration']:g} s measured after "
        f"{meta['warmup']:g} s warm-up; with metrics on, every member's /metrics scraped "
        f"every {meta['scrape_interval']:g} s during the run. Modes alternate in order.",
        "",
        "| run | order | off: puts/s | on: puts/s | on / off | off p99 ms | on p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['run']} | {' then '.join(r['order'])} | {r['off']['ops_per_s']:,.0f} | "
            f"{r['on']['ops_per_s']:,.0f} | {r['ratio_on_off']:.3f} | "
            f"{r['off']['p99_ms']:.2f} | {r['on']['p99_ms']:.2f} |")
    lines += [
        f"| **median** | | **{med_off:,.0f}** | **{med_on:,.0f}** | "
        f"**{summary['median_ratio_on_off']:.3f}** | | |",
        "",
        f"Cost of metrics (1 - median on / median off): **{cost * 100:.1f} %** "
        f"(goal: at most {GOAL * 100:.0f} %; "
        f"{'met' if summary['met'] else 'not met'}).",
        "",
    ]
    cpu_off = [r["off"]["server_cpu_us_per_op"] for r in results
               if r["off"]["server_cpu_us_per_op"]]
    cpu_on = [r["on"]["server_cpu_us_per_op"] for r in results
              if r["on"]["server_cpu_us_per_op"]]
    scrape_ms = [r["on"]["scrapes"]["median_ms"] for r in results
                 if r["on"]["scrapes"] and r["on"]["scrapes"]["median_ms"] is not None]
    summary["request_hook_us"] = hook["request_hook_us"]
    if cpu_off and cpu_on:
        m_off, m_on = statistics.median(cpu_off), statistics.median(cpu_on)
        summary["median_server_cpu_us_per_put"] = {"off": m_off, "on": m_on}
        lines += [
            f"Server CPU per put (3 members together), median: off {m_off:.0f} us, on "
            f"{m_on:.0f} us. The request hook itself (a dict update and a bisect per "
            f"request, measured in-process) costs {hook['request_hook_us']:.2f} us: "
            f"{hook['request_hook_us'] / (m_off / 3) * 100:.2f} % of one member's CPU per put.",
            ""]
    if scrape_ms:
        summary["median_scrape_ms"] = statistics.median(scrape_ms)
        lines += [f"One /metrics scrape took {statistics.median(scrape_ms):.1f} ms (median, "
                  "as the scraper saw it, under the load).", ""]
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--progress", action="store_true", help="Show a progress bar.")
    a = ap.parse_args(argv)
    exit_on_sigterm()
    spec = LoadSpec(ops="put", clients=a.clients, duration=a.duration, warmup=a.warmup)
    spec.validate()
    meta = {"when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(), "runs": a.runs, "clients": a.clients,
            "duration": a.duration, "warmup": a.warmup, "scrape_interval": a.scrape_interval,
            "command": "python benchmarks/metrics_cost.py " + " ".join(
                argv if argv is not None else sys.argv[1:])}
    hook = micro()
    results = asyncio.run(measure(a.runs, spec, a.scrape_interval, a.progress))
    text, summary = report(results, meta, hook)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "metrics-cost.md").write_text(text)
    (a.out / "metrics-cost.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "runs": results}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()

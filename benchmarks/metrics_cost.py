"""What metrics cost: put throughput at 64 clients with ``serve --metrics`` on and off.

    python benchmarks/metrics_cost.py [--runs 3] [--duration 10] [--clients 64]
        [--scrape-interval 15] [--sequential] [--out benchmarks/results]

Each run starts two fresh 3-member clusters (mesh transport, data in temp dirs), one
without ``--metrics`` and one with ``--metrics 127.0.0.1:0``, and drives both at the
same time with the same closed-loop put load, each from its own ``meshraft bench
--endpoints`` process (the load runner of ``meshraft bench`` and
benchmarks/compare.py), so whatever else a shared machine does hits both alike. Then,
as a control, two clusters *without* metrics run the same way: their ratio is the noise
floor a cost must stand out from. With metrics on, a scraper GETs every member's
``/metrics`` every ``--scrape-interval`` seconds (default 15 s, Prometheus's default;
one scrape costs a member about 2 ms of CPU, so 1 s scrapes show what heavy scraping
adds). ``--sequential`` runs the two modes one after the other instead (alternating
which goes first). Before the runs, the per-request cost of the metrics' request hook
is measured in-process.

The report gives every run's throughputs, on/off ratio and control ratio, the medians,
and the cost (1 - the median of the runs' on/off ratios; goal: at most 3 %), written to ``--out`` as
``metrics-cost-scrapeNs.md`` and ``.json`` (N: the scrape interval).

This script starts and stops only its own processes (by PID, in ``finally``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
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


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue
    return total


async def _bench_process(endpoints: list[tuple[str, int]], spec: LoadSpec) -> dict[str, Any]:
    """`meshraft bench --endpoints ... --json` in a process of its own."""
    argv = [sys.executable, "-m", "meshraft.cli", "bench", "--json", "--no-progress",
            "--endpoints", ",".join(f"{h}:{p}" for h, p in endpoints),
            "--clients", str(spec.clients), "--duration", str(spec.duration),
            "--warmup", str(spec.warmup), "--ops", "put"]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"meshraft bench failed ({proc.returncode}): {err.decode()[-2000:]}")
    return json.loads(out)


async def side_by_side(spec: LoadSpec, scrape_interval: float,
                       control: bool = False) -> dict[str, Any]:
    """Both clusters at once, each driven by its own `meshraft bench` process: whatever
    else the machine does hits both alike. ``control``: the second cluster runs without
    metrics too (an A/A pair: how far two identical clusters differ on this machine)."""
    on_args = [] if control else ["--metrics", "127.0.0.1:0"]
    async with LocalCluster(nodes=3, transport="mesh") as off_c, LocalCluster(
            nodes=3, transport="mesh", extra_args=on_args) as on_c:
        scrapes: dict[str, Any] = {"ok": 0, "failed": 0, "ms": [], "bytes": 0}
        addresses = [] if control else await _metrics_addresses(on_c.endpoints)
        scraper = asyncio.ensure_future(_scrape_loop(addresses, scrape_interval, scrapes))
        pids = {False: [p.pid for p in off_c.procs], True: [p.pid for p in on_c.procs]}
        cpu0 = {m: _cpu_seconds(pids[m]) for m in pids}
        try:
            r_off, r_on = await asyncio.gather(_bench_process(off_c.endpoints, spec),
                                               _bench_process(on_c.endpoints, spec))
        finally:
            scraper.cancel()
            await asyncio.gather(scraper, return_exceptions=True)
        cpu = {m: _cpu_seconds(pids[m]) - cpu0[m] for m in pids}
    out: dict[str, Any] = {}
    for metrics, r in ((False, r_off), (True, r_on)):
        done = r["ops"] + r.get("unfinished", 0)
        out[metrics] = {
            "metrics": metrics, "ops_per_s": r["ops_per_s"], "p50_ms": r["p50_ms"],
            "p99_ms": r["p99_ms"], "errors": r["errors"],
            # warm-up included on both sides: comparable, not absolute
            "server_cpu_us_per_op": cpu[metrics] / max(1, done) * 1e6 * spec.duration / (
                spec.duration + spec.warmup),
            "scrapes": {"ok": scrapes["ok"], "failed": scrapes["failed"],
                        "median_ms": statistics.median(scrapes["ms"]) if scrapes["ms"]
                        else None, "bytes": scrapes["bytes"]} if metrics else None}
        label = ("metrics off" if control else "metrics on ") if metrics else "metrics off"
        print(f"  {label}: {r['ops_per_s']:9,.0f} puts/s  p50 {r['p50_ms']:6.2f} ms  p99 "
              f"{r['p99_ms']:6.2f} ms  errors {r['errors']}", flush=True)
    return out


async def measure(runs: int, spec: LoadSpec, scrape_interval: float,
                  progress: bool, concurrent: bool = True) -> list[dict[str, Any]]:
    results = []
    for i in range(runs):
        if concurrent:
            print(f"run {i + 1}/{runs} (both clusters at once)", flush=True)
            by = await side_by_side(spec, scrape_interval)
            on, off = by[True], by[False]
            print("  control: two clusters without metrics, at once", flush=True)
            aa = await side_by_side(spec, scrape_interval, control=True)
            results.append({"run": i + 1, "order": ["at once"], "off": off, "on": on,
                            "ratio_on_off": on["ops_per_s"] / off["ops_per_s"]
                            if off["ops_per_s"] else None,
                            "control_ratio": aa[True]["ops_per_s"] / aa[False]["ops_per_s"]
                            if aa[False]["ops_per_s"] else None})
            continue
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
    # The cost from the runs' own ratios (each run's two clusters shared the machine's
    # moment), not from medians of different runs.
    cost = 1 - statistics.median(ratios) if ratios else None
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
        f"every {meta['scrape_interval']:g} s during the run. "
        + ("Both clusters run at once, each driven by its own `meshraft bench` process, "
           "so whatever else the machine does hits both alike; server CPU includes the "
           "warm-up (comparable between the two, not absolute)."
           if meta["mode"] == "at once" else "Modes alternate in order."),
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
        f"Cost of metrics (1 - the median of the runs' on/off ratios): **{cost * 100:.1f} %** "
        f"(goal: at most {GOAL * 100:.0f} %; "
        f"{'met' if summary['met'] else 'not met'}).",
        "",
    ]
    controls = [r["control_ratio"] for r in results if r.get("control_ratio")]
    if controls:
        summary["control_ratios"] = controls
        lines += [
            "Control (noise floor): in every run two clusters *without* metrics also ran "
            "side by side; the second's throughput over the first's was "
            + ", ".join(f"{c:.3f}" for c in controls)
            + f". A cost smaller than the spread of these ratios (here up to "
            f"{max(abs(1 - c) for c in controls) * 100:.0f} %) cannot be told from noise "
            "by throughput alone on this machine.", ""]
    cpu_off = [r["off"]["server_cpu_us_per_op"] for r in results
               if r["off"]["server_cpu_us_per_op"]]
    cpu_on = [r["on"]["server_cpu_us_per_op"] for r in results
              if r["on"]["server_cpu_us_per_op"]]
    scrape_ms = [r["on"]["scrapes"]["median_ms"] for r in results
                 if r["on"]["scrapes"] and r["on"]["scrapes"]["median_ms"] is not None]
    summary["request_hook_us"] = hook["request_hook_us"]
    if controls:
        summary["median_control_ratio"] = statistics.median(controls)
        lines += [f"Median control ratio: {statistics.median(controls):.3f} (the on/off "
                  f"median, {summary['median_ratio_on_off']:.3f}, is to be read against it).",
                  ""]
    if cpu_off and cpu_on:
        m_off, m_on = statistics.median(cpu_off), statistics.median(cpu_on)
        summary["median_server_cpu_us_per_put"] = {"off": m_off, "on": m_on}
        summary["cpu_cost"] = m_on / m_off - 1
        lines += [
            f"Server CPU per put (3 members together), median: off {m_off:.0f} us, on "
            f"{m_on:.0f} us: metrics cost **{(m_on / m_off - 1) * 100:+.1f} %** of the "
            "servers' CPU per put (CPU time is not shared out by the machine's other work "
            "the way throughput is, so it is the steadier measure here). The request "
            "hook itself (a dict update and a bisect per "
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
    ap.add_argument("--scrape-interval", type=float, default=15.0,
                    help="Seconds between scrapes of every member (Prometheus's default: 15).")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--progress", action="store_true", help="Show a progress bar.")
    ap.add_argument("--from-json", type=Path,
                    help="Write the report again from an earlier run's JSON (no runs).")
    ap.add_argument("--sequential", action="store_true",
                    help="One cluster after the other (default: both at once, each with "
                         "its own load generator process).")
    a = ap.parse_args(argv)
    if a.from_json is not None:
        saved = json.loads(a.from_json.read_text())
        text, summary = report(saved["runs"], saved["meta"],
                               {"request_hook_us": saved["summary"]["request_hook_us"]})
        saved["summary"] = summary
        a.from_json.with_suffix(".md").write_text(text)
        a.from_json.write_text(json.dumps(saved, indent=2) + "\n")
        print(text)
        return
    exit_on_sigterm()
    spec = LoadSpec(ops="put", clients=a.clients, duration=a.duration, warmup=a.warmup)
    spec.validate()
    meta = {"when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(), "runs": a.runs, "clients": a.clients,
            "duration": a.duration, "warmup": a.warmup, "scrape_interval": a.scrape_interval,
            "mode": "sequential" if a.sequential else "at once",
            "command": "python benchmarks/metrics_cost.py " + " ".join(
                argv if argv is not None else sys.argv[1:])}
    hook = micro()
    results = asyncio.run(measure(a.runs, spec, a.scrape_interval, a.progress,
                                  concurrent=not a.sequential))
    text, summary = report(results, meta, hook)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = f"metrics-cost-scrape{a.scrape_interval:g}s"
    (a.out / f"{stem}.md").write_text(text)
    (a.out / f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "runs": results}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()

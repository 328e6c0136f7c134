"""meshraft and etcd 3.4 side by side on the watch benchmark (issue 18's Measure).

    python benchmarks/compare.py --ops watch [--runs 3] [--duration 10] [--watchers 1000]
        [--rate 1000] [--watch-procs 4] [--systems meshraft-mesh,etcd]

(or ``python benchmarks/watch_compare.py`` with the same options). Each run starts
each system in turn (a fresh 3-member cluster on loopback), runs
:func:`meshraft.bench_watch.run_watch` against it with the same spec (meshraft through
its Python client's ``watch``, etcd through its JSON gateway's ``/v3/watch``, see
``watch_etcd.py``) and stops it; the order rotates between runs. The report gives
the median of the runs for every number, every run's ratio, and is written to
``--out`` as ``watch-TAG.md`` and ``watch-TAG.json`` (``--tag``, default ``latest``).

This script starts and stops only its own processes (by PID, in ``finally``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

import etcd_driver
import watch_etcd

from meshraft.bench import BenchError, LocalCluster, exit_on_sigterm, machine_description
from meshraft.bench_watch import MESHRAFT_DRIVER, WatchResult, WatchSpec, format_watch, run_watch

log = logging.getLogger("bench.watch_compare")
HERE = Path(__file__).resolve().parent
SYSTEMS = ("meshraft-mesh", "meshraft-udp", "etcd")
METRICS = ("put_rate", "deliveries_per_s", "required_deliveries_per_s", "p50_ms", "p99_ms",
           "max_ms", "p50_from_send_ms", "p99_from_send_ms", "missing",
           "idle_bytes_per_watcher", "members_cpu_s", "workers_cpu_s")


async def run_system(system: str, spec: WatchSpec, progress: bool) -> WatchResult:
    if system.startswith("meshraft-"):
        transport = system.split("-", 1)[1]
        async with LocalCluster(nodes=3, transport=transport) as c:
            return await run_watch(MESHRAFT_DRIVER, c.endpoints, spec, system=system,
                                   member_pids=[p.pid for p in c.procs], progress=progress)
    if system == "etcd":
        async with etcd_driver.EtcdCluster(nodes=3) as c:
            r = await run_watch(watch_etcd.ETCD_DRIVER, c.endpoints, spec, system=system,
                                member_pids=[p.pid for p in c.procs], progress=progress)
            r.extra["version"] = c.version
            return r
    raise BenchError(f"unknown system {system!r}")


def flat(r: dict[str, Any]) -> dict[str, float]:
    """The numbers of one run that the report takes medians of."""
    out = {m: float(r.get(m) or 0.0) for m in METRICS if m in r}
    cpu = r.get("cpu", {})
    out["members_cpu_s"] = sum(c or 0.0 for c in cpu.get("members_s", []) or [])
    out["workers_cpu_s"] = sum(c or 0.0 for c in cpu.get("workers_s", []) or [])
    out["window_s"] = float(cpu.get("window_s", r.get("duration_s", 0.0)))
    out["members_us_per_delivery"] = float(cpu.get("members_us_per_delivery") or 0.0)
    out["workers_us_per_delivery"] = float(cpu.get("workers_us_per_delivery") or 0.0)
    out["machine_busy_cores"] = float(cpu.get("machine_busy_cores") or 0.0)
    out["ours_cores"] = float(cpu.get("total_cores") or 0.0)
    return out


def medians(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, float]]] = {}
    for r in results:
        groups.setdefault(r["system"], []).append(flat(r))
    return {s: {m: statistics.median(x[m] for x in rs) for m in rs[0]} | {"runs": len(rs)}
            for s, rs in groups.items()}


def ratio_rows(results: list[dict[str, Any]], main: str) -> list[tuple[str, str, str, str]]:
    """(what, ratio of the medians, per-run ratios median (min-max), goal)."""
    med = medians(results)
    rows: list[tuple[str, str, str, str]] = []
    by_run = {(r["run"], r["system"]): flat(r) for r in results}
    runs = sorted({r["run"] for r in results})

    def add(what: str, m: str, goal: str) -> None:
        a, b = med.get(main, {}).get(m), med.get("etcd", {}).get(m)
        if not a or not b:
            return
        per = [by_run[(k, main)][m] / by_run[(k, "etcd")][m] for k in runs
               if (k, main) in by_run and (k, "etcd") in by_run and by_run[(k, "etcd")][m]]
        spread = (f"{statistics.median(per):.2f}x ({min(per):.2f}-{max(per):.2f}); runs: "
                  + ", ".join(f"{x:.2f}" for x in per)) if per else ""
        rows.append((what, f"{a / b:.2f}x", spread, goal))

    add(f"delivered events/s: {main} / etcd", "deliveries_per_s", ">= 1.0x")
    add(f"acknowledged puts/s: {main} / etcd", "put_rate", "(info)")
    add(f"event latency p99 from ack: {main} / etcd", "p99_ms", "(info; goal p99 <= 50 ms)")
    add(f"member RSS per idle watcher: {main} / etcd", "idle_bytes_per_watcher", "(info)")
    add(f"member CPU per delivery: {main} / etcd", "members_us_per_delivery", "(info)")
    return rows


def main_system(systems: list[str]) -> str:
    """The meshraft system the ratios are about: the first one asked for."""
    return next((s for s in systems if s != "etcd"), "meshraft-mesh")


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    med = medians(results)
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; median of {meta['runs']} runs, "
        f"{meta['duration']:g} s measured after {meta['warmup']:g} s warmup; 3 members, "
        f"{meta['watchers']} watchers on one prefix (one connection each, spread over the "
        f"members and {meta['watch_procs']} worker processes), {meta['rate']:g} puts/s "
        f"offered by {meta['writers']} writer connections, 100-byte values.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| system | puts/s | delivered events/s | needed events/s | p50 ms | p99 ms | max ms "
        "| p50/p99 ms from send | missing | KiB RSS per idle watcher | CPU s members "
        "| CPU s watch workers | window s | CPU µs/delivery: members / watch workers "
        "| cores: ours / machine busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in meta["systems"]:
        m = med.get(s)
        if m is None:
            continue
        lines.append(
            f"| {s} | {m['put_rate']:,.0f} | {m['deliveries_per_s']:,.0f} | "
            f"{m['required_deliveries_per_s']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
            f"{m['max_ms']:.1f} | {m['p50_from_send_ms']:.2f} / {m['p99_from_send_ms']:.2f} | "
            f"{m['missing']:.0f} | {m['idle_bytes_per_watcher'] / 1024:,.1f} | "
            f"{m['members_cpu_s']:.1f} | {m['workers_cpu_s']:.1f} | {m['window_s']:.1f} | "
            f"{m['members_us_per_delivery']:.1f} / {m['workers_us_per_delivery']:.1f} | "
            f"{m['ours_cores']:.2f} / {m['machine_busy_cores']:.2f} |")
    rows = ratio_rows(results, main_system(meta["systems"]))
    if rows:
        lines += ["", "| target | ratio of the medians | per-run ratios: median (min-max); "
                  "each run | goal |", "|---|---:|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [""]
    for r in results:
        lines.append(f"Run {r['run'] + 1}:")
        lines.append("")
        lines += ["    " + line for line in format_watch(
            WatchResult(**{k: v for k, v in r.items() if k != "run"})).splitlines()]
        lines.append("")
    if meta.get("versions"):
        lines += ["", "Versions: " + ", ".join(f"{k} {v}"
                                               for k, v in sorted(meta["versions"].items()))]
    for f in meta.get("failures", []):
        lines.append(f"FAILED: {f}")
    return "\n".join(lines) + "\n"


async def compare(a: argparse.Namespace, command: str) -> None:
    spec = WatchSpec(watchers=a.watchers, rate=a.rate, duration=a.duration, warmup=a.warmup,
                     procs=a.watch_procs, writers=a.writers)
    spec.validate()
    systems = [s for s in a.systems.split(",") if s]
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    versions: dict[str, str] = {}
    for run in range(a.runs):
        order = systems[run % len(systems):] + systems[:run % len(systems)]
        print(f"run {run + 1}/{a.runs}: {', '.join(order)}", flush=True)
        for system in order:
            try:
                r = await run_system(system, spec, a.progress)
            except (BenchError, OSError) as exc:
                failures.append(f"run {run + 1}: {system} failed: {exc}")
                print("  " + failures[-1], flush=True)
                continue
            if "version" in r.extra:
                versions[system] = str(r.extra["version"])
            d = r.to_dict()
            d["run"] = run
            results.append(d)
            print("\n".join("  " + line for line in format_watch(r).splitlines()), flush=True)
    meta = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(), "runs": a.runs, "duration": a.duration,
            "warmup": a.warmup, "watchers": a.watchers, "rate": a.rate,
            "watch_procs": a.watch_procs, "writers": a.writers, "systems": systems,
            "command": command, "versions": versions, "failures": failures}
    write_report(results, meta, a.out, a.tag)


def write_report(results: list[dict[str, Any]], meta: dict[str, Any], out: Path,
                 tag: str) -> None:
    table = markdown(results, meta)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"watch-{tag}.md").write_text(table)
    (out / f"watch-{tag}.json").write_text(json.dumps(
        {"meta": meta, "results": results, "medians": medians(results),
         "ratios": ratio_rows(results, main_system(meta["systems"]))}, indent=1))
    print()
    print(table)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", choices=["watch"], default="watch")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--watch-procs", type=int, default=4)
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--systems", default="meshraft-mesh,etcd")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--tag", default="latest",
                    help="the report goes to OUT/watch-TAG.md and OUT/watch-TAG.json")
    ap.add_argument("--progress", action="store_true", help="progress bars on stderr")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="measure nothing: redo the report from a watch-latest.json")
    a = ap.parse_args(argv)
    for s in a.systems.split(","):
        if s and s not in SYSTEMS:
            ap.error(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    if not 1 <= a.runs <= 50:
        ap.error("--runs must be between 1 and 50")
    if a.from_json is not None:
        doc = json.loads(a.from_json.read_text())
        write_report(doc["results"], doc["meta"], a.out, a.tag)
        return
    args = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/compare.py --ops watch " + " ".join(
        x for x in args if x not in ("--ops", "watch"))
    exit_on_sigterm()
    try:
        asyncio.run(compare(a, command.strip()))
    except BenchError as exc:
        sys.exit(f"watch_compare: {exc}")


if __name__ == "__main__":
    main()

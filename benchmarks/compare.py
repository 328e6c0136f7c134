"""meshraft, etcd 3.4 and PySyncObj side by side: the same load, one machine, one run.

    python benchmarks/compare.py [--runs 3] [--duration 10] [--clients 64]
        [--systems meshraft-mesh,meshraft-udp,etcd,pysyncobj] [--workloads put,get,seq-put]
    python benchmarks/compare.py --ops watch [...]   (watchers: see watch_compare.py)

Each run starts every system in turn (a fresh 3-node cluster on loopback, data in a
temp dir), drives each workload through :func:`meshraft.bench.run_load` (the same
closed-loop runner, keys, values and percentiles for all) and stops the cluster. The
system order rotates between runs so slow drift on a shared machine does not always
hit the same system. The report gives the median of the runs for every number and
the target ratios of the benchmark issue, and is written to ``--out``:
``latest.md`` (table), ``latest.json`` (every run), ``latest.png`` (bar chart); the
table is also put into benchmarks/README.md between its markers.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Siblings in benchmarks/: a script's own dir is on sys.path, and pytest adds
# benchmarks/ (pyproject's pythonpath) for the tests that import them.
import etcd_driver
import pysyncobj_frontend

from meshraft.bench import (
    BenchError,
    BenchResult,
    LoadSpec,
    LocalCluster,
    Progress,
    exit_on_sigterm,
    machine_description,
    meshraft_factory,
    run_load,
)

log = logging.getLogger("bench.compare")
HERE = Path(__file__).resolve().parent

SYSTEMS = ("meshraft-mesh", "meshraft-udp", "etcd", "pysyncobj")
WORKLOADS = {
    # name: (ops, clients or None for --clients)
    "put": ("put", None),
    "get": ("get", None),
    "seq-put": ("put", 1),
    "sget": ("serializable-get", None),
    "mixed": ("mixed", None),
}
METRICS = ("ops_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors", "cpu_us_per_op")
BEGIN, END = "<!-- latest-results:begin -->", "<!-- latest-results:end -->"


@dataclass
class Options:
    from_json: Path | None
    runs: int
    duration: float
    warmup: float
    clients: int
    systems: list[str]
    workloads: list[str]
    out: Path
    readme: Path | None
    pysyncobj_batch: bool
    progress: bool
    command: str


async def _run_system(system: str, opts: Options) -> list[BenchResult]:
    """Start one system, run every workload against it, stop it."""
    results: list[BenchResult] = []

    async def drive(factory, extra: dict[str, Any], pids: list[int]) -> None:
        for wl in opts.workloads:
            ops, clients = WORKLOADS[wl]
            spec = LoadSpec(ops=ops, clients=clients or opts.clients, duration=opts.duration,
                            warmup=opts.warmup)
            bar = Progress(spec.warmup + spec.duration, f"{system:13s} {wl:8s}",
                           enabled=opts.progress)
            r = await run_load(factory, spec, system=system, progress=bar, nodes=3,
                               cpu_pids=pids)
            r.extra = {"workload": wl, **extra, **r.extra}
            results.append(r)
            print(f"  {system:13s} {wl:8s} {r.ops_per_s:9,.0f} ops/s  p50 {r.p50_ms:7.2f} ms  "
                  f"p99 {r.p99_ms:7.2f} ms  errors {r.errors}  server CPU "
                  f"{r.extra.get('server_cpu_us_per_op', 0):6.0f} us/op", flush=True)

    if system.startswith("meshraft-"):
        transport = system.split("-", 1)[1]
        async with LocalCluster(nodes=3, transport=transport) as c:
            await drive(meshraft_factory(c.endpoints), {"transport": transport},
                        [p.pid for p in c.procs])
    elif system == "etcd":
        async with etcd_driver.EtcdCluster(nodes=3) as c:
            await drive(etcd_driver.client_factory(c.endpoints), {"version": c.version},
                        [p.pid for p in c.procs])
    elif system == "pysyncobj":
        async with pysyncobj_frontend.PySyncObjCluster(nodes=3, batch=opts.pysyncobj_batch) as c:
            await drive(pysyncobj_frontend.client_factory(c.endpoints),
                        {"version": c.version, "batch": opts.pysyncobj_batch},
                        [p.pid for p in c.procs])
    else:
        raise BenchError(f"unknown system {system!r}")
    return results


def median_table(all_results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """(system, workload) -> median of each metric over the runs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in all_results:
        groups.setdefault((r["system"], r["extra"]["workload"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        for r in rs:
            r["cpu_us_per_op"] = r["extra"].get("server_cpu_us_per_op", 0.0)
        out[key] = {m: statistics.median(float(r[m]) for r in rs) for m in METRICS}
        out[key]["runs"] = len(rs)
    return out


def ratios(med: dict[tuple[str, str], dict[str, float]], main: str,
           results: list[dict[str, Any]] | None = None) -> list[tuple[str, str, str, str]]:
    """The issue's targets as (what, ratio of the medians, the per-run ratios as
    "median (min-max)", goal) rows, where the numbers exist. Per-run ratios pair the
    two systems' numbers from the same run, i.e. from neighbouring minutes."""
    rows: list[tuple[str, str, str, str]] = []
    by_run: dict[tuple[int, str, str], dict[str, Any]] = {}
    for r in results or []:
        by_run[(r["run"], r["system"], r["extra"]["workload"])] = r

    def get(system: str, wl: str, m: str) -> float | None:
        v = med.get((system, wl), {}).get(m)
        return v if v else None

    def per_run(a: tuple[str, str], b: tuple[str, str], m: str) -> str:
        vals = []
        for run in sorted({k[0] for k in by_run}):
            x, y = by_run.get((run, *a)), by_run.get((run, *b))
            if x is not None and y is not None:
                xv = x["extra"].get("server_cpu_us_per_op") if m == "cpu_us_per_op" else x[m]
                yv = y["extra"].get("server_cpu_us_per_op") if m == "cpu_us_per_op" else y[m]
                if xv and yv:
                    vals.append(xv / yv)
        if not vals:
            return ""
        return f"{statistics.median(vals):.2f}x ({min(vals):.2f}-{max(vals):.2f})"

    def add(what: str, a: tuple[str, str], b: tuple[str, str], m: str, goal: str) -> None:
        x, y = get(*a, m), get(*b, m)
        if x is not None and y is not None:
            rows.append((what, f"{x / y:.2f}x", per_run(a, b, m), goal))

    add(f"put throughput, 64 clients: {main} / etcd",
        (main, "put"), ("etcd", "put"), "ops_per_s", ">= 1.0x")
    add(f"linearizable get throughput, 64 clients: {main} / etcd",
        (main, "get"), ("etcd", "get"), "ops_per_s", ">= 1.0x")
    add(f"sequential put p50: {main} / etcd",
        (main, "seq-put"), ("etcd", "seq-put"), "p50_ms", "<= 1.5x")
    add(f"put throughput, 64 clients: {main} / PySyncObj",
        (main, "put"), ("pysyncobj", "put"), "ops_per_s", "> 1.0x")
    add(f"put p99, 64 clients: {main} / PySyncObj",
        (main, "put"), ("pysyncobj", "put"), "p99_ms", "< 1.0x")
    add("put throughput, 64 clients: mesh / udp transport",
        ("meshraft-mesh", "put"), ("meshraft-udp", "put"), "ops_per_s", ">= 0.8x")
    # Not targets, but what explains them on a shared machine: CPU spent per operation.
    add(f"server CPU per put, 64 clients: {main} / etcd",
        (main, "put"), ("etcd", "put"), "cpu_us_per_op", "(info)")
    add(f"server CPU per linearizable get, 64 clients: {main} / etcd",
        (main, "get"), ("etcd", "get"), "cpu_us_per_op", "(info)")
    return rows


def markdown(med: dict[tuple[str, str], dict[str, float]], meta: dict[str, Any],
             results: list[dict[str, Any]] | None = None) -> str:
    systems = [s for s in meta["systems"] if any(k[0] == s for k in med)]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; median of {meta['runs']} runs, "
        f"{meta['duration']:g} s each after {meta['warmup']:g} s warmup; 3 nodes, "
        f"16-byte keys, 100-byte values.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| system | workload | clients | ops/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| server CPU µs/op |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for wl in meta["workloads"]:
        clients = WORKLOADS[wl][1] or meta["clients"]
        for s in systems:
            m = med.get((s, wl))
            if m is None:
                continue
            lines.append(
                f"| {s} | {wl} | {clients} | {m['ops_per_s']:,.0f} | {m['p50_ms']:.2f} | "
                f"{m['p90_ms']:.2f} | {m['p99_ms']:.2f} | {m['max_ms']:.1f} | "
                f"{m['errors']:.0f} | {m['cpu_us_per_op']:,.0f} |")
    rs = ratios(med, "meshraft-mesh", results)
    if rs:
        lines += ["", "| target | ratio of the medians | per-run ratios: median (min-max) "
                  "| goal |", "|---|---:|---:|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rs]
    versions = meta.get("versions", {})
    if versions:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))]
    return "\n".join(lines) + "\n"


def chart(med: dict[tuple[str, str], dict[str, float]], meta: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in meta["systems"] if any(k[0] == s for k in med)]
    colors = {"meshraft-mesh": "#1f77b4", "meshraft-udp": "#6baed6", "etcd": "#2ca02c",
              "pysyncobj": "#ff7f0e"}
    panels = []
    for wl in meta["workloads"]:
        clients = WORKLOADS[wl][1] or meta["clients"]
        if wl == "seq-put":
            panels.append((wl, "sequential put latency (1 client), ms", ["p50_ms", "p99_ms"]))
        else:
            label = {"get": "linearizable get", "sget": "serializable get"}.get(wl, wl)
            panels.append((wl, f"{label}, {clients} clients: ops/s", ["ops_per_s"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (wl, title, metrics) in zip(axes[0], panels, strict=True):
        width = 0.8 / len(metrics)
        for j, m in enumerate(metrics):
            xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(systems))]
            ys = [med.get((s, wl), {}).get(m, 0.0) for s in systems]
            bars = ax.bar(xs, ys, width=width, color=[colors.get(s, "grey") for s in systems],
                          alpha=1.0 if j == 0 else 0.55, edgecolor="black", linewidth=0.5,
                          label=m.replace("_ms", ""))
            ax.bar_label(bars, labels=[f"{y:,.0f}" if m == "ops_per_s" else f"{y:.2f}"
                                       for y in ys], fontsize=7)
        ax.set_xticks(range(len(systems)), systems, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
        if len(metrics) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(f"meshraft vs etcd vs PySyncObj — 3 nodes, median of {meta['runs']} runs "
                 f"({meta['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(readme: Path, table: str) -> None:
    text = readme.read_text() if readme.exists() else ""
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Latest results\n\n" + block + "\n"
    readme.write_text(text)


async def compare(opts: Options) -> dict[str, Any]:
    all_results: list[dict[str, Any]] = []
    failures: list[str] = []
    versions: dict[str, str] = {}
    for run in range(opts.runs):
        order = opts.systems[run % len(opts.systems):] + opts.systems[:run % len(opts.systems)]
        print(f"run {run + 1}/{opts.runs}: {', '.join(order)}", flush=True)
        for system in order:
            try:
                for r in await _run_system(system, opts):
                    d = r.to_dict()
                    d["run"] = run
                    all_results.append(d)
                    if "version" in r.extra:
                        versions[system] = str(r.extra["version"])
            except (BenchError, OSError) as exc:
                msg = f"run {run + 1}: {system} failed: {exc}"
                failures.append(msg)
                print("  " + msg, flush=True)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"date": date, "machine": machine_description(), "runs": opts.runs,
            "duration": opts.duration, "warmup": opts.warmup, "clients": opts.clients,
            "systems": opts.systems, "workloads": opts.workloads, "command": opts.command,
            "versions": versions, "failures": failures,
            "pysyncobj_batch": opts.pysyncobj_batch}
    return write_report(all_results, meta, opts.out, opts.readme)


def write_report(all_results: list[dict[str, Any]], meta: dict[str, Any], out: Path,
                 readme: Path | None) -> dict[str, Any]:
    """Medians, the markdown table, latest.json, the chart and the README block."""
    med = median_table(all_results)
    table = markdown(med, meta, all_results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(table)
    (out / "latest.json").write_text(json.dumps(
        {"meta": meta, "results": all_results,
         "medians": [{"system": s, "workload": w, **m} for (s, w), m in sorted(med.items())],
         "ratios": ratios(med, "meshraft-mesh", all_results)}, indent=1))
    if med:
        chart(med, meta, out / "latest.png")
    if readme is not None:
        update_readme(readme, table)
    print()
    print(table)
    for f in meta.get("failures", []):
        print("FAILED: " + f)
    return {"meta": meta, "medians": med}


def parse_args(argv: list[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--workloads", default="put,get,seq-put")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--readme", type=Path, default=HERE / "README.md")
    ap.add_argument("--no-readme", action="store_true", help="do not touch the README")
    ap.add_argument("--pysyncobj-batch", action="store_true",
                    help="appendEntriesUseBatch=True (default off: its best configuration)")
    ap.add_argument("--progress", action="store_true", help="progress bars on stderr")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="measure nothing: redo the report from a latest.json")
    a = ap.parse_args(argv)
    systems = [s for s in a.systems.split(",") if s]
    workloads = [w for w in a.workloads.split(",") if w]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    if not 1 <= a.runs <= 50:
        ap.error("--runs must be between 1 and 50")
    command = "python benchmarks/compare.py " + " ".join(argv if argv is not None
                                                          else sys.argv[1:])
    return Options(from_json=a.from_json, runs=a.runs, duration=a.duration, warmup=a.warmup,
                   clients=a.clients,
                   systems=systems, workloads=workloads, out=a.out,
                   readme=None if a.no_readme else a.readme,
                   pysyncobj_batch=a.pysyncobj_batch, progress=a.progress,
                   command=command.strip())


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    if "--ops=watch" in raw or ["--ops", "watch"] in (raw[i:i + 2] for i in range(len(raw))):
        import watch_compare  # the watch benchmark: its own options and report (issue 18)

        watch_compare.main(raw)
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    opts = parse_args(argv)
    if opts.from_json is not None:
        doc = json.loads(opts.from_json.read_text())
        write_report(doc["results"], doc["meta"], opts.out, opts.readme)
        return
    exit_on_sigterm()
    asyncio.run(compare(opts))


if __name__ == "__main__":
    main()

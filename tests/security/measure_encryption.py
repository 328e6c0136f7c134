"""The cost of the mesh password, measured in one run (not a test; run by hand).

    python tests/security/measure_encryption.py [--runs 3] [--duration 5]

Each run measures, without and then with a password, interleaved so that load
changes on this shared machine hit both alike:

- MeshPacketConn round trips/s: one 100-byte datagram in flight between two
  processes (cmd/meshping.py, as ``benchmarks/mesh_bench.py ping`` runs it);
- 3-node put throughput: a local cluster of ``meshraft serve`` (mesh transport,
  ``--password-file`` or not) under ``put`` load from ``meshraft.bench`` (the
  code behind ``meshraft bench``; 64 clients, 100-byte values).

It prints the median of the runs for each, and the ratio. Throughput on a busy
shared machine is noisy; the CPU cost per operation (the pinger's CPU per round
trip; the three servers' CPU per put) is the steadier measure of what the
encryption costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Run by hand as a script: benchmarks/ is a directory of scripts (not an installed
# package; pytest adds it through pyproject's pythonpath, a script cannot), so its
# mesh_bench is found through the path.
sys.path.insert(0, str(ROOT / "benchmarks"))

from mesh_bench import MESHPING, PY, Procs, responder, run_json  # noqa: E402

from meshraft.bench import LoadSpec, LocalCluster, meshraft_factory, run_load  # noqa: E402


def ping(password_file: str | None, duration: float) -> tuple[float, float]:
    procs = Procs()
    try:
        target = responder(procs, "mesh", password_file)
        r = run_json([PY, MESHPING, *target, "--flood", "--duration", str(duration),
                      "--size", "100", "--json"], timeout=duration + 30)
    finally:
        procs.stop_all()
    return r["round_trips_per_s"], r["cpu_us_per_rt"]


async def puts(password_file: str | None, spec: LoadSpec) -> tuple[float, float]:
    extra = ["--password-file", password_file] if password_file else []
    async with LocalCluster(nodes=3, transport="mesh", extra_args=extra) as cluster:
        res = await run_load(meshraft_factory(cluster.endpoints, spec.op_timeout), spec,
                             system="meshraft-mesh", nodes=3, transport="mesh",
                             cpu_pids=[p.pid for p in cluster.procs])
    return res.ops_per_s, res.extra.get("server_cpu_us_per_op", float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=64)
    args = ap.parse_args()
    spec = LoadSpec(ops="put", clients=args.clients, duration=args.duration, warmup=1.0)
    got: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        pw = Path(d) / "pw"
        pw.write_text("measure the cost of encryption\n")
        for _ in range(args.runs):
            for name, f in (("no password", None), ("password", str(pw))):
                rate, cpu = ping(f, args.duration)
                got.setdefault(f"rt/s {name}", []).append(rate)
                got.setdefault(f"cpu us/rt {name}", []).append(cpu)
                rate, cpu = asyncio.run(puts(f, spec))
                got.setdefault(f"puts/s {name}", []).append(rate)
                got.setdefault(f"server cpu us/put {name}", []).append(cpu)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(json.dumps({k: [round(x) for x in v] for k, v in got.items()}))
    med = {k: statistics.median(v) for k, v in got.items()}
    print(f"median of {args.runs} runs, {args.duration:g}s each (load at the end {load}):")
    labels = {"rt/s": "MeshPacketConn round trips/s (100 B)",
              "cpu us/rt": "  pinger CPU us per round trip",
              "puts/s": f"3-node puts/s ({args.clients} clients)",
              "server cpu us/put": "  3 servers' CPU us per put"}
    for what, label in labels.items():
        a, b = med[f"{what} no password"], med[f"{what} password"]
        print(f"  {label:40} no password {a:8.0f}   password {b:8.0f}   ratio {b / a:.2f}")


if __name__ == "__main__":
    main()

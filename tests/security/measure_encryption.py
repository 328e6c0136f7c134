"""The cost of the mesh password, measured in one run (not a test; run by hand).

    python tests/security/measure_encryption.py [--runs 3] [--duration 5]

Interleaves, run by run, a 3-node cluster without and with ``--password-file``
(so load changes on the machine hit both alike), drives ``put`` load through
``meshraft.bench`` (the same code as ``meshraft bench``), and prints the median
ops/s of each. The MeshPacketConn round-trip rate with and without a password is
``python benchmarks/mesh_bench.py ping --runs 3`` (the mesh helper's benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
from pathlib import Path

from meshraft.bench import LoadSpec, LocalCluster, meshraft_factory, run_load


async def one(password_file: str | None, spec: LoadSpec) -> float:
    extra = ["--password-file", password_file] if password_file else []
    async with LocalCluster(nodes=3, transport="mesh", extra_args=extra) as cluster:
        res = await run_load(meshraft_factory(cluster.endpoints, spec.op_timeout), spec,
                             system="meshraft-mesh", nodes=3, transport="mesh")
    return res.ops_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=64)
    args = ap.parse_args()
    spec = LoadSpec(ops="put", clients=args.clients, duration=args.duration, warmup=1.0)
    with tempfile.TemporaryDirectory() as d:
        pw = Path(d) / "pw"
        pw.write_text("measure the cost of encryption\n")
        got: dict[str, list[float]] = {"no password": [], "password": []}
        for _ in range(args.runs):
            for name, f in (("no password", None), ("password", str(pw))):
                got[name].append(asyncio.run(one(f, spec)))
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(json.dumps({k: {"runs": [round(x) for x in v], "median": round(statistics.median(v))}
                      for k, v in got.items()}))
    base, enc = (statistics.median(got[k]) for k in ("no password", "password"))
    print(f"3-node put ops/s, {args.clients} clients, {args.duration:g}s, median of "
          f"{args.runs} (load {load}): no password {base:.0f}, password {enc:.0f} "
          f"({enc / base:.2f}x)")


if __name__ == "__main__":
    main()

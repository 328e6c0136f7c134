"""Sequential put latency: one client, one put at a time, against a fresh 3-node
local cluster; prints p50/p99 (nearest rank) per endpoint kind.

    python benchmarks/seq_put.py [--puts 1000] [--transport mesh|udp] [--runs 3]

Each run starts a new cluster, warms up with 50 puts, then times --puts puts of a
100-byte value through the leader's client port and through a follower's."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from meshraft.kv.client import Client
from meshraft.localcluster import LocalCluster, plan_members


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def measure(endpoint: str, n: int, prefix: str) -> list[float]:
    value = b"v" * 100
    with Client([endpoint]) as c:
        for i in range(50):
            c.put(f"warm-{prefix}-{i}", value)
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            c.put(f"{prefix}-{i:06d}", value)
            lat.append(time.perf_counter() - t0)
    return sorted(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--puts", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--transport", choices=["mesh", "udp"], default="mesh")
    args = ap.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"leader": [], "follower": []}
    for run in range(args.runs):
        with (tempfile.TemporaryDirectory(prefix="meshraft-bench-",
                                          ignore_cleanup_errors=True) as root,
              LocalCluster(plan_members(3), Path(root), transport=args.transport,
                           extra_args=["--log-level", "warning"], new_session=False) as cl):
            leader = asyncio.run(cl.wait_leader())
            follower = next(i for i in cl.ids if i != leader)
            for kind, node in (("leader", leader), ("follower", follower)):
                lat = measure(cl.member(node).client, args.puts, f"{kind}{run}")
                p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
                results[kind].append((p50, p99))
                print(f"run {run + 1}: {args.puts} sequential puts via the {kind}: "
                      f"p50 {p50:.2f} ms  p99 {p99:.2f} ms", flush=True)
    for kind, rs in results.items():
        print(f"{kind:8s} median over {len(rs)} runs: p50 "
              f"{statistics.median(r[0] for r in rs):.2f} ms, p99 "
              f"{statistics.median(r[1] for r in rs):.2f} ms ({args.transport})")


if __name__ == "__main__":
    main()

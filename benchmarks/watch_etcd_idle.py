"""A control for the watch comparison: does etcd's JSON gateway slow writes because of
the watchers, or because of what it delivers to them?

    python benchmarks/watch_etcd_idle.py [--watchers 1000] [--rate 1000] [--duration 5]

Runs the watch benchmark's setup against a fresh etcd 3.4 cluster (watchers on the
prefix, the marker that proves them live), then sends the writer's puts to keys
*outside* the prefix, so the watchers stay idle. Compare its puts/s with the writer's
in ``watch_compare.py``'s etcd runs (1,000 watchers: ~996 puts/s here against 14-16
with every put delivered; see results/WATCH.md). Only the writer's keys differ; it
starts and stops only its own processes.
"""

from __future__ import annotations

import argparse
import asyncio

import etcd_driver
import watch_etcd

from meshraft.bench_watch import WatchSpec, run_watch


class OtherPrefixDriver(watch_etcd.EtcdWatchDriver):
    """etcd's watch driver whose writer puts under ``elsewhere/`` (except the marker)."""

    async def put(self, writer: int, key: bytes, value: bytes) -> int:
        if key.startswith(WatchSpec.prefix) and not key.endswith(b"_sync"):
            key = b"elsewhere/" + key
        return await super().put(writer, key, value)


async def main(a: argparse.Namespace) -> None:
    spec = WatchSpec(watchers=a.watchers, rate=a.rate, duration=a.duration, warmup=0.5,
                     procs=a.watch_procs, drain=0.5)
    async with etcd_driver.EtcdCluster(nodes=3) as c:
        r = await run_watch("watch_etcd_idle:OtherPrefixDriver", c.endpoints, spec,
                            system="etcd (idle watchers)",
                            member_pids=[p.pid for p in c.procs])
    print(f"etcd {c.version}, {a.watchers} idle watchers: {r.put_rate:,.0f} puts/s of "
          f"{a.rate:g} offered, writer lag max {r.put_lag_ms_max:.1f} ms, members CPU "
          f"{r.cpu.get('members_s')} s in {r.cpu.get('window_s')} s, machine busy "
          f"{r.cpu.get('machine_busy_cores')} cores")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--watch-procs", type=int, default=4)
    asyncio.run(main(ap.parse_args()))

"""Memory of the members under a long write load, with and without history retention.

    python benchmarks/history_memory.py [--puts 1000000] [--keys 1000] [--time-cap 600]
        [--retention 10000] [--workers 2] [--transport udp] [--out FILE.md]

Starts a real 3-member local cluster (``meshraft.localcluster``) twice: once with
``--auto-compact-retention 0`` (history is never compacted: every version of every
key stays) and once with ``--auto-compact-retention N``. Each time, ``--workers``
client processes (each an ``AsyncClient`` with 64 writes in flight) put ``--puts``
values (``--value-size`` bytes) on ``--keys`` keys; the members' RSS (VmRSS from
/proc/PID/status) is sampled at every tenth of the puts and printed with the
store's revision and compaction point. A run stops at ``--time-cap`` seconds if the
puts are not done by then, and says how far it got. This is a measuring tool: it
asserts nothing; results go to stdout (and ``--out``, markdown).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from meshraft.kv.client import AsyncClient, MeshraftError
from meshraft.localcluster import LocalCluster, member_status, plan_members

IN_FLIGHT = 64  # per client process: what one client id may have in flight


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def worker(endpoints: str, first: int, count: int, keys: int, value_size: int,
           done: Any, failed: Any, stop_at: float) -> None:
    """Put ``count`` values (numbers first.. first+count) on the keys; add to ``done``
    (and to ``failed`` for a put that ended in an error: counted, and the load goes on)."""

    async def run() -> None:
        value = b"v" * value_size
        async with AsyncClient(endpoints, timeout=30) as c:
            next_i = first
            end = first + count

            async def one_lane() -> None:
                nonlocal next_i
                batch = 0
                while next_i < end and time.time() < stop_at:
                    i = next_i
                    next_i += 1
                    try:
                        await c.put(b"key-%06d" % (i % keys), value)
                    except MeshraftError:  # e.g. outcome unknown after a long stall
                        with failed.get_lock():
                            failed.value += 1
                        continue
                    batch += 1
                    if batch == 100:
                        with done.get_lock():
                            done.value += batch
                        batch = 0
                with done.get_lock():
                    done.value += batch

            await asyncio.gather(*(one_lane() for _ in range(IN_FLIGHT)))

    asyncio.run(run())


async def statuses(cluster: LocalCluster) -> dict[str, dict[str, Any] | None]:
    return {m: await member_status(cluster.member(m).client, 2.0) for m in cluster.ids}


def sample(cluster: LocalCluster, done: int, elapsed: float,
           sts: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    kv = next((st["kv"] for st in sts.values() if st and st.get("kv")), {})
    return {
        "puts": done, "seconds": round(elapsed, 1),
        "revision": kv.get("revision"), "compact_revision": kv.get("compact_revision"),
        "rss_mib": {m: rss_mib(cluster.procs[m].pid) for m in cluster.ids},
    }


def one_run(args: argparse.Namespace, retention: int, root: Path) -> dict[str, Any]:
    members = plan_members(3)
    extra = ["--auto-compact-retention", str(retention)]
    with LocalCluster(members, root / f"retention-{retention}", transport=args.transport,
                      extra_args=extra) as cluster:
        asyncio.run(cluster.wait_ready(60, write_key="ready"))
        endpoints = ",".join(cluster.endpoints())
        start = time.time()
        stop_at = start + args.time_cap
        done = mp.Value("q", 0)
        failed = mp.Value("q", 0)
        share = args.puts // args.workers
        procs = [mp.Process(target=worker, args=(endpoints, w * share,
                                                 share if w < args.workers - 1
                                                 else args.puts - w * share,
                                                 args.keys, args.value_size, done, failed,
                                                 stop_at))
                 for w in range(args.workers)]
        for p in procs:
            p.start()
        samples = [sample(cluster, 0, 0.0, asyncio.run(statuses(cluster)))]
        print(f"retention {retention or 'off'}: {samples[0]}", flush=True)
        step = max(1, args.puts // 10)
        next_mark = step
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            if done.value >= next_mark or not any(p.is_alive() for p in procs):
                s = sample(cluster, done.value, time.time() - start,
                           asyncio.run(statuses(cluster)))
                samples.append(s)
                print(f"retention {retention or 'off'}: {s}", flush=True)
                while next_mark <= done.value:
                    next_mark += step
        for p in procs:
            p.join()
        elapsed = time.time() - start
        # after the load: let the compactor catch up, then the final size
        time.sleep(3)
        final = sample(cluster, done.value, elapsed, asyncio.run(statuses(cluster)))
        samples.append(final)
        print(f"retention {retention or 'off'}: final {final}", flush=True)
        return {"retention": retention, "puts": done.value, "seconds": round(elapsed, 1),
                "failed": failed.value,
                "capped": done.value + failed.value < args.puts, "samples": samples}


def markdown(args: argparse.Namespace, runs: list[dict[str, Any]]) -> str:
    lines = [
        "# Member memory under a long write load, with and without history retention",
        "",
        f"`python benchmarks/history_memory.py --puts {args.puts} --keys {args.keys} "
        f"--value-size {args.value_size} --retention {args.retention} --workers "
        f"{args.workers} --transport {args.transport} --time-cap {args.time_cap:g}`",
        "",
        f"3 members on loopback ({args.transport}), {args.workers} client processes with "
        f"{IN_FLIGHT} puts in flight each, {args.keys} keys, {args.value_size}-byte values; "
        f"RSS is VmRSS of each member process. Machine: {os.cpu_count()} cores "
        "(shared with other work while this ran).",
        "",
    ]
    for run in runs:
        name = ("no compaction (--auto-compact-retention 0)" if not run["retention"]
                else f"--auto-compact-retention {run['retention']}")
        rate = run["puts"] / run["seconds"] if run["seconds"] else 0
        lines += [f"## {name}", "",
                  f"{run['puts']:,} puts in {run['seconds']:g} s ({rate:,.0f}/s)"
                  + (f"; stopped by the {args.time_cap:g} s time cap" if run["capped"] else "")
                  + (f"; {run['failed']:,} puts failed (errors, not counted)"
                     if run["failed"] else ""),
                  "", "| puts | seconds | revision | compacted at | RSS MiB (members) |",
                  "|---:|---:|---:|---:|---|"]
        for s in run["samples"]:
            rss = ", ".join(f"{v:.0f}" if v is not None else "-"
                            for v in s["rss_mib"].values())
            lines.append(f"| {s['puts']:,} | {s['seconds']:g} | {s['revision']} | "
                         f"{s['compact_revision']} | {rss} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--puts", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--retention", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--transport", choices=["mesh", "udp"], default="udp")
    ap.add_argument("--time-cap", type=float, default=600.0,
                    help="seconds of load per run at most")
    ap.add_argument("--only", choices=["off", "on"], help="one of the two runs only")
    ap.add_argument("--out", type=Path, help="also write the results here (markdown)")
    args = ap.parse_args()
    if args.retention < 1 or args.puts < 1 or args.workers < 1:
        sys.exit("--retention, --puts and --workers must be positive")
    runs = []
    with tempfile.TemporaryDirectory(prefix="meshraft-history-mem-") as tmp:
        for retention in (0, args.retention):
            if args.only == ("on" if retention == 0 else "off"):
                continue
            runs.append(one_run(args, retention, Path(tmp)))
    text = markdown(args, runs)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

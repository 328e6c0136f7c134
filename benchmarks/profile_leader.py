"""Profile a loaded meshraft leader with py-spy.

    python benchmarks/profile_leader.py [--transport mesh|udp] [--ops put] [--clients 64]
        [--duration 10] [--out benchmarks/results]

Starts a local 3-node cluster, finds the leader, drives the load with
:func:`meshraft.bench.run_load` and meanwhile samples the leader with ``py-spy
record`` (``--format raw``: collapsed stacks; idle threads excluded, so the samples
are where the leader spends CPU). Writes ``profile-<transport>-<ops>.txt`` (the load
result, CPU seconds per operation for every process, and the top functions by self
and by inclusive samples) and, with ``--stacks FILE``, keeps py-spy's collapsed stacks.

It starts and stops only its own processes, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from meshraft.bench import (
    BenchError,
    LoadSpec,
    LocalCluster,
    cpu_seconds,
    exit_on_sigterm,
    format_table,
    make_tempdir,
    meshraft_factory,
    remove_tree,
    run_load,
)

HERE = Path(__file__).resolve().parent
_FRAME_LINE = re.compile(r":\d+\)$")


async def node_stats(endpoints: list[tuple[str, int]]) -> list[dict]:
    """Each member's counters (``status()["stats"]`` and fsyncs), {} if it does not answer."""
    from meshraft.kv.client import AsyncClient

    out = []
    for ep in endpoints:
        c = AsyncClient([ep], timeout=2.0)
        try:
            st = await c.status()
            d = {k: v for k, v in (st.get("stats") or {}).items() if isinstance(v, int | float)}
            storage = st.get("storage") or {}
            if isinstance(storage.get("fsyncs"), int):
                d["fsyncs"] = storage["fsyncs"]
            out.append(d)
        except Exception:
            out.append({})
        finally:
            await c.close()
    return out


def summarise(collapsed: str, top: int = 40) -> str:
    """Top functions by self and inclusive samples from py-spy's collapsed stacks."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_FRAME_LINE.sub(")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not
                  f.startswith("thread ")]
        if not frames:
            continue
        self_c[frames[-1]] += n
        for f in set(frames):
            incl_c[f] += n
    out = [f"samples: {total}", "", f"top {top} by self samples:"]
    out += [f"{c * 100 / total:6.2f}%  {f}" for f, c in self_c.most_common(top)]
    out += ["", f"top {top} by inclusive samples:"]
    out += [f"{c * 100 / total:6.2f}%  {f}" for f, c in incl_c.most_common(top)]
    return "\n".join(out) + "\n"


async def profile(args: argparse.Namespace) -> None:
    tmp = make_tempdir("meshraft-profile-")
    try:
        await _profile(args, tmp)
    finally:
        remove_tree(tmp)


async def _profile(args: argparse.Namespace, tmp: Path) -> None:
    """Cluster, load and py-spy on the leader, then the report: one sequence whose
    steps hand each other files and pids (just over 80 lines, kept in one piece)."""
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"profile-{args.transport}-{args.ops}-{args.clients}{args.tag}"
    raw = args.stacks if args.stacks is not None else tmp / f"{stem}.collapsed"
    spec = LoadSpec(ops=args.ops, clients=args.clients, duration=args.duration,
                    warmup=args.warmup)
    async with LocalCluster(nodes=3, transport=args.transport,
                            source_tree=args.tree) as cluster:
        leader = None
        for _ in range(50):
            leader = await cluster.leader_index()
            if leader is not None:
                break
            await asyncio.sleep(0.2)
        if leader is None:
            raise BenchError("no leader found")
        pid = cluster.procs[leader].pid
        pids = {p.name: p.pid for p in cluster.procs}
        # py-spy starts sampling when the measured window starts.
        spy_argv = ["py-spy", "record", "--pid", str(pid), "--rate", str(args.rate),
                    "--duration", str(int(args.duration)), "--format", "raw",
                    "--output", str(raw), "--nonblocking"]

        async def spy() -> subprocess.CompletedProcess:
            await asyncio.sleep(args.warmup)
            before = {n: cpu_seconds(p) for n, p in pids.items()}
            me0 = time.process_time()
            proc = await asyncio.create_subprocess_exec(
                *spy_argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            try:
                out, _ = await proc.communicate()
            finally:
                if proc.returncode is None:
                    proc.kill()
            after = {n: cpu_seconds(p) for n, p in pids.items()}
            spy.cpu = {n: after[n] - before[n] for n in pids}  # type: ignore[attr-defined]
            spy.cpu["load generator"] = time.process_time() - me0  # type: ignore[attr-defined]
            return subprocess.CompletedProcess(spy_argv, proc.returncode or 0,
                                               out.decode(errors="replace"), "")

        stats0: list[dict] = []

        async def first_stats() -> None:
            await asyncio.sleep(args.warmup)
            stats0.extend(await node_stats(cluster.endpoints))

        spy_task = asyncio.create_task(spy())
        stats_task = asyncio.create_task(first_stats())
        result = await run_load(meshraft_factory(cluster.endpoints), spec,
                                system=f"meshraft-{args.transport}", nodes=3,
                                transport=args.transport)
        spied = await spy_task
        await stats_task
        stats1 = await node_stats(cluster.endpoints)
    cpu: dict[str, float] = spy.cpu  # type: ignore[attr-defined]
    lines = [
        f"$ python benchmarks/profile_leader.py {' '.join(sys.argv[1:])}",
        "", format_table([result]), "",
        f"leader: node{leader + 1} (pid {pid}); py-spy exit {spied.returncode}",
        f"CPU seconds during ~{args.duration:g} s window (and per 1000 ops):",
    ]
    for name, sec in cpu.items():
        per = sec / max(1, result.ops) * 1000
        lines.append(f"  {name:15s} {sec:6.2f} s   {per:6.3f} s/kop")
    lines.append("")
    lines.append("node counters during the window, per operation (status()['stats']):")
    for i, (a, b) in enumerate(zip(stats0, stats1, strict=False)):
        per = {k: (b[k] - a.get(k, 0)) / max(1, result.ops) for k in sorted(b)
               if isinstance(b[k], int | float)}
        mark = " (leader)" if i == leader else ""
        lines.append(f"  node{i + 1}{mark}: " + ", ".join(f"{k}={v:.3f}" for k, v in per.items()))
    lines.append("")
    text = "\n".join(lines)
    if raw.exists():
        text += summarise(raw.read_text())
    else:
        text += "py-spy wrote no output:\n" + spied.stdout
    (args.out / f"{stem}.txt").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transport", choices=["mesh", "udp"], default="udp")
    ap.add_argument("--ops", default="put")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--tree", type=Path, default=None,
                    help="run the members from this source tree (see ab_trees.py)")
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    ap.add_argument("--stacks", type=Path, default=None,
                    help="keep py-spy's collapsed stacks in this file (flamegraph input)")
    exit_on_sigterm()
    asyncio.run(profile(ap.parse_args(argv)))


if __name__ == "__main__":
    main()

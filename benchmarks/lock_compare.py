"""Lock handoff latency between two contenders: meshraft and etcd 3.4 side by side
(issue 19's Measure).

    python benchmarks/lock_compare.py [--runs 3] [--handoffs 200]
        [--systems meshraft-mesh,etcd] [--out benchmarks/results]

Each run starts each system in turn (a fresh 3-member cluster on loopback; the order
rotates between runs). Two contenders, each with its own client and session (a
lease of 60 s), pass one lock back and forth ``--handoffs`` times: the holder waits
until the other contender is queued (its key is under the lock's prefix), holds on
for ``--hold`` seconds (0.2: the waiter is then really waiting, its watch in place;
with 0 the release races the waiter's set-up), then releases; the handoff latency
is from the moment the holder starts its release to the moment the waiter's
acquire returns (both in this process, one monotonic clock). Also shown: the p50 of
the time until both the release and the acquire returned (the holder's answer may
come after the waiter's; up to 2026-12-03 that was the number reported).
Reported per run: p50, p99, mean; then the median of the runs and every run's ratio.

How each system is driven: meshraft through ``meshraft.recipes.Lock`` on the Python
client (endpoints of all members; the waiter learns of the release through a watch
and confirms with a linearizable read); etcd through its JSON gateway's lock service
(``POST /v3/lock/lock`` ``{"name", "lease"}`` which returns once held, and ``POST
/v3/lock/unlock`` ``{"key"}``: etcd's own server-side implementation of the same
recipe), on ``etcd_driver``'s keep-alive HTTP connections to the leader; and, as
``etcd-etcdctl``, through ``etcdctl lock NAME`` processes (etcd's Go gRPC client: a
waiter process is started and queued before the holder gets SIGTERM, on which
etcdctl unlocks; the handoff ends when the waiter prints the key). The gateway
adds tens of milliseconds to a blocking lock call, so both are shown. Everything
runs on one shared machine.

Results go to ``--out`` as ``lock-latest.md`` and ``lock-latest.json`` with the
command line. This script starts and stops only its own processes (by PID).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import etcd_driver

from meshraft.bench import (
    BenchError,
    LocalCluster,
    exit_on_sigterm,
    machine_description,
    percentile,
)
from meshraft.kv.client import AsyncClient
from meshraft.recipes import Lock, Session

log = logging.getLogger("bench.lock_compare")
HERE = Path(__file__).resolve().parent
SYSTEMS = ("meshraft-mesh", "meshraft-udp", "etcd", "etcd-etcdctl")
NAME = b"bench-lock"
TTL = 60
QUEUED_POLL = 0.002  # seconds between checks that the waiter is queued


async def _handoffs(a: Any, b: Any, queued: Callable[[], Awaitable[int]],
                    n: int, hold: float) -> tuple[list[float], list[float]]:
    """Pass the lock between ``a`` and ``b`` n times; the handoff latencies (s), and
    the times until both the holder's release and the waiter's acquire returned (s).
    The holder keeps the lock ``hold`` seconds after the waiter is queued (so that
    the waiter is really waiting, its watch in place, when the lock is released)."""
    out: list[float] = []
    both: list[float] = []
    holder, waiter = a, b

    async def acquired(c: Any) -> float:
        await c.acquire()
        return time.monotonic()

    await holder.acquire()
    for _ in range(n):
        task = asyncio.ensure_future(acquired(waiter))
        while await queued() < 2:  # the waiter's key is in the queue
            if task.done():
                task.result()
                raise BenchError("the waiter got the lock while it was held")
            await asyncio.sleep(QUEUED_POLL)
        await asyncio.sleep(hold)
        t0 = time.monotonic()
        await holder.release()
        released = time.monotonic()
        got = await task
        out.append(got - t0)
        both.append(max(got, released) - t0)
        holder, waiter = waiter, holder
    await holder.release()
    return out, both


class _MeshraftContender:
    def __init__(self, session: Session) -> None:
        self.lock = Lock(session, NAME)

    async def acquire(self) -> None:
        await self.lock.acquire()

    async def release(self) -> None:
        await self.lock.release()


async def run_meshraft(transport: str, n: int, hold: float) -> dict[str, Any]:
    async with LocalCluster(nodes=3, transport=transport) as c:
        clients = [AsyncClient(c.endpoints, timeout=30) for _ in range(3)]
        try:
            sa, sb = Session(clients[0], TTL), Session(clients[1], TTL)
            await sa.open()
            await sb.open()

            async def queued() -> int:
                return len(await clients[2].list(NAME + b"/"))

            lat = await _handoffs(_MeshraftContender(sa), _MeshraftContender(sb), queued, n,
                                  hold)
            await sa.close()
            await sb.close()
        finally:
            for k in clients:
                await k.close()
    return _stats(*lat)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


class _EtcdContender(etcd_driver.EtcdClient):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port, 30)
        self.lease = 0
        self.key = ""

    async def grant(self) -> None:
        self.lease = int((await self._call("/v3/lease/grant", {"TTL": TTL}))["ID"])

    async def acquire(self) -> None:
        r = await self._call("/v3/lock/lock", {"name": _b64(NAME), "lease": self.lease})
        self.key = r["key"]

    async def release(self) -> None:
        await self._call("/v3/lock/unlock", {"key": self.key})

    async def queued(self) -> int:
        prefix = NAME + b"/"
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        r = await self._call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end),
                                              "count_only": True})
        return int(r.get("count", 0))


async def run_etcd(n: int, hold: float) -> dict[str, Any]:
    async with etcd_driver.EtcdCluster(nodes=3) as c:
        host, port = await c.leader_endpoint()
        a, b, q = (_EtcdContender(host, port) for _ in range(3))
        try:
            await a.grant()
            await b.grant()
            r = _stats(*await _handoffs(a, b, q.queued, n, hold))
            r["version"] = c.version
        finally:
            for k in (a, b, q):
                await k.close()
    return r


class _EtcdctlContender:
    """A contender that is an ``etcdctl lock NAME`` process (etcd's gRPC client): it
    prints the lock key once held; SIGTERM makes it unlock and exit."""

    def __init__(self, endpoints: str) -> None:
        self.endpoints = endpoints
        self.proc: asyncio.subprocess.Process | None = None

    async def acquire(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "etcdctl", f"--endpoints={self.endpoints}", "lock", NAME.decode(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
        assert self.proc.stdout is not None
        if not await self.proc.stdout.readline():
            raise BenchError("etcdctl lock ended without the lock")

    async def release(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()  # etcdctl unlocks on SIGTERM

    async def reap(self) -> None:
        if self.proc is not None:
            if self.proc.returncode is None:
                self.proc.kill()
            await self.proc.wait()


async def run_etcdctl(n: int, hold: float) -> dict[str, Any]:
    async with etcd_driver.EtcdCluster(nodes=3) as c:
        host, port = await c.leader_endpoint()
        eps = ",".join(f"http://{h}:{p}" for h, p in c.endpoints)
        q = _EtcdContender(host, port)
        contenders = [_EtcdctlContender(eps), _EtcdctlContender(eps)]
        old: list[asyncio.subprocess.Process] = []

        class Rotating:
            """One etcdctl process per hold (a released etcdctl has exited)."""

            def __init__(self, k: _EtcdctlContender) -> None:
                self.k = k

            async def acquire(self) -> None:
                if self.k.proc is not None:
                    old.append(self.k.proc)
                await self.k.acquire()

            async def release(self) -> None:
                await self.k.release()

        try:
            r = _stats(*await _handoffs(Rotating(contenders[0]), Rotating(contenders[1]),
                                       q.queued, n, hold))
            r["version"] = c.version
        finally:
            for k in contenders:
                await k.reap()
            for p in old:
                if p.returncode is None:
                    p.kill()
                await p.wait()
            await q.close()
    return r


def _stats(lat: list[float], both: list[float]) -> dict[str, Any]:
    s = sorted(x * 1000 for x in lat)
    b = sorted(x * 1000 for x in both)
    return {"handoffs": len(s), "p50_ms": round(percentile(s, 50), 3),
            "p99_ms": round(percentile(s, 99), 3), "mean_ms": round(statistics.mean(s), 3),
            "max_ms": round(s[-1], 3), "both_p50_ms": round(percentile(b, 50), 3)}


async def run_system(system: str, n: int, hold: float) -> dict[str, Any]:
    if system.startswith("meshraft-"):
        return await run_meshraft(system.split("-", 1)[1], n, hold)
    if system == "etcd":
        return await run_etcd(n, hold)
    if system == "etcd-etcdctl":
        return await run_etcdctl(n, hold)
    raise BenchError(f"unknown system {system!r}")


def report(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    systems = list(dict.fromkeys(r["system"] for r in results))
    lines = ["# Lock handoff latency between two contenders, 3 members", "",
             f"Command: `{meta['command']}`", f"Date: {meta['date']}",
             f"Machine: {meta['machine']}", f"Handoffs per run: {meta['handoffs']}; the holder "
             f"releases {meta.get('hold_s', 0)} s after the other contender is queued", "",
             "| system | p50 ms (median) | p99 ms (median) | mean ms (median) | runs (p50 ms) "
             "| runs (p99 ms) | release and acquire returned, p50 ms (runs) |",
             "|---|---|---|---|---|---|---|"]
    med: dict[str, dict[str, float]] = {}
    for s in systems:
        rs = [r for r in results if r["system"] == s]
        med[s] = {m: statistics.median(r[m] for r in rs) for m in ("p50_ms", "p99_ms",
                                                                   "mean_ms")}
        both = ", ".join(f"{r['both_p50_ms']:.2f}" for r in rs if "both_p50_ms" in r)
        lines.append(f"| {s} | {med[s]['p50_ms']:.2f} | {med[s]['p99_ms']:.2f} | "
                     f"{med[s]['mean_ms']:.2f} | "
                     + ", ".join(f"{r['p50_ms']:.2f}" for r in rs) + " | "
                     + ", ".join(f"{r['p99_ms']:.2f}" for r in rs) + f" | {both or '-'} |")
    for base in ("etcd", "etcd-etcdctl"):
        if base not in med:
            continue
        lines += ["", f"Ratio to {base} (latency: lower is better; goal p50 <= 1.0x):", ""]
        for s in systems:
            if s.startswith("etcd"):
                continue
            for m in ("p50_ms", "p99_ms"):
                per_run = []
                for run in sorted({r["run"] for r in results}):
                    a = [r for r in results if r["system"] == s and r["run"] == run]
                    b = [r for r in results if r["system"] == base and r["run"] == run]
                    if a and b and b[0][m]:
                        per_run.append(a[0][m] / b[0][m])
                lines.append(f"- {s} {m[:3]}: {med[s][m] / med[base][m]:.2f}x (medians); "
                             f"every run: {', '.join(f'{x:.2f}x' for x in per_run)}")
    lines += ["", "meshraft's waiter is a client-side recipe (one linearizable list when it "
              "queues, then a watch on the key ahead: a handoff is the release's commit plus "
              "one watch event); etcd's lock service runs its recipe inside the server. One "
              "Python load generator on the same 2-core machine as the members."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--handoffs", type=int, default=200)
    ap.add_argument("--hold", type=float, default=0.2,
                    help="Seconds the holder keeps the lock once the other is queued.")
    ap.add_argument("--systems", default="meshraft-mesh,etcd,etcd-etcdctl")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--report-only", action="store_true",
                    help="Rewrite lock-latest.md from --out's lock-latest.json; run nothing.")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.report_only:
        saved = json.loads((args.out / "lock-latest.json").read_text())
        text = report(saved["results"], saved["meta"])
        (args.out / "lock-latest.md").write_text(text)
        print(text)
        return
    exit_on_sigterm()
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r} (one of {', '.join(SYSTEMS)})")
    results: list[dict[str, Any]] = []
    for run in range(args.runs):
        order = systems[run % len(systems):] + systems[:run % len(systems)]
        for s in order:
            print(f"run {run + 1}/{args.runs}: {s} ...", file=sys.stderr, flush=True)
            try:
                r = asyncio.run(run_system(s, args.handoffs, args.hold))
            except BenchError as exc:
                sys.exit(f"lock_compare: {exc}")
            r.update(system=s, run=run)
            print(f"  {r}", file=sys.stderr, flush=True)
            results.append(r)
    meta = {"command": "python benchmarks/lock_compare.py " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(), "handoffs": args.handoffs, "hold_s": args.hold}
    text = report(results, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lock-latest.md").write_text(text)
    (args.out / "lock-latest.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Lease keepalives/s that 3 members sustain with 10,000 live leases: meshraft and
etcd 3.4 side by side (issue 19's Measure).

    python benchmarks/lease_compare.py [--runs 3] [--leases 10000] [--duration 10]
        [--clients 64] [--systems meshraft-mesh,etcd] [--out benchmarks/results]

Each run starts each system in turn (a fresh 3-member cluster on loopback; the
order rotates between runs), grants ``--leases`` leases (TTL 600 s, so none lapses
during the run), then ``--clients`` concurrent clients, each with one request in
flight, send keepalives round-robin over the leases for ``--duration`` seconds.
Reported: keepalives acknowledged per second, latency p50/p99, errors, the number of
live leases after the window (must still be ``--leases``), and the members' CPU.

How each system is driven: meshraft through its Python client (``lease_keepalive``,
endpoints of all members: the client goes to the leader, whose keepalives are not
written to the log); etcd through its JSON gateway, ``POST /v3/lease/keepalive``
``{"ID": id}`` (one keepalive per request on the keep-alive connections of
``etcd_driver``'s small HTTP client), sent to etcd's leader, so neither system pays a
forwarding hop. Everything runs on one shared machine: the load generator is one
Python process for both systems.

Results (median of the runs for every number, and every run's ratio) go to
``--out`` as ``lease-latest.md`` and ``lease-latest.json`` with the command line.
This script starts and stops only its own processes (by PID, in ``finally``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
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
    cpu_seconds,
    exit_on_sigterm,
    machine_description,
    percentile,
)
from meshraft.kv.client import AsyncClient

log = logging.getLogger("bench.lease_compare")
HERE = Path(__file__).resolve().parent
SYSTEMS = ("meshraft-mesh", "meshraft-udp", "etcd")
LEASE_TTL = 600
GRANT_CONCURRENCY = 64

Keepalive = Callable[[int], Awaitable[None]]


async def _window(send: list[Keepalive], ids: list[int], duration: float) -> dict[str, Any]:
    """Clients ``send[i]`` keep the leases ``ids`` alive round-robin for ``duration``."""
    lat: list[float] = []
    errors = 0
    counter = itertools.count()
    stop = time.monotonic() + duration

    async def client(fn: Keepalive) -> None:
        nonlocal errors
        while time.monotonic() < stop:
            lid = ids[next(counter) % len(ids)]
            t0 = time.perf_counter()
            try:
                await fn(lid)
            except Exception as exc:  # counted: a lost keepalive is a result too
                errors += 1
                log.debug("keepalive failed: %r", exc)
                continue
            lat.append(time.perf_counter() - t0)

    t0 = time.monotonic()
    await asyncio.gather(*(client(fn) for fn in send))
    elapsed = time.monotonic() - t0
    lat.sort()
    return {"keepalives": len(lat), "errors": errors, "window_s": round(elapsed, 3),
            "keepalives_per_s": round(len(lat) / elapsed, 1),
            "p50_ms": round(percentile(lat, 50) * 1e3, 3) if lat else None,
            "p99_ms": round(percentile(lat, 99) * 1e3, 3) if lat else None}


async def _grant_all(grant: Callable[[], Awaitable[int]], n: int) -> list[int]:
    ids: list[int] = []
    it = iter(range(n))

    async def worker() -> None:
        for _ in it:
            ids.append(await grant())

    await asyncio.gather(*(worker() for _ in range(GRANT_CONCURRENCY)))
    return sorted(ids)


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) or 0.0 for p in pids)


async def run_meshraft(transport: str, leases: int, clients: int,
                       duration: float) -> dict[str, Any]:
    async with LocalCluster(nodes=3, transport=transport) as c:
        pids = [p.pid for p in c.procs]
        setup = AsyncClient(c.endpoints, timeout=30)
        try:
            ids = await _grant_all(lambda: _grant_meshraft(setup), leases)
            conns = [AsyncClient(c.endpoints, timeout=10) for _ in range(clients)]
            try:
                for k in conns:  # find the leader before the window
                    await k.lease_keepalive(ids[0])
                cpu0 = _cpu(pids)
                r = await _window([k.lease_keepalive for k in conns], ids, duration)
                r["members_cpu_s"] = round(_cpu(pids) - cpu0, 2)
            finally:
                for k in conns:
                    await k.close()
            r["live_leases_after"] = len(await setup.leases())
        finally:
            await setup.close()
    return r


async def _grant_meshraft(c: AsyncClient) -> int:
    return (await c.lease_grant(LEASE_TTL)).id


class _EtcdLeases(etcd_driver.EtcdClient):
    async def grant(self) -> int:
        return int((await self._call("/v3/lease/grant", {"TTL": LEASE_TTL}))["ID"])

    async def keepalive(self, lease_id: int) -> None:
        status, body = await self.conn.post("/v3/lease/keepalive",
                                            json.dumps({"ID": lease_id}).encode())
        if status != 200:
            raise etcd_driver.EtcdError(f"keepalive: HTTP {status}: {body[:200]!r}")
        # a stream of one message: {"result": {"ID": ..., "TTL": ...}}
        first = json.loads(body.split(b"\n", 1)[0])
        if int(first.get("result", {}).get("TTL", 0)) <= 0:
            raise etcd_driver.EtcdError(f"keepalive refused: {body[:200]!r}")

    async def leases(self) -> int:
        return len((await self._call("/v3/lease/leases", {})).get("leases", []))


async def run_etcd(leases: int, clients: int, duration: float) -> dict[str, Any]:
    async with etcd_driver.EtcdCluster(nodes=3) as c:
        pids = [p.pid for p in c.procs]
        host, port = await c.leader_endpoint()
        setup = [_EtcdLeases(host, port, 30) for _ in range(GRANT_CONCURRENCY)]
        try:
            # one connection per granting worker (a connection has one request at a time)
            ids: list[int] = []
            it = iter(range(leases))

            async def worker(k: _EtcdLeases) -> None:
                for _ in it:
                    ids.append(await k.grant())

            await asyncio.gather(*(worker(k) for k in setup))
            ids.sort()
            conns = [_EtcdLeases(host, port, 10) for _ in range(clients)]
            try:
                for k in conns:
                    await k.keepalive(ids[0])
                cpu0 = _cpu(pids)
                r = await _window([k.keepalive for k in conns], ids, duration)
                r["members_cpu_s"] = round(_cpu(pids) - cpu0, 2)
            finally:
                for k in conns:
                    await k.close()
            r["live_leases_after"] = await setup[0].leases()
            r["version"] = c.version
        finally:
            for k in setup:
                await k.close()
    return r


async def run_system(system: str, leases: int, clients: int, duration: float) -> dict[str, Any]:
    if system.startswith("meshraft-"):
        return await run_meshraft(system.split("-", 1)[1], leases, clients, duration)
    if system == "etcd":
        return await run_etcd(leases, clients, duration)
    raise BenchError(f"unknown system {system!r}")


def _cpu_per(r: dict[str, Any]) -> float:
    """The three members' CPU per acknowledged keepalive, in microseconds."""
    return r["members_cpu_s"] / r["keepalives"] * 1e6 if r["keepalives"] else 0.0


def report(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    systems = list(dict.fromkeys(r["system"] for r in results))
    lines = [f"# Lease keepalives/s with {meta['leases']:,} live leases, 3 members",
             "", f"Command: `{meta['command']}`", f"Date: {meta['date']}",
             f"Machine: {meta['machine']}", "",
             "| system | keepalives/s (median) | p50 ms | p99 ms | errors | live leases after "
             "| members CPU s | members CPU µs per keepalive | runs (keepalives/s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    med: dict[str, float] = {}
    for s in systems:
        rs = [r for r in results if r["system"] == s]
        m = statistics.median(r["keepalives_per_s"] for r in rs)
        med[s] = m
        lines.append(
            f"| {s} | {m:,.0f} | {statistics.median(r['p50_ms'] or 0 for r in rs):.2f} | "
            f"{statistics.median(r['p99_ms'] or 0 for r in rs):.2f} | "
            f"{sum(r['errors'] for r in rs)} | "
            f"{min(r['live_leases_after'] for r in rs):,} | "
            f"{statistics.median(r['members_cpu_s'] for r in rs):.1f} | "
            f"{statistics.median(_cpu_per(r) for r in rs):.0f} | "
            + ", ".join(f"{r['keepalives_per_s']:,.0f}" for r in rs) + " |")
    if "etcd" in med:
        lines += ["", "Ratio to etcd (goal: >= 1.0x):", ""]
        for s in systems:
            if s == "etcd":
                continue
            per_run = []
            for run in sorted({r["run"] for r in results}):
                a = [r for r in results if r["system"] == s and r["run"] == run]
                b = [r for r in results if r["system"] == "etcd" and r["run"] == run]
                if a and b and b[0]["keepalives_per_s"]:
                    per_run.append(a[0]["keepalives_per_s"] / b[0]["keepalives_per_s"])
            lines.append(f"- {s}: {med[s] / med['etcd']:.2f}x (median of the runs); every "
                         f"run: {', '.join(f'{x:.2f}x' for x in per_run)}")
    lines += ["", "The load generator is one Python process on the same 2-core machine as the "
              "members; each system's own client runs in it (meshraft's Python client, "
              "etcd_driver's small HTTP client with JSON). The members' CPU per keepalive is "
              "the server-side cost, independent of how fast the load generator can go."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--leases", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--systems", default="meshraft-mesh,etcd")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--report-only", action="store_true",
                    help="Rewrite lease-latest.md from --out's lease-latest.json; run nothing.")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.report_only:
        saved = json.loads((args.out / "lease-latest.json").read_text())
        text = report(saved["results"], saved["meta"])
        (args.out / "lease-latest.md").write_text(text)
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
                r = asyncio.run(run_system(s, args.leases, args.clients, args.duration))
            except BenchError as exc:
                sys.exit(f"lease_compare: {exc}")
            r.update(system=s, run=run)
            print(f"  {r}", file=sys.stderr, flush=True)
            results.append(r)
    meta = {"command": "python benchmarks/lease_compare.py " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(), "leases": args.leases,
            "clients": args.clients, "duration_s": args.duration}
    text = report(results, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lease-latest.md").write_text(text)
    (args.out / "lease-latest.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()

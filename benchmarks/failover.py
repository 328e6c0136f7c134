"""Failover time after kill -9 of the leader, as a client sees it.

    python benchmarks/failover.py [--rounds 10] [--transport mesh|udp]

One 3-node local cluster. Each round: a client writes sequentially through all
three endpoints (default client settings); the leader is killed with SIGKILL;
we record (a) the time until a surviving member reports itself leader (status
polled every 20 ms) and (b) the time until the first write the client began after
the kill is acknowledged (it needs the new leader). The killed member is restarted
and catches up before the next round. Prints every round and the median of each."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from meshraft.kv.client import AsyncClient, MeshraftError
from meshraft.localcluster import LocalCluster, plan_members


async def one_round(cl: LocalCluster, rnd: int) -> tuple[float, float]:
    leader = await cl.wait_leader()
    survivors = [i for i in cl.ids if i != leader]
    acked_after_kill: list[float] = []
    killed_at: list[float] = []
    stop = asyncio.Event()

    async def writer() -> None:
        async with AsyncClient(cl.endpoints()) as c:
            i = 0
            while not stop.is_set():
                i += 1
                started_after_kill = bool(killed_at)
                try:
                    await c.put(f"r{rnd}-{i}", "x")
                except MeshraftError:
                    continue
                # only a write begun after the kill proves a new leader commits
                if started_after_kill and not acked_after_kill:
                    acked_after_kill.append(time.monotonic())
                    stop.set()

    async def new_leader() -> float:
        while True:
            for i in survivors:
                try:
                    async with AsyncClient([cl.member(i).client], timeout=0.3,
                                           connect_timeout=0.2) as c:
                        st = await c.status()
                except MeshraftError:
                    continue
                if st.get("role") == "leader":
                    return time.monotonic()
            await asyncio.sleep(0.02)

    w = asyncio.create_task(writer())
    await asyncio.sleep(0.5)  # writes flowing
    cl.kill(leader)
    killed_at.append(time.monotonic())
    elected = await asyncio.wait_for(new_leader(), 30)
    await asyncio.wait_for(w, 60)
    cl.start(leader)
    # let the restarted member catch up before the next round
    await asyncio.sleep(1.5)
    return elected - killed_at[0], acked_after_kill[0] - killed_at[0]


async def run(rounds: int, transport: str) -> None:
    with (tempfile.TemporaryDirectory(prefix="meshraft-bench-", ignore_cleanup_errors=True) as root,
          LocalCluster(plan_members(3), Path(root), transport=transport,
                       extra_args=["--log-level", "warning"], new_session=False) as cl):
        await rounds_on(cl, rounds, transport)


async def rounds_on(cl: LocalCluster, rounds: int, transport: str) -> None:
    await cl.wait_leader()
    elect, ack = [], []
    for r in range(rounds):
        e, a = await one_round(cl, r)
        elect.append(e)
        ack.append(a)
        print(f"round {r + 1}: new leader after {e:.2f} s, first acknowledged write "
              f"after {a:.2f} s", flush=True)
    print(f"median of {rounds}: new leader {statistics.median(elect):.2f} s, first "
          f"acknowledged write {statistics.median(ack):.2f} s (max {max(ack):.2f} s, "
          f"{transport})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--transport", choices=["mesh", "udp"], default="mesh")
    args = ap.parse_args()
    asyncio.run(run(args.rounds, args.transport))


if __name__ == "__main__":
    main()

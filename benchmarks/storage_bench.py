"""Storage and group-commit measurements for the Raft node.

    python benchmarks/storage_bench.py all [--runs 3] [--dir DIR]
    python benchmarks/storage_bench.py fsync      # raw fsyncs/second on this disk
    python benchmarks/storage_bench.py cluster    # committed writes/s, 3 members, 64 proposers
    python benchmarks/storage_bench.py wal        # recovery of a 1,000,000-entry WAL
    python benchmarks/storage_bench.py snapshot   # recovery with a 100 MB snapshot

Each measurement runs ``--runs`` times and prints the median (and all runs) as
one JSON line. The cluster runs three real member processes on loopback UDP,
each with its own data dir on ``--dir``; the 64 proposers run in the leader's
process (so the number is the Raft + storage path, not a client protocol).
This is a measuring tool: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meshraft.raft import NodeConfig, RaftNode, Storage, udp_transport_factory
from meshraft.raft.messages import ConfState, Entry, HardState


def report(name: str, unit: str, runs: list[float], **extra) -> None:
    print(json.dumps({"measure": name, "unit": unit, "median": round(statistics.median(runs), 3),
                      "runs": [round(r, 3) for r in runs], **extra}), flush=True)


# ------------------------------------------------------------------------------ fsync

def bench_fsync(base: Path, seconds: float = 3.0) -> float:
    path = base / "fsync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            os.write(fd, b"x" * 128)
            os.fsync(fd)
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()


# ------------------------------------------------------------------------------ cluster

class CountSM:
    def __init__(self) -> None:
        self.n = 0

    def apply(self, entry: Entry) -> int:
        self.n += 1
        return self.n

    def snapshot(self) -> bytes:
        return str(self.n).encode()

    def restore(self, data: bytes) -> None:
        self.n = int(data or b"0")


async def member(args) -> None:
    peers = {}
    for part in args.peers.split(","):
        nid, hp = part.split("=")
        h, p = hp.rsplit(":", 1)
        peers[nid] = (h, int(p))
    node = await RaftNode.start(node_id=args.id, peers=peers,
                                transport_factory=udp_transport_factory(peers[args.id]),
                                data_dir=args.data, state_machine=CountSM(),
                                config=NodeConfig(snapshot_entries=50_000))
    out = Path(args.out)
    go = out / "go"
    while not go.exists():
        (out / f"role-{args.id}").write_text(node.role)
        await asyncio.sleep(0.05)
    if node.role == "leader":
        ops = 0
        stop_at = time.monotonic() + args.seconds
        st0 = node.status()

        async def proposer(k: int) -> None:
            nonlocal ops
            i = 0
            while time.monotonic() < stop_at:
                i += 1
                await node.propose(b"p%d-%d-" % (k, i) + b"v" * 100, timeout=10)
                ops += 1

        t0 = time.monotonic()
        await asyncio.gather(*(proposer(k) for k in range(args.proposers)))
        dt = time.monotonic() - t0
        st1 = node.status()
        batches = st1["stats"]["fsync_batches"] - st0["stats"]["fsync_batches"]
        (out / "result.json").write_text(json.dumps({
            "ops": ops, "seconds": dt, "writes_per_s": ops / dt,
            "leader_fsync_batches": batches, "writes_per_fsync": ops / max(1, batches)}))
    while not (out / "done").exists():  # noqa: ASYNC110 - another process makes the file
        await asyncio.sleep(0.05)
    await node.stop()


def free_udp_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def bench_cluster(base: Path, seconds: float, proposers: int) -> dict:
    run = Path(tempfile.mkdtemp(dir=base, prefix="cluster-"))
    ports = free_udp_ports(3)
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
    procs = []
    try:
        for i in range(3):
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "member", "--id", str(i + 1), "--peers", peers,
                 "--data", str(run / f"d{i + 1}"), "--out", str(run),
                 "--seconds", str(seconds), "--proposers", str(proposers)],
                stdout=subprocess.DEVNULL, stderr=open(run / f"log{i + 1}", "wb")))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            roles = [(run / f"role-{i + 1}").read_text() if (run / f"role-{i + 1}").exists()
                     else "" for i in range(3)]
            if roles.count("leader") == 1:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("no leader")
        time.sleep(0.5)
        (run / "go").touch()
        deadline = time.monotonic() + seconds + 60
        while not (run / "result.json").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("no result")
            time.sleep(0.1)
        time.sleep(0.1)
        return json.loads((run / "result.json").read_text())
    finally:
        (run / "done").touch()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(run, ignore_errors=True)


# ------------------------------------------------------------------------------ recovery

async def build_wal(d: Path, entries: int, batch: int = 2000, size: int = 100) -> None:
    s = Storage.open(d)
    payload = b"x" * size
    for lo in range(1, entries + 1, batch):
        hi = min(entries, lo + batch - 1)
        await s.save(HardState(1, "1", hi), [Entry(1, i, data=payload) for i in range(lo, hi + 1)])
    s.close()


def time_open(d: Path) -> tuple[float, Storage]:
    t0 = time.perf_counter()
    s = Storage.open(d)
    return time.perf_counter() - t0, s


async def time_node_restart(d: Path, expect_applied: int) -> float:
    """Storage recovery + core construction + re-applying every committed entry."""
    port = free_udp_ports(1)[0]
    t0 = time.perf_counter()
    node = await RaftNode.start(node_id="1", peers={"1": ("127.0.0.1", port)},
                                transport_factory=udp_transport_factory(("127.0.0.1", port)),
                                data_dir=d, state_machine=CountSM(),
                                config=NodeConfig(snapshot_entries=10**9,
                                                  snapshot_bytes=1 << 40))
    await node.wait_applied(expect_applied, timeout=600)
    dt = time.perf_counter() - t0
    await node.stop()
    return dt


async def bench_wal(base: Path, runs: int, entries: int) -> None:
    d = Path(tempfile.mkdtemp(dir=base, prefix="wal-"))
    try:
        t0 = time.perf_counter()
        await build_wal(d, entries)
        build = time.perf_counter() - t0
        wal_bytes = sum(p.stat().st_size for p in (d / "wal").glob("*.wal"))
        opens = []
        for _ in range(runs):
            dt, s = time_open(d)
            assert s.last_index() == entries
            s.close()
            opens.append(dt)
        report("wal_recovery_storage_open", "s", opens, entries=entries, wal_bytes=wal_bytes,
               build_seconds=round(build, 2))
        restarts = [await time_node_restart(d, entries) for _ in range(runs)]
        report("wal_recovery_node_restart_and_reapply", "s", restarts, entries=entries)
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def bench_snapshot(base: Path, runs: int, mb: int) -> None:
    d = Path(tempfile.mkdtemp(dir=base, prefix="snap-"))
    try:
        s = Storage.open(d)
        await s.save(HardState(1, "1", 1), [Entry(1, 1, data=b"a")])
        data = os.urandom(mb << 20)
        t0 = time.perf_counter()
        await s.create_snapshot(1, ConfState(["1"]), data)
        write = time.perf_counter() - t0
        s.close()
        del data
        opens = []
        for _ in range(runs):
            dt, s = time_open(d)
            assert len(s.snapshot().data) == mb << 20
            s.close()
            opens.append(dt)
        report("snapshot_recovery_storage_open", "s", opens, snapshot_mb=mb,
               write_seconds=round(write, 3))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    report("snapshot_restore_kv_state_machine", "s",
           [time_kv_restore(mb) for _ in range(runs)], snapshot_mb=mb,
           value_bytes=100, key_bytes=16)


def time_kv_restore(mb: int) -> float:
    """The other half of recovering from a snapshot: the key-value state machine
    rebuilding its keys from ``mb`` MB of snapshot (16-byte keys, 100-byte values)."""
    import msgpack

    from meshraft.kv.state_machine import SNAPSHOT_VERSION, KVStateMachine

    n = (mb << 20) // 128  # ~128 bytes of snapshot per key
    value = b"v" * 100
    data = msgpack.packb({
        "v": SNAPSHOT_VERSION, "revision": n,
        "kv": [[b"k%015d" % i, value, i + 1, i + 1, 1] for i in range(n)],
        "sessions": [], "staged": [],
    }, use_bin_type=True)
    sm = KVStateMachine()
    t0 = time.perf_counter()
    sm.restore(data)
    dt = time.perf_counter() - t0
    assert len(sm) == n and len(data) >= (mb << 20) * 0.9, (len(sm), len(data))
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["all", "fsync", "cluster", "wal", "snapshot", "member"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where data dirs go (default: a temp dir)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--proposers", type=int, default=64)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--snapshot-mb", type=int, default=100)
    ap.add_argument("--id")
    ap.add_argument("--peers")
    ap.add_argument("--data")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.what == "member":
        asyncio.run(member(args))
        return
    base = Path(args.dir or tempfile.mkdtemp(prefix="meshraft-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        if args.what in ("all", "fsync"):
            report("fsyncs_per_second", "1/s", [bench_fsync(base) for _ in range(args.runs)],
                   dir=str(base))
        if args.what in ("all", "cluster"):
            results = [bench_cluster(base, args.seconds, args.proposers)
                       for _ in range(args.runs)]
            report("committed_writes_per_second", "1/s",
                   [r["writes_per_s"] for r in results], members=3, proposers=args.proposers,
                   writes_per_leader_fsync=[round(r["writes_per_fsync"], 1) for r in results])
        if args.what in ("all", "wal"):
            asyncio.run(bench_wal(base, args.runs, args.entries))
        if args.what in ("all", "snapshot"):
            asyncio.run(bench_snapshot(base, args.runs, args.snapshot_mb))
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

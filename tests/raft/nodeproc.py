"""A tiny runnable Raft member for crash tests: one RaftNode, a trivial state
machine, and a bounded write load.

    python tests/raft/nodeproc.py --id 1 --peers 1=127.0.0.1:7001,2=...,3=... \
        --dir BASE/1 [--transport udp|mesh] [--concurrency 4] [--max-ops 100000]
        [--snapshot-entries 200] [--compaction-margin 50] [--stop-file BASE/stop]

The state machine is an append-only list of the payloads it applied, so two
members agree iff their lists are equal. Files in ``--dir``:

- ``data/``        the member's Raft data dir
- ``acked.txt``    one payload per line, appended only after ``propose()``
                   returned for it (what a client was told is committed); every
                   incarnation of the member appends to the same file
- ``status.json``  rewritten (atomically) every 100 ms: the node's status, the
                   number of applied payloads and a digest of the list
- ``state.txt``    the whole applied list, one payload per line, written with
                   status.json once ``--stop-file`` exists (the load has stopped)

The load proposes ``<id>.<pid>.<n>`` from ``--concurrency`` workers; a proposal
that times out or fails is not acked and not retried (its outcome is unknown).
The load stops when ``--stop-file`` exists or after ``--max-ops`` proposals.
This is test tooling: it trusts its arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

import msgpack

from meshraft.raft.errors import RaftError, StorageError
from meshraft.raft.messages import Entry
from meshraft.raft.node import NodeConfig, RaftNode
from meshraft.raft.udp import udp_transport_factory


class ListStateMachine:
    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.digest = hashlib.sha256()

    def apply(self, entry: Entry) -> int:
        self.items.append(entry.data)
        self.digest.update(len(entry.data).to_bytes(4, "little") + entry.data)
        return len(self.items)

    def snapshot(self) -> bytes:
        return msgpack.packb(self.items, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        self.items = list(msgpack.unpackb(data, raw=False)) if data else []
        self.digest = hashlib.sha256()
        for it in self.items:
            self.digest.update(len(it).to_bytes(4, "little") + it)


def parse_peers(spec: str) -> dict[str, tuple[str, int]]:
    out = {}
    for part in spec.split(","):
        nid, addr = part.split("=", 1)
        host, port = addr.rsplit(":", 1)
        out[nid] = (host, int(port))
    return out


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--id", required=True)
    ap.add_argument("--peers", required=True)
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--transport", choices=["udp", "mesh"], default="udp")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-ops", type=int, default=100_000)
    ap.add_argument("--snapshot-entries", type=int, default=10_000)
    ap.add_argument("--compaction-margin", type=int, default=1000)
    ap.add_argument("--stop-file", type=Path, default=None)
    ap.add_argument("--no-load", action="store_true")
    args = ap.parse_args()

    args.dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    peers = parse_peers(args.peers)
    config = NodeConfig(snapshot_entries=args.snapshot_entries,
                        compaction_margin=args.compaction_margin)
    sm = ListStateMachine()
    router = None
    if args.transport == "udp":
        node_peers: dict = dict(peers)
        factory = udp_transport_factory(peers[args.id])
    else:
        from meshraft.mesh.router import Router
        from meshraft.meshconn import create_mesh_endpoint

        others = [f"{h}:{p}" for nid, (h, p) in peers.items() if nid != args.id]
        router = await Router.start(name=args.id, listen=peers[args.id], peers=others)
        node_peers = {nid: nid for nid in peers}

        def factory(pf):
            return create_mesh_endpoint(router, pf, channel="raft")

    try:
        node = await RaftNode.start(node_id=args.id, peers=node_peers,
                                    transport_factory=factory, data_dir=args.dir / "data",
                                    state_machine=sm, config=config)
    except StorageError as exc:
        print(f"nodeproc: cannot start: {exc}", file=sys.stderr)
        if router is not None:
            await router.stop()
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    acked_fd = os.open(args.dir / "acked.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    counter = {"n": 0, "ok": 0, "err": 0}

    def load_stopped() -> bool:
        return stop.is_set() or (args.stop_file is not None and args.stop_file.exists())

    async def worker() -> None:
        while not load_stopped() and counter["n"] < args.max_ops:
            counter["n"] += 1
            payload = f"{args.id}.{os.getpid()}.{counter['n']}".encode()
            try:
                await node.propose(payload, timeout=2.0)
            except RaftError:
                counter["err"] += 1
                await asyncio.sleep(0.05)
                continue
            os.write(acked_fd, payload + b"\n")  # only after propose() returned
            counter["ok"] += 1

    async def reporter() -> None:
        while not stop.is_set():
            st = node.status()
            st["items"] = len(sm.items)
            st["digest"] = sm.digest.hexdigest()
            st["load"] = dict(counter)
            st["pid"] = os.getpid()
            if load_stopped():
                write_atomic(args.dir / "state.txt",
                             "".join(i.decode() + "\n" for i in sm.items))
            write_atomic(args.dir / "status.json", json.dumps(st))
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(reporter())]
    if not args.no_load:
        tasks += [asyncio.create_task(worker()) for _ in range(args.concurrency)]
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await node.stop()
    if router is not None:
        await router.stop()
    os.close(acked_fd)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""A replicated dictionary: the Raft layer used as a library, with its own state machine.

Three processes, each a member of one Raft group over UDP, each with an HTTP API::

    PEERS=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
    python cmd/replicated_dict.py --id 1 --peers $PEERS --data /tmp/rd/1 --http 127.0.0.1:8001
    (the same with --id 2 --data /tmp/rd/2 --http 127.0.0.1:8002, and --id 3 ...)

    curl -X PUT --data-binary hello http://127.0.0.1:8001/kv/greeting   # from any member
    curl http://127.0.0.1:8003/kv/greeting                              # linearizable read
    curl http://127.0.0.1:8002/status                                   # the member's status

``PUT /kv/KEY`` (body: the value) and ``DELETE /kv/KEY`` go through Raft from any
member (a follower forwards them inside Raft) and answer once applied here, with
the log index; ``GET /kv/KEY`` waits for a read barrier (ReadIndex), then answers
from this member's copy; ``GET /status`` is ``RaftNode.status()``. An error the
caller may retry (no leader yet, a timeout) is ``503`` with ``{"error", "kind"}``.

Kill a member with SIGKILL and start it again with the same arguments: it
replays its write-ahead log from ``--data``, gets what it missed from the leader
(entries, or a snapshot when the leader has compacted them) and serves again.
``--http 127.0.0.1:0`` picks a free port; the first line on stdout says which::

    {"id": "1", "http": "http://127.0.0.1:40123", "raft": "127.0.0.1:7001"}

This program shows the Raft layer on its own (docs/raft-library.md): it must never
depend on the key-value service or the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

import msgpack
from aiohttp import web

from meshraft.raft import Entry, NodeConfig, RaftError, RaftNode, udp_transport_factory

log = logging.getLogger("replicated_dict")


class ReplicatedDict:
    """The state machine: a dict of str -> bytes. ``apply`` is deterministic (every
    member applies the same entries in the same order and ends with the same dict)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    @staticmethod
    def command(op: str, key: str, value: bytes = b"") -> bytes:
        return msgpack.packb([op, key, value], use_bin_type=True)

    def apply(self, entry: Entry) -> Any:
        op, key, value = msgpack.unpackb(entry.data, raw=False)
        if op == "set":
            self.data[key] = value
        elif op == "delete":
            self.data.pop(key, None)
        else:
            raise ValueError(f"unknown operation {op!r}")  # raised on every member alike
        return entry.index

    def snapshot(self) -> bytes:
        return msgpack.packb(self.data, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        self.data = msgpack.unpackb(data, raw=False) if data else {}


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def parse_peers(text: str) -> dict[str, tuple[str, int]]:
    peers = {}
    for item in filter(None, text.split(",")):
        nid, sep, addr = item.partition("=")
        if not sep or not nid:
            raise ValueError(f"peer {item!r} is not ID=HOST:PORT")
        peers[nid] = parse_hostport(addr)
    return peers


def error(status: int, exc: BaseException) -> web.Response:
    return web.json_response({"error": str(exc), "kind": type(exc).__name__}, status=status)


def http_app(node: RaftNode, sm: ReplicatedDict, timeout: float) -> web.Application:
    async def put(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        op = "delete" if request.method == "DELETE" else "set"
        value = b"" if op == "delete" else await request.read()
        try:
            index = await node.propose(sm.command(op, key, value), timeout=timeout)
        except ValueError as exc:  # too large for one entry
            return error(400, exc)
        except RaftError as exc:  # NotLeader, Unavailable, Timeout (outcome unknown), ...
            return error(503, exc)
        return web.json_response({"index": index})

    async def get(request: web.Request) -> web.Response:
        try:
            await node.read_barrier(timeout=timeout)
        except RaftError as exc:
            return error(503, exc)
        value = sm.data.get(request.match_info["key"])
        if value is None:
            return web.json_response({"error": "no such key"}, status=404)
        return web.Response(body=value, content_type="application/octet-stream")

    async def status(request: web.Request) -> web.Response:
        return web.json_response({**node.status(), "keys": len(sm.data)})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_put("/kv/{key}", put)
    app.router.add_delete("/kv/{key}", put)
    app.router.add_get("/kv/{key}", get)
    app.router.add_get("/status", status)
    return app


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="replicated_dict.py", description=__doc__.split("\n")[0])
    ap.add_argument("--id", required=True, help="this member's id (one of --peers)")
    ap.add_argument("--peers", required=True, metavar="ID=HOST:PORT,...",
                    help="every member's Raft (UDP) address, this one included")
    ap.add_argument("--data", required=True, metavar="DIR", help="this member's data dir")
    ap.add_argument("--http", default="127.0.0.1:0", metavar="HOST:PORT")
    ap.add_argument("--snapshot-entries", type=int, default=1000,
                    help="take a snapshot (and compact the log) every this many entries")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        peers = parse_peers(args.peers)
        http_host, http_port = parse_hostport(args.http)
        if args.id not in peers:
            raise ValueError(f"--id {args.id} is not in --peers")
    except ValueError as exc:
        print(f"replicated_dict: {exc}", file=sys.stderr)
        return 2
    sm = ReplicatedDict()
    try:
        node = await RaftNode.start(
            node_id=args.id, peers=peers, data_dir=args.data, state_machine=sm,
            transport_factory=udp_transport_factory(peers[args.id]),
            config=NodeConfig(snapshot_entries=args.snapshot_entries,
                              compaction_margin=min(1000, args.snapshot_entries)))
    except (RaftError, OSError) as exc:
        print(f"replicated_dict: cannot start member {args.id}: {exc}", file=sys.stderr)
        return 1
    runner = web.AppRunner(http_app(node, sm, args.timeout), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, http_host, http_port).start()
    except OSError as exc:
        print(f"replicated_dict: http {args.http}: {exc}", file=sys.stderr)
        await runner.cleanup()
        await node.stop()
        return 1
    host, port = runner.addresses[0][:2]
    raft_host, raft_port = peers[args.id]
    print(json.dumps({"id": args.id, "http": f"http://{host}:{port}",
                      "raft": f"{raft_host}:{raft_port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""The increment-only counter over the mesh, as a program (Weave Mesh's example).

    python cmd/counter.py --name a --listen 127.0.0.1:7001 [--peer 127.0.0.1:7002 ...] \\
                          --http 127.0.0.1:8001 [--password-file FILE] [--pn]

``POST /incr`` (optionally ``?n=5``) increments this peer's entry and answers the new
local total; ``GET /`` answers the total as a plain number; ``GET /status`` answers
the mesh status as JSON; ``GET /value.json`` the total and when it last changed.
Any number of counters on one mesh converge.

This program shows the mesh layer on its own: it must never depend on raft or kv.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from urllib.parse import parse_qs, urlsplit

from meshraft.mesh import Router, parse_address, read_password_file
from meshraft.mesh.crdt import CounterGossiper

MAX_HEADER = 8192


class TimedCounter(CounterGossiper):
    """Remembers when the value last changed (time.monotonic(), which is one clock
    for all processes on a Linux host), so a benchmark can time propagation."""

    changed_at = 0.0

    def incr(self, n: int = 1) -> None:
        super().incr(n)
        self.changed_at = time.monotonic()

    def _absorb(self, raw: bytes):  # type: ignore[no-untyped-def]
        news = super()._absorb(raw)
        if news is not None:
            self.changed_at = time.monotonic()
        return news


async def handle_http(counter: CounterGossiper, router: Router,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    status, body = 400, "bad request\n"
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if len(head) > MAX_HEADER:
            raise ValueError("header too large")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, target, _ = request_line.split(" ", 2)
        url = urlsplit(target)
        if method == "GET" and url.path == "/":
            status, body = 200, f"{counter.value()}\n"
        elif method == "GET" and url.path == "/value.json":
            status, body = 200, json.dumps(
                {"value": counter.value(), "changed_at": getattr(counter, "changed_at", 0.0)})
        elif method == "GET" and url.path == "/status":
            status, body = 200, json.dumps(router.status()) + "\n"
        elif method == "POST" and url.path == "/incr":
            n = int(parse_qs(url.query).get("n", ["1"])[0])
            counter.incr(n)
            status, body = 200, f"{counter.value()}\n"
        else:
            status, body = 404, "not found\n"
    except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            TimeoutError) as exc:
        status, body = 400, f"bad request: {exc}\n"
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    data = body.encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0", help="mesh HOST:PORT")
    ap.add_argument("--peer", action="append", default=[], help="a mesh HOST:PORT to join")
    ap.add_argument("--http", required=True, help="HTTP HOST:PORT")
    ap.add_argument("--password-file")
    ap.add_argument("--pn", action="store_true", help="a PN-counter (POST /incr?n=-1 works)")
    ap.add_argument("--heartbeat", type=float, default=0.5)
    ap.add_argument("--link-timeout", type=float, default=2.0)
    ap.add_argument("--gossip-interval", type=float, default=1.0)
    ap.add_argument("--link-filter", default="",
                    help="comma-separated peer names to refuse links with (for fault tests)")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        password = read_password_file(args.password_file) if args.password_file else None
        http_host, http_port = parse_address(args.http, listen=True)
        router = await Router.start(
            args.name, listen=parse_address(args.listen, listen=True), peers=args.peer,
            password=password,
            heartbeat=args.heartbeat, link_timeout=args.link_timeout,
            gossip_interval=args.gossip_interval,
            link_filter=[n for n in args.link_filter.split(",") if n])
    except (ValueError, OSError) as exc:
        print(f"counter: {exc}", file=sys.stderr)
        return 2
    counter = TimedCounter(router, "counter", pn=args.pn)
    server = await asyncio.start_server(
        lambda r, w: handle_http(counter, router, r, w), http_host, http_port)
    print(f"counter {args.name}: mesh {router.address[0]}:{router.address[1]}, "
          f"http {http_host}:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await router.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

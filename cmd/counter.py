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
import json
import logging
import signal
import sys
import time

from aiohttp import web
from crdt_counter import CounterGossiper  # beside this file (the script's directory)

from meshraft.mesh import Router, parse_address, read_password_file


class TimedCounter(CounterGossiper):
    """Remembers when the value last changed (time.monotonic(), which is one clock
    for all processes on a Linux host), so a benchmark can time propagation."""

    changed_at = 0.0

    def incr(self, n: int = 1) -> None:
        super().incr(n)
        self.changed_at = time.monotonic()

    def absorb(self, raw: bytes):  # type: ignore[no-untyped-def]
        news = super().absorb(raw)
        if news is not None:
            self.changed_at = time.monotonic()
        return news


def text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain")


def http_app(counter: CounterGossiper, router: Router) -> web.Application:
    """The counter's HTTP API (every path and method answered here: 404 otherwise)."""

    async def handle(request: web.Request) -> web.Response:
        method, path = request.method, request.path
        try:
            if method == "GET" and path == "/":
                return text(200, f"{counter.value()}\n")
            if method == "GET" and path == "/value.json":
                return text(200, json.dumps({"value": counter.value(),
                                             "changed_at": getattr(counter, "changed_at", 0.0)}))
            if method == "GET" and path == "/status":
                return text(200, json.dumps(router.status()) + "\n")
            if method == "POST" and path == "/incr":
                counter.incr(int(request.query.get("n", "1")))
                return text(200, f"{counter.value()}\n")
        except ValueError as exc:
            return text(400, f"bad request: {exc}\n")
        return text(404, "not found\n")

    app = web.Application(client_max_size=8192)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


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
    runner = web.AppRunner(http_app(counter, router), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, http_host, http_port).start()
    except OSError as exc:
        print(f"counter: http {http_host}:{http_port}: {exc}", file=sys.stderr)
        await runner.cleanup()
        await router.stop()
        return 2
    print(f"counter {args.name}: mesh {router.address[0]}:{router.address[1]}, "
          f"http {http_host}:{runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await router.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Ping a peer over MeshPacketConn (or plain UDP, for comparison), like ``ping``.

    # the responder: echoes every datagram
    python cmd/meshping.py --name a --listen 127.0.0.1:7001 --echo
    # the pinger: joins the mesh through a and pings it
    python cmd/meshping.py --name b --peer 127.0.0.1:7001 --target a --count 5

    --flood            one ping in flight, next one as soon as the reply arrives,
                       for --count pings or --duration seconds; prints round trips/s
    --oneway N         send N datagrams without waiting (paced in bursts), then ask
                       the responder how many arrived; prints datagrams/s
    --transport udp    the same over a plain UDP socket (--listen / --target HOST:PORT)
    --password-file F  a mesh password (both sides)
    --json             one JSON object with the results

This program shows the meshconn layer on its own; it must never depend on raft or kv.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import statistics
import struct
import sys
import time

from meshraft.mesh import Router, parse_address, read_password_file
from meshraft.meshconn import create_mesh_endpoint

PING, ONEWAY, QUERY, RESET = b"P", b"O", b"Q", b"R"
_seq = struct.Struct(">Q")


class Responder(asyncio.DatagramProtocol):
    """Echoes pings; counts one-way datagrams and answers QUERY with the count."""

    def __init__(self) -> None:
        self.oneway = 0
        self.first = self.last = 0.0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        kind = data[:1]
        if kind == PING:
            self.transport.sendto(data, addr)
        elif kind == ONEWAY:
            self.last = time.perf_counter()
            if not self.oneway:
                self.first = self.last
            self.oneway += 1
        elif kind == QUERY:  # count, and microseconds from the first to the last arrival
            span = int((self.last - self.first) * 1e6)
            self.transport.sendto(QUERY + _seq.pack(self.oneway) + _seq.pack(span), addr)
        elif kind == RESET:
            self.oneway = 0
            self.transport.sendto(RESET, addr)


class Pinger(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiters: dict[bytes, asyncio.Future] = {}
        self.errors: list[Exception] = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        key = data[:9] if data[:1] == PING else data[:1]
        fut = self.waiters.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(data)

    def error_received(self, exc):
        self.errors.append(exc)

    async def request(self, data: bytes, target, key: bytes, wait: float) -> bytes | None:
        fut = asyncio.get_running_loop().create_future()
        self.waiters[key] = fut
        self.transport.sendto(data, target)
        try:
            return await asyncio.wait_for(fut, wait)
        except TimeoutError:
            self.waiters.pop(key, None)
            return None


async def ping(p: Pinger, target, size: int, count: int, duration: float, interval: float,
               flood: bool, quiet: bool) -> dict:
    pad = b"\0" * max(0, size - 9)
    rtts: list[float] = []
    lost = 0
    start = time.perf_counter()
    cpu0 = time.process_time()
    seq = 0
    while seq < count and time.perf_counter() - start < duration:
        seq += 1
        head = PING + _seq.pack(seq)
        t0 = time.perf_counter()
        reply = await p.request(head + pad, target, head, 1.0)
        if reply is None:
            lost += 1
            if not quiet:
                print(f"no reply from {target}: seq={seq}", flush=True)
        else:
            rtt = time.perf_counter() - t0
            rtts.append(rtt)
            if not quiet:
                print(f"{len(reply)} bytes from {target}: seq={seq} time={rtt * 1000:.3f} ms",
                      flush=True)
        if not flood:
            await asyncio.sleep(interval)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    out = {"sent": seq, "received": len(rtts), "lost": lost, "seconds": round(elapsed, 4),
           "round_trips_per_s": round(len(rtts) / elapsed, 1) if elapsed else 0.0,
           # this process's CPU time per round trip (user + system): less noisy than rates
           "cpu_us_per_rt": round(cpu / max(1, len(rtts)) * 1e6, 2)}
    if rtts:
        rtts.sort()
        out["rtt_ms"] = {"min": rtts[0] * 1e3, "avg": statistics.fmean(rtts) * 1e3,
                         "p50": rtts[len(rtts) // 2] * 1e3,
                         "p99": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1e3,
                         "max": rtts[-1] * 1e3}
    return out


async def oneway(p: Pinger, target, size: int, n: int, duration: float) -> dict:
    if await p.request(RESET, target, RESET, 2.0) is None:
        raise OSError("responder did not answer RESET")
    data = ONEWAY + b"\0" * max(0, size - 1)
    start = time.perf_counter()
    sent = 0
    while sent < n and time.perf_counter() - start < duration:
        for _ in range(min(64, n - sent)):
            p.transport.sendto(data, target)
            sent += 1
        await asyncio.sleep(0)  # let the loop write and read between bursts
    # the count settles once everything in flight has arrived
    send_time = time.perf_counter() - start
    last, span, stable = -1, 0, 0
    while stable < 3:
        reply = await p.request(QUERY, target, QUERY, 1.0)
        if reply:
            got, span = _seq.unpack(reply[1:9])[0], _seq.unpack(reply[9:17])[0]
        else:
            got = last
        stable = stable + 1 if got == last else 0
        last = got
        if got >= sent:
            break
        await asyncio.sleep(0.05)
    # the rate at the receiver: arrivals over the time from the first to the last
    rate = (last - 1) / (span / 1e6) if span else 0.0
    return {"sent": sent, "received": last, "send_seconds": round(send_time, 4),
            "receive_seconds": round(span / 1e6, 4), "datagrams_per_s": round(rate, 1)}


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transport", choices=["mesh", "udp"], default="mesh")
    ap.add_argument("--name", default=None, help="mesh peer name")
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("--password-file")
    ap.add_argument("--channel", default="ping")
    ap.add_argument("--echo", action="store_true", help="be the responder")
    ap.add_argument("--target", help="peer name (mesh) or HOST:PORT (udp)")
    ap.add_argument("--count", type=int, default=2**62)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=float("inf"))
    ap.add_argument("--flood", action="store_true")
    ap.add_argument("--oneway", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    if not args.echo and not args.target:
        ap.error("give --echo or --target")
    loop = asyncio.get_running_loop()
    router = None
    factory = Responder if args.echo else Pinger
    try:
        if args.transport == "udp":
            transport, proto = await loop.create_datagram_endpoint(
                factory, local_addr=parse_address(args.listen, listen=True))
            target = parse_address(args.target) if args.target else None
            where = "{}:{}".format(*transport.get_extra_info("sockname")[:2])
        else:
            if not args.name:
                ap.error("--name is required with --transport mesh")
            pw = read_password_file(args.password_file) if args.password_file else None
            router = await Router.start(args.name, listen=parse_address(args.listen, listen=True),
                                        peers=args.peer, password=pw)
            transport, proto = await create_mesh_endpoint(router, factory, args.channel)
            target = args.target
            where = f"{args.name} (mesh {router.address[0]}:{router.address[1]})"
    except (OSError, ValueError) as exc:
        print(f"meshping: {exc}", file=sys.stderr)
        return 2
    try:
        if args.echo:
            print(f"meshping responder {where}", flush=True)
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            return 0
        if router is not None:  # wait for a route to the target
            deadline = time.monotonic() + 15
            while target not in router.reachable():
                if time.monotonic() > deadline:
                    print(f"meshping: no route to {target}", file=sys.stderr)
                    return 3
                await asyncio.sleep(0.02)
        assert isinstance(proto, Pinger)
        if args.oneway:
            res = await oneway(proto, target, args.size, args.oneway, args.duration)
        else:
            res = await ping(proto, target, args.size, args.count, args.duration,
                             args.interval, args.flood, quiet=args.json or args.flood)
        res.update(transport=args.transport, size=args.size,
                   password=bool(args.password_file))
        if args.json:
            print(json.dumps(res), flush=True)
        else:
            print(json.dumps(res, indent=1), flush=True)
        return 0 if res.get("received") else 1
    finally:
        transport.close()
        if router is not None:
            await router.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

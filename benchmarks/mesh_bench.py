"""Measurements for the mesh and MeshPacketConn, repeatable with one command.

    python benchmarks/mesh_bench.py ping    # round trips/s, UDP vs mesh (with/without password)
    python benchmarks/mesh_bench.py oneway  # one-way datagrams/s
    python benchmarks/mesh_bench.py mesh10  # 10 counters: full mesh, an increment, idle bytes
    python benchmarks/mesh_bench.py callback  # round trips with the reply sent from the
                                            # receive callback (no coroutine in between)
    python benchmarks/mesh_bench.py all     # options: --runs N --duration S --peers N ...

Every number is the median of ``--runs`` runs, each in fresh processes on loopback
(cmd/meshping.py and cmd/counter.py).  ``--json FILE`` also writes the raw runs.
This machine's load is reported with each table: on a busy machine, compare
ratios measured in the same run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MESHPING = str(ROOT / "cmd" / "meshping.py")
COUNTER = str(ROOT / "cmd" / "counter.py")
PY = sys.executable


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Processes started here, always stopped by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()


def run_json(argv: list[str], timeout: float) -> dict:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result from {' '.join(argv)}: {out.stderr[-500:]}")
    return json.loads(lines[-1])


def responder(procs: Procs, transport: str, pwfile: str | None) -> list[str]:
    """Start an echo responder; returns the pinger's arguments to reach it."""
    if transport == "udp":
        port = free_port(socket.SOCK_DGRAM)
        p = procs.start([PY, MESHPING, "--transport", "udp", "--listen", f"127.0.0.1:{port}",
                         "--echo"])
        p.stdout.readline()  # type: ignore[union-attr]
        return ["--transport", "udp", "--target", f"127.0.0.1:{port}"]
    port = free_port()
    extra = ["--password-file", pwfile] if pwfile else []
    p = procs.start([PY, MESHPING, "--name", "echo", "--listen", f"127.0.0.1:{port}",
                     "--echo", *extra])
    p.stdout.readline()  # type: ignore[union-attr]
    return ["--name", "pinger", "--peer", f"127.0.0.1:{port}", "--target", "echo", *extra]


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def bench_ping(args, pwfile: str, raw: dict) -> None:
    kinds = [("udp", None), ("mesh", None), ("mesh+password", pwfile)]
    res: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.runs):
        for size in (100, 8192):
            for kind, pw in kinds:  # interleaved, so load changes hit every kind alike
                procs = Procs()
                try:
                    target = responder(procs, "udp" if kind == "udp" else "mesh", pw)
                    r = run_json([PY, MESHPING, *target, "--flood", "--duration",
                                  str(args.duration), "--size", str(size), "--json"],
                                 timeout=args.duration + 30)
                finally:
                    procs.stop_all()
                res.setdefault((kind, size), []).append(r)
    raw["ping"] = {f"{k}/{s}": v for (k, s), v in res.items()}
    print(f"\nround trips per second, one in flight, {args.duration}s per run, median of "
          f"{args.runs} runs (load {load()})")
    print(f"{'datagram':>9} {'transport':>14} {'rt/s':>9} {'ratio':>6} {'p50 us':>8} "
          f"{'1/p50':>8} {'ratio':>6}")
    for size in (100, 8192):
        base = statistics.median(r["round_trips_per_s"] for r in res[("udp", size)])
        base50 = statistics.median(r["rtt_ms"]["p50"] for r in res[("udp", size)])
        for kind, _ in kinds:
            rs = res[(kind, size)]
            rate = statistics.median(r["round_trips_per_s"] for r in rs)
            p50 = statistics.median(r["rtt_ms"]["p50"] for r in rs)
            print(f"{size:>9} {kind:>14} {rate:>9.0f} {rate / base:>6.2f} {p50 * 1000:>8.1f} "
                  f"{1000 / p50:>8.0f} {base50 / p50:>6.2f}")


def bench_oneway(args, raw: dict) -> None:
    res: dict[str, list[dict]] = {}
    for _ in range(args.runs):
        for kind in ("udp", "mesh"):
            procs = Procs()
            try:
                target = responder(procs, kind, None)
                r = run_json([PY, MESHPING, *target, "--oneway", str(args.count), "--size", "100",
                              "--duration", "10", "--json"], timeout=60)
            finally:
                procs.stop_all()
            res.setdefault(kind, []).append(r)
    raw["oneway"] = res
    print(f"\none-way 100-byte datagrams, {args.count} sent as fast as the sender can, "
          f"median of {args.runs} (load {load()})")
    print(f"{'transport':>9} {'received/s':>11} {'delivered':>10}")
    for kind in ("udp", "mesh"):
        rs = res[kind]
        rate = statistics.median(r["datagrams_per_s"] for r in rs)
        frac = statistics.median(r["received"] / r["sent"] for r in rs)
        print(f"{kind:>9} {rate:>11.0f} {frac:>10.1%}")


# ---------------------------------------------------------------- callback ping-pong
# Both sides answer inside datagram_received (as a protocol that replies at once
# does), so the numbers show the transports, not a pinger's coroutine.

def _callback_side(role: str, kind: str, port: int, count: int, size: int) -> None:
    import asyncio

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, t):  # type: ignore[no-untyped-def]
            self.t = t

        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            self.t.sendto(data, addr)

    class Client(Echo):
        def __init__(self, target) -> None:  # type: ignore[no-untyped-def]
            self.target, self.n, self.stamps = target, 0, []
            self.done = asyncio.get_running_loop().create_future()

        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            self.stamps.append(time.perf_counter())
            self.n += 1
            if self.n >= count:
                self.done.set_result(None)
            else:
                self.t.sendto(data, self.target)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        router = None
        if kind == "udp":
            if role == "server":
                await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
            else:
                target = ("127.0.0.1", port)
                t, p = await loop.create_datagram_endpoint(lambda: Client(target),
                                                           local_addr=("127.0.0.1", 0))
        else:
            from meshraft.mesh import Router
            from meshraft.meshconn import create_mesh_endpoint

            if role == "server":
                router = await Router.start("echo", listen=("127.0.0.1", port))
                await create_mesh_endpoint(router, Echo, "ping")
            else:
                router = await Router.start("client", peers=[f"127.0.0.1:{port}"])
                for _ in range(2000):  # up to ~20 s for the link
                    if "echo" in router.links:
                        break
                    await asyncio.sleep(0.01)
                t, p = await create_mesh_endpoint(router, lambda: Client("echo"), "ping")
        if role == "server":
            print("ready", flush=True)
            await asyncio.sleep(3600)
            return
        t0, c0 = time.perf_counter(), time.process_time()
        t.sendto(b"x" * size, p.target)
        await asyncio.wait_for(p.done, 60)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        gaps = sorted(b - a for a, b in zip(p.stamps, p.stamps[1:], strict=False))
        print(json.dumps({"round_trips_per_s": count / wall, "p50_us": gaps[len(gaps) // 2] * 1e6,
                          "cpu_us_per_rt": cpu / count * 1e6}), flush=True)
        if router is not None:
            await router.stop()

    asyncio.run(run())


def bench_callback(args, raw: dict) -> None:
    res: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.runs):
        for size in (100, 8192):
            for kind in ("udp", "mesh"):
                procs = Procs()
                try:
                    port = free_port(socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
                    srv = procs.start([PY, __file__, "_side", "server", kind, str(port), "0", "0"])
                    srv.stdout.readline()  # type: ignore[union-attr]
                    r = run_json([PY, __file__, "_side", "client", kind, str(port),
                                  str(args.count // 5), str(size)], timeout=120)
                finally:
                    procs.stop_all()
                res.setdefault((kind, size), []).append(r)
    raw["callback"] = {f"{k}/{s}": v for (k, s), v in res.items()}
    print(f"\nround trips answered inside the receive callback, {args.count // 5} per run, "
          f"median of {args.runs} (load {load()})")
    print(f"{'datagram':>9} {'transport':>9} {'rt/s':>9} {'ratio':>6} {'p50 us':>8} "
          f"{'cpu us/rt':>10}")
    for size in (100, 8192):
        base = statistics.median(r["round_trips_per_s"] for r in res[("udp", size)])
        for kind in ("udp", "mesh"):
            rs = res[(kind, size)]
            rate = statistics.median(r["round_trips_per_s"] for r in rs)
            print(f"{size:>9} {kind:>9} {rate:>9.0f} {rate / base:>6.2f} "
                  f"{statistics.median(r['p50_us'] for r in rs):>8.1f} "
                  f"{statistics.median(r['cpu_us_per_rt'] for r in rs):>10.1f}")


def http(port: int, path: str = "/", method: str = "GET") -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()


def wait_for(pred, timeout: float, what: str) -> float:
    t0 = time.perf_counter()
    while True:
        try:
            if pred():
                return time.perf_counter() - t0
        except OSError:
            pass
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def mesh10_run(args) -> dict:
    procs = Procs()
    try:
        n = args.peers
        mesh_ports = [free_port() for _ in range(n)]
        http_ports = [free_port() for _ in range(n)]

        def start(i: int, seed: bool) -> None:
            argv = [PY, COUNTER, "--name", f"p{i}", "--listen", f"127.0.0.1:{mesh_ports[i]}",
                    "--http", f"127.0.0.1:{http_ports[i]}", "--log-level", "WARNING"]
            if seed:
                argv += ["--peer", f"127.0.0.1:{mesh_ports[0]}"]
            procs.start(argv)

        def links(p: int) -> int:
            st = json.loads(http(p, "/status"))
            return sum(1 for v in st["links"].values() if v["state"] == "established")

        start(0, False)
        wait_for(lambda: http(http_ports[0]) is not None, 20, "the seed")
        t0 = time.perf_counter()
        for i in range(1, n):
            start(i, True)
        serving = wait_for(lambda: all(http(p) is not None for p in http_ports), 60,
                           "all serving")
        wait_for(lambda: all(links(p) == n - 1 for p in http_ports), 60, "a full mesh")
        full = time.perf_counter() - t0
        time.sleep(1.0)
        base = int(http(http_ports[0]))
        sweep: list[float] = []

        def all_see() -> bool:
            s0 = time.perf_counter()
            ok = all(int(http(p)) == base + 1 for p in http_ports)
            sweep.append(time.perf_counter() - s0)
            return ok

        t1 = time.monotonic()  # one clock for every process on this host
        http(http_ports[n // 2], "/incr", "POST")
        wait_for(all_see, 30, "the increment everywhere")
        # when each counter changed, as it recorded it (not when our polling saw it)
        incr = max(json.loads(http(p, "/value.json"))["changed_at"] for p in http_ports) - t1
        time.sleep(2.0)  # idle: every byte every peer sent on its links over a quiet window

        def total_out() -> int:
            return sum(v["bytes_out"] for p in http_ports
                       for v in json.loads(http(p, "/status"))["links"].values())

        b0, w0 = total_out(), time.perf_counter()
        time.sleep(args.idle)
        b1, w1 = total_out(), time.perf_counter()
        return {"full_mesh_s": full, "all_serving_s": serving, "incr_all_s": incr,
                "poll_sweep_s": statistics.median(sweep),
                "idle_bytes_per_peer_s": (b1 - b0) / n / (w1 - w0)}
    finally:
        procs.stop_all()


def bench_mesh10(args, raw: dict) -> None:
    runs = [mesh10_run(args) for _ in range(args.runs)]
    raw["mesh10"] = runs

    def med(k: str) -> float:
        return statistics.median(r[k] for r in runs)

    print(f"\n{args.peers} counter processes joined through one seed (default timings: heartbeat "
          f"0.5s, gossip 1s), median of {args.runs} (load {load()})")
    print(f"  time from launching {args.peers - 1} processes until all serve HTTP: "
          f"{med('all_serving_s'):.2f} s")
    print(f"  time from launching them until every peer has {args.peers - 1} links:  "
          f"{med('full_mesh_s'):.2f} s")
    print(f"  time from POST /incr until the last of {args.peers} counters changed: "
          f"{med('incr_all_s') * 1000:.1f} ms (as each counter recorded it)")
    print(f"  idle traffic per peer (heartbeats + topology + counter anti-entropy): "
          f"{med('idle_bytes_per_peer_s'):.0f} bytes/s sent")


def main() -> int:
    if len(sys.argv) == 7 and sys.argv[1] == "_side":  # a process of the callback bench
        _, _, role, kind, port, count, size = sys.argv
        _callback_side(role, kind, int(port), int(count), int(size))
        return 0
    ap = argparse.ArgumentParser(description="mesh and MeshPacketConn measurements")
    ap.add_argument("what", choices=["ping", "callback", "oneway", "mesh10", "all"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--peers", type=int, default=10)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--json", help="write raw results here")
    args = ap.parse_args()
    raw: dict = {}
    with tempfile.TemporaryDirectory() as d:
        pwfile = os.path.join(d, "pw")
        Path(pwfile).write_text("bench password\n")
        if args.what in ("ping", "all"):
            bench_ping(args, pwfile, raw)
        if args.what in ("callback", "all"):
            bench_callback(args, raw)
        if args.what in ("oneway", "all"):
            bench_oneway(args, raw)
        if args.what in ("mesh10", "all"):
            bench_mesh10(args, raw)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

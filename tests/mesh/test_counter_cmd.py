"""cmd/counter.py as real processes: counters on one mesh converge."""

from __future__ import annotations

import signal
import sys
import urllib.request
from pathlib import Path

from conftest import free_ports, wait_until

COUNTER = str(Path(__file__).resolve().parents[2] / "cmd" / "counter.py")
FAST = ["--heartbeat", "0.1", "--link-timeout", "1.0", "--gossip-interval", "0.3"]


def get(port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        return r.read().decode()


def incr(port: int, n: int = 1) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/incr?n={n}", method="POST")
    with urllib.request.urlopen(req, timeout=2) as r:
        return r.read().decode()


def start(procs, name, mesh_port, http_port, seed=None, extra=()):
    argv = [sys.executable, COUNTER, "--name", name, "--listen", f"127.0.0.1:{mesh_port}",
            "--http", f"127.0.0.1:{http_port}", *FAST, *extra]
    if seed:
        argv += ["--peer", f"127.0.0.1:{seed}"]
    p = procs.start_raw(argv, name=f"counter-{name}")
    wait_until(lambda: get(http_port) is not None, 10, what=f"counter {name} serving")
    return p


def test_counters_in_separate_processes_converge(procs):
    ports = free_ports(8)
    mesh_ports, http_ports = ports[:4], ports[4:]
    names = "abcd"
    ps = [start(procs, names[0], mesh_ports[0], http_ports[0])]
    for i in range(1, 4):
        ps.append(start(procs, names[i], mesh_ports[i], http_ports[i], seed=mesh_ports[0]))
    incr(http_ports[0])
    incr(http_ports[1], 5)
    incr(http_ports[3], 2)
    incr(http_ports[3], 2)
    wait_until(lambda: all(get(p).strip() == "10" for p in http_ports), 10,
               what="all counters at 10")
    # one counter restarts (new life, new uid) and learns the total again
    ps[2].signal(signal.SIGTERM)
    assert ps[2].wait(10) == 0
    start(procs, "c", mesh_ports[2], http_ports[2], seed=mesh_ports[0])
    wait_until(lambda: get(http_ports[2]).strip() == "10", 10, what="restarted counter catches up")
    incr(http_ports[2], 3)
    wait_until(lambda: all(get(p).strip() == "13" for p in http_ports), 10, what="all at 13")
    assert '"routes"' in get(http_ports[0], "/status")


def test_counter_rejects_bad_requests_and_bad_flags(procs, tmp_path):
    mesh_port, http_port = free_ports(2)
    start(procs, "solo", mesh_port, http_port)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/nope", timeout=2)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    try:
        incr(http_port, "x")  # type: ignore[arg-type]
        raise AssertionError("expected 400")
    except urllib.error.HTTPError as e:
        assert e.code == 400
    assert get(http_port).strip() == "0"
    empty = tmp_path / "pw"
    empty.write_text("")
    p = procs.start_raw([sys.executable, COUNTER, "--name", "x", "--http", "127.0.0.1:0",
                         "--password-file", str(empty)], name="badflags")
    assert p.wait(10) == 2
    assert "empty" in p.log()


def routes(port: int) -> dict:
    import json

    return json.loads(get(port, "/status"))["routes"]


def test_a_paused_process_is_noticed_and_routes_move(procs):
    """b is SIGSTOPped: its links fall silent, time out, and a's route to c moves to d."""
    ports = free_ports(8)
    m, h = dict(zip("abcd", ports[:4], strict=True)), dict(zip("abcd", ports[4:], strict=True))
    start(procs, "b", m["b"], h["b"])
    pa = start(procs, "a", m["a"], h["a"], seed=m["b"], extra=["--link-filter", "c"])
    start(procs, "c", m["c"], h["c"], seed=m["b"], extra=["--link-filter", "a"])
    pb = procs.procs[0]
    start(procs, "d", m["d"], h["d"], seed=m["b"])
    wait_until(lambda: routes(h["a"]).get("c") == "b" and routes(h["a"]).get("d") == "d", 10,
               what="a reaches c via b (the tie-break) and d directly")
    pb.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: routes(h["a"]).get("c") == "d", 10, what="a's route to c moves to d")
        # The route can move first because c or d timed b out and gossiped it; a's own
        # link to b (the paused process keeps its sockets open) must still time out.
        wait_until(lambda: "heartbeat timeout" in pa.log(), 5, what="a times out its link to b")
        incr(h["a"], 4)
        wait_until(lambda: get(h["c"]).strip() == "4", 5, what="c counts a's increment via d")
    finally:
        pb.signal(signal.SIGCONT)
    wait_until(lambda: get(h["b"]).strip() == "4", 10, what="b catches up after SIGCONT")

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

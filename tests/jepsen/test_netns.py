"""netns plumbing with plain processes (no meshraft): reachability, partitions that cut
only node<->node traffic, heal, packet loss, teardown, and `jepsen-lite clean` after a
run that died without cleaning up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import wait_until
from jepsen_lite import netns
from jepsen_lite.netns import NetError, NetnsNet

pytestmark = pytest.mark.needs_root

# a UDP+TCP echo server: answers TCP connects with "hi", counts UDP datagrams, and
# reports the count to a TCP client that sends "count"
SERVER = textwrap.dedent("""
    import socket, sys, threading
    host = sys.argv[1]
    count = 0
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((host, 9100))
    def udp():
        global count
        while True:
            u.recv(2048); count += 1
    threading.Thread(target=udp, daemon=True).start()
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((host, 9100)); t.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = t.accept()
        c.settimeout(2)
        try:
            data = c.recv(100)
            c.sendall(str(count).encode() if data == b"count" else b"hi")
        except OSError:
            pass
        c.close()
""")

PROBE = textwrap.dedent("""
    import socket, sys
    s = socket.socket(); s.settimeout(float(sys.argv[2]))
    try:
        s.connect((sys.argv[1], 9100)); s.sendall(b"x"); print(s.recv(10).decode())
    except OSError as e:
        print("ERR", e); sys.exit(1)
""")


def tcp_ok(net: NetnsNet, src: str | None, dst: str, timeout: float = 1.5) -> bool:
    """Can ``src`` (a node, or None for the root namespace) reach ``dst``'s server?"""
    argv = [sys.executable, "-c", PROBE, net.nodes[dst].host, str(timeout)]
    if src is not None:
        argv = net.wrap(src, argv)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
    return res.returncode == 0 and res.stdout.strip() == "hi"


def udp_count(net: NetnsNet, node: str) -> int:
    argv = [sys.executable, "-c", PROBE.replace('b"x"', 'b"count"'), net.nodes[node].host, "2"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    assert res.returncode == 0, res.stdout + res.stderr
    return int(res.stdout.strip())


@pytest.fixture
def net():
    n = NetnsNet.create(3)
    servers: list[subprocess.Popen] = []
    try:
        for node in n.nodes:
            p = subprocess.Popen(n.wrap(node, [sys.executable, "-c", SERVER, n.nodes[node].host]),
                                 stdout=subprocess.PIPE, text=True)
            n.state.add_pid(p.pid)
            servers.append(p)
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        yield n
    finally:
        for p in servers:
            p.kill()
            p.wait()
        n.teardown()


def test_every_node_reachable_from_root_and_from_each_other(net):
    assert net.nodes["1"].namespace in netns.list_netns()
    for dst in net.nodes:
        assert tcp_ok(net, None, dst), f"root -> {dst}"
        for src in net.nodes:
            assert tcp_ok(net, src, dst), f"{src} -> {dst}"


def test_partition_cuts_only_node_to_node_and_heal_restores(net):
    net.partition({"1": {"2", "3"}})
    assert not tcp_ok(net, "1", "2")
    assert not tcp_ok(net, "2", "1")
    assert not tcp_ok(net, "3", "1")
    assert tcp_ok(net, "2", "3"), "the majority side still talks"
    for dst in net.nodes:  # clients in the root namespace are never cut off
        assert tcp_ok(net, None, dst)
    assert "DROP" in net.rules("1")
    net.heal()
    assert "DROP" not in net.rules("1")
    assert tcp_ok(net, "1", "2") and tcp_ok(net, "3", "1")


def test_partition_replaces_the_previous_one(net):
    net.partition({"1": {"2"}})
    assert not tcp_ok(net, "1", "2")
    net.partition({"3": {"2"}})
    assert tcp_ok(net, "1", "2")
    assert not tcp_ok(net, "3", "2")


def test_loss_drops_a_share_of_peer_datagrams(net):
    send = textwrap.dedent("""
        import socket, sys, time
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(400):  # paced, so the receiver's buffer never overflows
            s.sendto(b"d", (sys.argv[1], 9100))
            time.sleep(0.001)
    """)
    net.loss(0.5, nodes=["1"])
    before = udp_count(net, "1")
    subprocess.run(net.wrap("2", [sys.executable, "-c", send, net.nodes["1"].host]), check=True)
    time.sleep(0.3)
    got = udp_count(net, "1") - before
    assert 80 < got < 320, f"expected about half of 400 datagrams, got {got}"
    # node 2 is not a target: datagrams to it all arrive
    before2 = udp_count(net, "2")
    subprocess.run(net.wrap("3", [sys.executable, "-c", send, net.nodes["2"].host]), check=True)
    time.sleep(0.3)
    assert udp_count(net, "2") - before2 >= 390
    net.heal()
    before = udp_count(net, "1")
    subprocess.run(net.wrap("2", [sys.executable, "-c", send, net.nodes["1"].host]), check=True)
    time.sleep(0.3)
    assert udp_count(net, "1") - before >= 390


def test_loss_rejects_bad_probability(net):
    with pytest.raises(NetError):
        net.loss(1.5)


def test_teardown_is_idempotent_and_removes_everything():
    n = NetnsNet.create(2)
    names = list(n.state.namespaces)
    veth = n.state.root_veth
    assert set(names) <= set(netns.list_netns())
    assert veth in netns.list_root_links()
    n.teardown()
    n.teardown()
    assert not set(names) & set(netns.list_netns())
    assert veth not in netns.list_root_links()
    assert not n.state.path.exists()


def test_two_runs_get_disjoint_addresses():
    a = NetnsNet.create(2)
    try:
        b = NetnsNet.create(2)
        try:
            assert a.state.slot != b.state.slot
            assert not {x.host for x in a.nodes.values()} & {x.host for x in b.nodes.values()}
        finally:
            b.teardown()
    finally:
        a.teardown()


CRASHER = textwrap.dedent("""
    import subprocess, sys, time
    from jepsen_lite.netns import NetnsNet
    net = NetnsNet.create(2)
    p = subprocess.Popen(net.wrap("1", [sys.executable, "-c", "import time; time.sleep(600)"]),
                         start_new_session=True)
    net.state.add_pid(p.pid)
    print(net.state.run_id, p.pid, flush=True)
    time.sleep(600)
""")


def test_clean_removes_what_a_killed_run_left_behind():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    crasher = subprocess.Popen([sys.executable, "-c", CRASHER], stdout=subprocess.PIPE,
                               text=True, env=env)
    assert crasher.stdout is not None
    run_id, child = crasher.stdout.readline().split()
    child_pid = int(child)
    try:
        # while the owner lives, clean leaves the run alone
        res = subprocess.run([sys.executable, "-m", "jepsen_lite.cli", "clean", "--json"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 0, res.stderr
        assert any(run_id in ns for ns in netns.list_netns())
        os.kill(crasher.pid, signal.SIGKILL)  # the run dies without cleaning up
        crasher.wait()
        assert os.path.exists(f"/proc/{child_pid}")
        res = subprocess.run([sys.executable, "-m", "jepsen_lite.cli", "clean", "--json"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 0, res.stderr
        removed = json.loads(res.stdout)
        assert run_id in removed["runs"]
        assert str(child_pid) in removed["processes"]
        assert not any(run_id in ns for ns in netns.list_netns())
        assert not any(run_id in link for link in netns.list_root_links())
        wait_until(lambda: not os.path.exists(f"/proc/{child_pid}")
                   or "Z" in open(f"/proc/{child_pid}/stat").read().split(")")[1][:3],
                   timeout=5, what="the recorded process to die")
    finally:
        if crasher.poll() is None:
            crasher.kill()
        subprocess.run([sys.executable, "-m", "jepsen_lite.cli", "clean"],
                       capture_output=True, env=env, timeout=60)

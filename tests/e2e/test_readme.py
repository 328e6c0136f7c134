"""The README's main command, used the way a new user would: start a local cluster,
put, get, Ctrl-C, start it again, get."""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys

from e2e_cluster import TRANSPORT, wait_until


def start_cluster(procs, cwd):
    # exactly `meshraft cluster --nodes 3`, run from the user's directory
    extra = "" if TRANSPORT == "mesh" else " --transport udp"
    cmd = (f"cd {shlex.quote(str(cwd))} && exec {shlex.quote(sys.executable)} -m meshraft.cli "
           f"cluster --nodes 3{extra}")
    proc = procs.start_raw(["sh", "-c", cmd], name="cluster")
    wait_until(lambda: "cluster ready" in proc.log() or not proc.alive(), 60,
               what="the cluster to report ready")
    assert proc.alive(), proc.log()
    endpoints = re.search(r"^endpoints: (\S+)$", proc.log(), re.M).group(1)
    return proc, endpoints


def meshraft(cwd, *args: str) -> subprocess.CompletedProcess:
    """A command as the user types it in the same directory (no --endpoints)."""
    return subprocess.run([sys.executable, "-m", "meshraft.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def ctrl_c(proc) -> None:
    proc.signal(signal.SIGINT)
    assert proc.wait(30) == 0, proc.log()
    assert "stopped." in proc.log()


def refuses(endpoint: str) -> bool:
    host, port = endpoint.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def test_cluster_start_put_get_ctrl_c_start_get(procs):
    home = procs.tmpdir("user")
    proc, endpoints = start_cluster(procs, home)
    assert len(endpoints.split(",")) == 3
    assert (home / "meshraft-data" / "cluster.json").exists()

    r = meshraft(home, "put", "greeting", "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK (revision ")
    r = meshraft(home, "get", "greeting")
    assert (r.returncode, r.stdout) == (0, "hello\n")
    # the endpoints it printed work from anywhere
    r = meshraft(procs.tmpdir("elsewhere"), "get", "greeting", "--endpoints", endpoints)
    assert (r.returncode, r.stdout) == (0, "hello\n")

    ctrl_c(proc)
    # every member stopped: nothing listens on the client ports any more
    assert all(refuses(ep) for ep in endpoints.split(","))
    logs = [(home / "meshraft-data" / f"node-{i}.log").read_text() for i in (1, 2, 3)]
    assert all("stopped" in log for log in logs)

    proc, endpoints_again = start_cluster(procs, home)
    assert endpoints_again == endpoints  # the same ports, kept in the data dir
    r = meshraft(home, "get", "greeting")
    assert (r.returncode, r.stdout) == (0, "hello\n")
    st = json.loads(meshraft(home, "status", "--json").stdout)
    assert st["role"] in ("leader", "follower") and st["leader"] is not None
    ctrl_c(proc)


def test_cluster_refuses_a_different_size_on_the_same_data(procs):
    home = procs.tmpdir("user")
    proc, _ = start_cluster(procs, home)
    ctrl_c(proc)
    r = meshraft(home, "cluster", "--nodes", "5")
    assert r.returncode == 2 and "3-node cluster" in r.stderr


def test_cluster_plan_keeps_its_ports_and_honours_base_port(tmp_path):
    from meshraft.cli import plan_cluster

    first = plan_cluster(tmp_path / "a", 3, None, "mesh")
    again = plan_cluster(tmp_path / "a", 3, None, "mesh")
    assert first == again  # free ports chosen once, reused on the next run
    ports = [int(m[k].rsplit(":", 1)[1]) for m in first["members"] for k in ("peer", "client")]
    assert len(set(ports)) == 6
    fixed = plan_cluster(tmp_path / "b", 3, 21000, "udp")
    assert [(m["peer"], m["client"]) for m in fixed["members"]] == [
        ("127.0.0.1:21000", "127.0.0.1:21001"), ("127.0.0.1:21002", "127.0.0.1:21003"),
        ("127.0.0.1:21004", "127.0.0.1:21005")]

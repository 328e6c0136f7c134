"""The foundation's own promises: both commands install and answer --help, and
the test helpers keep theirs (OS ports, processes stopped by PID)."""

import subprocess
import sys

from conftest import free_ports


def test_meshraft_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "meshraft.cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Commands:" in out.stdout


def test_jepsen_lite_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "jepsen_lite.cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Commands:" in out.stdout


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = free_ports(5)
    assert len(set(ports)) == 5
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_process_manager_stops_what_it_started(procs):
    p = procs.start_raw([sys.executable, "-c", "import time; time.sleep(60)"])
    assert p.alive()
    procs.stop_all()
    assert not p.alive()

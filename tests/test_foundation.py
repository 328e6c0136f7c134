"""The foundation's own promises: both commands install and answer --help, and
the test helpers keep theirs (OS ports, processes stopped by PID)."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import free_ports, wait_until


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


def test_process_manager_reaps_children_of_a_killed_process_and_removes_its_dirs():
    """A process that was SIGKILLed cannot stop what it started (like the members
    of `meshraft cluster`): close() still stops them, and removes the temp dirs."""
    from conftest import ProcessManager

    root = Path(tempfile.mkdtemp(prefix="meshraft-test-"))
    manager = ProcessManager(root)
    pidfile = manager.tmpdir("x") / "child.pid"
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(c.pid)); time.sleep(60)")
    parent = manager.start_raw([sys.executable, "-c", code])
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text(), what="the child's pid")
        child = int(pidfile.read_text())
        parent.kill()
        os.kill(child, 0)  # the orphan is still running
        manager.close()
        wait_until(lambda: not _running(child), what="the orphaned child to be stopped")
        assert not root.exists()
    finally:
        manager.close()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"  # a zombie has stopped
    except FileNotFoundError:
        return False


def test_needs_root_skips_outside_ci_and_fails_under_ci(tmp_path):
    """The marker's promise, checked in a separate pytest run as a non-root user
    would see it: skipped locally, a failure under CI=true."""
    import shutil

    here = Path(__file__).parent
    shutil.copy(here / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    needs_root: root only\n")
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n\n@pytest.mark.needs_root\ndef test_probe():\n    pass\n")

    def run(ci: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "CI": ci, "MESHRAFT_TEST_PRETEND_NONROOT": "1"}
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs",
                               "-q", str(tmp_path)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    local = run("")
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
    ci = run("true")
    assert ci.returncode == 1 and "1 error" in ci.stdout, ci.stdout  # setup fails
    assert "root-only tests must run in CI" in ci.stdout

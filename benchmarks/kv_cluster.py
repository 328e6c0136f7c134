"""A throw-away local cluster of `meshraft serve` processes for the kv benchmarks
(failover.py, seq_put.py). Ports from the OS, data in a temp dir removed at the end;
every process it starts is stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meshraft.kv.client import Client, MeshraftError
from meshraft.ports import free_ports


class LocalCluster:
    def __init__(self, n: int = 3, transport: str = "mesh") -> None:
        self.transport = transport
        self.root = Path(tempfile.mkdtemp(prefix="meshraft-bench-"))
        ports = free_ports(2 * n)
        self.ids = [str(i) for i in range(1, n + 1)]
        self.peer = {i: f"127.0.0.1:{ports[2 * k]}" for k, i in enumerate(self.ids)}
        self.client = {i: f"127.0.0.1:{ports[2 * k + 1]}" for k, i in enumerate(self.ids)}
        self.procs: dict[str, subprocess.Popen] = {}

    def endpoints(self, ids=None) -> str:
        return ",".join(self.client[i] for i in (ids or self.ids))

    def start(self, i: str) -> None:
        peers = ",".join(f"{j}={self.peer[j]}" for j in self.ids)
        log = open(self.root / f"node-{i}.log", "ab")
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "meshraft.cli", "serve", "--id", i, "--peers", peers,
             "--client", self.client[i], "--data-dir", str(self.root / f"node-{i}"),
             "--transport", self.transport, "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def start_all(self) -> None:
        for i in self.ids:
            self.start(i)

    def kill(self, i: str) -> None:
        p = self.procs[i]
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()

    def status(self, i: str) -> dict | None:
        try:
            with Client([self.client[i]], timeout=0.5, connect_timeout=0.3) as c:
                return c.status()
        except MeshraftError:
            return None

    def wait_leader(self, among=None, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in among or self.ids:
                st = self.status(i)
                if st and st.get("role") == "leader":
                    return str(st["id"])
            time.sleep(0.05)
        raise RuntimeError("no leader")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]

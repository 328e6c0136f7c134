"""Helpers for the operations tests: a cluster of real `meshraft serve` processes with
``--metrics 127.0.0.1:0`` (each member's HTTP port comes from the OS and is found through
the ``status`` op, as `meshraft endpoint health` finds it), and small HTTP readers.

A helper module, not a conftest.py (see tests/e2e/e2e_cluster.py for why)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest


def _e2e_cluster():
    """tests/e2e/e2e_cluster.py (Cluster, wait_until, the procs-based helpers)."""
    path = Path(__file__).resolve().parents[1] / "e2e" / "e2e_cluster.py"
    mod = sys.modules.get("e2e_cluster")
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve() == path:
        return mod
    spec = importlib.util.spec_from_file_location("meshraft_ops_e2e_cluster", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


e2e = _e2e_cluster()
Cluster = e2e.Cluster
wait_until = e2e.wait_until
free_ports = e2e.free_ports


class MetricsCluster(Cluster):
    """A Cluster whose members serve /metrics and the health endpoints."""

    def __init__(self, procs, n: int = 3, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(procs, n, extra_args=("--metrics", "127.0.0.1:0", *extra_args))

    def metrics_address(self, i: str, timeout: float = 20.0) -> str:
        """HOST:PORT of member i's metrics server (from its status)."""

        def find():
            try:
                st = self.status(i)
            except e2e.MeshraftError:
                return None
            return st.get("metrics")

        return wait_until(find, timeout, 0.1, what=f"member {i}'s metrics address")


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text format -> {sample name: [(labels, value), ...]} (with the
    prometheus-client parser: what Prometheus itself would read)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def need_tool(name: str) -> str:
    """The path of a Debian tool the test needs (prometheus, promtool): skipped when it
    is missing, except under CI=true where .ci/run installs it (then a failure)."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                  else None)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is missing (Debian's prometheus package; .ci/run installs it)")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return path

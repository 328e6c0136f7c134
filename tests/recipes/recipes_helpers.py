"""Helpers for the recipes tests: the e2e cluster of real `meshraft serve` processes
(tests/e2e/e2e_cluster.py, loaded by path as tests/ops does).

A helper module, not a conftest.py (see tests/e2e/e2e_cluster.py for why)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _e2e_cluster():
    path = Path(__file__).resolve().parents[1] / "e2e" / "e2e_cluster.py"
    mod = sys.modules.get("e2e_cluster")
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve() == path:
        return mod
    spec = importlib.util.spec_from_file_location("meshraft_recipes_e2e_cluster", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


e2e = _e2e_cluster()
Cluster = e2e.Cluster
wait_until = e2e.wait_until


@pytest.fixture
def cluster(procs):
    c = Cluster(procs)
    c.start_all()
    c.leader()
    yield c

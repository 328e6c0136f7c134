"""Helpers for end-to-end tests: a cluster of real `meshraft serve` processes started
through the lead's `procs` fixture (so every process is stopped by PID). Addresses,
command lines and who leads come from :mod:`meshraft.localcluster`, as for every
other local cluster.

A helper module, not a conftest.py: a second `conftest` module would shadow the root
one that other test directories import from."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from meshraft.kv.client import Client, MeshraftError
from meshraft.localcluster import pick_leader, plan_members, serve_argv


def _root_conftest():
    """tests/conftest.py (free_ports, wait_until), however pytest imported it."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "conftest.py"
    mod = sys.modules.get("conftest")
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve() == path:
        return mod
    spec = importlib.util.spec_from_file_location("meshraft_root_conftest", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_root = _root_conftest()
free_ports = _root.free_ports
wait_until = _root.wait_until


def mesh_available() -> bool:
    try:
        import meshraft.meshconn  # noqa: F401
    except ImportError:
        return False
    return True


# The transport end-to-end tests use; MESHRAFT_E2E_TRANSPORT=udp|mesh overrides.
TRANSPORT = os.environ.get("MESHRAFT_E2E_TRANSPORT") or ("mesh" if mesh_available() else "udp")


class Cluster:
    """N members on loopback. Data dirs survive stop/kill, so members can be restarted."""

    def __init__(self, procs, n: int = 3, transport: str = TRANSPORT,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.procs = procs
        self.extra_args = extra_args
        self.transport = transport
        self.addrs = plan_members(n)
        self.ids = [m.id for m in self.addrs]
        self.peer = {m.id: m.peer for m in self.addrs}
        self.client = {m.id: m.client for m in self.addrs}
        self.dirs = {i: procs.tmpdir(f"node{i}") for i in self.ids}
        self.members: dict[str, object] = {}

    @property
    def peers_arg(self) -> str:
        return ",".join(f"{i}={self.peer[i]}" for i in self.ids)

    def endpoints(self, ids=None) -> str:
        return ",".join(self.client[i] for i in (ids or self.ids))

    def start(self, i: str):
        addr = next(m for m in self.addrs if m.id == i)
        p = self.procs.start_raw(serve_argv(addr, self.addrs, self.dirs[i], self.transport,
                                            self.extra_args), name=f"node{i}")
        self.members[i] = p
        return p

    def start_all(self) -> None:
        for i in self.ids:
            self.start(i)

    def alive(self) -> list[str]:
        return [i for i, p in self.members.items() if p.alive()]

    def kill(self, i: str) -> None:
        self.members[i].kill()

    def stop(self, i: str) -> int | None:
        return self.members[i].terminate()

    def status(self, i: str, timeout: float = 1.0) -> dict:
        with Client([self.client[i]], timeout=timeout, connect_timeout=0.5) as c:
            return c.status()

    def leader(self, among=None, timeout: float = 20.0) -> str:
        """Wait until a member among ``among`` is leader and says so; return its id."""
        ids = among or self.alive()

        def find():
            statuses = {}
            for i in ids:
                try:
                    statuses[i] = self.status(i)
                except MeshraftError:
                    statuses[i] = None
            return pick_leader(statuses, hearsay=False)

        return wait_until(find, timeout, 0.1, what=f"a leader among {ids}")

    def client_for(self, ids=None, **kw) -> Client:
        return Client(self.endpoints(ids), **kw)

    def logs(self) -> str:
        return "\n".join(f"--- node {i}\n{p.log()[-3000:]}" for i, p in self.members.items())

    def cli(self, *args: str, ids=None, input: str | None = None):
        return self.procs.run(*args, "--endpoints", self.endpoints(ids), input=input)

    def cli_json(self, *args: str, ids=None) -> dict:
        r = self.cli(*args, "--json", ids=ids)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


@pytest.fixture
def cluster(procs):
    c = Cluster(procs)
    c.start_all()
    c.leader()
    try:
        yield c
    finally:
        for p in c.members.values():
            p.signal(signal.SIGCONT)

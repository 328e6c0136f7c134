"""The Raft layer as a library: what ``meshraft.raft`` offers, and what it never
pulls in (the key-value service, the CLI, the mesh, jepsen-lite, its own test
support)."""

from __future__ import annotations

import subprocess
import sys

import meshraft.raft as raft


def test_every_exported_name_resolves_to_its_definition() -> None:
    from meshraft.raft import errors, node, udp

    assert raft.__doc__ and "StateMachine" in raft.__doc__
    for name in raft.__all__:
        assert getattr(raft, name) is not None, name
    assert raft.RaftNode is node.RaftNode and raft.NodeConfig is node.NodeConfig
    assert raft.udp_transport_factory is udp.udp_transport_factory
    assert raft.NodeFailed is errors.NodeFailed and issubclass(raft.NodeFailed, raft.RaftError)
    assert {"RaftNode", "NodeConfig", "StateMachine", "udp_transport_factory", "Storage",
            "RaftError", "NodeFailed", "MembershipRefused"} <= set(raft.__all__)


def test_the_library_imports_nothing_above_or_beside_it() -> None:
    code = (
        "import sys, meshraft.raft as r\n"
        "for n in r.__all__: getattr(r, n)\n"
        "import meshraft.raft.envelope, meshraft.raft.notices, meshraft.raft.datadir\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('meshraft.kv', 'meshraft.cli',"
        " 'meshraft.mesh', 'meshraft.meshconn', 'meshraft.raft.rafttest', 'jepsen_lite')))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr

"""The kv package's and the top package's public API: every name in ``__all__`` is there,
is the object its home module defines, and a lower module imports without the others."""

from __future__ import annotations

import subprocess
import sys

import meshraft
import meshraft.kv
from meshraft.kv import client, errors, server, state_machine, watch_client
from meshraft.member import Member, MemberConfig


def test_every_kv_name_resolves_to_its_home_module():
    homes = (client, errors, server, state_machine, watch_client)
    for name in meshraft.kv.__all__:
        value = getattr(meshraft.kv, name)
        assert any(getattr(m, name, None) is value for m in homes), name
    assert meshraft.kv.Busy.code == "busy" and issubclass(meshraft.kv.Busy, meshraft.kv.Unavailable)
    # the client module still offers its errors under their old names
    assert client.OutcomeUnknown is errors.OutcomeUnknown


def test_the_top_package_offers_the_client_and_the_member():
    for name in meshraft.__all__:
        assert getattr(meshraft, name) is not None, name
    assert meshraft.Client is client.Client and meshraft.AsyncClient is client.AsyncClient
    assert meshraft.Member is Member and meshraft.MemberConfig is MemberConfig
    assert meshraft.MeshraftError is errors.MeshraftError


def test_importing_the_protocol_loads_neither_the_server_nor_raft():
    code = ("import sys, meshraft.kv.protocol; "
            "print(sorted(m for m in sys.modules if m.startswith('meshraft')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert "meshraft.kv.server" not in out and "meshraft.raft" not in out, out
    assert "meshraft.kv.client" not in out, out

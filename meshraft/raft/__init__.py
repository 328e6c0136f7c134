"""Raft as a library: replicate your own state machine over the mesh or plain UDP.

What the layer offers (the documented API is in docs/raft-library.md)::

    from meshraft.raft import NodeConfig, RaftNode, udp_transport_factory

    class Dict:                                   # your StateMachine
        def apply(self, entry): ...               # deterministic; returns the result
        def snapshot(self) -> bytes: ...
        def restore(self, data: bytes) -> None: ...

    node = await RaftNode.start(node_id="1", peers={"1": (h, p1), "2": ..., "3": ...},
                                transport_factory=udp_transport_factory((h, p1)),
                                data_dir="data/1", state_machine=Dict())
    result = await node.propose(b"...")            # linearizable write, from any member
    await node.read_barrier()                      # then read your state machine
    await node.add_member("4", (h, p4)); await node.stop()

- ``RaftNode``, ``NodeConfig``, ``StateMachine`` (node): the asyncio member that
  drives the core with a clock, a datagram transport, durable storage and your
  state machine; membership changes, leadership transfer, status.
- ``udp_transport_factory`` (udp): a UDP transport; the mesh's
  ``meshraft.meshconn.create_mesh_endpoint`` gives the same shape over the mesh.
- the errors callers catch (errors): ``RaftError`` and its ``NotLeader``,
  ``Unavailable``/``Busy`` (certainly not applied), ``Timeout`` (outcome unknown),
  ``StorageFailed``, ``Removed``, ``NodeFailed`` (a bug stopped the member),
  ``StorageError`` (a data dir that cannot be used); ``MembershipRefused`` (a
  ValueError: a change that can never succeed).
- ``Entry``, ``EntryType`` (messages): what ``StateMachine.apply`` receives.
- ``RaftCore``, ``RaftConfig``, ``ConfChangeVerdict`` (core): the sans-IO core, for
  a driver of your own; ``Storage`` (storage): its write-ahead log and snapshots.

Nothing here knows about the key-value store, the CLI or what the transport is
beyond "an address per member id". Test support (the simulator, scripted
scenarios) is in ``meshraft.raft.rafttest``, not here. Names are loaded on first
use, so ``import meshraft.raft.errors`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the submodule that defines it
_EXPORTS = {
    "RaftNode": "node",
    "NodeConfig": "node",
    "StateMachine": "node",
    "TransportFactory": "node",
    "MembershipRefused": "node",
    "udp_transport_factory": "udp",
    "RaftError": "errors",
    "NotLeader": "errors",
    "Unavailable": "errors",
    "Busy": "errors",
    "Timeout": "errors",
    "StorageFailed": "errors",
    "Removed": "errors",
    "NodeFailed": "errors",
    "StorageError": "errors",
    "Entry": "messages",
    "EntryType": "messages",
    "RaftCore": "core",
    "RaftConfig": "core",
    "ConfChangeVerdict": "core",
    "ConfChangeOutcome": "core",
    "Storage": "storage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'meshraft.raft' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"meshraft.raft.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

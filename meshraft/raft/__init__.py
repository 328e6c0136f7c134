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

from meshraft.lazy import lazy_exports

# name -> the module that defines it
_EXPORTS = {
    "RaftNode": "meshraft.raft.node",
    "NodeConfig": "meshraft.raft.node",
    "StateMachine": "meshraft.raft.node",
    "TransportFactory": "meshraft.raft.node",
    "MembershipRefused": "meshraft.raft.node",
    "udp_transport_factory": "meshraft.raft.udp",
    "RaftError": "meshraft.raft.errors",
    "NotLeader": "meshraft.raft.errors",
    "Unavailable": "meshraft.raft.errors",
    "Busy": "meshraft.raft.errors",
    "Timeout": "meshraft.raft.errors",
    "StorageFailed": "meshraft.raft.errors",
    "Removed": "meshraft.raft.errors",
    "NodeFailed": "meshraft.raft.errors",
    "StorageError": "meshraft.raft.errors",
    "Entry": "meshraft.raft.messages",
    "EntryType": "meshraft.raft.messages",
    "RaftCore": "meshraft.raft.core",
    "RaftConfig": "meshraft.raft.core",
    "ConfChangeVerdict": "meshraft.raft.core",
    "ConfChangeOutcome": "meshraft.raft.core",
    "Storage": "meshraft.raft.storage",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""meshraft: a linearizable, replicated key-value store.

Layers (each importable on its own, lower layers never import upper ones):
``meshraft.mesh`` (gossip mesh), ``meshraft.meshconn`` (the mesh as a datagram
socket), ``meshraft.raft`` (sans-IO Raft, storage, asyncio node) and
``meshraft.kv`` (the state machine, client protocol, server and client).
"""

__version__ = "0.1.0"

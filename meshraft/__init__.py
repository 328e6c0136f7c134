"""meshraft: a linearizable, replicated key-value store.

What the package offers at the top level::

    import meshraft

    with meshraft.Client("127.0.0.1:2379") as c:    # or meshraft.AsyncClient
        c.put("greeting", "hello")

    async with meshraft.Member(meshraft.MemberConfig(...)) as m:   # run a member
        ...

``Client``, ``AsyncClient`` and ``MeshraftError`` come from ``meshraft.kv`` (which
also exports the other errors, the server and the state machine); ``Member`` and
``MemberConfig`` from ``meshraft.member`` (one member's wiring, what ``meshraft
serve`` runs).

Layers (each importable on its own, lower layers never import upper ones):
``meshraft.mesh`` (gossip mesh), ``meshraft.meshconn`` (the mesh as a datagram
socket), ``meshraft.raft`` (sans-IO Raft, storage, asyncio node),
``meshraft.kv`` (the state machine, client protocol, server and client),
``meshraft.member`` (one member's wiring) and ``meshraft.cli`` (the command).
Names are imported on first use: ``import meshraft.mesh`` loads no kv or raft code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshraft.lazy import lazy_exports

__version__ = "0.1.0"

__all__ = ["AsyncClient", "Client", "Member", "MemberConfig", "MeshraftError", "__version__"]

_HOME = {"AsyncClient": "meshraft.kv.client", "Client": "meshraft.kv.client",
         "MeshraftError": "meshraft.kv.errors", "Member": "meshraft.member",
         "MemberConfig": "meshraft.member"}

if TYPE_CHECKING:
    from meshraft.kv.client import AsyncClient, Client
    from meshraft.kv.errors import MeshraftError
    from meshraft.member import Member, MemberConfig


__getattr__, __dir__ = lazy_exports(__name__, _HOME)

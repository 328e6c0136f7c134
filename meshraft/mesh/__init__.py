"""meshraft.mesh: the gossip mesh (Weave Mesh's design, in asyncio).

What the layer offers: peers link over TCP (optionally authenticated and
encrypted with a mesh password), gossip their links so everyone knows the graph,
route unicast over shortest paths, broadcast over spanning trees, and carry user
gossip channels of CRDT-like ``GossipData``.  It knows nothing of what travels
on its channels (no raft, no kv)::

    router = await Router.start("a", listen="127.0.0.1:7001", peers=["127.0.0.1:7002"],
                                password=read_password_file("pw"))
    router.register_unicast("chan", lambda src, payload: ...)   # receive
    router.send_unicast("chan", "b", b"hello")                   # best effort, like UDP
    channel = router.new_gossip("counter", my_gossiper)          # a Gossiper
    channel.gossip_broadcast(delta)                              # GossipData
    await router.stop()

``Router`` (with ``set_link_filter``, ``links``, ``status()`` and ``stats``),
``parse_address`` (``HOST:PORT`` checked) and ``read_password_file`` are the
API; ``GossipData`` / ``Gossiper`` are the Protocols a channel's owner
implements.  cmd/counter.py (with its CRDTs in cmd/crdt_counter.py) is a
complete example.  Inside: wire.py (the bytes), connection.py (one link),
local_peer.py (which links are kept), connection_maker.py (dialling),
topology.py / routes.py (the graph), gossip_channel.py (channels), router.py;
see docs/architecture.md#mesh.
"""

from meshraft.mesh.crypto import read_password_file
from meshraft.mesh.gossip_channel import GossipChannel, GossipData, Gossiper
from meshraft.mesh.router import Router, UnicastHandler, parse_address
from meshraft.mesh.wire import PROTOCOL_MAX, PROTOCOL_MIN

__all__ = [
    "PROTOCOL_MAX", "PROTOCOL_MIN", "GossipChannel", "GossipData", "Gossiper", "Router",
    "UnicastHandler", "parse_address", "read_password_file",
]

"""meshraft.mesh: the gossip mesh (Weave Mesh's design, in asyncio).

Peers link over TCP (optionally authenticated and encrypted with a mesh
password), gossip their links so everyone knows the graph, route unicast over
shortest paths, broadcast over spanning trees, and carry user gossip channels
of CRDT-like GossipData.  See ``Router.start``.
"""

from meshraft.mesh.connection import PROTOCOL_MAX, PROTOCOL_MIN
from meshraft.mesh.crdt import GCounter, PNCounter
from meshraft.mesh.crypto import read_password_file
from meshraft.mesh.gossip_channel import GossipChannel, GossipData, Gossiper
from meshraft.mesh.router import Router, parse_address

__all__ = [
    "PROTOCOL_MAX", "PROTOCOL_MIN", "GCounter", "GossipChannel", "GossipData", "Gossiper",
    "PNCounter", "Router", "parse_address", "read_password_file",
]

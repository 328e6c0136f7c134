"""Gossip channels: the user-facing GossipData/Gossiper API and the sender side.

Owns the Protocols a channel's owner implements and the ``GossipChannel`` handle
that ``router.new_gossip`` returns.  It must never touch links directly: every
send goes through the router, which picks the links.  A channel the local peer
does not know is served by a ``SurrogateGossiper`` that relays without keeping
state (recently seen updates are remembered briefly so relaying stops).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from meshraft.mesh.router import Router


@runtime_checkable
class GossipData(Protocol):
    def encode(self) -> list[bytes]: ...
    def merge(self, other: GossipData) -> GossipData: ...


@runtime_checkable
class Gossiper(Protocol):
    """What a channel's owner implements (Weave Mesh's Gossiper, in Python names)."""

    def on_gossip_unicast(self, src: str, msg: bytes) -> None: ...
    def on_gossip_broadcast(self, src: str, update: bytes) -> GossipData | None: ...
    def gossip(self) -> GossipData | None: ...
    def on_gossip(self, msg: bytes) -> GossipData | None: ...


class GossipChannel:
    """The sender side of one named channel on one router."""

    def __init__(self, router: Router, name: str, gossiper: Gossiper) -> None:
        self.router = router
        self.name = name
        self.gossiper = gossiper

    def gossip_unicast(self, dst: str, msg: bytes) -> bool:
        """Send ``msg`` to peer ``dst`` (relayed if needed).  False if no route."""
        return self.router._send_gossip_unicast(self.name, dst, msg)

    def gossip_broadcast(self, data: GossipData) -> None:
        """Send ``data`` to every reachable peer over the spanning tree rooted here."""
        self.router._originate_broadcast(self.name, self.router._encode(self.name, data))

    def send(self, data: GossipData) -> None:
        """Gossip ``data`` to a few random neighbours (who relay what is new to them)."""
        self.router._gossip_to_neighbours(self.name, self.router._encode(self.name, data),
                                          exclude=None)


class SurrogateData:
    """Opaque data of a channel this peer does not know: relayed as-is."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    def encode(self) -> list[bytes]:
        return list(self.parts)

    def merge(self, other: GossipData) -> GossipData:
        return SurrogateData(self.parts + other.encode())


class SurrogateGossiper:
    """Relays a channel this peer does not know.  Broadcasts always follow the tree;
    gossip is relayed only if it was not seen within ``window`` seconds, so a
    surrogate never loops gossip forever."""

    MAX_REMEMBERED = 4096

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def on_gossip_unicast(self, src: str, msg: bytes) -> None:
        return None  # unicast to us on a channel we do not know: nobody to tell

    def on_gossip_broadcast(self, src: str, update: bytes) -> GossipData | None:
        return SurrogateData([update])

    def gossip(self) -> GossipData | None:
        return None

    def on_gossip(self, msg: bytes) -> GossipData | None:
        now = time.monotonic()
        seen = self._seen
        while seen:
            k, t = next(iter(seen.items()))
            if now - t < self.window and len(seen) < self.MAX_REMEMBERED:
                break
            del seen[k]
        digest = hashlib.blake2b(msg, digest_size=16).digest()
        if digest in seen:
            return None
        seen[digest] = now
        return SurrogateData([msg])

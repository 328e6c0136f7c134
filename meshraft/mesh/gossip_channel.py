"""Gossip channels: the user-facing GossipData/Gossiper API, and each channel's
sending and relaying.

Owns the Protocols a channel's owner implements and the ``GossipChannel`` that
``router.new_gossip`` returns: it encodes its gossiper's data, picks the
neighbours for gossip and the spanning-tree children for broadcasts (from the
routes and links its router hands it in a ``ChannelContext``), and relays what
its gossiper says is new.  It must never read frames or decide routes: the
router validates and dispatches each message to its channel, and routes.py
computes the trees.  A gossiper's exceptions are logged and counted, never
fatal.  A channel the local peer does not know is served by a
``SurrogateGossiper`` that relays without keeping state (recently seen updates
are remembered briefly so relaying stops).

See docs/architecture.md#mesh.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from meshraft.mesh.wire import DEFAULT_TTL, Encoder

if TYPE_CHECKING:
    from meshraft.mesh.connection import Link
    from meshraft.mesh.routes import Routes


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


def fanout(configured: int, n: int) -> int:
    """How many of ``n`` neighbours one gossip goes to: log2(n)+1, at most ``configured``."""
    return max(1, min(configured, int(math.log2(n + 1)) + 1))


@dataclass
class ChannelContext:
    """What the channels of one router share: who we are, the links and routes to
    relay over, the encoder, and where to count and log."""

    src: str
    links: dict[str, Link]
    routes: Routes
    encoder: Encoder
    stats: Counter[str]
    log: logging.LoggerAdapter
    rng: random.Random
    gossip_fanout: int
    max_payload: int
    send_unicast: Callable[[str, str, bytes], bool]


class GossipChannel:
    """One named channel on one router: its gossiper, and its sending and relaying."""

    def __init__(self, ctx: ChannelContext, name: str, gossiper: Gossiper) -> None:
        self.ctx = ctx
        self.name = name
        self.gossiper = gossiper

    # ----- the owner's API -------------------------------------------------
    def gossip_unicast(self, dst: str, msg: bytes) -> bool:
        """Send ``msg`` to peer ``dst`` (relayed if needed).  False if no route."""
        if dst == self.ctx.src:
            asyncio.get_running_loop().call_soon(
                self.call, self.gossiper.on_gossip_unicast, dst, msg)
            return True
        return self.ctx.send_unicast(self.name, dst, msg)

    def gossip_broadcast(self, data: GossipData) -> None:
        """Send ``data`` to every reachable peer over the spanning tree rooted here."""
        self.relay_broadcast(self.ctx.src, DEFAULT_TTL, self.encode(data), came_from=None)

    def send(self, data: GossipData) -> None:
        """Gossip ``data`` to a few random neighbours (who relay what is new to them)."""
        self.gossip_to_neighbours(self.encode(data), exclude=None)

    # ----- what the router hands over ------------------------------------------
    def received_unicast(self, src: str, payload: Any) -> bool:
        """A unicast to us on this channel; False if it is not bytes (not counted)."""
        if type(payload) is not bytes:
            return False
        self.call(self.gossiper.on_gossip_unicast, src, payload)
        return True

    def received_broadcast(self, link: Link, src: str, ttl: int, payload: bytes) -> None:
        data = self.call(self.gossiper.on_gossip_broadcast, src, payload)
        if data is not None and ttl > 1:
            self.relay_broadcast(src, ttl - 1, self.encode(data), came_from=link)

    def received_gossip(self, link: Link, payload: bytes) -> None:
        delta = self.call(self.gossiper.on_gossip, payload)
        if delta is not None:
            self.gossip_to_neighbours(self.encode(delta), exclude=link)

    def periodic(self) -> None:
        """Anti-entropy: gossip the complete state to a few neighbours."""
        data = self.call(self.gossiper.gossip)
        if data is not None:
            self.gossip_to_neighbours(self.encode(data), exclude=None)

    def complete_state(self) -> list[bytes]:
        """The complete state, encoded as gossip messages (for a new neighbour)."""
        data = self.call(self.gossiper.gossip)
        if data is None:
            return []
        enc = self.ctx.encoder
        return [enc.gossip(self.name, self.ctx.src, part) for part in self.encode(data)]

    # ----- relaying -------------------------------------------------------------
    def relay_broadcast(self, src: str, ttl: int, parts: list[bytes],
                        came_from: Link | None) -> None:
        """Forward to our children in the spanning tree rooted at ``src``."""
        ctx = self.ctx
        hops = ctx.routes.broadcast_next_hops(src)
        if not hops:
            return
        for part in parts:
            if len(part) > ctx.max_payload:
                ctx.log.warning("channel %s: broadcast part of %d bytes too large, dropped",
                                self.name, len(part))
                continue
            body = ctx.encoder.broadcast(self.name, src, ttl, part)
            for hop in hops:
                link = ctx.links.get(hop)
                if link is not None and link is not came_from:
                    link.send(body)
                    ctx.stats["broadcast_out"] += 1
                    ctx.stats[f"bytes_out:{self.name}"] += len(body)

    def gossip_to_neighbours(self, parts: list[bytes], exclude: Link | None) -> None:
        """Send to a few random neighbours (not ``exclude``, where it came from)."""
        ctx = self.ctx
        links = [lk for lk in ctx.links.values() if lk is not exclude]
        if not links:
            return
        targets = ctx.rng.sample(links, min(len(links), fanout(ctx.gossip_fanout,
                                                               len(ctx.links))))
        for part in parts:
            if len(part) > ctx.max_payload:
                ctx.log.warning("channel %s: gossip part of %d bytes too large, dropped",
                                self.name, len(part))
                continue
            body = ctx.encoder.gossip(self.name, ctx.src, part)
            for link in targets:
                link.send(body)
                ctx.stats["gossip_out"] += 1
                ctx.stats[f"bytes_out:{self.name}"] += len(body)

    # ----- calling the gossiper -------------------------------------------------
    def encode(self, data: Any) -> list[bytes]:
        """``data.encode()`` from the gossiper, checked: a bad one is logged, not fatal."""
        parts = self.call(data.encode) if hasattr(data, "encode") else None
        if type(parts) is not list or not all(type(p) is bytes for p in parts):
            self.ctx.stats["gossiper_errors"] += 1
            self.ctx.log.warning("channel %s: gossip data did not encode to a list of bytes",
                                 self.name)
            return []
        return parts

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call the gossiper: its exceptions are logged and counted, never fatal."""
        try:
            return fn(*args)
        except Exception as exc:
            self.ctx.stats["gossiper_errors"] += 1
            self.ctx.log.warning("channel %s: gossiper %s raised %r", self.name,
                                 getattr(fn, "__name__", fn), exc)
            return None


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

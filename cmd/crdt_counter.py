"""Example gossip data types for cmd/counter.py: Weave Mesh's increment-only
counter and a PN-counter (beside the example, not in the library: the mesh
offers the GossipData/Gossiper API, and these show how to implement it).

Owns two delta-state CRDTs and a Gossiper that carries either over a channel.
It must never trust decoded bytes: every decode validates types and sizes and
raises ValueError.  It uses only the mesh's public API.

Delta-state: an increment broadcasts only the entry that changed; receiving
returns only what was new here (so relaying stops where nothing is new); the
complete state travels only in periodic anti-entropy and to a newly linked
peer (the router asks ``gossip()`` for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgpack

from meshraft.mesh.peer import valid_name

if TYPE_CHECKING:
    from meshraft.mesh import GossipChannel, Router

MAX_ENTRIES = 10_000
MAX_COUNT = (1 << 63) - 1


def _decode_counts(obj: object) -> dict[str, int]:
    if not isinstance(obj, dict) or len(obj) > MAX_ENTRIES:
        raise ValueError("counter: not a map of peer -> count")
    for k, v in obj.items():
        if not valid_name(k) or type(v) is not int or not 0 <= v <= MAX_COUNT:
            raise ValueError(f"counter: bad entry {k!r}: {v!r}")
    return dict(obj)


def _unpack(raw: bytes) -> object:
    if not isinstance(raw, bytes | bytearray) or len(raw) > 1 << 22:
        raise ValueError("counter: payload is not bytes or too large")
    try:
        return msgpack.unpackb(raw, raw=False, max_bin_len=0, max_str_len=256,
                               max_array_len=0, max_map_len=MAX_ENTRIES, max_ext_len=0)
    except Exception as exc:
        raise ValueError(f"counter: undecodable payload: {exc}") from None


@dataclass
class GCounter:
    """Increment-only counter: peer -> count; merge is pointwise max; value is the sum."""

    counts: dict[str, int] = field(default_factory=dict)

    def value(self) -> int:
        return sum(self.counts.values())

    def incr(self, peer: str, n: int = 1) -> GCounter:
        """Increment ``peer``'s entry by ``n`` >= 0; returns the delta (that entry only)."""
        if n < 0:
            raise ValueError("a GCounter only grows")
        new = self.counts.get(peer, 0) + n
        if new > MAX_COUNT:
            raise ValueError("counter overflow")
        self.counts[peer] = new
        return GCounter({peer: new})

    def merge(self, other: GCounter) -> GCounter:  # type: ignore[override]
        """Pointwise max (a new object; neither input changes)."""
        out = dict(self.counts)
        for k, v in other.counts.items():
            if v > out.get(k, -1):
                out[k] = v
        return GCounter(out)

    def news(self, other: GCounter) -> GCounter | None:
        """The entries of ``other`` that are greater than ours (None if none)."""
        mine = self.counts
        new = {k: v for k, v in other.counts.items() if v > mine.get(k, -1)}
        return GCounter(new) if new else None

    def encode(self) -> list[bytes]:
        return [msgpack.packb(self.counts)]

    @classmethod
    def decode(cls, raw: bytes) -> GCounter:
        return cls(_decode_counts(_unpack(raw)))


@dataclass
class PNCounter:
    """Counter that can go down: two GCounters, value = P - N."""

    p: GCounter = field(default_factory=GCounter)
    n: GCounter = field(default_factory=GCounter)

    def value(self) -> int:
        return self.p.value() - self.n.value()

    def incr(self, peer: str, d: int = 1) -> PNCounter:
        if d >= 0:
            return PNCounter(self.p.incr(peer, d), GCounter())
        return PNCounter(GCounter(), self.n.incr(peer, -d))

    def merge(self, other: PNCounter) -> PNCounter:  # type: ignore[override]
        return PNCounter(self.p.merge(other.p), self.n.merge(other.n))

    def news(self, other: PNCounter) -> PNCounter | None:
        p, n = self.p.news(other.p), self.n.news(other.n)
        if p is None and n is None:
            return None
        return PNCounter(p or GCounter(), n or GCounter())

    def encode(self) -> list[bytes]:
        return [msgpack.packb({"p": self.p.counts, "n": self.n.counts})]

    @classmethod
    def decode(cls, raw: bytes) -> PNCounter:
        obj = _unpack(raw)
        if not isinstance(obj, dict) or set(obj) - {"p", "n"}:
            raise ValueError("pn-counter: expected a map with 'p' and 'n'")
        return cls(GCounter(_decode_counts(obj.get("p", {}))),
                   GCounter(_decode_counts(obj.get("n", {}))))


class CounterGossiper:
    """A counter shared over one gossip channel (GCounter, or PNCounter if ``pn``).

    ``incr`` broadcasts only the changed entry; received updates are merged and
    only their new part is returned for relaying."""

    def __init__(self, router: Router, channel: str = "counter", pn: bool = False) -> None:
        self.name = router.name
        self.kind: type[GCounter] | type[PNCounter] = PNCounter if pn else GCounter
        self.state: GCounter | PNCounter = self.kind()
        self.channel: GossipChannel = router.new_gossip(channel, self)

    def value(self) -> int:
        return self.state.value()

    def incr(self, n: int = 1) -> None:
        if self.kind is GCounter and n < 0:
            raise ValueError("an increment-only counter cannot decrease")
        delta = self.state.incr(self.name, n)  # type: ignore[arg-type]
        self.channel.gossip_broadcast(delta)

    def absorb(self, raw: bytes) -> GCounter | PNCounter | None:
        other = self.kind.decode(raw)
        news = self.state.news(other)  # type: ignore[arg-type]
        if news is None:
            return None
        self.state = self.state.merge(news)  # type: ignore[arg-type]
        return news

    # Gossiper
    def on_gossip_unicast(self, src: str, msg: bytes) -> None:
        self.absorb(msg)

    def on_gossip_broadcast(self, src: str, update: bytes) -> GCounter | PNCounter | None:
        return self.absorb(update)

    def gossip(self) -> GCounter | PNCounter | None:
        return self.state

    def on_gossip(self, msg: bytes) -> GCounter | PNCounter | None:
        return self.absorb(msg)

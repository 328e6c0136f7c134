"""Peer identity: names, uids, incarnations, and the per-peer topology record.

Owns what a peer *is* on the mesh and how its record is encoded for gossip.
It must never do I/O or hold references to links: records are plain values.

A peer has an operator-chosen ``name`` and a random 64-bit ``uid`` drawn at each
start.  ``incarnation`` (microseconds since the epoch at start) orders the lives
of one name, so a restarted peer's record replaces its earlier life everywhere;
``version`` counts changes to the record within one life.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

MAX_NAME_LEN = 64
MAX_LINKS_PER_PEER = 4096


def valid_name(name: object) -> bool:
    """A peer or channel name: 1..64 printable characters, no whitespace."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_LEN
        and name.isprintable()
        and not any(c.isspace() for c in name)
    )


def check_name(name: object, what: str = "peer name") -> str:
    if not valid_name(name):
        raise ValueError(f"invalid {what} {name!r}: 1..{MAX_NAME_LEN} printable characters")
    return name  # type: ignore[return-value]


def new_uid(rng: random.Random | None = None) -> int:
    """A random non-zero 64-bit uid (a fresh one per start of a peer)."""
    r = rng or random.SystemRandom()
    while True:
        uid = r.getrandbits(64)
        if uid:
            return uid


def new_incarnation() -> int:
    return time.time_ns() // 1000


@dataclass
class PeerRecord:
    """What the whole mesh knows about one peer: identity, address, and links.

    ``links`` maps neighbour name -> neighbour uid for the peer's established links.
    """

    name: str
    uid: int
    incarnation: int
    version: int
    host: str
    port: int
    links: dict[str, int] = field(default_factory=dict)

    def newer_than(self, other: PeerRecord) -> bool:
        """Merge order: a later life wins; within a life, a higher version wins."""
        if (self.incarnation, self.uid) != (other.incarnation, other.uid):
            return (self.incarnation, self.uid) > (other.incarnation, other.uid)
        return self.version > other.version

    def encode(self) -> list:
        return [
            self.name, self.uid, self.incarnation, self.version, self.host, self.port,
            [[n, u] for n, u in sorted(self.links.items())],
        ]

    @classmethod
    def decode(cls, obj: object) -> PeerRecord:
        """Decode and validate one record; ValueError on anything malformed."""
        if not isinstance(obj, list) or len(obj) != 7:
            raise ValueError("peer record: not a 7-element array")
        name, uid, inc, ver, host, port, links = obj
        if not valid_name(name):
            raise ValueError(f"peer record: bad name {name!r}")
        for v, what in ((uid, "uid"), (inc, "incarnation"), (ver, "version")):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 64:
                raise ValueError(f"peer record {name}: bad {what}")
        if not isinstance(host, str) or len(host) > 255:
            raise ValueError(f"peer record {name}: bad host")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise ValueError(f"peer record {name}: bad port")
        if not isinstance(links, list) or len(links) > MAX_LINKS_PER_PEER:
            raise ValueError(f"peer record {name}: bad links")
        out: dict[str, int] = {}
        for link in links:
            if (
                not isinstance(link, list) or len(link) != 2 or not valid_name(link[0])
                or not isinstance(link[1], int) or isinstance(link[1], bool)
                or not 0 <= link[1] < 1 << 64
            ):
                raise ValueError(f"peer record {name}: bad link entry")
            out[link[0]] = link[1]
        return cls(name, uid, inc, ver, host, port, out)

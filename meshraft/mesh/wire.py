"""The mesh wire format: frames, the handshake messages, message kinds, their
encoding and their validation.

Owns every byte layout two mesh peers must agree on, in one place: a link
(connection.py) frames and encrypts what this module encodes, the router
dispatches what this module has validated, and MeshPacketConn sends unicast
messages through ``UnicastEncoder`` instead of building headers itself.  It must
never do I/O, hold links or decide anything: it encodes, decodes and checks.

Frames: a 4-byte big-endian length and a body of at most ``max_frame`` bytes
(``HANDSHAKE_FRAME_MAX`` until the handshake is done).  The handshake, per side:

1. HELLO, cleartext msgpack map: magic, min/max protocol version, ephemeral
   public key or nil;
2. IDENT, msgpack array [name, uid, incarnation, conn id, listen host, listen
   port], encrypted when the mesh has a password;
3. ACCEPT, sent only once this side accepted the peer's IDENT (a side that
   refuses closes instead).  A link counts as established, and is routed over,
   only when each side sent ACCEPT and received the other's, so a peer that
   refuses a link never appears in the other's links.

After the handshake every body is a msgpack array whose first element is the
message kind (encrypted when the mesh has a password):

    [HEARTBEAT]
    [UNICAST, channel, src, dst, ttl, payload]
    [BROADCAST, channel, src, ttl, payload]
    [GOSSIP, channel, src, payload]

See docs/architecture.md#mesh for where these travel.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from meshraft.mesh.peer import valid_name

MAGIC = "meshraft-mesh"
# 3: the handshake ends with ACCEPT from both sides (2 had none: a peer could list a
# link the other side refused).  2: the password key is stretched with Argon2id (1
# hashed it once).  Peers of different versions are told apart here.
PROTOCOL_MIN = 3
PROTOCOL_MAX = 3
HANDSHAKE_FRAME_MAX = 4096
HEADER_RESERVE = 1024  # bytes of a frame kept for the message header (kind, names, ttl)
DEFAULT_TTL = 64

# Message kinds after the handshake (first element of the body array).
HEARTBEAT = 0
UNICAST = 1
BROADCAST = 2
GOSSIP = 3

# Gossip channels the mesh itself uses (user channel names never start with "_").
TOPOLOGY_CHANNEL = "_topology"
DIGEST_CHANNEL = "_topodigest"  # periodic anti-entropy: [name, uid, incarnation, version]s
DIGEST_REPLY_CHANNEL = "_topodigest_r"  # the answer to a digest (never answered again)
TOPOLOGY_CHANNELS = frozenset((TOPOLOGY_CHANNEL, DIGEST_CHANNEL, DIGEST_REPLY_CHANNEL))

FRAME_LEN = struct.Struct(">I")
pack_len = FRAME_LEN.pack
unpack_len_from = FRAME_LEN.unpack_from

ACCEPT_BODY = msgpack.packb("accept")
HEARTBEAT_BODY = msgpack.packb([HEARTBEAT])

_bin8 = struct.Struct(">BB").pack
_bin16 = struct.Struct(">BH").pack
_bin32 = struct.Struct(">BI").pack


class ProtocolError(Exception):
    """The peer sent something this side will not accept."""


def make_unpackb(max_frame: int) -> Callable[[Any], Any]:
    """msgpack decoding with strict limits: nothing larger than a frame, no ext types."""
    return functools.partial(
        msgpack.unpackb, raw=False, strict_map_key=True, use_list=True, max_bin_len=max_frame,
        max_str_len=max_frame, max_array_len=1 << 16, max_map_len=1 << 16, max_ext_len=0,
    )


def negotiate(our_min: int, our_max: int, their_min: int, their_max: int) -> int | None:
    """Highest common protocol version, or None."""
    hi = min(our_max, their_max)
    return hi if hi >= max(our_min, their_min) else None


def version_is_valid(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 16


def _u64(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 64


# ----------------------------------------------------------------- handshake
@dataclass(frozen=True)
class Hello:
    """The first, cleartext frame: who may talk to whom, and the ephemeral key."""

    min_version: int
    max_version: int
    public_key: bytes | None

    def encode(self) -> bytes:
        return msgpack.packb({"magic": MAGIC, "min": self.min_version,
                              "max": self.max_version, "pk": self.public_key})

    @classmethod
    def decode(cls, body: bytes) -> Hello:
        try:
            hello = msgpack.unpackb(body, raw=False, max_bin_len=64, max_str_len=64,
                                    max_array_len=16, max_map_len=16, max_ext_len=0)
        except Exception as exc:
            raise ProtocolError(f"undecodable handshake: {exc}") from None
        if not isinstance(hello, dict) or hello.get("magic") != MAGIC:
            raise ProtocolError("not a meshraft mesh peer (bad handshake magic)")
        vmin, vmax = hello.get("min"), hello.get("max")
        if not (version_is_valid(vmin) and version_is_valid(vmax)) or vmin > vmax:
            raise ProtocolError(f"bad protocol version range {vmin!r}..{vmax!r}")
        pk = hello.get("pk")
        if pk is not None and not isinstance(pk, bytes):
            raise ProtocolError("bad public key in handshake")
        return cls(vmin, vmax, pk)


@dataclass(frozen=True)
class Ident:
    """The second frame: the peer's identity and the address it listens on.
    ``conn_id`` is carried for the wire's sake and not used by this side."""

    name: str
    uid: int
    incarnation: int
    conn_id: int
    host: str
    port: int

    def encode(self) -> bytes:
        return msgpack.packb([self.name, self.uid, self.incarnation, self.conn_id,
                              self.host, self.port])

    @classmethod
    def decode(cls, body: bytes) -> Ident:
        try:
            ident = msgpack.unpackb(body, raw=False, max_bin_len=0, max_str_len=255,
                                    max_array_len=16, max_map_len=0, max_ext_len=0)
        except Exception as exc:
            raise ProtocolError(f"undecodable identity: {exc}") from None
        if not isinstance(ident, list) or len(ident) != 6:
            raise ProtocolError("bad identity message")
        name, uid, inc, conn_id, host, port = ident
        if not valid_name(name) or not all(_u64(x) for x in (uid, inc, conn_id)) or uid == 0:
            raise ProtocolError("bad identity: name, uid or connection id")
        if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port < 65536:
            raise ProtocolError("bad identity: listen address")
        return cls(name, uid, inc, conn_id, host, port)


def check_accept(body: bytes) -> None:
    """The third frame: ProtocolError unless it is ACCEPT."""
    if body != ACCEPT_BODY:
        raise ProtocolError("bad handshake: expected ACCEPT")


# ----------------------------------------------------------------- messages
def message_kind(msg: Any) -> int:
    """Check a decoded message's shape and field types; return its kind.

    ProtocolError for anything malformed (the link that sent it is closed).  Called
    once per message on the data path, so the checks are written out here rather
    than split into helpers (valid_name only for a broadcast's source)."""
    if type(msg) is not list or not msg:
        raise ProtocolError("message is not a non-empty array")
    kind = msg[0]
    if kind == UNICAST:
        if len(msg) != 6:
            raise ProtocolError("unicast: wrong number of fields")
        if type(msg[1]) is not str or type(msg[2]) is not str or type(msg[3]) is not str or (
                type(msg[4]) is not int):
            raise ProtocolError("unicast: bad header field types")
        return UNICAST
    if kind == HEARTBEAT:
        return HEARTBEAT
    if kind == BROADCAST:
        if len(msg) != 5:
            raise ProtocolError("broadcast: wrong number of fields")
        if type(msg[1]) is not str or not valid_name(msg[2]) or type(msg[3]) is not int or (
                type(msg[4]) is not bytes):
            raise ProtocolError("broadcast: bad field types")
        return BROADCAST
    if kind == GOSSIP:
        if len(msg) != 4:
            raise ProtocolError("gossip: wrong number of fields")
        if type(msg[1]) is not str or type(msg[2]) is not str:
            raise ProtocolError("gossip: bad field types")
        if type(msg[3]) is not bytes and msg[1] not in TOPOLOGY_CHANNELS:
            raise ProtocolError("gossip: payload is not bytes")
        return GOSSIP
    raise ProtocolError(f"unknown message kind {kind!r}")


class Encoder:
    """Encodes messages (one per router: a msgpack Packer is not thread-safe)."""

    __slots__ = ("pack",)

    def __init__(self) -> None:
        self.pack = msgpack.Packer(autoreset=True, use_bin_type=True).pack

    def unicast(self, channel: str, src: str, dst: str, ttl: int, payload: Any) -> bytes:
        return self.pack([UNICAST, channel, src, dst, ttl, payload])

    def broadcast(self, channel: str, src: str, ttl: int, payload: bytes) -> bytes:
        return self.pack([BROADCAST, channel, src, ttl, payload])

    def gossip(self, channel: str, src: str, payload: Any) -> bytes:
        return self.pack([GOSSIP, channel, src, payload])


class UnicastEncoder:
    """The fast encoder of unicast messages on one channel from one peer, for
    senders of many small messages (MeshPacketConn).

    ``encode(dst, payload)`` returns the same bytes as
    ``Encoder().unicast(channel, src, dst, DEFAULT_TTL, payload)``, built from the
    cached encoded header of each destination (at most ``max_cached`` of them)."""

    __slots__ = ("_heads", "_pack", "_prefix", "max_cached")

    def __init__(self, channel: str, src: str, max_cached: int = 4096) -> None:
        pack = self._pack = msgpack.Packer(autoreset=True, use_bin_type=True).pack
        self._prefix = b"\x96" + pack(UNICAST) + pack(channel) + pack(src)
        self._heads: dict[str, bytes] = {}
        self.max_cached = max_cached

    def encode(self, dst: str, payload: bytes) -> bytes:
        head = self._heads.get(dst)
        if head is None:
            if len(self._heads) >= self.max_cached:
                self._heads.clear()
            head = self._heads[dst] = self._prefix + self._pack(dst) + self._pack(DEFAULT_TTL)
        n = len(payload)
        if n < 256:
            return b"".join((head, _bin8(0xC4, n), payload))
        if n < 65536:
            return b"".join((head, _bin16(0xC5, n), payload))
        return b"".join((head, _bin32(0xC6, n), payload))

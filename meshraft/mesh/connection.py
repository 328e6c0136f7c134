"""Links: one TCP connection to one neighbour, its handshake, framing and heartbeats.

Owns the bytes on one connection: the length-prefixed frame format, the
handshake (magic, version negotiation, optional encryption, identity), the
outgoing write batch and its bound, and the link's liveness clock.  It must
never decide routing or topology: an established link hands every decoded
message to its router, and the router decides.

Wire format: every frame is a 4-byte big-endian length and a body of at most
``max_frame`` bytes.  The first frame each side sends is a cleartext HELLO
(a msgpack map: magic, min/max protocol version, ephemeral public key or nil);
the second is IDENT (msgpack array: name, uid, incarnation, conn id, listen
host, listen port), encrypted when the mesh has a password.  After that every
body is a msgpack array whose first element is the message kind, encrypted
when the mesh has a password.  Anything malformed closes the link with a
logged reason and never raises out of the protocol callbacks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from meshraft.mesh.crypto import AuthenticationError, Ephemeral, SecretBoxCipher
from meshraft.mesh.peer import valid_name

if TYPE_CHECKING:
    from meshraft.mesh.router import Router

MAGIC = "meshraft-mesh"
# 2: the password key is stretched with Argon2id (1 hashed it once): peers of
# different versions would derive different keys, so they are told apart here.
PROTOCOL_MIN = 2
PROTOCOL_MAX = 2
HANDSHAKE_FRAME_MAX = 4096

# Message kinds after the handshake (first element of the body array).
HEARTBEAT = 0
UNICAST = 1  # [1, channel, src, dst, ttl, payload]
BROADCAST = 2  # [2, channel, src, payload]
GOSSIP = 3  # [3, channel, src, payload]

_READ_BUF = 64 * 1024  # the read buffer of a link (grows for a large frame)
_MIN_FREE = 4096
_len = struct.Struct(">I")
_pack_len = _len.pack
_unpack_len_from = _len.unpack_from

# Link states.
HELLO, IDENT, ESTABLISHED, CLOSED = "hello", "ident", "established", "closed"


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


@dataclass(frozen=True)
class LinkConfig:
    """What every link of one router needs to know about its own side."""

    name: str
    uid: int
    incarnation: int
    host: str
    port: int
    min_version: int
    max_version: int
    pw_key: bytes | None
    max_frame: int
    write_limit: int


class Link(asyncio.BufferedProtocol):
    """One TCP connection to a neighbour (asyncio protocol; no task per link)."""

    def __init__(self, router: Router, cfg: LinkConfig, outbound: bool, conn_id: int,
                 target: tuple[str, int] | None = None) -> None:
        self.router = router
        self.cfg = cfg
        self.outbound = outbound
        self.conn_id = conn_id
        self.target = target  # the address we dialled, for outbound links
        self.state = HELLO
        self.version: int | None = None
        self.remote_name: str | None = None
        self.remote_uid = 0
        self.remote_incarnation = 0
        self.remote_conn_id = 0
        self.remote_listen: tuple[str, int] | None = None
        self.peername: tuple[str, int] | None = None
        self.created = time.monotonic()
        self.last_recv = self.created
        self.established_at: float | None = None
        self.close_reason: str | None = None
        self.frames_in = self.frames_out = self.bytes_in = self.bytes_out = 0
        self.dropped_out = 0
        self._transport: asyncio.Transport | None = None
        self._rbuf = bytearray(_READ_BUF)
        self._rview = memoryview(self._rbuf)
        self._rlen = 0  # bytes in _rbuf not yet parsed (a partial frame)
        self._need = 0  # bytes the partial frame needs before it is complete
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._tbuf = 0  # the transport's write buffer after our last write
        self._write_limit = cfg.write_limit
        self._flush_scheduled = False
        self._eph = Ephemeral() if cfg.pw_key is not None else None
        self._tx: SecretBoxCipher | None = None
        self._rx: SecretBoxCipher | None = None
        self._unpackb = router._unpackb
        self._loop = asyncio.get_running_loop()

    # ----- description -------------------------------------------------
    def describe(self) -> str:
        who = self.remote_name or "?"
        addr = f"{self.peername[0]}:{self.peername[1]}" if self.peername else "?"
        return f"{'->' if self.outbound else '<-'} {who} ({addr})"

    @property
    def initiator(self) -> str:
        return self.cfg.name if self.outbound else (self.remote_name or "")

    # ----- asyncio.Protocol ------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed, not isinstance(asyncio.Transport): uvloop's TCP transports
        # are not subclasses of it, and with uvloop the mesh must still form.
        self._transport = transport  # type: ignore[assignment]
        self.peername = transport.get_extra_info("peername")
        self.router._link_opened(self)
        if self.state == CLOSED:
            return
        hello = {
            "magic": MAGIC, "min": self.cfg.min_version, "max": self.cfg.max_version,
            "pk": self._eph.public if self._eph else None,
        }
        self._write_frame(msgpack.packb(hello))

    def get_buffer(self, sizehint: int) -> memoryview:
        # Reading into a buffer we keep (BufferedProtocol) instead of a fresh bytes
        # object per read roughly halves the cost of a small-message round trip.
        if not self._rlen:
            return self._rview
        if len(self._rbuf) - self._rlen < _MIN_FREE:
            self._resize(max(2 * len(self._rbuf), self._rlen + _READ_BUF))
        return self._rview[self._rlen:]

    def _resize(self, size: int) -> None:
        """Move the unparsed bytes into a new buffer of ``size`` (the old one may still
        be exported to the transport, so it is replaced, never resized)."""
        new = bytearray(size)
        new[:self._rlen] = self._rview[:self._rlen]
        self._rbuf = new
        self._rview = memoryview(new)

    def buffer_updated(self, nbytes: int) -> None:
        if self.state == CLOSED:
            return
        self.last_recv = time.monotonic()
        self.bytes_in += nbytes
        rlen = self._rlen = self._rlen + nbytes
        if rlen < self._need:
            return  # still inside one large frame: do not re-scan
        buf, view = self._rbuf, self._rview
        pos = 0
        limit = self.cfg.max_frame if self.state == ESTABLISHED else HANDSHAKE_FRAME_MAX
        if self._rx is not None:
            limit += 16
        router = self.router
        router._rx_seq += 1
        router._rx_depth += 1
        try:
            while rlen - pos >= 4:
                (length,) = _unpack_len_from(buf, pos)
                if length > limit:
                    raise ProtocolError(f"oversized frame: {length} bytes > limit {limit}")
                if length == 0:
                    raise ProtocolError("empty frame")
                end = pos + 4 + length
                if end > rlen:
                    break
                body = view[pos + 4:end]
                pos = end
                self.frames_in += 1
                if self.state == ESTABLISHED:
                    if self._rx is not None:
                        body = self._rx.decrypt(bytes(body))
                    try:
                        msg = self._unpackb(body)
                    except Exception as exc:
                        raise ProtocolError(f"undecodable frame: {exc}") from None
                    router._on_message(self, msg)
                else:
                    self._handshake_frame(bytes(body))
                    if self.state == ESTABLISHED:
                        limit = self.cfg.max_frame + (16 if self._rx is not None else 0)
                if self.state == CLOSED:
                    return
        except ProtocolError as exc:
            self.fail(str(exc))
            return
        except AuthenticationError as exc:
            self.fail(str(exc))
            return
        except Exception as exc:  # a bug or an unforeseen input: never crash the process
            router._log.exception("link %s: error handling frame", self.describe())
            self.fail(f"internal error handling frame: {exc!r}")
            return
        finally:
            router._rx_depth -= 1
            if not router._rx_depth and router._pending_flush:
                router._flush_pending()
        left = rlen - pos
        if pos and left:
            buf[:left] = bytes(view[pos:rlen])
        self._rlen = left
        if left >= 4:
            self._need = 4 + _unpack_len_from(buf, 0)[0]
            if self._need > len(buf):
                self._resize(self._need)  # a large frame: make room for all of it
        else:
            self._need = 0
            if not left and len(buf) > _READ_BUF:
                self._rbuf = bytearray(_READ_BUF)  # back to normal after a large frame
                self._rview = memoryview(self._rbuf)

    def eof_received(self) -> bool | None:
        if self._rlen and self.state != CLOSED:
            self.close_reason = self.close_reason or (
                f"truncated frame: connection ended with {self._rlen} bytes of a partial frame"
            )
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.state
        self.state = CLOSED
        self._out.clear()
        if self.close_reason is None:
            if self._rlen:
                self.close_reason = (
                    f"truncated frame: connection ended with {self._rlen} bytes of a "
                    "partial frame"
                )
            elif was == ESTABLISHED:
                self.close_reason = f"connection closed by peer{f' ({exc})' if exc else ''}"
            else:
                self.close_reason = (
                    f"connection closed by peer during handshake{f' ({exc})' if exc else ''}"
                )
        self.router._link_closed(self, was)

    # ----- handshake -------------------------------------------------------
    def _handshake_frame(self, body: bytes) -> None:
        if self.state == HELLO:
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
            v = negotiate(self.cfg.min_version, self.cfg.max_version, vmin, vmax)
            if v is None:
                raise ProtocolError(
                    f"protocol version mismatch: we speak {self.cfg.min_version}.."
                    f"{self.cfg.max_version}, peer speaks {vmin}..{vmax}; no common version"
                )
            self.version = v
            pk = hello.get("pk")
            if self._eph is not None:
                if pk is None:
                    raise ProtocolError(
                        "mesh password mismatch: this mesh needs a password and the peer has none"
                    )
                if not isinstance(pk, bytes):
                    raise ProtocolError("bad public key in handshake")
                assert self.cfg.pw_key is not None
                self._tx, self._rx = self._eph.session(pk, self.cfg.pw_key)
            elif pk is not None:
                raise ProtocolError(
                    "mesh password mismatch: the peer uses a mesh password and we have none"
                )
            self.state = IDENT
            ident = [self.cfg.name, self.cfg.uid, self.cfg.incarnation, self.conn_id,
                     self.cfg.host, self.cfg.port]
            body = msgpack.packb(ident)
            self._write_frame(self._tx.encrypt(body) if self._tx is not None else body)
        elif self.state == IDENT:
            if self._rx is not None:
                try:
                    body = self._rx.decrypt(body)
                except AuthenticationError:
                    raise AuthenticationError(
                        "authentication failed: the peer's identity did not decrypt "
                        "(wrong mesh password?)"
                    ) from None
            try:
                ident = msgpack.unpackb(body, raw=False, max_bin_len=0, max_str_len=255,
                                        max_array_len=16, max_map_len=0, max_ext_len=0)
            except Exception as exc:
                raise ProtocolError(f"undecodable identity: {exc}") from None
            if not isinstance(ident, list) or len(ident) != 6:
                raise ProtocolError("bad identity message")
            name, uid, inc, conn_id, host, port = ident
            ints_ok = all(
                isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 64
                for x in (uid, inc, conn_id)
            )
            if not valid_name(name) or not ints_ok or uid == 0:
                raise ProtocolError("bad identity: name, uid or connection id")
            if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port < 65536:
                raise ProtocolError("bad identity: listen address")
            self.remote_name, self.remote_uid = name, uid
            self.remote_incarnation, self.remote_conn_id = inc, conn_id
            self.remote_listen = (host, port)
            refusal = self.router._link_ready(self)
            if refusal:
                self.fail(refusal, level=logging.INFO)
                return
            self.state = ESTABLISHED
            self.established_at = time.monotonic()
            self.router._link_established(self)

    # ----- sending ---------------------------------------------------------
    def _write_frame(self, body: bytes) -> None:
        """Handshake frames: written at once, unencrypted framing as given."""
        assert self._transport is not None
        self._transport.write(_pack_len(len(body)) + body)
        self.frames_out += 1
        self.bytes_out += 4 + len(body)

    def send(self, body: bytes) -> bool:
        """Send one message body.  Never blocks: when the peer is not reading and the
        write bound is reached, the frame is dropped (False), as a network would.

        Frames sent while a link is being read go out together when the read is
        done; otherwise a frame is written at once, unless the socket is congested."""
        if self.state != ESTABLISHED:
            return False
        if self._out_bytes + self._tbuf > self._write_limit:
            # _tbuf is from our last write: the socket may have drained since
            assert self._transport is not None
            self._tbuf = self._transport.get_write_buffer_size()
            if self._out_bytes + self._tbuf > self._write_limit:
                self.dropped_out += 1
                return False
        if self._tx is not None:
            body = self._tx.encrypt(body)
        n = len(body)
        self.frames_out += 1
        if self._flush_scheduled:
            self._out.append(_pack_len(n))
            self._out.append(body)
            self._out_bytes += n + 4
            return True
        router = self.router
        if router._rx_depth or self._tbuf:
            # Batch: replies sent while reading go out when the read ends; when the
            # socket is congested, frames are joined and written once per iteration.
            self._out.append(_pack_len(n))
            self._out.append(body)
            self._out_bytes += n + 4
            self._flush_scheduled = True
            if router._rx_depth:
                router._pending_flush.append(self)
            else:
                self._loop.call_soon(self._flush)
            return True
        transport = self._transport
        assert transport is not None
        transport.write(_pack_len(n) + body)  # write-through, like a UDP sendto
        self.bytes_out += n + 4
        self._tbuf = transport.get_write_buffer_size()
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self.state == CLOSED or self._transport is None:
            return
        data = b"".join(self._out)
        self._out.clear()
        self.bytes_out += self._out_bytes
        self._out_bytes = 0
        self._transport.write(data)
        self._tbuf = self._transport.get_write_buffer_size()

    # ----- closing ---------------------------------------------------------
    def fail(self, reason: str, level: int = logging.WARNING) -> None:
        """Close the link because of ``reason`` (logged once, by the router)."""
        if self.state == CLOSED:
            return
        self.close_reason = reason
        self.router._log.log(level, "closing link %s: %s", self.describe(), reason)
        self.state = CLOSED
        self._out.clear()
        if self._transport is not None:
            self._transport.abort()

    def close(self, reason: str, level: int = logging.INFO) -> None:
        """Orderly close (pending writes are flushed first)."""
        if self.state == CLOSED:
            return
        self._flush()
        self.close_reason = reason
        self.router._log.log(level, "closing link %s: %s", self.describe(), reason)
        self.state = CLOSED
        if self._transport is not None:
            self._transport.close()

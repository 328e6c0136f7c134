"""Links: one TCP connection to one neighbour, its handshake, framing and heartbeats.

Owns the bytes on one connection: the framing, the handshake (magic, version
negotiation, optional encryption, identity, acceptance), the outgoing write
batch and its bound, and the link's liveness clock.  It must never decide
routing, topology or which links to keep: a link tells its owner (a
``LinkOwner``: local_peer.py) what happens to it, and the owner decides.  The
byte layouts are wire.py's; anything malformed closes the link with a logged
reason and never raises out of the protocol callbacks.

See docs/architecture.md#mesh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from meshraft.mesh.crypto import AuthenticationError, Ephemeral, SecretBoxCipher
from meshraft.mesh.wire import (
    ACCEPT_BODY,
    HANDSHAKE_FRAME_MAX,
    MAGIC,
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    Hello,
    Ident,
    ProtocolError,
    check_accept,
    negotiate,
    pack_len,
    unpack_len_from,
)

__all__ = [
    "ACCEPT", "CLOSED", "ESTABLISHED", "HELLO", "IDENT", "MAGIC", "PROTOCOL_MAX", "PROTOCOL_MIN",
    "Link", "LinkConfig", "LinkOwner", "ReadBatch",
]

_READ_BUF = 64 * 1024  # the read buffer of a link (grows for a large frame)
_MIN_FREE = 4096

# Link states.
HELLO, IDENT, ACCEPT, ESTABLISHED, CLOSED = "hello", "ident", "accept", "established", "closed"


class LinkOwner(Protocol):
    """What a link tells the one who keeps it (local_peer.LocalPeer)."""

    def opened(self, link: Link) -> None:
        """A connection exists (the link may be failed here, e.g. too many pending)."""

    def ready(self, link: Link) -> str | None:
        """The peer's identity is known (and again when it accepted us): None to
        accept the link, or why it is refused (the link then closes)."""

    def established(self, link: Link) -> None:
        """Both sides accepted the handshake: the link carries messages now."""

    def closed(self, link: Link, was: str) -> None:
        """The connection is gone (``was``: the state it was in)."""

    def message(self, link: Link, msg: Any) -> None:
        """One decoded message from an established link; ProtocolError closes it."""


class ReadBatch:
    """Shared by one router's links: counts reads (``seq``), and while a read is
    being handled (``depth`` > 0) collects the links written to, so that replies go
    out in one write per link when the read is done."""

    __slots__ = ("depth", "pending", "seq")

    def __init__(self) -> None:
        self.seq = 0
        self.depth = 0
        self.pending: list[Link] = []

    def flush(self) -> None:
        links, self.pending = self.pending, []
        for link in links:
            link.flush()


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
    unpackb: Callable[[Any], Any]
    log: logging.LoggerAdapter


class Link(asyncio.BufferedProtocol):
    """One TCP connection to a neighbour (asyncio protocol; no task per link)."""

    def __init__(self, owner: LinkOwner, cfg: LinkConfig, batch: ReadBatch, outbound: bool,
                 conn_id: int, target: tuple[str, int] | None = None) -> None:
        self.owner = owner
        self.cfg = cfg
        self.batch = batch
        self.outbound = outbound
        self.conn_id = conn_id
        self.target = target  # the address we dialled, for outbound links
        self.state = HELLO
        self.version: int | None = None
        self.remote_name: str | None = None
        self.remote_uid = 0
        self.remote_incarnation = 0
        self.remote_listen: tuple[str, int] | None = None
        self.peername: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.encrypted = False
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
        self._unpackb = cfg.unpackb
        self._log = cfg.log
        self._on_message = owner.message  # bound once: the data path's only call out
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
        self.sockname = transport.get_extra_info("sockname")
        self.owner.opened(self)
        if self.state == CLOSED:
            return
        hello = Hello(self.cfg.min_version, self.cfg.max_version,
                      self._eph.public if self._eph else None)
        self._write_frame(hello.encode())

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
        batch = self.batch
        batch.seq += 1
        batch.depth += 1
        try:
            while rlen - pos >= 4:
                (length,) = unpack_len_from(buf, pos)
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
                    self._on_message(self, msg)
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
            self._log.exception("link %s: error handling frame", self.describe())
            self.fail(f"internal error handling frame: {exc!r}")
            return
        finally:
            batch.depth -= 1
            if not batch.depth and batch.pending:
                batch.flush()
        left = rlen - pos
        if pos and left:
            buf[:left] = bytes(view[pos:rlen])
        self._rlen = left
        if left >= 4:
            self._need = 4 + unpack_len_from(buf, 0)[0]
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
        self.owner.closed(self, was)

    # ----- handshake -------------------------------------------------------
    def _handshake_frame(self, body: bytes) -> None:
        if self.state == HELLO:
            hello = Hello.decode(body)
            v = negotiate(self.cfg.min_version, self.cfg.max_version, hello.min_version,
                          hello.max_version)
            if v is None:
                raise ProtocolError(
                    f"protocol version mismatch: we speak {self.cfg.min_version}.."
                    f"{self.cfg.max_version}, peer speaks {hello.min_version}.."
                    f"{hello.max_version}; no common version"
                )
            self.version = v
            pk = hello.public_key
            if self._eph is not None:
                if pk is None:
                    raise ProtocolError(
                        "mesh password mismatch: this mesh needs a password and the peer has none"
                    )
                assert self.cfg.pw_key is not None
                self._tx, self._rx = self._eph.session(pk, self.cfg.pw_key)
                self.encrypted = True
            elif pk is not None:
                raise ProtocolError(
                    "mesh password mismatch: the peer uses a mesh password and we have none"
                )
            self.state = IDENT
            ident = Ident(self.cfg.name, self.cfg.uid, self.cfg.incarnation, self.conn_id,
                          self.cfg.host, self.cfg.port)
            self._write_handshake(ident.encode())
        elif self.state == IDENT:
            if self._rx is not None:
                try:
                    body = self._rx.decrypt(body)
                except AuthenticationError:
                    raise AuthenticationError(
                        "authentication failed: the peer's identity did not decrypt "
                        "(wrong mesh password?)"
                    ) from None
            ident = Ident.decode(body)
            self.remote_name, self.remote_uid = ident.name, ident.uid
            self.remote_incarnation = ident.incarnation
            self.remote_listen = (ident.host, ident.port)
            refusal = self.owner.ready(self)
            if refusal:
                self.fail(refusal, level=logging.INFO)
                return
            self.state = ACCEPT
            self._write_handshake(ACCEPT_BODY)
        elif self.state == ACCEPT:
            if self._rx is not None:
                body = self._rx.decrypt(body)
            check_accept(body)
            # Ask again: while the peer decided, another link to it may have won.
            refusal = self.owner.ready(self)
            if refusal:
                self.fail(refusal, level=logging.INFO)
                return
            self.state = ESTABLISHED
            self.established_at = time.monotonic()
            self.owner.established(self)

    # ----- sending ---------------------------------------------------------
    def _write_handshake(self, body: bytes) -> None:
        """IDENT and ACCEPT: encrypted when the mesh has a password, written at once."""
        self._write_frame(self._tx.encrypt(body) if self._tx is not None else body)

    def _write_frame(self, body: bytes) -> None:
        """Handshake frames: written at once, unencrypted framing as given."""
        assert self._transport is not None
        self._transport.write(pack_len(len(body)) + body)
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
            self._out.append(pack_len(n))
            self._out.append(body)
            self._out_bytes += n + 4
            return True
        batch = self.batch
        if batch.depth or self._tbuf:
            # Batch: replies sent while reading go out when the read ends; when the
            # socket is congested, frames are joined and written once per iteration.
            self._out.append(pack_len(n))
            self._out.append(body)
            self._out_bytes += n + 4
            self._flush_scheduled = True
            if batch.depth:
                batch.pending.append(self)
            else:
                self._loop.call_soon(self.flush)
            return True
        transport = self._transport
        assert transport is not None
        transport.write(pack_len(n) + body)  # write-through, like a UDP sendto
        self.bytes_out += n + 4
        self._tbuf = transport.get_write_buffer_size()
        return True

    def queued_bytes(self) -> int:
        """Bytes accepted by ``send`` and not yet handed to the kernel."""
        buffered = self._transport.get_write_buffer_size() if self._transport else 0
        return self._out_bytes + buffered

    def flush(self) -> None:
        """Write the frames batched by ``send`` (called by the read batch or the loop)."""
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
        """Close the link because of ``reason`` (logged once, here)."""
        if self.state == CLOSED:
            return
        self.close_reason = reason
        self._log.log(level, "closing link %s: %s", self.describe(), reason)
        self.state = CLOSED
        self._out.clear()
        if self._transport is not None:
            self._transport.abort()

    def close(self, reason: str, level: int = logging.INFO) -> None:
        """Orderly close (pending writes are flushed first)."""
        if self.state == CLOSED:
            return
        self.flush()
        self.close_reason = reason
        self._log.log(level, "closing link %s: %s", self.describe(), reason)
        self.state = CLOSED
        if self._transport is not None:
            self._transport.close()

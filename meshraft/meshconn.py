"""MeshPacketConn: the mesh as an asyncio datagram socket.

Owns the adapter from mesh unicast on one channel to ``asyncio.DatagramTransport``
/ ``DatagramProtocol``, with UDP's semantics: a datagram arrives whole or not at
all, may be lost, duplicated or reordered, and is at most ``max_datagram_size``
bytes (``MAX_DATAGRAM_SIZE`` = 65507 by default, as UDP over IPv4; ``sendto`` of a
larger one raises ValueError).  Addresses are peer names (``str``).

It must never raise from deep in the mesh: no route to a peer is reported as
``error_received(OSError(EHOSTUNREACH))`` for that send; received datagrams go
through a bounded buffer (full -> dropped and counted); packets that are not a
datagram (wrong type, too large) are dropped and counted, never delivered.
When the router stops, every endpoint on it gets ``connection_lost`` with a
ConnectionAbortedError.  It knows nothing of who uses it (Raft does, but this
module must not know that).

    transport, protocol = await create_mesh_endpoint(router, MyProtocol, channel="raft")
    transport.sendto(b"hello", "b")

Messages are encoded by the mesh's own ``UnicastEncoder`` (wire.py); see
docs/architecture.md#mesh for where a datagram goes.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from meshraft.mesh import Router

__all__ = ["MAX_DATAGRAM_SIZE", "MeshPacketConn", "create_mesh_endpoint"]

MAX_DATAGRAM_SIZE = 65507
DEFAULT_RECV_BUFFER = 4096  # datagrams
MAX_FAILURE_PEERS = 256  # destinations counted by name in send_failures
_INLINE_BUDGET_S = 0.002  # per mesh read: deliver at once for this long, then buffer
_DRAIN_BUDGET_S = 0.005  # per loop callback draining the buffer, so I/O interleaves
_now = time.perf_counter

_BYTES_LIKE = (bytes, bytearray, memoryview)

class MeshPacketConn(asyncio.DatagramTransport):
    """A datagram transport over mesh unicast on one channel of one router."""

    def __init__(self, router: Router, protocol: asyncio.DatagramProtocol, channel: str,
                 max_datagram_size: int, recv_buffer: int, remote_addr: str | None) -> None:
        super().__init__(extra={
            "sockname": router.name, "peername": remote_addr, "channel": channel,
            "router": router, "max_datagram_size": max_datagram_size,
        })
        self._router = router
        self._protocol = protocol
        self._channel = channel
        self._name = router.name
        self.max_datagram_size = max_datagram_size
        self._recv_max = recv_buffer
        self._remote = remote_addr
        self._loop = asyncio.get_running_loop()
        self._inbox: deque[tuple[bytes, str]] = deque()
        self._drain_scheduled = False
        self._delivering = False
        self._inline_seq = -1
        self._inline_until = 0.0
        self._closing = False
        self._lost_called = False
        self._write_limits = (0, 0)
        self._stats: Counter[str] = Counter()
        # Datagrams not sent (no route, link write bound reached), by destination: at
        # most MAX_FAILURE_PEERS names, the rest under "_other" (a caller may name anyone).
        self.send_failures: Counter[str] = Counter()
        self._route_link = router.route_link
        self._encode = router.unicast_encoder(channel).encode
        self._reads = router.reads
        self._sent = 0
        self._received = 0
        self._unregister = router.register_unicast(channel, self._on_packet)
        self._remove_stop_cb = router.add_stop_callback(self._router_stopped)

    @property
    def stats(self) -> Counter[str]:
        """Counters: sent, received, no_route, dropped_full (receive buffer full),
        dropped_malformed (not a datagram), dropped_out (link write bound reached)."""
        out = Counter(self._stats)
        out["sent"] = self._sent
        out["received"] = self._received
        return out

    # ----- receive -----------------------------------------------------
    def _on_packet(self, src: str, payload: Any) -> None:
        """Called by the router for each unicast on our channel (never blocks)."""
        if type(payload) is not bytes or len(payload) > self.max_datagram_size:
            self._stats["dropped_malformed"] += 1
            return
        if self._closing:
            return
        inbox = self._inbox
        if not inbox and not self._delivering:
            # Fast path: nothing is waiting, so deliver now (as a UDP socket would)
            # while the protocol keeps up: within one mesh read, deliveries stop after
            # a time budget and the rest of the burst goes to the bounded buffer.
            seq = self._reads.seq
            if seq != self._inline_seq:
                self._inline_seq = seq
                self._inline_until = _now() + _INLINE_BUDGET_S
            elif _now() >= self._inline_until:
                seq = -1
            if seq >= 0:
                self._deliver(payload, src)
                return
        if len(inbox) >= self._recv_max:
            self._stats["dropped_full"] += 1
            return
        inbox.append((payload, src))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _deliver(self, data: bytes, src: str) -> None:
        self._received += 1
        self._delivering = True
        try:
            self._protocol.datagram_received(data, src)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._protocol_raised(exc)
        finally:
            self._delivering = False

    def _protocol_raised(self, exc: BaseException) -> None:
        self._loop.call_exception_handler({
            "message": "datagram_received raised", "exception": exc,
            "transport": self, "protocol": self._protocol,
        })

    def _drain(self) -> None:
        self._drain_scheduled = False
        inbox = self._inbox
        until = _now() + _DRAIN_BUDGET_S
        while inbox:
            if self._closing:
                inbox.clear()
                return
            data, src = inbox.popleft()
            self._deliver(data, src)
            if _now() > until:
                break
        if inbox and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    # ----- send --------------------------------------------------------
    def sendto(self, data: Any, addr: Any = None) -> None:
        if type(data) is not bytes:
            if not isinstance(data, _BYTES_LIKE):
                raise TypeError(
                    f"data argument must be a bytes-like object, not {type(data).__name__!r}")
            data = bytes(data)
        if addr is None:
            addr = self._remote
            if addr is None:
                raise ValueError("sendto needs an address (a peer name)")
        elif self._remote is not None and addr != self._remote:
            raise ValueError(f"invalid address: must be None or {self._remote!r}")
        if type(addr) is not str:
            raise TypeError(f"address must be a peer name (str), not {type(addr).__name__!r}")
        n = len(data)
        if n > self.max_datagram_size:
            raise ValueError(f"datagram of {n} bytes exceeds the maximum of "
                             f"{self.max_datagram_size} bytes")
        if self._closing:
            self._stats["sent_after_close"] += 1
            return
        self._sent += 1
        if addr == self._name:
            self._loop.call_soon(self._on_packet, addr, data)
            return
        link = self._route_link(addr)
        if link is None:
            self._stats["no_route"] += 1
            self._send_failed(addr)
            self._loop.call_soon(self._report_error, OSError(
                errno.EHOSTUNREACH, f"no route to mesh peer {addr!r}"))
            return
        if not link.send(self._encode(addr, data)):
            self._stats["dropped_out"] += 1
            self._send_failed(addr)

    def _send_failed(self, addr: str) -> None:
        failures = self.send_failures
        if addr not in failures and len(failures) >= MAX_FAILURE_PEERS:
            addr = "_other"
        failures[addr] += 1

    def _report_error(self, exc: OSError) -> None:
        if not self._closing:
            self._protocol.error_received(exc)

    # ----- the rest of DatagramTransport ---------------------------------
    def abort(self) -> None:
        self._close(None)

    def close(self) -> None:
        self._close(None)

    def _router_stopped(self) -> None:
        self._close(ConnectionAbortedError("the mesh router stopped"))

    def _close(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        self._unregister()
        self._remove_stop_cb()
        self._inbox.clear()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        if not self._lost_called:
            self._lost_called = True
            self._protocol.connection_lost(exc)

    def is_closing(self) -> bool:
        return self._closing

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.DatagramProtocol | asyncio.BaseProtocol)
        self._protocol = protocol  # type: ignore[assignment]

    def get_write_buffer_size(self) -> int:
        """Always 0: datagrams are handed to the mesh at once (its link queues are
        bounded and drop when full, like a network)."""
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._write_limits

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        high = 0 if high is None else high
        low = high // 4 if low is None else low
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._write_limits = (low, high)

    def can_write_eof(self) -> bool:
        return False

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<MeshPacketConn {self._name} channel={self._channel!r} {state}>"


async def create_mesh_endpoint(
    router: Router, protocol_factory: Callable[[], asyncio.DatagramProtocol],
    channel: str = "raft", *, remote_addr: str | None = None,
    max_datagram_size: int = MAX_DATAGRAM_SIZE, recv_buffer: int = DEFAULT_RECV_BUFFER,
) -> tuple[MeshPacketConn, asyncio.DatagramProtocol]:
    """Like ``loop.create_datagram_endpoint``, over the mesh: returns (transport,
    protocol) after ``protocol.connection_made(transport)``.  Raises ValueError if
    the channel is taken or ``max_datagram_size`` exceeds what the mesh carries."""
    if not 0 < max_datagram_size <= router.max_payload:
        raise ValueError(f"max_datagram_size must be in 1..{router.max_payload}")
    if recv_buffer < 1:
        raise ValueError("recv_buffer must be >= 1")
    protocol = protocol_factory()
    transport = MeshPacketConn(router, protocol, channel, max_datagram_size, recv_buffer,
                               remote_addr)
    protocol.connection_made(transport)
    return transport, protocol

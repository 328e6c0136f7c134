"""A plain UDP transport for :class:`meshraft.raft.node.RaftNode` (``--transport udp``).

This module owns only the small adapter from ``loop.create_datagram_endpoint``
to the node's ``transport_factory`` shape. It must never know about Raft
messages: it moves bytes between (host, port) addresses, like the mesh's
``MeshPacketConn`` moves them between peer names.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

# The largest UDP payload over IPv4; the node keeps its messages below it.
MAX_UDP_PAYLOAD = 65507

ProtocolFactory = Callable[[], asyncio.DatagramProtocol]
TransportFactory = Callable[[ProtocolFactory], Awaitable[tuple[asyncio.DatagramTransport, Any]]]


def udp_transport_factory(local_addr: tuple[str, int], rcvbuf: int = 4 << 20) -> TransportFactory:
    """A ``transport_factory`` that binds a UDP socket to ``local_addr``.

    Peers must be given as ``(host, port)`` of their bound sockets: replies and
    requests both leave from the bound address, so the source address of a
    datagram is the sender's listed address."""

    async def factory(protocol_factory: ProtocolFactory):
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            protocol_factory, local_addr=local_addr)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # a burst of appends must not overflow the default receive buffer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
            except OSError:
                pass
        return transport, protocol

    return factory

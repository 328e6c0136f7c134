"""atheris harness: the mesh's link decoder (framing, HELLO, IDENT, ACCEPT, messages) on a
real Router, fed through an in-process transport instead of a socket.

    pip install -e '.[fuzz]'
    python fuzz/fuzz_mesh_frame.py -atheris_runs=100000

The first input byte picks where the bytes go: even, straight into a new link
(the handshake); odd, into a link that has completed a valid handshake (frames).
Nothing raises out of the link, and the router never keeps a link that sent
something it refused."""

from __future__ import annotations

import asyncio
import logging
import struct

import _harness
import msgpack

with _harness.instrumented():
    from meshraft.mesh import Router
    from meshraft.mesh.connection import CLOSED, ESTABLISHED
    from meshraft.mesh.wire import ACCEPT_BODY, MAGIC, PROTOCOL_MAX, PROTOCOL_MIN

logging.disable(logging.CRITICAL)  # every refused input is logged; millions of them


class FakeTransport(asyncio.Transport):
    def __init__(self, link) -> None:
        super().__init__()
        self.link = link
        self.closed = False

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 9) if name == "peername" else default

    def write(self, data) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.link.connection_lost(None)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


HELLO = frame(msgpack.packb({"magic": MAGIC, "min": PROTOCOL_MIN, "max": PROTOCOL_MAX,
                             "pk": None}))
IDENT = frame(msgpack.packb(["fuzz-peer", 0xFEED, 1, 1, "127.0.0.1", 0]))
ACCEPT = frame(ACCEPT_BODY)
loop = asyncio.new_event_loop()
router: Router = loop.run_until_complete(Router.start("fuzz-self", connect_interval=3600.0))


def feed(link, data: bytes) -> None:
    pos = 0
    while pos < len(data) and link.state != CLOSED:
        buf = link.get_buffer(len(data) - pos)
        n = min(len(buf), len(data) - pos, 97)  # odd-sized reads split frames anywhere
        buf[:n] = data[pos:pos + n]
        link.buffer_updated(n)
        pos += n


def test_one_input(data: bytes) -> None:
    async def go() -> None:
        link = router.peer.new_link(False)
        transport = FakeTransport(link)
        link.connection_made(transport)
        if data[:1] and data[0] & 1:
            feed(link, HELLO + IDENT + ACCEPT)
            assert link.state == ESTABLISHED, link.close_reason
        feed(link, data[1:])
        transport.close()
        assert not router.links, router.links  # a closed link is forgotten

    loop.run_until_complete(go())


if __name__ == "__main__":
    _harness.main(test_one_input)

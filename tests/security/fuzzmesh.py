"""A loopback mesh of two real Routers to fuzz, and a hand-rolled hostile peer.

The hostile peer speaks the wire format from the outside (framing, HELLO,
IDENT, optional encryption) and then sends whatever a test wants. Every address
it announces is on 127.0.0.1 (a fuzzed topology could otherwise make a router
dial anywhere)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from typing import Any

import msgpack
from conftest import free_port

from meshraft.mesh import Router
from meshraft.mesh.crypto import Ephemeral, password_key
from meshraft.mesh.wire import ACCEPT_BODY, MAGIC, PROTOCOL_MAX, PROTOCOL_MIN

A, B = "fuzz-alpha", "fuzz-bravo"  # long names: fuzzed records will not collide with them
RAW = "fuzz-raw"
FAST: dict[str, Any] = dict(heartbeat=0.1, link_timeout=2.0, gossip_interval=0.2,
                            dial_backoff=(0.02, 0.3), connect_interval=0.03)
CLOSED_PORT = free_port()  # nothing listens here: announced by the hostile peer


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


async def poll(pred: Callable[[], Any], within: float, what: str,
               each: Callable[[], Any] | None = None) -> None:
    """Wait until ``pred()``, calling ``each()`` between looks; fail after ``within`` s."""
    for _ in range(int(within / 0.01)):
        if pred():
            return
        if each is not None:
            each()
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


class Pair:
    """Routers A and B, linked; ``healthy()`` checks A<->B still carries unicast."""

    def __init__(self, password: str | None) -> None:
        self.password = password
        self.errors: list[Any] = []
        self.got: list[bytes] = []
        self.n = 0

    async def start(self) -> Pair:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, ctx: self.errors.append(ctx))
        self.a = await Router.start(A, password=self.password, **FAST)
        self.b = await Router.start(B, peers=[f"127.0.0.1:{self.a.address[1]}"],
                                    password=self.password, **FAST)
        self.b.register_unicast("ping", lambda src, p: self.got.append(p))
        await self.healthy()
        return self

    async def healthy(self, within: float = 10.0) -> None:
        self.n += 1
        token = f"ping-{self.n}".encode()
        await poll(lambda: token in self.got, within, "A->B unicast",
                   lambda: B in self.a.links and self.a.send_unicast("ping", B, token))
        assert not self.errors, self.errors

    async def stop(self) -> None:
        for r in (self.b, self.a):
            await r.stop()


class Hostile:
    """One TCP connection to a router, speaking as much of the protocol as asked."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.tx = self.rx = None

    @classmethod
    async def connect(cls, router: Router) -> Hostile:
        return cls(*await asyncio.open_connection(*router.address))

    async def read_frame(self) -> bytes:
        (n,) = struct.unpack(">I", await asyncio.wait_for(self.reader.readexactly(4), 5))
        return await asyncio.wait_for(self.reader.readexactly(n), 5)

    async def handshake(self, password: str | None) -> None:
        eph = Ephemeral() if password is not None else None
        hello = {"magic": MAGIC, "min": PROTOCOL_MIN, "max": PROTOCOL_MAX,
                 "pk": eph.public if eph else None}
        self.writer.write(frame(msgpack.packb(hello)))
        theirs = msgpack.unpackb(await self.read_frame())
        if eph is not None:
            self.tx, self.rx = eph.session(theirs["pk"], password_key(password.encode()))
        self.send(msgpack.packb([RAW, 0xFEED, 1, 1, "127.0.0.1", CLOSED_PORT]))
        await self.read_frame()  # their ident
        self.send(ACCEPT_BODY)  # we accept it (theirs follows, left unread)

    def send(self, body: bytes) -> None:
        if self.tx is not None:
            body = self.tx.encrypt(body)
        self.writer.write(frame(body))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed_by_peer(self, within: float = 3.0) -> bool:
        """Read until the router closes the connection; False if it did not in time."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except ConnectionError:
            pass
        except TimeoutError:
            return False
        return True

    async def finish(self) -> None:
        """Let the router read what was sent, then hang up."""
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()
            self.writer.write_eof()
            async with asyncio.timeout(0.5):  # the router may close first, or not at all
                while await self.reader.read(65536):
                    pass
        with contextlib.suppress(Exception):
            self.writer.close()

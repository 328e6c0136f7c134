"""A hand-rolled mesh peer for hostile tests: it speaks the wire format from the
outside (framing, HELLO, IDENT, ACCEPT, encryption) and then sends whatever a test wants."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import msgpack

from meshraft.mesh.crypto import Ephemeral, password_key
from meshraft.mesh.wire import ACCEPT_BODY, MAGIC, PROTOCOL_MAX, PROTOCOL_MIN


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.tx = self.rx = None
        self.remote_hello: dict | None = None
        self.remote_ident: list | None = None

    @classmethod
    async def connect(cls, host: str, port: int) -> RawPeer:
        r, w = await asyncio.open_connection(host, port)
        return cls(r, w)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send_frame(self, body: bytes, encrypt: bool = True) -> None:
        if encrypt and self.tx is not None:
            body = self.tx.encrypt(body)
        self.writer.write(struct.pack(">I", len(body)) + body)

    async def read_frame(self, within: float = 2.0, decrypt: bool = True) -> bytes:
        hdr = await asyncio.wait_for(self.reader.readexactly(4), within)
        (n,) = struct.unpack(">I", hdr)
        body = await asyncio.wait_for(self.reader.readexactly(n), within)
        if decrypt and self.rx is not None:
            body = self.rx.decrypt(body)
        return body

    async def handshake(self, name: str = "raw", uid: int = 0xABCDEF, password: bytes | None = None,
                        versions: tuple[int, int] = (PROTOCOL_MIN, PROTOCOL_MAX),
                        port: int = 0) -> list:
        eph = Ephemeral() if password is not None else None
        hello = {"magic": MAGIC, "min": versions[0], "max": versions[1],
                 "pk": eph.public if eph else None}
        self.send_frame(msgpack.packb(hello), encrypt=False)
        self.remote_hello = msgpack.unpackb(await self.read_frame(decrypt=False))
        if eph is not None:
            self.tx, self.rx = eph.session(self.remote_hello["pk"], password_key(password))
        self.send_frame(msgpack.packb([name, uid, 1, 7, "127.0.0.1", port]))
        self.remote_ident = msgpack.unpackb(await self.read_frame())
        self.send_frame(ACCEPT_BODY)  # we accept it; the router's ACCEPT is left unread
        return self.remote_ident

    async def closed_by_peer(self, within: float = 3.0) -> bool:
        """Read (and discard) until EOF; True if the peer closed within ``within``."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
            return True
        except ConnectionError:
            return True  # reset: closed too
        except TimeoutError:
            return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class FrameProxy:
    """A TCP proxy in front of a router that forwards frame by frame and can tamper
    with the client->server direction: ``mutate(index, frames)`` gets each frame
    (length prefix included) and returns the list of frames to forward instead."""

    def __init__(self, upstream: tuple[str, int], mutate) -> None:
        self.upstream = upstream
        self.mutate = mutate
        self.server: asyncio.base_events.Server | None = None
        self.address: tuple[str, int] = ("", 0)
        self.upstream_closed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> FrameProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = self.server.sockets[0].getsockname()[:2]
        return self

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.upstream)
        except OSError:
            cw.close()
            return

        async def down() -> None:  # server -> client, untouched
            try:
                while data := await ur.read(65536):
                    cw.write(data)
            except ConnectionError:
                pass
            self.upstream_closed.set()
            cw.close()

        async def up() -> None:  # client -> server, frame by frame
            index = 0
            try:
                while True:
                    hdr = await cr.readexactly(4)
                    (n,) = struct.unpack(">I", hdr)
                    frame = hdr + await cr.readexactly(n)
                    for out in self.mutate(index, frame):
                        uw.write(out)
                    index += 1
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            uw.close()

        for coro in (down(), up()):
            t = asyncio.create_task(coro)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self._tasks):
            t.cancel()

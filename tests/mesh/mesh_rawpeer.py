"""A hand-rolled mesh peer for hostile tests: it speaks the wire format from the
outside (framing, HELLO, IDENT, encryption) and then sends whatever a test wants."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import msgpack

from meshraft.mesh.connection import MAGIC
from meshraft.mesh.crypto import Ephemeral, password_key


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
                        versions: tuple[int, int] = (1, 1), port: int = 0) -> list:
        eph = Ephemeral() if password is not None else None
        hello = {"magic": MAGIC, "min": versions[0], "max": versions[1],
                 "pk": eph.public if eph else None}
        self.send_frame(msgpack.packb(hello), encrypt=False)
        self.remote_hello = msgpack.unpackb(await self.read_frame(decrypt=False))
        if eph is not None:
            self.tx, self.rx = eph.session(self.remote_hello["pk"], password_key(password))
        self.send_frame(msgpack.packb([name, uid, 1, 7, "127.0.0.1", port]))
        self.remote_ident = msgpack.unpackb(await self.read_frame())
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

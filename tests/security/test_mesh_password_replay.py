"""Mesh password: what tests/mesh/test_password.py does not cover. A whole recorded
link replayed on a new connection is refused (every link has fresh ephemeral keys,
so a recording is worthless), and so is a HELLO whose public key was altered in
transit (the two sides then derive different keys). Against real Routers."""

from __future__ import annotations

import asyncio
import logging

import msgpack
import pytest
from fuzzmesh import RAW, Hostile, Pair, frame, poll

PW = "replay password"


@pytest.fixture
async def pair():
    p = await Pair(PW).start()
    try:
        yield p
    finally:
        await p.stop()


class Recorder(Hostile):
    """A hostile peer that keeps every byte it sends."""

    def __init__(self, reader, writer) -> None:
        super().__init__(reader, writer)
        self.sent = bytearray()
        write = writer.write

        def recording_write(data) -> None:
            self.sent += data
            write(data)

        writer.write = recording_write  # type: ignore[method-assign]


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "did not decrypt" in r.getMessage()]


async def test_a_recorded_link_replayed_is_refused(pair, caplog):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    rec = await Recorder.connect(pair.a)
    await rec.handshake(PW)
    for _ in range(3):
        rec.send(msgpack.packb([0]))  # heartbeats, encrypted under this link's keys
    await poll(lambda: RAW in pair.a.links, 5, "the recorded link to be accepted")
    await rec.finish()
    await poll(lambda: RAW not in pair.a.links, 5, "the recorded link to close")
    assert not refusals(caplog)

    replay = await Hostile.connect(pair.a)
    replay.send_raw(bytes(rec.sent))
    assert await replay.closed_by_peer(), "a replayed link was kept open"
    await replay.finish()
    assert refusals(caplog), caplog.text
    assert RAW not in pair.a.links
    await pair.healthy()


async def test_an_altered_public_key_is_refused(pair, caplog):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    h = await Hostile.connect(pair.a)
    from meshraft.mesh.crypto import Ephemeral, password_key
    from meshraft.mesh.wire import MAGIC, PROTOCOL_MAX, PROTOCOL_MIN

    eph = Ephemeral()
    pk = bytearray(eph.public)
    pk[5] ^= 0x01  # what a man in the middle would do to the cleartext HELLO
    h.send_raw(frame(msgpack.packb({"magic": MAGIC, "min": PROTOCOL_MIN, "max": PROTOCOL_MAX,
                                    "pk": bytes(pk)})))
    theirs = msgpack.unpackb(await h.read_frame())
    h.tx, h.rx = eph.session(theirs["pk"], password_key(PW.encode()))
    h.send(msgpack.packb([RAW, 0xFEED, 1, 1, "127.0.0.1", 0]))
    assert await h.closed_by_peer()
    await h.finish()
    assert refusals(caplog), caplog.text
    assert RAW not in pair.a.links
    await asyncio.sleep(0)
    await pair.healthy()

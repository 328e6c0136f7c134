"""The mesh password: authenticated, encrypted links.  Wrong or missing passwords
are refused with a clear log on both sides and learn nothing; a replayed,
reordered, truncated or bit-flipped frame closes the link."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest
from mesh_rawpeer import FrameProxy, RawPeer
from meshtest import eventually, mesh_fixture  # noqa: F401  (fixture)

from meshraft.mesh import read_password_file


def lines(caplog, who: str, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.getMessage().startswith(f"[mesh {who}]") and text in r.getMessage()]


async def test_same_password_links_encrypted(mesh):
    a = await mesh("a", password="correct horse")
    b = await mesh("b", peers=[a], password=b"correct horse")
    await eventually(lambda: "b" in a.links, 5, "a-b")
    assert a.status()["links"]["b"]["encrypted"] and b.status()["links"]["a"]["encrypted"]
    got = []
    b.register_unicast("t", lambda src, p: got.append((src, p)))
    a.send_unicast("t", "b", b"secret")
    await eventually(lambda: got == [("a", b"secret")], 2, "encrypted unicast")


async def test_wrong_password_is_refused_on_both_sides(mesh, caplog):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    a = await mesh("a", password="one")
    b = await mesh("b", peers=[a], password="two")
    await eventually(lambda: lines(caplog, "a", "wrong mesh password")
                     and lines(caplog, "b", "wrong mesh password"), 5, "both sides log")
    await asyncio.sleep(0.2)
    assert not a.links and not b.links
    assert "b" not in {p["name"] for p in a.status()["peers"]}


@pytest.mark.parametrize("who_has_it", ["listener", "dialler"])
async def test_missing_password_is_refused_on_both_sides(mesh, caplog, who_has_it):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    pa, pb = ("pw", None) if who_has_it == "listener" else (None, "pw")
    a = await mesh("a", password=pa)
    b = await mesh("b", peers=[a], password=pb)
    await eventually(lambda: lines(caplog, "a", "mesh password mismatch")
                     and lines(caplog, "b", "mesh password mismatch"), 5, "both sides log")
    assert not a.links and not b.links


@pytest.mark.parametrize("password", [None, b"guess"])
async def test_an_outsider_learns_nothing(mesh, password):
    a = await mesh("a-very-distinctive-name", password="the real one")
    raw = await RawPeer.connect(*a.address)
    seen = bytearray()
    try:
        try:
            import msgpack

            from meshraft.mesh.wire import MAGIC, PROTOCOL_MAX, PROTOCOL_MIN

            hello = {"magic": MAGIC, "min": PROTOCOL_MIN, "max": PROTOCOL_MAX, "pk": None}
            if password is not None:
                from meshraft.mesh.crypto import Ephemeral

                hello["pk"] = Ephemeral().public
            raw.send_frame(msgpack.packb(hello), encrypt=False)
            raw.send_frame(msgpack.packb(["spy", 1, 1, 1, "127.0.0.1", 0]), encrypt=False)
            async with asyncio.timeout(3):
                while chunk := await raw.reader.read(4096):
                    seen += chunk
        except ConnectionError:
            pass
        assert b"distinctive" not in seen  # neither name nor uid leaks in the clear
        assert f"{a.uid:016x}".encode() not in seen
        assert struct.pack(">Q", a.uid) not in seen
        assert not a.links
    finally:
        raw.close()


def _tamper(kind: str, at: int = 3):
    """Frames 0, 1 and 2 are HELLO, IDENT and ACCEPT; tamper with data frame ``at``."""
    held: list[bytes] = []

    def mutate(index: int, frame: bytes) -> list[bytes]:
        if index < at:
            return [frame]
        if kind == "replay" and index == at:
            return [frame, frame]
        if kind == "reorder":
            if index == at:
                held.append(frame)
                return []
            if index == at + 1:
                return [frame, *held]
        if kind == "truncate" and index == at:
            body = frame[4:-5]
            return [struct.pack(">I", len(body)) + body]
        if kind == "bitflip" and index == at:
            b = bytearray(frame)
            b[len(b) // 2 + 2] ^= 0x10
            return [bytes(b)]
        return [frame]

    return mutate


@pytest.mark.parametrize("kind", ["replay", "reorder", "truncate", "bitflip"])
async def test_tampered_frames_close_the_link(mesh, caplog, kind):
    caplog.set_level(logging.INFO, logger="meshraft.mesh")
    a = await mesh("a", password="pw")
    proxy = await FrameProxy(a.address, _tamper(kind)).start()
    try:
        # b reaches a only through the tampering proxy (a refuses direct links from b
        # only after the proxied one failed: a's filter is not involved).
        await mesh("b", peers=[f"127.0.0.1:{proxy.address[1]}"], password="pw",
                   heartbeat=0.05)
        await asyncio.wait_for(proxy.upstream_closed.wait(), 5)
        failed = lines(caplog, "a", "failed authentication")
        assert failed, caplog.text
        assert "replayed, reordered, truncated or altered" in failed[0]
    finally:
        await proxy.stop()


async def test_untampered_proxy_is_fine(mesh):
    # the control for the test above: the same proxy, forwarding faithfully
    a = await mesh("a", password="pw")
    proxy = await FrameProxy(a.address, lambda i, f: [f]).start()
    try:
        b = await mesh("b", peers=[f"127.0.0.1:{proxy.address[1]}"], password="pw",
                       heartbeat=0.05)
        await eventually(lambda: "b" in a.links, 5, "a-b through the proxy")
        await asyncio.sleep(0.5)  # many heartbeats pass intact
        assert "b" in a.links and not proxy.upstream_closed.is_set()
        assert b.links["a"].frames_in > 5
    finally:
        await proxy.stop()


def test_password_file(tmp_path):
    p = tmp_path / "pw"
    p.write_bytes(b"s3cret\n")
    assert read_password_file(str(p)) == b"s3cret"
    p.write_bytes(b"\n")
    with pytest.raises(ValueError, match="empty"):
        read_password_file(str(p))


def test_the_password_key_is_stretched_with_argon2id():
    """A stranger who records an encrypted handshake frame must pay Argon2id (libsodium's
    interactive limits) for each offline guess, not one fast hash."""
    import nacl.hash
    from nacl.pwhash import argon2id

    from meshraft.mesh.crypto import password_key

    want = argon2id.kdf(32, b"pw", b"meshraft-mesh-pw", opslimit=argon2id.OPSLIMIT_INTERACTIVE,
                        memlimit=argon2id.MEMLIMIT_INTERACTIVE)
    assert password_key(b"pw") == want
    assert password_key(b"pw") != nacl.hash.blake2b(
        b"pw", digest_size=32, person=b"meshraft-pw", encoder=nacl.encoding.RawEncoder)
    assert password_key(b"pw2") != want

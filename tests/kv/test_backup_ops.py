"""The maintenance operations of one member (snapshot_begin/chunk/end, move_leader),
spoken in raw protocol frames to a member started from Python, and the datagram gate
that keeps clusters apart."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import subprocess
import sys

import pytest

from meshraft.kv import client as kc
from meshraft.kv import protocol as p
from meshraft.kv.maintenance import MAX_HELD
from meshraft.kv.state_machine import KVStateMachine
from meshraft.member import Member, MemberConfig
from meshraft.ports import free_ports
from meshraft.raft.cluster import CLUSTER_TAG_BYTE, ClusterGate
from meshraft.raft.datadir import read_cluster_id


class Raw:
    """One client connection speaking frames directly."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.ids = reader, writer, itertools.count(1)

    async def ask(self, **body) -> dict:
        rid = next(self.ids)
        self.writer.write(p.encode_frame({"id": rid, **body}))
        await self.writer.drain()
        reply = p.decode_body(await p.read_frame(self.reader, 1 << 24), 1 << 24)
        assert reply["id"] == rid
        return reply


@pytest.fixture
async def member(tmp_path):
    (peer,) = free_ports(1)
    d = tmp_path / "n1"
    d.mkdir()
    config = MemberConfig(node_id="1", peers={"1": ("127.0.0.1", peer)},
                          listen=("127.0.0.1", peer), client=("127.0.0.1", 0), data_dir=d,
                          transport="udp")
    async with Member(config) as m:
        async with kc.AsyncClient([m.client_endpoint], timeout=15) as c:
            for i in range(300):
                await c.put(f"k{i:03d}", "v" * 500)
        yield m


async def connect(m: Member) -> Raw:
    return Raw(*await asyncio.open_connection(*m.client_address))


async def test_a_snapshot_is_pulled_in_chunks_at_one_revision(member):
    raw = await connect(member)
    begin = await raw.ask(op="snapshot_begin")
    assert begin["ok"], begin
    info = begin["result"]
    assert info["revision"] == 300 and info["keys"] == 300
    # later writes do not change the held snapshot
    async with kc.AsyncClient([member.client_endpoint]) as c:
        await c.put("later", "x")
    data, offset = b"", 0
    while offset < info["size"]:
        r = await raw.ask(op="snapshot_chunk", snapshot=info["snapshot"], offset=offset)
        chunk = r["result"]["data"]
        assert 0 < len(chunk) <= info["chunk"]
        data += chunk
        offset += len(chunk)
    assert hashlib.sha256(data).hexdigest() == info["checksum"]
    sm = KVStateMachine()
    sm.restore(data)
    assert sm.revision == 300 and len(sm) == 300 and sm.get(b"later") is None
    assert (await raw.ask(op="snapshot_end", snapshot=info["snapshot"]))["ok"]
    gone = await raw.ask(op="snapshot_chunk", snapshot=info["snapshot"], offset=0)
    assert gone["error"] == p.BAD_REQUEST and "begin again" in gone["message"]


async def test_bad_chunk_requests_and_the_holding_area_bound(member):
    raw = await connect(member)
    ids = []
    for _ in range(MAX_HELD):
        r = await raw.ask(op="snapshot_begin")
        assert r["ok"], r
        ids.append(r["result"]["snapshot"])
    full = await raw.ask(op="snapshot_begin")
    assert full["error"] == p.BUSY  # bounded: a client must finish (or let expire) first
    for bad in (-1, 10**9, "0", None, True):
        r = await raw.ask(op="snapshot_chunk", snapshot=ids[0], offset=bad)
        assert r["error"] == p.BAD_REQUEST, (bad, r)
    for bad_id in ("nope", 7, "x" * 100):
        r = await raw.ask(op="snapshot_chunk", snapshot=bad_id, offset=0)
        assert r["error"] == p.BAD_REQUEST
    assert (await raw.ask(op="snapshot_end", snapshot=ids[0]))["ok"]
    assert (await raw.ask(op="snapshot_begin"))["ok"]  # room again


async def test_move_leader_on_a_single_member(member):
    raw = await connect(member)
    me = await raw.ask(op="move_leader", member="1")
    assert me["ok"] and me["result"]["leader"] == "1"
    for bad, words in (("2", "not a member"), ("", "short printable"), (5, "short printable")):
        r = await raw.ask(op="move_leader", member=bad)
        assert r["error"] == p.BAD_REQUEST and words in r["message"], r


async def test_the_client_downloads_and_the_cli_refuses_to_leave_a_half_file(member, tmp_path):
    chunks: list[bytes] = []
    async with kc.AsyncClient([member.client_endpoint]) as c:
        info = await c.snapshot(lambda _info, chunk: chunks.append(chunk))
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == info["checksum"]
    assert info["node"] == "1" and info["keys"] == 300
    # nothing listens there: exit 3, and no file (nor temp file) is left
    (port,) = free_ports(1)
    target = tmp_path / "out" / "b.snap"
    target.parent.mkdir()
    r = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "meshraft.cli", "snapshot", "save", str(target), "--endpoints",
        f"127.0.0.1:{port}", "--timeout", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert list(target.parent.iterdir()) == []
    r = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "meshraft.cli", "snapshot", "save", str(tmp_path / "no" / "b"),
        "--endpoints", member.client_endpoint], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot write" in r.stderr, r.stderr


def test_the_gate_tags_refuses_and_adopts(tmp_path, caplog):
    log = logging.getLogger("test.gate")
    a = ClusterGate(tmp_path, "0123456789abcdef", may_adopt=False, logger=log)
    legacy = ClusterGate(tmp_path, None, may_adopt=False, logger=log)
    msg = b"\x9dhello"
    tagged = a.wrap(msg)
    assert tagged[0] == CLUSTER_TAG_BYTE and a.accept(tagged, "x") == msg
    assert legacy.wrap(msg) == msg and legacy.accept(msg, "x") == msg
    with caplog.at_level(logging.WARNING):
        assert a.accept(msg, "old-member") is None  # untagged: another cluster
        assert legacy.accept(tagged, "restored") is None
        other = ClusterGate(tmp_path, "fedcba9876543210", may_adopt=False, logger=log)
        assert a.accept(other.wrap(msg), "other") is None
        assert a.accept(bytes([CLUSTER_TAG_BYTE, 1]), "short") is None
    assert "it belongs to cluster fedcba9876543210, this member to cluster 0123456789abcdef" \
        in caplog.text
    assert a.refused == 3 and legacy.refused == 1
    d = tmp_path / "joiner"
    d.mkdir()
    joiner = ClusterGate(d, None, may_adopt=True, logger=log)
    assert joiner.accept(tagged, "leader") == msg
    assert joiner.cluster_id == "0123456789abcdef" == read_cluster_id(d)
    assert joiner.accept(msg, "old") is None  # adopted: untagged ones are refused now

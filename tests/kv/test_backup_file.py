"""Backup files and restore, without a cluster: the file format's checks (through
`meshraft snapshot status|restore`, real processes) and a member started from a
restored data dir (in-process, the real client)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshraft.kv import client as kc
from meshraft.kv.backup import BACKUP_MAGIC, BackupWriter, BadBackup, new_info, read_backup
from meshraft.kv.state_machine import KVStateMachine, encode_command
from meshraft.member import Member, MemberConfig
from meshraft.ports import free_ports
from meshraft.raft.datadir import read_cluster_id


def meshraft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshraft.cli", *args], capture_output=True,
                          text=True, timeout=60)


def make_backup(path: Path, n: int = 50) -> KVStateMachine:
    """A backup of a state machine with ``n`` keys (and one overwritten twice)."""
    import hashlib

    sm = KVStateMachine()
    for i in range(n):
        sm.apply_command(encode_command({"op": "put", "key": f"k{i:03d}".encode(),
                                         "value": f"v{i}".encode()}))
    for v in (b"second", b"third"):
        sm.apply_command(encode_command({"op": "put", "key": b"k000", "value": v}))
    data = sm.snapshot()
    with BackupWriter(path) as w:
        w.begin(new_info(revision=sm.revision, keys=len(sm), data_size=len(data),
                         data_sha256=hashlib.sha256(data).hexdigest(),
                         compact_revision=sm.compact_revision, member="test"))
        for off in range(0, len(data), 100):
            w.write(data[off:off + 100])
        w.commit()
    return sm


def test_status_prints_revision_keys_size_and_checksum(tmp_path):
    f = tmp_path / "b.snap"
    sm = make_backup(f)
    r = meshraft("snapshot", "status", str(f), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["revision"] == sm.revision == 52
    assert info["keys"] == 50
    assert info["file_size"] == f.stat().st_size
    assert len(info["data_sha256"]) == 64
    text = meshraft("snapshot", "status", str(f))
    assert text.returncode == 0
    assert "revision:          52" in text.stdout and "keys:              50" in text.stdout
    # no temp file left next to it
    assert [p.name for p in tmp_path.iterdir()] == ["b.snap"]


@pytest.mark.parametrize("damage, message", [
    ("flip", "checksum mismatch"),
    ("truncate", "truncated"),
    ("magic", "wrong magic"),
    ("version", "version 9 is not supported"),
    ("append", "unexpected bytes"),
    ("empty", "truncated"),
])
def test_a_damaged_file_is_refused_by_status_and_restore(tmp_path, damage, message):
    f = tmp_path / "b.snap"
    make_backup(f)
    raw = bytearray(f.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x01
    elif damage == "truncate":
        del raw[-100:]
    elif damage == "magic":
        raw[:8] = b"NOTABKUP"
    elif damage == "version":
        raw[8:12] = (9).to_bytes(4, "big")
    elif damage == "append":
        raw += b"x"
    else:
        raw = bytearray()
    f.write_bytes(bytes(raw))
    r = meshraft("snapshot", "status", str(f))
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    d = tmp_path / "dir"
    r = meshraft("snapshot", "restore", str(f), "--data-dir", str(d), "--id", "1",
                 "--peers", "1=127.0.0.1:7001")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not d.exists() or not any(d.iterdir())  # nothing written


def test_restore_refuses_a_non_empty_data_dir_and_bad_ids(tmp_path):
    f = tmp_path / "b.snap"
    make_backup(f)
    d = tmp_path / "dir"
    d.mkdir()
    (d / "something").write_text("mine")
    r = meshraft("snapshot", "restore", str(f), "--data-dir", str(d), "--id", "1",
                 "--peers", "1=127.0.0.1:7001")
    assert r.returncode == 2 and "is not empty" in r.stderr
    assert [p.name for p in d.iterdir()] == ["something"]
    r = meshraft("snapshot", "restore", str(f), "--data-dir", str(tmp_path / "new"), "--id",
                 "4", "--peers", "1=127.0.0.1:7001,2=127.0.0.1:7002")
    assert r.returncode == 2 and "--id 4 is not one of --peers" in r.stderr
    assert not (tmp_path / "new").exists()
    r = meshraft("snapshot", "status", str(tmp_path / "missing.snap"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_a_member_restored_from_a_backup_serves_its_keys_and_revisions(tmp_path):
    f = tmp_path / "b.snap"
    sm = make_backup(f)
    (peer,) = free_ports(1)
    d = tmp_path / "restored"
    r = meshraft("snapshot", "restore", str(f), "--data-dir", str(d), "--id", "n1",
                 "--peers", f"n1=127.0.0.1:{peer}", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    cid = read_cluster_id(d)
    assert out["cluster_id"] == cid and out["revision"] == 52
    # The same backup restored with other peers is another cluster.
    r2 = meshraft("snapshot", "restore", str(f), "--data-dir", str(tmp_path / "other"),
                  "--id", "n1", "--peers", "n1=127.0.0.1:1")
    assert r2.returncode == 0 and read_cluster_id(tmp_path / "other") != cid

    async def check() -> None:
        config = MemberConfig(node_id="n1", peers={"n1": ("127.0.0.1", peer)},
                              listen=("127.0.0.1", peer), client=("127.0.0.1", 0),
                              data_dir=d, transport="udp")
        async with Member(config) as m, kc.AsyncClient([m.client_endpoint], timeout=15) as c:
            kvs = {kv.key: kv for kv in await c.list("k")}
            assert len(kvs) == 50
            for key, kv in kvs.items():
                want = sm.get(key)
                assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
                    want.value, want.create_revision, want.mod_revision, want.version)
            assert kvs[b"k000"].value == b"third" and kvs[b"k000"].version == 3
            st = await c.status()
            assert st["cluster_id"] == cid
            # the revision goes on from the backup's
            assert (await c.put("after", "restore")).revision == 53

    import asyncio
    asyncio.run(check())


def test_the_writer_never_leaves_a_half_file(tmp_path):
    f = tmp_path / "b.snap"
    with BackupWriter(f) as w:
        w.begin(new_info(revision=1, keys=1, data_size=10, data_sha256="0" * 64,
                         compact_revision=0, member="x"))
        w.write(b"12345")
    assert list(tmp_path.iterdir()) == []  # left without commit: aborted
    with BackupWriter(f) as w:
        w.begin(new_info(revision=1, keys=1, data_size=5, data_sha256="0" * 64,
                         compact_revision=0, member="x"))
        w.write(b"12345")
        with pytest.raises(BadBackup, match="checksum"):
            w.commit()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BadBackup):
        read_backup(f)
    assert BACKUP_MAGIC == b"MRBACKUP"
    assert not os.path.exists(f)

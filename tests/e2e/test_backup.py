"""Backups of a running cluster, restored into a new cluster (real processes).

- 10,000 keys written with many writes in flight, `snapshot save` while they go on,
  a new 3-member cluster restored from the file: it holds exactly the state at the
  save's revision (every write acknowledged at or before it, with its value and
  revisions; nothing after it), and carries on from that revision.
- A member of the old cluster restarted with its old data dir on the addresses of a
  restored cluster is refused by it, and refuses it, with a log line naming both
  clusters; the restored cluster keeps its data and serves.
"""

from __future__ import annotations

import asyncio
import json
import sys

from e2e_cluster import Cluster, wait_until

from meshraft.kv.client import AsyncClient, Client
from meshraft.localcluster import peers_arg, plan_members, serve_argv

N_KEYS = 10_000
IN_FLIGHT = 64


def restore_cluster(procs, backup: str, transport: str, ids: list[str]):
    """Restore a new cluster of ``ids`` from ``backup`` and start it; its addresses."""
    addrs = plan_members(len(ids), ids=ids)
    dirs = {}
    for m in addrs:
        dirs[m.id] = procs.tmpdir(f"restored{m.id}")
        r = procs.run("snapshot", "restore", backup, "--data-dir", str(dirs[m.id]), "--id",
                      m.id, "--peers", peers_arg(addrs), "--json")
        assert r.returncode == 0, r.stderr
    for m in addrs:
        procs.start_raw(serve_argv(m, addrs, dirs[m.id], transport), name=f"restored{m.id}")
    return addrs, dirs


async def write_keys_and_save(c: Cluster, backup: str) -> tuple[dict, list]:
    """Write N_KEYS keys (every tenth one twice, the second put after the first was
    acknowledged), run `snapshot save` once a third were acknowledged; return the save's
    JSON output and every acknowledged put as (key, value, result)."""
    acked: list[tuple[bytes, bytes, object]] = []
    saved: dict = {}
    third = asyncio.Event()
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(client: AsyncClient, i: int) -> None:
        async with slots:
            key = f"key{i:05d}".encode()
            for round_ in range(2 if i % 10 == 0 else 1):
                value = f"value{i}-{round_}".encode()
                res = await client.put(key, value, timeout=30)
                acked.append((key, value, res))
            if len(acked) >= N_KEYS // 3:
                third.set()

    async def save() -> None:
        await third.wait()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshraft.cli", "snapshot", "save", backup, "--json",
            "--endpoints", c.endpoints(), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        saved.update(json.loads(out))

    async with AsyncClient(c.endpoints(), timeout=30) as client:
        saver = asyncio.create_task(save())
        await asyncio.gather(*(one(client, i) for i in range(N_KEYS)))
        await saver
    return saved, acked


def test_save_while_writing_and_restore_a_new_cluster(procs):
    c = Cluster(procs, n=3)
    c.start_all()
    c.leader()
    backup = str(procs.tmpdir("backup") / "cluster.snap")
    saved, acked = asyncio.run(write_keys_and_save(c, backup))
    rev = saved["revision"]
    assert len(acked) == N_KEYS + N_KEYS // 10
    last_rev = max(res.revision for _, _, res in acked)
    assert 0 < rev < last_rev, "the save must have happened while writes went on"
    # The state at the save's revision: per key, its newest put at or before it.
    expected: dict[bytes, tuple] = {}
    for key, value, res in sorted(acked, key=lambda a: a[2].revision):
        if res.revision <= rev:
            expected[key] = (value, res.create_revision, res.revision, res.version)
    assert len(expected) == saved["keys"]
    assert N_KEYS // 3 <= len(expected) < N_KEYS

    st = procs.run("snapshot", "status", backup, "--json")
    assert st.returncode == 0, st.stderr
    info = json.loads(st.stdout)
    assert (info["revision"], info["keys"], info["data_sha256"]) == (
        rev, len(expected), saved["data_sha256"])

    addrs, _ = restore_cluster(procs, backup, c.transport, ["r1", "r2", "r3"])
    endpoints = ",".join(m.client for m in addrs)
    with Client(endpoints, timeout=30) as client:
        got = wait_until(lambda: client.list("key"), 60, 0.5, what="the restored cluster serves")
        restored = {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version)
                    for kv in got}
        missing = [k for k in expected if k not in restored]
        assert not missing, f"{len(missing)} acknowledged keys missing, e.g. {missing[:3]}"
        wrong = [k for k in expected if restored[k] != expected[k]]
        assert not wrong, f"e.g. {wrong[0]}: {restored[wrong[0]]} != {expected[wrong[0]]}"
        assert set(restored) == set(expected), "keys written after the save's revision"
        assert client.status()["kv"]["revision"] == rev
        # the new cluster carries on from the backup's revision
        assert client.put("after-restore", "yes").revision == rev + 1
        members = client.members()
        assert sorted(members["voters"]) == ["r1", "r2", "r3"]


def test_an_old_member_cannot_join_a_restored_cluster(procs):
    old = Cluster(procs, n=3)
    old.start_all()
    old.leader()
    with Client(old.endpoints()) as client:
        for i in range(20):
            client.put(f"k{i}", f"old{i}")
    backup = str(procs.tmpdir("backup") / "b.snap")
    r = old.cli("snapshot", "save", backup)
    assert r.returncode == 0, r.stderr
    assert "saved snapshot at revision 20" in r.stdout
    with Client(old.endpoints()) as client:  # written after the backup: not restored
        client.put("k0", "after-backup")
    for i in old.ids:
        old.stop(i)
    # The new cluster has the same ids and addresses; members 1 and 2 are restored,
    # member 3 comes back with the OLD data dir (the operator's mistake).
    addrs = old.addrs
    dirs = {}
    for m in addrs[:2]:
        dirs[m.id] = procs.tmpdir(f"restored{m.id}")
        r = procs.run("snapshot", "restore", backup, "--data-dir", str(dirs[m.id]), "--id",
                      m.id, "--peers", old.peers_arg)
        assert r.returncode == 0, r.stderr
    restored = [procs.start_raw(serve_argv(m, addrs, dirs[m.id], old.transport),
                                name=f"restored{m.id}") for m in addrs[:2]]
    stale = old.start("3")
    endpoints = ",".join(m.client for m in addrs[:2])
    with Client(endpoints, timeout=20) as client:
        kv = wait_until(lambda: client.get("k0"), 60, 0.5, what="the restored cluster serves")
        assert kv.value == b"old0"  # the backup's value, not the old member's newer one
        wait_until(lambda: "refused datagram" in stale.log(), 30, 0.2,
                   what="the old member logs that it refuses the restored cluster")
        wait_until(lambda: any("refused datagram" in p.log() for p in restored), 30, 0.2,
                   what="a restored member logs that it refuses the old member")
        line = next(ln for p in restored for ln in p.log().splitlines()
                    if "refused datagram" in ln)
        cid = client.status()["cluster_id"]
        assert cid and cid in line and "(none" in line
        assert client.members()["voters"] == ["1", "2", "3"]
        for i in range(5):  # writes commit with the two restored members alone
            client.put(f"new{i}", "x")
        assert client.get("k0").value == b"old0"
    with Client([addrs[2].client], timeout=5) as lone:
        st = lone.status()
        assert st.get("cluster_id") is None and st["role"] != "leader"
        assert lone.get("k0", serializable=True).value == b"after-backup"

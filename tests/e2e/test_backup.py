"""Backups of a running cluster, restored into a new cluster (real processes).

- 10,000 keys written with many writes in flight, `snapshot save` while they go on,
  a new 3-member cluster restored from the file: it holds exactly the state at the
  save's revision (every write acknowledged at or before it, with its value and
  revisions; nothing after it), and carries on from that revision.
- The README's backup walk-through, run as written (ports replaced by free ones).
- A member of the old cluster restarted with its old data dir on the addresses of a
  restored cluster is refused by it, and refuses it, with a log line naming both
  clusters; the restored cluster keeps its data and serves.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from e2e_cluster import Cluster, free_ports, wait_until

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


def readme_block(title: str) -> list[str]:
    """The first ```sh block after the README heading ``title``, as command lines."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = text[text.index(f"### {title}\n"):]
    block = after[after.index("```sh\n") + 6:]
    return [ln for ln in block[:block.index("```")].splitlines() if ln.strip()]


def test_the_readme_backup_walkthrough_runs(procs):
    home = procs.tmpdir("user")
    cluster = procs.start_raw(["sh", "-c", f"cd {shlex.quote(str(home))} && exec "
                               f"{shlex.quote(sys.executable)} -m meshraft.cli cluster "
                               "--nodes 3"], name="cluster")
    wait_until(lambda: "cluster ready" in cluster.log() or not cluster.alive(), 60,
               what="the cluster to report ready")
    ports = dict(zip(["7101", "7102", "7103", "8101", "8102", "8103"],
                     map(str, free_ports(6)), strict=True))
    env: dict[str, str] = {}
    saw = []
    for line in readme_block("Backups and restore"):
        line = re.sub(r"\s+#.*$", "", line)
        for old, new in ports.items():
            line = line.replace(old, new)
        if re.fullmatch(r"[A-Z]+=\S+", line):
            name, value = line.split("=", 1)
            env[name] = value
            continue
        for name, value in env.items():
            line = line.replace(f"${name}", value)
        background = line.endswith("&")
        argv = shlex.split(line.rstrip("& "))
        assert argv[0] == "meshraft", line
        if background:
            procs.start_raw(["sh", "-c", f"cd {shlex.quote(str(home))} && exec "
                             f"{shlex.quote(sys.executable)} -m meshraft.cli "
                             + shlex.join(argv[1:])], name="restored")
            continue

        def run(argv=argv):
            return subprocess.run([sys.executable, "-m", "meshraft.cli", *argv[1:]],
                                  cwd=home, capture_output=True, text=True, timeout=60)

        r = run() if argv[1] != "get" else wait_until(
            lambda: (lambda res: res if res.returncode == 0 else None)(run()), 60, 0.5,
            what="the restored cluster answers")
        assert r.returncode == 0, (line, r.stderr)
        saw.append((argv[1:3], r.stdout))
    assert saw[1][1].startswith("saved snapshot at revision ")
    assert "keys:              1" in saw[2][1]
    assert saw[-1] == (["get", "greeting"], "hello\n")


def test_a_new_member_joins_a_restored_cluster_and_takes_its_id(procs):
    old = Cluster(procs, n=1)
    old.start_all()
    old.leader()
    with Client(old.endpoints()) as client:
        for i in range(30):
            client.put(f"k{i}", f"v{i}")
    backup = str(procs.tmpdir("backup") / "b.snap")
    assert old.cli("snapshot", "save", backup).returncode == 0
    addrs, _ = restore_cluster(procs, backup, old.transport, ["r1", "r2", "r3"])
    endpoints = ",".join(m.client for m in addrs)
    peer_port, client_port = free_ports(2)
    with Client(endpoints, timeout=30) as client:
        wait_until(lambda: client.get("k0"), 60, 0.5, what="the restored cluster serves")
        cid = client.status()["cluster_id"]
        r = procs.run("member", "add", "r4", f"127.0.0.1:{peer_port}", "--learner",
                      "--endpoints", endpoints)
        assert r.returncode == 0, r.stderr
    d4 = procs.tmpdir("r4")
    procs.start("serve", "--id", "r4", "--peers", peers_arg(addrs) + f",r4=127.0.0.1:{peer_port}",
                "--client", f"127.0.0.1:{client_port}", "--data-dir", str(d4), "--transport",
                old.transport, "--join", name="r4")
    with Client([f"127.0.0.1:{client_port}"], timeout=10) as joined:
        wait_until(lambda: len(joined.list("k", serializable=True)) == 30, 60, 0.5,
                   what="the new member catches up")
        assert joined.status()["cluster_id"] == cid
    assert (d4 / "CLUSTER_ID").read_text().strip() == cid

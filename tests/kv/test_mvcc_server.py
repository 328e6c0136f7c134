"""Reads at a revision and compaction through the protocol, the Python client and the CLI
(subprocesses), against a kv server on a fake node."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import kvfixtures
import msgpack
import pytest

from meshraft.kv import client as kc
from meshraft.kv import protocol as p

served_sync = kvfixtures.served_sync  # a fixture shared with the other kv tests


@pytest.fixture
def history(served_sync):
    """rev 1 a=1, 2 b=1, 3 a=2, 4 delete a, 5 a=3; a blocking client."""
    host, port, sm, node = served_sync
    with kc.Client(f"{host}:{port}", timeout=10) as c:
        c.put("a", "1")
        c.put("b", "1")
        c.put("a", "2")
        c.delete("a")
        c.put("a", "3")
        yield c, sm, node, f"{host}:{port}"


def raw(endpoint: str, body: dict) -> dict:
    """One request over a plain socket: the protocol as any client speaks it."""
    host, port = endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(p.encode_frame({"id": 1, **body}))
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            buf += chunk
        return msgpack.unpackb(buf[4:], raw=False)


def cli(endpoint: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshraft.cli", *args, "--endpoints", endpoint],
                          capture_output=True, timeout=60, env=dict(os.environ))


def test_client_reads_at_a_revision(history):
    c, _, node, _ = history
    assert c.get("a", revision=1).value == b"1"
    kv = c.get("a", revision=3)
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", 1, 3, 2)
    assert c.get("a", revision=4) is None  # deleted then
    assert c.get("b", revision=1) is None  # not yet created
    assert c.get("a").value == b"3"  # no revision: now
    assert [(kv.key, kv.value) for kv in c.list("", revision=2)] == [(b"a", b"1"), (b"b", b"1")]
    assert [kv.key for kv in c.list("", revision=4)] == [b"b"]
    # linearizable by default: a read at a revision goes through the read barrier
    before = node.barriers
    c.get("a", revision=2)
    assert node.barriers == before + 1
    c.get("a", revision=2, serializable=True)
    assert node.barriers == before + 1


def test_list_at_a_revision_pages_over_that_revision(served_sync):
    host, port, _, _ = served_sync
    with kc.Client(f"{host}:{port}") as c:
        for i in range(7):
            c.put(f"k{i}", "old")
        rev = c.put("k0", "new").revision - 1
        for i in range(7):
            c.put(f"k{i}", "newer")
        page = c.list("k", revision=rev, limit=100)
        assert [kv.value for kv in page] == [b"old"] * 7
        assert [kv.value for kv in c.list("k", revision=rev, limit=3)] == [b"old"] * 3
    # pages of 2 (as the client asks for the next page after a full one): every page
    # reads the same revision
    seen, after = [], None
    while True:
        body = {"op": "list", "prefix": b"k", "limit": 2, "revision": rev}
        if after is not None:
            body["after"] = after
        r = raw(f"{host}:{port}", body)
        seen += [(kv["key"], kv["value"]) for kv in r["result"]["kvs"]]
        if not r["result"]["more"]:
            break
        after = r["result"]["kvs"][-1]["key"]
    assert seen == [(b"k%d" % i, b"old") for i in range(7)]


def test_future_and_compacted_errors_in_the_client(history):
    c, sm, _, _ = history
    with pytest.raises(kc.FutureRevision) as fut:
        c.get("a", revision=99)
    assert fut.value.code == p.FUTURE_REVISION and fut.value.current_revision == 5
    assert isinstance(fut.value, kc.BadRequest)
    with pytest.raises(kc.FutureRevision):
        c.list("", revision=6)
    r = c.compact(3)
    assert (r.revision, r.compact_revision) == (5, 3)
    assert sm.compact_revision == 3 and sm.revision == 5
    with pytest.raises(kc.Compacted) as exc:
        c.get("a", revision=2)
    assert exc.value.code == p.COMPACTED and exc.value.compact_revision == 3
    assert "compacted at revision 3" in exc.value.message
    with pytest.raises(kc.Compacted):
        c.list("", revision=1)
    assert c.get("a", revision=3).value == b"2"  # at the compaction point: still readable
    with pytest.raises(kc.Compacted) as exc:
        c.compact(3)
    assert exc.value.compact_revision == 3
    with pytest.raises(kc.FutureRevision) as fut:
        c.compact(6)
    assert fut.value.current_revision == 5
    with pytest.raises(kc.BadRequest):
        c.get("a", revision=-1)
    with pytest.raises(kc.BadRequest):
        c.compact(-1)
    assert sm.compact_revision == 3


def test_bad_revisions_on_the_wire_are_bad_requests(history):
    _, sm, _, endpoint = history
    for bad in (-1, "2", 1.5, True, [1]):
        for op in ({"op": "get", "key": b"a"}, {"op": "list", "prefix": b""},
                   {"op": "compact"}):
            r = raw(endpoint, {**op, "revision": bad})
            assert r["ok"] is False and r["error"] == p.BAD_REQUEST, (op, bad, r)
    r = raw(endpoint, {"op": "get", "key": b"a", "revision": 99})
    assert r["error"] == p.FUTURE_REVISION and r["revision"] == 5
    r = raw(endpoint, {"op": "get", "key": b"a", "revision": 0})  # 0: now
    assert r["ok"] and r["result"]["kv"]["value"] == b"3" and r["result"]["revision"] == 5
    r = raw(endpoint, {"op": "compact", "revision": 4})
    assert r["ok"] and r["result"] == {"revision": 5, "compact_revision": 4}
    r = raw(endpoint, {"op": "list", "prefix": b"", "revision": 2})
    assert r["error"] == p.COMPACTED and r["compact_revision"] == 4 and r["revision"] == 5
    assert sm.compact_revision == 4 and sm.revision == 5


def test_cli_get_and_list_at_a_revision(history):
    _, _, _, endpoint = history
    r = cli(endpoint, "get", "a", "--rev", "1")
    assert r.returncode == 0 and r.stdout == b"1\n"
    r = cli(endpoint, "get", "a", "--rev", "3", "--json")
    assert json.loads(r.stdout) == {"key": "a", "found": True, "value": "2",
                                    "create_revision": 1, "mod_revision": 3, "version": 2}
    r = cli(endpoint, "get", "a", "--rev", "4")
    assert r.returncode == 1 and b"key not found" in r.stderr
    r = cli(endpoint, "list", "--rev", "2")
    assert r.returncode == 0 and r.stdout == b"a\t1\nb\t1\n"


def test_cli_compact_and_exit_codes(history):
    _, sm, _, endpoint = history
    r = cli(endpoint, "compact", "3")
    assert r.returncode == 0 and b"compacted at revision 3" in r.stdout
    r = cli(endpoint, "get", "a", "--rev", "2")
    err = r.stderr.decode()
    assert r.returncode == 1 and err.startswith("meshraft: ") and err.count("\n") == 1
    assert "compacted at revision 3" in err
    r = cli(endpoint, "list", "--rev", "1")
    assert r.returncode == 1 and "compacted at revision 3" in r.stderr.decode()
    r = cli(endpoint, "get", "a", "--rev", "6")
    assert r.returncode == 2 and "future revision" in r.stderr.decode()
    assert "current revision is 5" in r.stderr.decode()
    r = cli(endpoint, "list", "--rev", "6")
    assert r.returncode == 2
    r = cli(endpoint, "get", "a", "--rev", "-1")
    assert r.returncode == 2 and "--rev" in r.stderr.decode()
    r = cli(endpoint, "compact", "2")
    assert r.returncode == 1 and "compacted at revision 3" in r.stderr.decode()
    r = cli(endpoint, "compact", "9")
    assert r.returncode == 2 and "future revision" in r.stderr.decode()
    r = cli(endpoint, "compact", "x")
    assert r.returncode == 2
    r = cli(endpoint, "compact", "5", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"revision": 5, "compact_revision": 5}
    assert sm.compact_revision == 5 and sm.revision == 5

"""/metrics, /health, /livez, /readyz and `meshraft endpoint health` on a 3-member
cluster of real `meshraft serve --metrics 127.0.0.1:0` processes: etcd's metric names
with the meshraft_ prefix and meshraft's own, values that follow the cluster (one
leader, committed proposals, client requests by op and code), health that turns false
when the quorum is gone, and the endpoints' bad-input bounds (GET only, no body, bounded
headers and connections, no key or value ever shown)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import aiohttp
import pytest
from ops_helpers import MetricsCluster, parse_exposition, wait_until

from meshraft.kv.client import MeshraftError
from meshraft.mesh.local_peer import HANDSHAKE_FAILURE_KINDS
from meshraft.ops.http import DEFAULT_MAX_CONNECTIONS, MAX_LINE
from meshraft.ops.metrics import METRICS, PREFIX

SECRET_KEY = "s3cr3t-key-7f1c"
SECRET_VALUE = "s3cr3t-value-91aa"


async def fetch(address: str, path: str, method: str = "GET", **kw) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.request(
            method, f"http://{address}{path}", timeout=aiohttp.ClientTimeout(total=10),
            **kw) as r:
        return r.status, await r.text()


def get(address: str, path: str, method: str = "GET", **kw) -> tuple[int, str]:
    return asyncio.run(fetch(address, path, method, **kw))


def scrape(address: str) -> dict:
    status, text = get(address, "/metrics")
    assert status == 200
    return parse_exposition(text)


def value(samples: dict, name: str, **labels: str) -> float:
    for lb, v in samples.get(PREFIX + name, []):
        if all(lb.get(k) == want for k, want in labels.items()):
            return v
    raise KeyError(f"{PREFIX + name}{labels} not in the scrape")


@pytest.fixture
def mcluster(procs):
    c = MetricsCluster(procs)
    c.start_all()
    c.leader()
    return c


def test_metrics_follow_the_cluster_and_show_no_keys(mcluster) -> None:
    c = mcluster
    leader = c.leader()
    addrs = {i: c.metrics_address(i) for i in c.ids}
    with c.client_for() as cl:
        for n in range(30):
            cl.put(f"{SECRET_KEY}-{n}", SECRET_VALUE)
        assert cl.get(f"{SECRET_KEY}-0").value == SECRET_VALUE.encode()
        assert cl.get("absent-key") is None
    scrapes = {}
    for i, a in addrs.items():
        status, text = get(a, "/metrics")
        assert status == 200
        assert SECRET_KEY not in text and SECRET_VALUE not in text
        scrapes[i] = parse_exposition(text)
    # Every metric of the table is exported by every member (histograms as _count).
    for short, (kind, labels, _) in METRICS.items():
        name = PREFIX + short + ("_count" if kind == "histogram" else "")
        if labels and short not in ("server_id",):
            continue  # labelled families appear once they have a sample: checked below
        for i, s in scrapes.items():
            assert name in s, f"member {i} exports no {name}"
    assert all(value(s, "server_has_leader") == 1 for s in scrapes.values())
    assert sum(value(s, "server_is_leader") for s in scrapes.values()) == 1
    assert value(scrapes[leader], "server_is_leader") == 1
    assert all(value(s, "server_leader_changes_seen_total") >= 1 for s in scrapes.values())
    for i, s in scrapes.items():
        assert value(s, "server_id", server_id=i) == 1
        assert value(s, "server_proposals_committed_total") >= 30
        assert value(s, "server_proposals_failed_total") == 0
        assert value(s, "disk_wal_write_bytes_total") > 30 * len(SECRET_VALUE)
        assert value(s, "disk_wal_fsync_duration_seconds_count") >= 1
        assert value(s, "mvcc_db_total_size_in_bytes") > 0
        assert value(s, "mesh_links") == 2 and value(s, "mesh_routes") == 2
        sent = {lb["peer"] for lb, _ in s[PREFIX + "mesh_link_sent_bytes_total"]}
        assert sent == set(c.ids) - {i}
    # Applied follows committed: wait for each member to catch up, then compare.
    for i, a in addrs.items():
        wait_until(lambda a=a: (lambda s: value(s, "server_proposals_applied_total")
                                >= value(s, "server_proposals_committed_total"))(scrape(a)),
                   10, 0.1, what=f"member {i} applied what it committed")
    # The leader measures round trips to each follower from heartbeats.
    followers = set(c.ids) - {leader}
    wait_until(lambda: {lb["To"] for lb, v in scrape(addrs[leader]).get(
        PREFIX + "network_peer_round_trip_time_seconds_count", []) if v > 0} >= followers,
        10, 0.1, what="round trips to both followers")
    # Client requests by op and code, wherever the client sent them.
    puts = sum(value(scrapes[i], "client_requests_total", op="put", code="ok")
               for i in c.ids if (PREFIX + "client_requests_total") in scrapes[i]
               and any(lb.get("op") == "put" for lb, _ in
                       scrapes[i][PREFIX + "client_requests_total"]))
    assert puts == 30
    not_found = [v for s in scrapes.values()
                 for lb, v in s.get(PREFIX + "client_requests_total", [])
                 if lb == {"op": "get", "code": "not-found"}]
    assert sum(not_found) == 1
    lat = [v for s in scrapes.values()
           for lb, v in s.get(PREFIX + "client_request_duration_seconds_count", [])
           if lb == {"op": "put"}]
    assert sum(lat) == 30


def test_health_endpoints_and_endpoint_health_command(mcluster) -> None:
    c = mcluster
    addrs = {i: c.metrics_address(i) for i in c.ids}
    for a in addrs.values():
        for path in ("/health", "/livez", "/readyz"):
            status, text = get(a, path)
            assert (status, json.loads(text)) == (200, {"health": "true"}), (path, text)
    r = c.cli("endpoint", "health", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    answers = json.loads(r.stdout)
    assert {a["endpoint"] for a in answers} == set(c.endpoints().split(","))
    assert all(a["health"] and a["health_url"].endswith("/health") for a in answers)
    r = c.procs.run("endpoint", "health", "--metrics-endpoints", ",".join(addrs.values()))
    assert r.returncode == 0 and r.stdout.count("is healthy") == 3, r.stdout + r.stderr

    # Quorum gone: the survivor knows no leader (or cannot confirm it) -> unhealthy.
    survivor, *gone = c.ids
    for i in gone:
        c.kill(i)
    wait_until(lambda: get(addrs[survivor], "/health")[0] == 503, 30, 0.2,
               what="/health false without a quorum")
    status, text = get(addrs[survivor], "/health")
    body = json.loads(text)
    assert body["health"] == "false" and body["reason"]
    assert get(addrs[survivor], "/livez")[0] == 200  # alive, just without a cluster
    wait_until(lambda: get(addrs[survivor], "/readyz")[0] == 503, 30, 0.2,
               what="/readyz false without a leader")
    r = c.cli("endpoint", "health", "--timeout", "3")
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"{c.client[survivor]} is unhealthy" in r.stderr
    for i in gone:
        assert f"{c.client[i]} is unhealthy" in r.stderr
    r = c.procs.run("endpoint", "health", "--metrics-endpoints", addrs[survivor], "--json",
                    "--timeout", "3")
    assert r.returncode == 3
    [answer] = json.loads(r.stdout)
    assert answer["health"] is False and answer["error"]
    # A write without a quorum fails; the survivor counts the failed proposal and the
    # request by its error code.
    before = value(scrape(addrs[survivor]), "server_proposals_failed_total")
    with c.client_for([survivor], timeout=2) as cl, pytest.raises(MeshraftError):
        cl.put("no-quorum", "x")
    after = scrape(addrs[survivor])
    assert value(after, "server_proposals_failed_total") > before
    codes = {lb["code"] for lb, v in after[PREFIX + "client_requests_total"]
             if lb["op"] == "put" and v > 0}
    assert codes - {"ok"}, codes


def test_mesh_handshake_failures_are_counted_by_reason(mcluster) -> None:
    c = mcluster
    i = c.ids[0]
    a = c.metrics_address(i)
    host, port = c.peer[i].rsplit(":", 1)

    def failures() -> dict[str, float]:
        fam = scrape(a).get(PREFIX + "mesh_handshake_failures_total", [])
        return {lb["reason"]: v for lb, v in fam}

    before = failures()  # duplicate links while the mesh formed are counted too
    # Not the mesh protocol: the member closes the connection in the handshake.
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 64)
        s.settimeout(10)
        with contextlib.suppress(OSError):
            while s.recv(4096):
                pass

    def counted():
        now = failures()
        new = {k: v - before.get(k, 0) for k, v in now.items() if v > before.get(k, 0)}
        # (a link lost and redialled under load may add a "duplicate" meanwhile)
        return new if new.keys() & {"protocol", "closed", "version"} else None

    reasons = wait_until(counted, 10, 0.1, what="a handshake failure counted")
    assert set(reasons) <= set(HANDSHAKE_FAILURE_KINDS), reasons


def test_endpoint_health_without_metrics_reads_through_the_client_port(procs) -> None:
    from ops_helpers import Cluster

    c = Cluster(procs)
    c.start_all()
    c.leader()
    r = c.cli("endpoint", "health", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    answers = json.loads(r.stdout)
    assert len(answers) == 3
    assert all(a["health"] and a["health_url"] is None for a in answers)
    r = procs.run("endpoint", "health", "--endpoints", "not-an-endpoint")
    assert r.returncode == 2


def test_bad_input_is_refused(mcluster) -> None:
    c = mcluster
    a = c.metrics_address(c.ids[0])
    for path in ("/metrics", "/health", "/livez", "/readyz"):
        for method in ("POST", "PUT", "DELETE", "HEAD", "PATCH"):
            status, _ = get(a, path, method)
            assert status == 405, (method, path)
    status, _ = get(a, "/health", "GET", data=b"x" * 10)
    assert status in (400, 413)
    status, _ = get(a, "/nope")
    assert status == 404
    status, _ = get(a, "/health", headers={"X-Big": "y" * (2 * MAX_LINE)})
    assert status in (400, 431)
    status, _ = get(a, "/" + "a" * (2 * MAX_LINE))
    assert status in (400, 414)
    # Connections beyond the bound are told so and closed; the ones within still work.
    host, port = a.rsplit(":", 1)
    held = []
    try:
        for _ in range(DEFAULT_MAX_CONNECTIONS):
            held.append(socket.create_connection((host, int(port)), timeout=5))

        def refused() -> bool:
            with socket.create_connection((host, int(port)), timeout=5) as extra:
                extra.settimeout(5)
                data = extra.recv(4096)
                return data.startswith(b"HTTP/1.1 503") and b"too many connections" in data

        wait_until(refused, 10, 0.1, what="a connection over the bound refused")
        held[0].sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        held[0].settimeout(10)
        reply = b""
        while chunk := held[0].recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
    finally:
        for s in held:
            s.close()
    wait_until(lambda: get(a, "/livez")[0] == 200, 10, 0.1, what="served again")

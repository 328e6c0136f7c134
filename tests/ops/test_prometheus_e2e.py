"""A real Prometheus server (Debian's package) on loopback scrapes a 3-member cluster
and loads contrib/prometheus/alerts.yml; meshraft_server_has_leader comes back through
Prometheus's HTTP API as 1 for every member, and the rules are loaded and healthy."""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

import aiohttp
from ops_helpers import MetricsCluster, free_ports, need_tool, wait_until

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"


async def _api(address: str, path: str, **params: str) -> dict:
    async with aiohttp.ClientSession() as s, s.get(
            f"http://{address}{path}", params=params,
            timeout=aiohttp.ClientTimeout(total=5)) as r:
        return await r.json()


def api(address: str, path: str, **params: str) -> dict | None:
    try:
        return asyncio.run(_api(address, path, **params))
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None  # not up yet


def test_prometheus_scrapes_the_cluster(procs) -> None:
    prometheus = need_tool("prometheus")
    c = MetricsCluster(procs)
    c.start_all()
    c.leader()
    targets = [c.metrics_address(i) for i in c.ids]
    work = procs.tmpdir("prometheus")
    shutil.copy(CONTRIB / "alerts.yml", work / "alerts.yml")
    (work / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files:\n  - alerts.yml\n"
        "scrape_configs:\n  - job_name: meshraft\n    static_configs:\n"
        f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
    [port] = free_ports(1)
    listen = f"127.0.0.1:{port}"
    proc = procs.start_raw([prometheus, f"--config.file={work / 'prometheus.yml'}",
                            f"--storage.tsdb.path={work / 'data'}",
                            f"--web.listen-address={listen}"], name="prometheus")
    try:
        def has_leader_everywhere():
            assert proc.alive(), proc.log()[-3000:]
            r = api(listen, "/api/v1/query", query="meshraft_server_has_leader")
            if not r or r.get("status") != "success":
                return None
            result = r["data"]["result"]
            got = {s["metric"]["instance"]: s["value"][1] for s in result}
            return got if set(got) == set(targets) else None

        got = wait_until(has_leader_everywhere, 60, 0.5,
                         what="meshraft_server_has_leader of every member in Prometheus")
        assert set(got.values()) == {"1"}
        r = api(listen, "/api/v1/query", query="sum(meshraft_server_is_leader)")
        assert r is not None and r["data"]["result"][0]["value"][1] == "1"

        def rules_loaded():
            r = api(listen, "/api/v1/rules")
            if not r or r.get("status") != "success":
                return None
            rules = [rule for g in r["data"]["groups"] for rule in g["rules"]]
            return rules or None

        rules = wait_until(rules_loaded, 30, 0.5, what="the alert rules in Prometheus")
        names = {rule["name"] for rule in rules}
        assert {"meshraftNoLeader", "meshraftHighFsyncDurations"} <= names
        assert all(rule.get("health") in ("ok", "unknown") for rule in rules), rules
        up = api(listen, "/api/v1/targets")
        assert up is not None
        assert all(t["health"] == "up" for t in up["data"]["activeTargets"]), up
    finally:
        proc.signal(signal.SIGTERM)
        if proc.wait(20) is None:
            proc.kill()

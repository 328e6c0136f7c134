"""`meshraft bench --ops watch` as a user runs it: a tiny run against the local
cluster it starts, checking the report's shape and that every event reached every
watcher exactly once and in order — never how fast anything is. Also the latency
histogram the worker processes send back, and bad input."""

from __future__ import annotations

import json
import random

import pytest
from conftest import free_port, free_ports, wait_until

from meshraft.bench_watch import WatchSpec
from meshraft.bench_watch_worker import hist_bucket, hist_percentile

TINY = ["--watchers", "6", "--watch-procs", "2", "--rate", "40", "--duration", "1.5",
        "--warmup", "0.3", "--clients", "4", "--no-progress"]


def test_every_event_reaches_every_watcher_and_the_report_has_its_shape(procs) -> None:
    r = procs.run("bench", "--ops", "watch", "--json", *TINY, timeout=180)
    assert r.returncode == 0, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["system"] == "meshraft-mesh" and doc["nodes"] == 3
    assert doc["watchers"] == 6 and doc["procs"] == 2 and doc["rate"] == 40
    # every acknowledged put (warmup included) reached all 6 watchers, once, in order
    assert doc["total_puts"] > 0 and doc["put_errors"] == 0
    assert doc["expected_deliveries"] == doc["total_puts"] * 6 == doc["delivered"]
    assert doc["missing"] == 0 and doc["out_of_order"] == 0
    assert doc["complete_watchers"] == 6 and doc["watch_errors"] == {}
    assert doc["drain_s"] is not None and doc["extra"]["still_behind_after_drain"] == 0
    # the measured window: its puts, their deliveries, and the latency percentiles
    assert 0 < doc["puts"] <= doc["total_puts"]
    assert doc["deliveries"] == sum(doc["timeline"]) > 0
    assert 0 <= doc["p50_ms"] <= doc["p90_ms"] <= doc["p99_ms"] <= doc["max_ms"]
    assert 0 < doc["p50_from_send_ms"] <= doc["p99_from_send_ms"]
    assert doc["required_deliveries_per_s"] == pytest.approx(doc["put_rate"] * 6)
    # what the processes cost and what an idle watcher costs the members
    cpu = doc["cpu"]
    assert len(cpu["members_s"]) == 3 and len(cpu["workers_s"]) == 2
    assert all(c is not None and c >= 0 for c in cpu["members_s"] + cpu["workers_s"])
    assert len(doc["rss_before_kb"]) == len(doc["rss_after_kb"]) == 3
    assert all(kb > 0 for kb in doc["rss_before_kb"] + doc["rss_after_kb"])
    assert doc["idle_bytes_per_watcher"] is not None


def test_table_output_names_every_line(procs) -> None:
    r = procs.run("bench", "--ops", "watch", "--transport", "udp", *TINY, timeout=180)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("meshraft-udp: 6 watchers in 2 processes, 3 members")
    heads = [line.split()[0] for line in lines[1:]]
    assert heads[:5] == ["puts", "deliveries", "latency", "every", "idle"]
    assert "missing 0, out of order 0, 6/6 watchers complete" in r.stdout


def test_against_a_running_cluster(procs) -> None:
    peer_ports, client_ports = free_ports(3), free_ports(3)
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(peer_ports))
    for i in range(3):
        procs.start("serve", "--id", str(i + 1), "--peers", peers, "--transport", "udp",
                    "--client", f"127.0.0.1:{client_ports[i]}",
                    "--data-dir", str(procs.tmpdir(f"n{i + 1}")), name=f"node{i + 1}")
    endpoints = ",".join(f"127.0.0.1:{p}" for p in client_ports)
    wait_until(lambda: procs.run("put", "warm", "up", "--endpoints", endpoints).returncode == 0,
               timeout=30, what="the cluster to accept a write")
    r = procs.run("bench", "--ops", "watch", "--endpoints", endpoints, "--json", *TINY,
                  timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["system"] == "meshraft" and doc["nodes"] == 3
    assert doc["delivered"] == doc["expected_deliveries"] == doc["total_puts"] * 6 > 0
    assert doc["missing"] == 0 and doc["complete_watchers"] == 6
    # not its processes: no member memory or CPU, the workers' CPU still
    assert doc["idle_bytes_per_watcher"] is None and doc["rss_before_kb"] == []
    assert doc["cpu"]["members_s"] == [] and len(doc["cpu"]["workers_s"]) == 2


def test_bad_input_and_an_unreachable_cluster(procs) -> None:
    for args, word in ((["--watchers", "0"], "--watchers"),
                       (["--watch-procs", "0"], "--watch-procs"),
                       (["--rate", "0"], "--rate"),
                       (["--endpoints", "not-an-endpoint"], "HOST:PORT")):
        r = procs.run("bench", "--ops", "watch", *args)
        assert r.returncode == 2 and word in r.stderr, (args, r.stderr)
    pw = procs.tmpdir("pw") / "password"
    pw.write_text("x\n")
    r = procs.run("bench", "--ops", "watch", "--password-file", str(pw))
    assert r.returncode == 2 and "--password-file" in r.stderr
    r = procs.run("bench", "--ops", "watch", "--endpoints", f"127.0.0.1:{free_port()}",
                  "--timeout", "1", "--no-progress", timeout=60)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert r.stderr.startswith("meshraft bench:") and r.stderr.count("\n") == 1


def test_latency_histogram_percentiles_within_one_percent() -> None:
    rng = random.Random(7)
    samples = sorted(rng.randrange(1_000, 500_000_000) for _ in range(20_000))  # ns
    hist: dict[int, int] = {}
    for ns in samples:
        b = hist_bucket(ns)
        hist[b] = hist.get(b, 0) + 1
    for q in (50, 90, 99, 100):
        exact_ms = samples[max(1, -(-q * len(samples) // 100)) - 1] / 1e6
        assert exact_ms <= hist_percentile(hist, q) <= exact_ms * 1.0101, q
    assert hist_percentile({}, 50) == 0.0
    assert hist_bucket(0) == 0 and hist_percentile({0: 3}, 99) == pytest.approx(0.001)


def test_spec_bounds() -> None:
    from meshraft.bench import BenchError

    WatchSpec().validate()
    for bad in ({"watchers": 0}, {"rate": -1}, {"procs": 65}, {"duration": 0},
                {"writers": 0}, {"keys": 0}, {"max_puts": 0}):
        with pytest.raises(BenchError):
            WatchSpec(**bad).validate()  # type: ignore[arg-type]

"""`meshraft bench` as a user runs it: against a local cluster it starts itself, and
against a running cluster given by --endpoints. Checks the report is sane, never how
fast anything is."""

from __future__ import annotations

import json

from conftest import free_port, free_ports, wait_until

SMALL = ["--clients", "4", "--duration", "2", "--warmup", "0.3", "--keyspace", "50",
         "--no-progress"]


def check_sane(doc: dict, clients: int = 4) -> None:
    assert doc["ops"] > 0, doc
    assert doc["ops_per_s"] > 0
    assert 0 < doc["p50_ms"] <= doc["p90_ms"] <= doc["p99_ms"] <= doc["max_ms"]
    assert doc["clients"] == clients and doc["key_size"] == 16 and doc["value_size"] == 100
    assert doc["ops"] == sum(doc["timeline"])


def test_bench_starts_its_own_cluster_and_reports_json(procs) -> None:
    r = procs.run("bench", "--transport", "udp", "--ops", "put", "--json", *SMALL, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    check_sane(doc)
    assert doc["system"] == "meshraft-udp" and doc["nodes"] == 3 and doc["op"] == "put"
    # the servers it started did the work: their CPU time per operation is reported
    assert doc["extra"]["server_cpu_us_per_op"] > 0
    assert len(doc["extra"]["server_cpu_s"]) == 3


def test_bench_against_running_cluster_with_table_output(procs) -> None:
    peer_ports = free_ports(3)
    client_ports = free_ports(3)
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(peer_ports))
    for i in range(3):
        procs.start("serve", "--id", str(i + 1), "--peers", peers, "--transport", "udp",
                    "--client", f"127.0.0.1:{client_ports[i]}",
                    "--data-dir", str(procs.tmpdir(f"n{i + 1}")), name=f"node{i + 1}")
    endpoints = ",".join(f"127.0.0.1:{p}" for p in client_ports)
    wait_until(lambda: procs.run("put", "warm", "up", "--endpoints", endpoints).returncode == 0,
               timeout=30, what="the cluster to accept a write")

    r = procs.run("bench", "--endpoints", endpoints, "--ops", "mixed", "--json", *SMALL,
                  timeout=60)
    assert r.returncode == 0, r.stderr
    check_sane(json.loads(r.stdout))

    r = procs.run("bench", "--endpoints", endpoints, "--ops", "get", *SMALL, timeout=60)
    assert r.returncode == 0, r.stderr
    header, rule, row = r.stdout.splitlines()[:3]
    assert set(rule.replace(" ", "")) == {"-"}
    assert header.split()[:4] == ["system", "op", "clients", "ops/s"]
    assert row.split()[:3] == ["meshraft", "get", "4"]


def test_bench_bad_input_and_unreachable_cluster(procs) -> None:
    r = procs.run("bench", "--ops", "scan")
    assert r.returncode == 2 and "scan" in r.stderr
    r = procs.run("bench", "--clients", "0", "--endpoints", "127.0.0.1:1")
    assert r.returncode == 2 and "--clients" in r.stderr
    r = procs.run("bench", "--endpoints", "not-an-endpoint")
    assert r.returncode == 2 and "HOST:PORT" in r.stderr
    dead = free_port()
    r = procs.run("bench", "--endpoints", f"127.0.0.1:{dead}", "--clients", "2",
                  "--duration", "1", "--warmup", "0", "--ops", "get", "--timeout", "1",
                  "--no-progress", timeout=60)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert r.stderr.startswith("meshraft bench:") and r.stderr.count("\n") == 1


def test_bench_measures_a_local_cluster_with_a_mesh_password(procs) -> None:
    pwfile = procs.tmpdir("pw") / "password"
    pwfile.write_text("bench password\n")
    data = procs.tmpdir("data")
    r = procs.run("bench", "--ops", "put", "--json", "--password-file", str(pwfile),
                  "--data-dir", str(data), *SMALL, timeout=120)
    assert r.returncode == 0, r.stderr
    check_sane(json.loads(r.stdout))
    # the members it started really ran an encrypted mesh
    logs = [(data / f"node{i}.log").read_text() for i in (1, 2, 3)]
    assert all("password set" in log and " encrypted" in log for log in logs), logs[0][-2000:]

    # a password is for the local mesh cluster only: refused, with the reason
    for extra in (["--transport", "udp"], ["--endpoints", "127.0.0.1:1"]):
        r = procs.run("bench", "--password-file", str(pwfile), *extra, *SMALL)
        assert r.returncode == 2 and "--password-file" in r.stderr, r.stderr

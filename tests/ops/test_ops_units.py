"""The pieces of meshraft.ops that need no cluster: the request counters and their
exposition, the handshake failure reasons, the JSON log lines."""

from __future__ import annotations

import io
import json
import logging

from ops_helpers import parse_exposition
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from meshraft.mesh.local_peer import HANDSHAKE_FAILURE_KINDS, handshake_failure_kind
from meshraft.ops.logformat import JsonFormatter, MemberFilter, configure, set_term_source
from meshraft.ops.metrics import CLIENT_LATENCY_BUCKETS, RequestStats


class _Families(Collector):
    def __init__(self, stats: RequestStats) -> None:
        self.stats = stats

    def collect(self):
        return self.stats.families()


def test_request_stats_exposition_is_cumulative_and_by_op_and_code() -> None:
    stats = RequestStats()
    stats.observe("put", "ok", 0.0004)
    stats.observe("put", "ok", 0.003)
    stats.observe("put", "timeout", 5.0)  # beyond the last bucket: only +Inf
    stats.observe("get", "not-found", 0.0005)  # on a bucket's bound: counted in it (le)
    reg = CollectorRegistry()
    reg.register(_Families(stats))
    samples = parse_exposition(generate_latest(reg).decode())
    totals = {(lb["op"], lb["code"]): v for lb, v in samples["meshraft_client_requests_total"]}
    assert totals == {("put", "ok"): 2, ("put", "timeout"): 1, ("get", "not-found"): 1}
    buckets = {(lb["op"], lb["le"]): v
               for lb, v in samples["meshraft_client_request_duration_seconds_bucket"]}
    assert buckets[("put", "0.0005")] == 1
    assert buckets[("put", "0.004")] == 2
    assert buckets[("put", repr(CLIENT_LATENCY_BUCKETS[-1]))] == 2
    assert buckets[("put", "+Inf")] == 3
    assert buckets[("get", "0.0005")] == 1
    counts = {lb["op"]: v for lb, v in samples["meshraft_client_request_duration_seconds_count"]}
    assert counts == {"put": 3, "get": 1}
    sums = {lb["op"]: v for lb, v in samples["meshraft_client_request_duration_seconds_sum"]}
    assert abs(sums["put"] - 5.0034) < 1e-9


def test_handshake_failure_reasons_are_a_fixed_set() -> None:
    cases = {
        "handshake timeout after 2.01s": "timeout",
        "protocol version mismatch: we speak 3..3, peer speaks 1..2; no common version":
            "version",
        "mesh password mismatch: this mesh needs a password and the peer has none": "password",
        "authentication failed: the peer's identity did not decrypt (wrong mesh password?)":
            "password",
        "connected to ourselves": "self",
        "duplicate link to 2: keeping the one 1 dialled": "duplicate",
        "peer name collision: another peer (uid 00ff) also calls itself 1": "refused",
        "more than 64 connections in handshake": "overload",
        "connection closed by peer during handshake": "closed",
        None: "closed",
        "bad magic b'GET '": "protocol",
    }
    for reason, kind in cases.items():
        assert handshake_failure_kind(reason) == kind, reason
        assert kind in HANDSHAKE_FAILURE_KINDS


def test_json_lines_carry_member_term_and_fields() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(MemberFilter("7", term=lambda: 42))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("meshraft.test.ops.json")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("put %s took %dms", "k", 3, extra={"op": "put", "took_ms": 3,
                                                       "odd": object()})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["member"] == "7" and first["term"] == 42
    assert first["level"] == "info" and first["logger"] == "meshraft.test.ops.json"
    assert first["message"] == "put k took 3ms"
    assert first["op"] == "put" and first["took_ms"] == 3
    assert first["odd"].startswith("<object object")  # not JSON: written as its repr
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_configure_stamps_every_logger_in_both_formats() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        for fmt in ("text", "json"):
            out = io.StringIO()
            configure("info", "m3", fmt, stream=out)
            set_term_source(lambda: 5)
            for name in ("meshraft.mesh", "meshraft.raft.node", "meshraft.kv.server",
                         "aiohttp.access"):
                logging.getLogger(name).warning("hello from %s", name)
            set_term_source(None)
            lines = out.getvalue().splitlines()
            assert len(lines) == 4
            for line in lines:
                if fmt == "json":
                    rec = json.loads(line)
                    assert rec["member"] == "m3" and rec["term"] == 5
                else:
                    assert " WARNING [m3] " in line
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])

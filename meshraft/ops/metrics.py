"""A member's Prometheus metrics: etcd's names with a ``meshraft_`` prefix, and ours.

This module owns the metric names, their help texts and labels, and how each is
computed. Most values are read from the layers at scrape time by one custom
collector (``MemberCollector``: the node's status values and counters, the storage's
WAL byte counter, the mesh router's links, routes and counters, the MeshPacketConn's
drops), so the request path pays nothing for them. What needs every sample — fsync
durations, peer round trips, client request latencies, snapshot durations — comes
from the layers' observer hooks (``Storage.fsync_observers``,
``RaftNode.rtt_observers``, ``RaftNode.snapshot_observers``,
``KVServer.request_observers``). Client requests are the hot path: they are counted
in plain dicts (``RequestStats``, one dict update and one ``bisect`` per request) and
turned into Prometheus families only when scraped.

Labels are bounded: peer ids, operation names, result codes, fixed reason sets —
never keys or values. Every metric lives in the member's own ``CollectorRegistry``
(never prometheus-client's global one), so several members in one process do not
collide. It must never change what it observes, and a failing read of one layer
must not fail a scrape (that family is left out and the error logged).

Watchers and leases (issues 18, 19) get their gauges in ``MemberCollector.collect``
when those layers expose counts: see ``_watch_and_lease_families``.
See docs/architecture.md#operations.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["CLIENT_LATENCY_BUCKETS", "FSYNC_BUCKETS", "METRICS", "RTT_BUCKETS",
           "MemberMetrics", "MetricsSources", "RequestStats"]

log = logging.getLogger("meshraft.ops.metrics")

PREFIX = "meshraft_"
# etcd's buckets: wal fsync ExponentialBuckets(0.001, 2, 14), peer round trips
# ExponentialBuckets(0.0001, 2, 16); client latencies like etcd's grpc handling time.
FSYNC_BUCKETS = tuple(0.001 * 2 ** i for i in range(14))
RTT_BUCKETS = tuple(0.0001 * 2 ** i for i in range(16))
CLIENT_LATENCY_BUCKETS = tuple(0.0005 * 2 ** i for i in range(14))
SNAPSHOT_BUCKETS = tuple(0.01 * 2 ** i for i in range(14))

# name (without the prefix) -> (type, labels, help): the table the README shows, and
# what tests check every scrape against.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # -- etcd's names ------------------------------------------------------------------
    "server_has_leader": ("gauge", (), "1 if this member knows a leader, else 0."),
    "server_is_leader": ("gauge", (), "1 if this member is the leader, else 0."),
    "server_leader_changes_seen_total": (
        "counter", (), "Times this member saw a (new) leader."),
    "server_proposals_committed_total": (
        "gauge", (), "The commit index this member knows (etcd: a gauge named _total)."),
    "server_proposals_applied_total": (
        "gauge", (), "The index this member applied (etcd: a gauge named _total)."),
    "server_proposals_pending": (
        "gauge", (), "Proposals made on this member and not answered yet."),
    "server_proposals_failed_total": (
        "counter", (), "Proposals made here that failed: refused, lost to a leader change, "
                       "or not applied before the caller's timeout (outcome unknown)."),
    "server_id": ("gauge", ("server_id",), "Always 1; the label is this member's id."),
    "disk_wal_fsync_duration_seconds": (
        "histogram", (), "Duration of the WAL fsyncs (one per batch of appended entries)."),
    "disk_wal_write_bytes_total": ("counter", (), "Bytes written to the WAL."),
    "network_peer_round_trip_time_seconds": (
        "histogram", ("To",), "Round trips to each peer, from a heartbeat to its answer "
                              "(measured by the leader)."),
    "network_peer_sent_failures_total": (
        "counter", ("To",), "Raft messages to each peer that could not be sent (no route, "
                            "a full link, a socket error)."),
    "mvcc_db_total_size_in_bytes": (
        "gauge", (), "Bytes of this member's data on disk (WAL segments and snapshots); "
                     "the store itself is in memory."),
    # -- meshraft's own ----------------------------------------------------------------
    "mvcc_keys": ("gauge", (), "Keys in the store."),
    "mvcc_revision": ("gauge", (), "The store's current revision."),
    "server_term": ("gauge", (), "This member's Raft term."),
    "client_requests_total": (
        "counter", ("op", "code"), "Client requests by operation and result code "
                                   "(ok, or the error code)."),
    "client_request_duration_seconds": (
        "histogram", ("op",), "Time to answer a client request, by operation."),
    "client_requests_inflight": ("gauge", (), "Client write requests in flight."),
    "client_connections_total": ("counter", (), "Client connections accepted."),
    "snapshot_saves_total": ("counter", (), "Snapshots this member wrote of its state."),
    "snapshot_installs_total": ("counter", (), "Snapshots this member installed from the "
                                               "leader."),
    "snapshot_sends_total": ("counter", (), "Snapshot transfers this member started to a "
                                            "follower (as leader)."),
    "snapshot_duration_seconds": (
        "histogram", ("kind",), "Time to save (kind=save) or install (kind=install) a "
                                "snapshot."),
    "mesh_links": ("gauge", (), "Established mesh links to neighbours."),
    "mesh_peers": ("gauge", (), "Peers this member's mesh topology knows (itself included)."),
    "mesh_routes": ("gauge", (), "Peers this member has a unicast route to."),
    "mesh_relayed_total": ("counter", (), "Datagrams this member relayed for others."),
    "mesh_link_received_bytes_total": (
        "counter", ("peer",), "Bytes received on the link to each neighbour (restarts from "
                              "0 with a new link)."),
    "mesh_link_sent_bytes_total": (
        "counter", ("peer",), "Bytes sent on the link to each neighbour (restarts from 0 "
                              "with a new link)."),
    "mesh_links_established_total": ("counter", (), "Mesh links that completed the handshake."),
    "mesh_links_lost_total": ("counter", (), "Established mesh links that ended."),
    "mesh_link_timeouts_total": ("counter", (), "Mesh links closed because the neighbour "
                                                "went silent."),
    "mesh_handshake_failures_total": (
        "counter", ("reason",), "Connections that ended before their handshake completed, "
                                "by reason."),
    "meshconn_dropped_total": (
        "counter", ("reason",), "Raft datagrams the mesh transport dropped, by reason."),
}


def _name(short: str) -> str:
    return PREFIX + short


def _family(short: str, *, labels: tuple[str, ...] | None = None) -> Metric:
    kind, names, help_text = METRICS[short]
    cls = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}[kind]
    # prometheus-client adds _total to a counter family's samples itself.
    name = _name(short.removesuffix("_total") if kind == "counter" else short)
    return cls(name, help_text, labels=list(labels if labels is not None else names))


class RequestStats:
    """Client requests counted in plain lists (the request path's whole cost: one dict
    lookup, one ``bisect``, two additions); Prometheus families are built when scraped.
    Runs on the event loop only (the observer and the scrape), so it needs no lock."""

    def __init__(self, buckets: tuple[float, ...] = CLIENT_LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        # (op, code) -> per-bucket counts (the slot after the last bucket is +Inf),
        # then the sum of seconds in the very last slot.
        self.series: dict[tuple[str, str], list[float]] = {}

    def observe(self, op: str, code: str, seconds: float) -> None:
        h = self.series.get((op, code))
        if h is None:
            h = self.series[(op, code)] = [0] * (len(self.buckets) + 1) + [0.0]
        h[bisect_left(self.buckets, seconds)] += 1
        h[-1] += seconds

    def families(self) -> Iterator[Metric]:
        total = _family("client_requests_total")
        by_op: dict[str, list[float]] = {}
        for (op, code), h in sorted(self.series.items()):
            total.add_metric([op, code], sum(h[:-1]))
            acc = by_op.setdefault(op, [0] * len(h))
            for k, v in enumerate(h):
                acc[k] += v
        yield total
        _, _, help_text = METRICS["client_request_duration_seconds"]
        hist = HistogramMetricFamily(_name("client_request_duration_seconds"), help_text,
                                     labels=["op"])
        for op, h in sorted(by_op.items()):
            cumulative, running = [], 0.0
            for bound, n in zip((*self.buckets, float("inf")), h[:-1], strict=True):
                running += n
                cumulative.append((_le(bound), running))
            hist.add_metric([op], cumulative, h[-1])
        yield hist


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


@dataclass
class MetricsSources:
    """What the metrics read. Every part but ``node`` may be None (a member over UDP has
    no router or mesh endpoint; a test may give a node alone)."""

    node: Any  # meshraft.raft.RaftNode
    server: Any = None  # meshraft.kv.server.KVServer
    sm: Any = None  # meshraft.kv.state_machine.KVStateMachine
    router: Any = None  # meshraft.mesh.Router
    endpoint: Any = None  # meshraft.meshconn.MeshPacketConn (Raft's transport)
    data_dir: Path | None = None


class MemberCollector(Collector):
    """Reads the layers at scrape time (see the module docstring)."""

    def __init__(self, src: MetricsSources, requests: RequestStats) -> None:
        self.src = src
        self.requests = requests

    def collect(self) -> Iterator[Metric]:
        for part in (self._raft_families, self._storage_families, self._kv_families,
                     self.requests.families, self._mesh_families,
                     self._watch_and_lease_families):
            try:
                yield from part()
            except Exception:  # one layer's hiccup must not fail the whole scrape
                log.exception("metrics: %s failed", part.__name__)

    # -- raft --------------------------------------------------------------------------
    def _raft_families(self) -> Iterator[Metric]:
        node = self.src.node
        stats = node.stats
        leader = node.leader_id
        values: dict[str, float] = {
            "server_has_leader": 1 if leader is not None else 0,
            "server_is_leader": 1 if leader is not None and leader == node.node_id else 0,
            "server_leader_changes_seen_total": stats.get("leader_changes", 0),
            "server_proposals_committed_total": node.commit_index,
            "server_proposals_applied_total": node.applied_index,
            "server_proposals_pending": node.pending_proposals,
            "server_proposals_failed_total": stats.get("proposals_failed", 0),
            "server_term": node.term,
            "snapshot_saves_total": stats.get("snapshots", 0),
            "snapshot_installs_total": stats.get("snapshots_installed", 0),
            "snapshot_sends_total": stats.get("snapshots_sent", 0),
        }
        for short, value in values.items():
            fam = _family(short)
            fam.add_metric([], value)
            yield fam
        ident = _family("server_id")
        ident.add_metric([str(node.node_id)], 1)
        yield ident
        failures: dict[str, int] = dict(node.peer_send_failures)
        endpoint = self.src.endpoint
        if endpoint is not None:
            for peer, n in endpoint.send_failures.items():
                failures[peer] = failures.get(peer, 0) + n
        fam = _family("network_peer_sent_failures_total")
        for peer, n in sorted(failures.items()):
            fam.add_metric([peer], n)
        yield fam

    def _storage_families(self) -> Iterator[Metric]:
        storage = self.src.node.storage
        fam = _family("disk_wal_write_bytes_total")
        fam.add_metric([], storage.wal_bytes_written)
        yield fam
        if self.src.data_dir is not None:
            fam = _family("mvcc_db_total_size_in_bytes")
            fam.add_metric([], _dir_bytes(self.src.data_dir))
            yield fam

    # -- kv ----------------------------------------------------------------------------
    def _kv_families(self) -> Iterator[Metric]:
        sm, server = self.src.sm, self.src.server
        if sm is not None:
            for short, value in (("mvcc_keys", len(sm)), ("mvcc_revision", sm.revision)):
                fam = _family(short)
                fam.add_metric([], value)
                yield fam
        if server is not None:
            fam = _family("client_requests_inflight")
            fam.add_metric([], server.inflight)
            yield fam
            fam = _family("client_connections_total")
            fam.add_metric([], server.stats.get("connections", 0))
            yield fam

    # -- mesh --------------------------------------------------------------------------
    def _mesh_families(self) -> Iterator[Metric]:
        router, endpoint = self.src.router, self.src.endpoint
        if router is not None:
            stats = router.stats
            links = dict(router.links)
            for short, value in (
                    ("mesh_links", len(links)),
                    ("mesh_peers", len(router.topology.peers)),
                    ("mesh_routes", len(router.routes.unicast())),
                    ("mesh_relayed_total", stats.get("relayed", 0)),
                    ("mesh_links_established_total", stats.get("links_established", 0)),
                    ("mesh_links_lost_total", stats.get("links_lost", 0)),
                    ("mesh_link_timeouts_total", stats.get("link_timeouts", 0))):
                fam = _family(short)
                fam.add_metric([], value)
                yield fam
            rx, tx = _family("mesh_link_received_bytes_total"), _family(
                "mesh_link_sent_bytes_total")
            for name, link in sorted(links.items()):
                rx.add_metric([name], link.bytes_in)
                tx.add_metric([name], link.bytes_out)
            yield rx
            yield tx
            fam = _family("mesh_handshake_failures_total")
            for key, n in sorted(stats.items()):
                if key.startswith("handshake_failed:"):
                    fam.add_metric([key.partition(":")[2]], n)
            yield fam
        if endpoint is not None:
            fam = _family("meshconn_dropped_total")
            st = endpoint.stats
            for reason in ("no_route", "dropped_full", "dropped_malformed", "dropped_out",
                           "sent_after_close"):
                fam.add_metric([reason.removeprefix("dropped_")], st.get(reason, 0))
            yield fam

    def _watch_and_lease_families(self) -> Iterator[Metric]:
        # The place for watchers (issue 18: etcd's debugging_mvcc_watcher_total,
        # _slow_watcher_total) and leases (issue 19: etcd's debugging_lease_*), read from
        # the kv server's status when those exist; nothing to report until then.
        return iter(())


def _dir_bytes(data_dir: Path) -> int:
    total = 0
    for sub in ("wal", "snap"):
        try:
            with os.scandir(data_dir / sub) as it:
                for entry in it:
                    try:
                        if entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # removed while we looked (a compaction)
        except OSError:
            continue
    return total


class MemberMetrics:
    """One member's metrics: its own registry, the collector and the observer hooks.

    ``attach()`` hooks into the layers, ``detach()`` unhooks (both idempotent);
    ``exposition()`` is what ``/metrics`` serves."""

    def __init__(self, src: MetricsSources) -> None:
        self.src = src
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestStats()
        self.registry.register(MemberCollector(src, self.requests))
        _, _, fsync_help = METRICS["disk_wal_fsync_duration_seconds"]
        self.fsync = Histogram(_name("disk_wal_fsync_duration_seconds"), fsync_help,
                               buckets=FSYNC_BUCKETS, registry=self.registry)
        _, _, rtt_help = METRICS["network_peer_round_trip_time_seconds"]
        self.rtt = Histogram(_name("network_peer_round_trip_time_seconds"), rtt_help,
                             labelnames=["To"], buckets=RTT_BUCKETS, registry=self.registry)
        _, _, snap_help = METRICS["snapshot_duration_seconds"]
        self.snapshot = Histogram(_name("snapshot_duration_seconds"), snap_help,
                                  labelnames=["kind"], buckets=SNAPSHOT_BUCKETS,
                                  registry=self.registry)
        self._rtt_children: dict[str, Any] = {}
        self._hooks: list[tuple[list[Callable[..., None]], Callable[..., None]]] = []

    # -- hooks -------------------------------------------------------------------------
    def observe_rtt(self, peer: str, seconds: float) -> None:
        child = self._rtt_children.get(peer)
        if child is None:
            if len(self._rtt_children) >= 1024:  # peer ids are members: bounded anyway
                return
            child = self._rtt_children[peer] = self.rtt.labels(peer)
        if seconds >= 0:
            child.observe(seconds)

    def observe_snapshot(self, kind: str, seconds: float) -> None:
        if kind in ("save", "install"):
            self.snapshot.labels(kind).observe(seconds)

    def attach(self) -> None:
        if self._hooks:
            return
        node, server = self.src.node, self.src.server
        self._hooks = [(node.storage.fsync_observers, self.fsync.observe),
                       (node.rtt_observers, self.observe_rtt),
                       (node.snapshot_observers, self.observe_snapshot)]
        if server is not None:
            self._hooks.append((server.request_observers, self.requests.observe))
        for hooks, fn in self._hooks:
            hooks.append(fn)

    def detach(self) -> None:
        for hooks, fn in self._hooks:
            if fn in hooks:
                hooks.remove(fn)
        self._hooks = []

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of the text exposition format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

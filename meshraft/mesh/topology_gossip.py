"""Topology gossip: how peers learn the mesh graph from each other.

Owns the mesh's own gossip channels (wire.TOPOLOGY_CHANNEL and the digest
channels): merging the records a neighbour sends, noticing a peer's new life,
coalescing our changes and sending them to every neighbour, garbage-collecting
unreachable peers (whose addresses the connection maker keeps dialling for a
while), and the periodic digest exchange that repairs what was lost.  It must
never decide which links exist (local_peer.py) nor route (routes.py); a bad
record is a ProtocolError that closes only the link it came on.

See docs/architecture.md#mesh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from meshraft.mesh.connection import Link
from meshraft.mesh.connection_maker import ConnectionMaker
from meshraft.mesh.peer import PeerRecord, valid_name
from meshraft.mesh.topology import Topology
from meshraft.mesh.wire import (
    DIGEST_CHANNEL,
    DIGEST_REPLY_CHANNEL,
    TOPOLOGY_CHANNEL,
    Encoder,
    ProtocolError,
)

FLUSH_DELAY = 0.002  # seconds: changes made within this are sent together


class TopologyGossip:
    """Keeps one router's topology in step with its neighbours'."""

    def __init__(self, topology: Topology, links: dict[str, Link], maker: ConnectionMaker,
                 encoder: Encoder, stats: Counter[str], log: logging.LoggerAdapter) -> None:
        self.topology = topology
        self.name = topology.own.name
        self.uid = topology.own.uid
        self.links = links
        self.maker = maker
        self.enc = encoder
        self.stats = stats
        self.log = log
        self.stopped = False
        self._dirty: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._refused_log_at = 0.0

    def stop(self) -> None:
        self.stopped = True
        if self._flush is not None:
            self._flush.cancel()

    # ----- what we send -------------------------------------------------------
    def full_body(self) -> bytes:
        """Everything we know, for a new neighbour."""
        return self.enc.gossip(TOPOLOGY_CHANNEL, self.name, self.topology.encode())

    def digest_body(self) -> bytes:
        """The periodic digest: [name, uid, incarnation, version] of every record."""
        return self.enc.gossip(DIGEST_CHANNEL, self.name, self._digest())

    def own_links_changed(self) -> None:
        """Our links changed: update our record and tell the neighbours."""
        if self.stopped:
            return
        links = {n: lk.remote_uid for n, lk in self.links.items()}
        if self.topology.set_own_links(links):
            self._dirty.add(self.name)
            self._changed()

    def _changed(self) -> None:
        recs = {n: (r.host, r.port) for n, r in self.topology.peers.items()}
        gone = self.topology.garbage_collect()
        if gone:
            # Keep dialling a forgotten peer's address for a while, so the mesh heals
            # after a partition or a restart even if nobody lists that address.
            self.maker.remember(recs[n] for n in gone)
        for n in gone:
            self.log.info("forgot unreachable peer %s", n)
            self._dirty.discard(n)
            self.stats["peers_gc"] += 1
        if self._dirty and self._flush is None and not self.stopped:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._send_dirty)

    def _send_dirty(self) -> None:
        """Send coalesced topology changes to every neighbour."""
        self._flush = None
        names = sorted(self._dirty)
        self._dirty.clear()
        recs = self.topology.encode(names)
        if not recs:
            return
        body = self.enc.gossip(TOPOLOGY_CHANNEL, self.name, recs)
        for link in list(self.links.values()):
            link.send(body)
            self.stats["topology_bytes_out"] += len(body)

    # ----- what we receive ------------------------------------------------------
    def received(self, link: Link, channel: str, payload: Any) -> None:
        """A message on one of the topology channels."""
        if channel == TOPOLOGY_CHANNEL:
            self._on_records(link, payload)
        else:
            self._on_digest(link, payload, reply=channel == DIGEST_REPLY_CHANNEL)

    def _on_records(self, link: Link, payload: Any) -> None:
        if type(payload) is not list:
            raise ProtocolError("topology: not an array")
        try:
            records = [PeerRecord.decode(r) for r in payload]
        except ValueError as exc:
            raise ProtocolError(f"topology: {exc}") from None
        new, collisions, refused = self.topology.merge(records)
        if refused:
            self._peers_refused(link, refused)
        for c in collisions:
            self.log.warning("another peer claims our name: %s (we are uid %016x)", c, self.uid)
        for rec in new:
            self._dirty.add(rec.name)
            lk = self.links.get(rec.name)
            if lk is not None and lk.remote_uid != rec.uid:
                lk.close(f"peer {rec.name} has a new life (uid {rec.uid:016x})")
        if new:
            self._changed()
            # Records GC'd right away were not news: do not relay them.
            self._dirty &= set(self.topology.peers)

    def _peers_refused(self, link: Link, n: int) -> None:
        self.stats["peers_refused"] += n
        now = time.monotonic()
        if now >= self._refused_log_at:  # at most one line per 10 s: gossip repeats it
            self._refused_log_at = now + 10.0
            self.log.warning(
                "topology full (%d peers, max_peers): ignored %d record(s) of unknown peers "
                "from %s; %d so far", self.topology.max_peers, n, link.describe(),
                self.stats["peers_refused"])

    def _digest(self) -> list:
        return [[r.name, r.uid, r.incarnation, r.version] for r in self.topology.peers.values()]

    def _on_digest(self, link: Link, payload: Any, reply: bool) -> None:
        """A neighbour's topology digest: push it the records it lacks (or has older
        versions of); if it knows records we lack, ask with our own digest."""
        if type(payload) is not list or len(payload) > 1 << 16:
            raise ProtocolError("topology digest: not an array")
        theirs: dict[str, tuple[int, int, int]] = {}
        for e in payload:
            if (type(e) is not list or len(e) != 4 or not valid_name(e[0])
                    or not all(type(x) is int and 0 <= x < 1 << 64 for x in e[1:])):
                raise ProtocolError("topology digest: bad entry")
            theirs[e[0]] = (e[2], e[1], e[3])  # incarnation, uid, version: the merge order
        push = []
        for name, rec in self.topology.peers.items():
            t = theirs.get(name)
            if t is None or (rec.incarnation, rec.uid, rec.version) > t:
                push.append(name)
        if push:
            body = self.enc.gossip(TOPOLOGY_CHANNEL, self.name, self.topology.encode(push))
            link.send(body)
            self.stats["topology_bytes_out"] += len(body)
        if not reply:
            peers = self.topology.peers
            for name, t in theirs.items():
                rec = peers.get(name)
                if rec is None or t > (rec.incarnation, rec.uid, rec.version):
                    body = self.enc.gossip(DIGEST_REPLY_CHANNEL, self.name, self._digest())
                    link.send(body)
                    self.stats["topology_bytes_out"] += len(body)
                    break

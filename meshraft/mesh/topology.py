"""The mesh graph as this peer knows it: one PeerRecord per peer name.

Owns merging gossiped records (a later life wins, then a higher version),
keeping this peer's own record in step with its links, and garbage-collecting
peers that are no longer reachable.  It must never touch links or sockets; the
router feeds it records and reads the graph.

The graph is bounded: past ``max_peers`` names, records of peers not yet known
are refused (``merge`` says how many), so a hostile or broken neighbour
cannot grow this peer's memory, routes and dial targets without limit.

Edges: peer A's record lists B with B's uid.  An edge counts only while that uid
is B's current uid, so links to a peer's earlier life stop counting as soon as
its new life is known.
"""

from __future__ import annotations

from meshraft.mesh.peer import PeerRecord

DEFAULT_MAX_PEERS = 1024


class Topology:
    def __init__(self, own: PeerRecord, max_peers: int = DEFAULT_MAX_PEERS) -> None:
        if max_peers < 1:
            raise ValueError("max_peers must be at least 1")
        self.own = own
        self.max_peers = max_peers
        self.peers: dict[str, PeerRecord] = {own.name: own}
        self.generation = 0  # bumped on every change; caches of derived data key on it

    def _changed(self) -> None:
        self.generation += 1

    def set_own_links(self, links: dict[str, int]) -> bool:
        if links == self.own.links:
            return False
        self.own.links = dict(links)
        self.own.version += 1
        self._changed()
        return True

    def merge(self, records: list[PeerRecord]) -> tuple[list[PeerRecord], list[str], int]:
        """Merge gossiped records.  Returns (records that were new here, collisions,
        records of unknown peers refused because the graph is full): a collision is a
        record that claims our own name with another uid."""
        new: list[PeerRecord] = []
        collisions: list[str] = []
        refused = 0
        for rec in records:
            if rec.name == self.own.name:
                if rec.uid != self.own.uid and rec.newer_than(self.own):
                    collisions.append(f"{rec.name} uid {rec.uid:016x}")
                continue
            cur = self.peers.get(rec.name)
            if cur is None and len(self.peers) >= self.max_peers:
                refused += 1
                continue
            if cur is None or rec.newer_than(cur):
                self.peers[rec.name] = rec
                new.append(rec)
        if new:
            self._changed()
        return new, collisions, refused

    def note_direct(self, name: str, uid: int, incarnation: int, host: str, port: int) -> bool:
        """A link handshake told us a neighbour's current life.  Replace a record
        of an earlier life with a placeholder (version 0) so edges to the old uid
        stop counting; the neighbour's full record follows over the link."""
        # A direct neighbour is always recorded, even past max_peers: links are
        # bounded by the router (handshakes and dials), and routing needs them.
        cur = self.peers.get(name)
        if cur is not None and (cur.uid == uid or cur.newer_than(
                PeerRecord(name, uid, incarnation, 0, host, port))):
            return False
        self.peers[name] = PeerRecord(name, uid, incarnation, 0, host, port, {})
        self._changed()
        return True

    def valid_edges(self, name: str) -> list[str]:
        rec = self.peers.get(name)
        if rec is None:
            return []
        peers = self.peers
        return [n for n, u in rec.links.items() if n in peers and peers[n].uid == u]

    def symmetric_neighbours(self, name: str) -> list[str]:
        """Neighbours whose link with ``name`` both ends report (sorted)."""
        rec = self.peers.get(name)
        if rec is None:
            return []
        out = []
        for n in self.valid_edges(name):
            other = self.peers[n]
            if other.links.get(name) == rec.uid:
                out.append(n)
        out.sort()
        return out

    def garbage_collect(self) -> list[str]:
        """Remove peers not reachable from us, following the links that each
        reachable peer itself reports (so a dead peer's stale record, which still
        lists its old neighbours, does not keep it alive)."""
        seen = {self.own.name}
        stack = [self.own.name]
        while stack:
            for m in self.valid_edges(stack.pop()):
                if m not in seen:
                    seen.add(m)
                    stack.append(m)
        gone = [n for n in self.peers if n not in seen]
        for n in gone:
            del self.peers[n]
        if gone:
            self._changed()
        return gone

    def encode(self, names: list[str] | None = None) -> list:
        recs = self.peers.values() if names is None else (
            self.peers[n] for n in names if n in self.peers)
        return [r.encode() for r in recs]

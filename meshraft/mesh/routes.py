"""Routes derived from the topology: unicast next hops and broadcast trees.

Owns shortest-path computation only (BFS, neighbours visited in name order, so
every peer with the same view computes the same routes).  It must never send
anything; it is recomputed lazily when the topology's generation changes.

Only links that both ends report are used, so a half-dead link is not routed over.
"""

from __future__ import annotations

from meshraft.mesh.topology import Topology


def bfs_parents(topology: Topology, root: str) -> dict[str, str | None]:
    """Parent of each peer reachable from ``root`` in the BFS tree rooted there."""
    parents: dict[str, str | None] = {root: None}
    frontier = [root]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for m in topology.symmetric_neighbours(node):
                if m not in parents:
                    parents[m] = node
                    nxt.append(m)
        frontier = nxt
    return parents


class Routes:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._gen = -1
        self._unicast: dict[str, str] = {}
        self._bcast: dict[str, list[str]] = {}

    def _refresh(self) -> None:
        if self._gen == self.topology.generation:
            return
        self._gen = self.topology.generation
        me = self.topology.own.name
        parents = bfs_parents(self.topology, me)
        table: dict[str, str] = {}
        for dst in parents:
            if dst == me:
                continue
            hop = dst
            while parents[hop] != me:
                hop = parents[hop]  # type: ignore[assignment]
            table[dst] = hop
        self._unicast = table
        self._bcast = {}

    def next_hop(self, dst: str) -> str | None:
        if self._gen != self.topology.generation:
            self._refresh()
        return self._unicast.get(dst)

    def unicast(self) -> dict[str, str]:
        self._refresh()
        return dict(sorted(self._unicast.items()))

    def broadcast_next_hops(self, src: str) -> list[str]:
        """Where this peer forwards a broadcast that ``src`` started: its children in
        the BFS spanning tree rooted at ``src``."""
        self._refresh()
        hops = self._bcast.get(src)
        if hops is None:
            me = self.topology.own.name
            parents = bfs_parents(self.topology, src)
            hops = sorted(n for n, p in parents.items() if p == me)
            if len(self._bcast) > 1024:
                self._bcast.clear()
            self._bcast[src] = hops
        return hops

"""Dialling: which addresses this peer connects to, when, and how often.

Owns the addresses to dial (the initial peers, the ones added with
``Router.connect``, the addresses of peers the topology lists and we have no
link to, and, for a while, those of peers that were garbage-collected), the
per-address exponential backoff with jitter, and the dialling tasks (Weave
Mesh: connection_maker.go).  It must never decide whether a link is kept
(local_peer.py does) nor read what links carry; a dial ends in a handshake, and
the local peer tells this module how it went.

See docs/architecture.md#mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable

from meshraft.mesh.connection import Link
from meshraft.mesh.local_peer import LocalPeer
from meshraft.mesh.topology import Topology

Address = tuple[str, int]
UNSPECIFIED_HOSTS = ("0.0.0.0", "::", "")


class ConnectionMaker:
    """Dials the peers this router should have links to."""

    def __init__(self, peer: LocalPeer, topology: Topology, log: logging.LoggerAdapter, *,
                 rng: random.Random, link_timeout: float, dial_backoff: tuple[float, float],
                 connect_interval: float, remember_for: float) -> None:
        self.peer = peer
        self.topology = topology
        self.log = log
        self.rng = rng
        self.link_timeout = link_timeout
        self.dial_backoff = dial_backoff
        self.connect_interval = connect_interval
        self.remember_for = remember_for
        self.initial: list[Address] = []
        self.self_addrs: set[Address] = set()
        self.remembered: dict[Address, float] = {}  # address -> dial it until then
        self.dial_state: dict[Address, tuple[float, float]] = {}  # -> (next try, backoff)
        self.dialing: dict[Address, asyncio.Task] = {}

    def add(self, addr: Address) -> None:
        """Dial ``addr`` from now on (kept and retried like the initial peers)."""
        if addr not in self.initial:
            self.initial.append(addr)

    def add_self_address(self, addr: Address) -> None:
        """An address that turned out to be our own: never dialled."""
        self.self_addrs.add(addr)

    def remember(self, addrs: Iterable[Address]) -> None:
        """Keep dialling these addresses of forgotten peers for ``remember_for`` s, so
        the mesh heals after a partition or a restart even if nobody lists them."""
        until = time.monotonic() + self.remember_for
        for a in addrs:
            if a[1] and a[0] not in UNSPECIFIED_HOSTS:
                self.remembered[a] = until
        while len(self.remembered) > 1024:
            self.remembered.pop(next(iter(self.remembered)))

    # ----- what the local peer reports ---------------------------------------
    def dial_failed(self, addr: Address, why: str) -> None:
        lo, hi = self.dial_backoff
        _, prev = self.dial_state.get(addr, (0.0, lo / 2))
        backoff = min(hi, prev * 2)
        self.dial_state[addr] = (time.monotonic() + backoff * self.rng.uniform(0.5, 1.5),
                                 backoff)
        self.log.debug("dial %s:%s failed (%s); next try in ~%.2fs", *addr, why, backoff)

    def link_established(self, link: Link) -> None:
        if link.target is not None:
            self.dial_state.pop(link.target, None)

    def link_lost(self, link: Link) -> None:
        if link.target is not None:
            lo = self.dial_backoff[0]
            self.dial_state[link.target] = (time.monotonic() + lo, lo)

    # ----- dialling ------------------------------------------------------------
    def targets(self) -> set[Address]:
        """Addresses to dial now (backoff aside)."""
        busy = self.peer.busy_addresses() | self.self_addrs
        targets = {a for a in self.initial if a not in busy}
        now = time.monotonic()
        for a, until in list(self.remembered.items()):
            if until < now:
                del self.remembered[a]
            elif a not in busy:
                targets.add(a)
        me, links, refused = self.topology.own.name, self.peer.links, self.peer.link_filter
        for rec in self.topology.peers.values():
            if rec.name == me or rec.name in links or rec.name in refused:
                continue
            if rec.port and rec.host not in UNSPECIFIED_HOSTS:
                a = (rec.host, rec.port)
                if a not in busy:
                    targets.add(a)
        return targets

    async def _dial(self, addr: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(
                lambda: self.peer.new_link(outbound=True, target=addr), addr[0], addr[1]),
                self.link_timeout)
            # Backoff is reset when the handshake completes, or grown if it fails.
            lo, _ = self.dial_backoff
            _, prev = self.dial_state.get(addr, (0.0, lo / 2))
            self.dial_state[addr] = (time.monotonic() + self.link_timeout, prev)
        except (TimeoutError, OSError) as exc:
            self.dial_failed(addr, repr(exc))
        finally:
            self.dialing.pop(addr, None)

    async def run(self) -> None:
        """The connect loop (one task per router)."""
        while True:
            now = time.monotonic()
            targets = self.targets()
            if len(self.dial_state) > 2 * self.topology.max_peers + 1024:
                # Backoff state of addresses nobody lists any more: bounded, not kept.
                for a in [a for a in self.dial_state
                          if a not in targets and a not in self.dialing]:
                    del self.dial_state[a]
            for addr in targets:
                if addr in self.dialing:
                    continue
                next_try, _ = self.dial_state.get(addr, (0.0, 0.0))
                if now < next_try:
                    continue
                self.dialing[addr] = asyncio.create_task(self._dial(addr))
            await asyncio.sleep(self.connect_interval * self.rng.uniform(0.8, 1.2))

    async def stop(self) -> None:
        """Cancel the dials in flight and wait for them."""
        tasks = list(self.dialing.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

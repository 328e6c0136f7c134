"""The router: one peer's presence on the mesh.

Owns the listening socket, routed unicast and the dispatch of every message to
its handler, gossip channel or the topology gossip, heartbeats, the periodic
anti-entropy, and status; it puts the parts together.  Which links exist and
which are kept is local_peer.py's; dialling is connection_maker.py's; the byte
layouts are wire.py's; a channel's relaying is gossip_channel.py's; the graph's
gossip is topology_gossip.py's (Weave Mesh: router.go beside local_peer.go and
connection_maker.go).  See docs/architecture.md#mesh.

It must never block on a consumer: handlers and gossipers are called inline
and their exceptions are logged and counted, every outgoing queue is bounded
(a full one drops, like a network), and a bad frame closes only its own link.
It knows nothing of what travels on its channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from meshraft.mesh.connection import Link, LinkConfig, ReadBatch
from meshraft.mesh.connection_maker import UNSPECIFIED_HOSTS, ConnectionMaker
from meshraft.mesh.crypto import password_key
from meshraft.mesh.gossip_channel import (
    ChannelContext,
    GossipChannel,
    Gossiper,
    SurrogateGossiper,
    fanout,
)
from meshraft.mesh.local_peer import MAX_PENDING_LINKS, LocalPeer
from meshraft.mesh.peer import PeerRecord, check_name, new_incarnation, new_uid, valid_name
from meshraft.mesh.routes import Routes
from meshraft.mesh.topology import DEFAULT_MAX_PEERS, Topology
from meshraft.mesh.topology_gossip import TopologyGossip
from meshraft.mesh.wire import (
    BROADCAST,
    DEFAULT_TTL,
    GOSSIP,
    HEADER_RESERVE,
    HEARTBEAT_BODY,
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    TOPOLOGY_CHANNELS,
    UNICAST,
    Encoder,
    ProtocolError,
    UnicastEncoder,
    make_unpackb,
    message_kind,
)

__all__ = ["MAX_PENDING_LINKS", "Router", "UnicastHandler", "parse_address"]

log = logging.getLogger("meshraft.mesh")

UnicastHandler = Callable[[str, Any], None]


class _PeerLog(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[mesh {self.extra['peer']}] {msg}", kwargs  # type: ignore[index]


def parse_address(addr: str | tuple[str, int], listen: bool = False) -> tuple[str, int]:
    """'host:port' or (host, port) -> (host, port); ValueError if malformed.
    Port 0 (any free port) is allowed only for a ``listen`` address."""
    if isinstance(addr, tuple):
        host, port = addr
    else:
        host, sep, port_s = str(addr).rpartition(":")
        if not sep or not port_s.isdigit():
            raise ValueError(f"bad peer address {addr!r}: expected HOST:PORT")
        port = int(port_s)
    host = str(host).strip("[]")
    if not host or not isinstance(port, int) or not (0 if listen else 1) <= port < 65536:
        raise ValueError(f"bad peer address {addr!r}: expected HOST:PORT")
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Router:
    """A mesh peer.  Create with ``await Router.start(...)``; stop with ``await stop()``.

    ``links`` (neighbour name -> established Link), ``topology``, ``routes``,
    ``channels`` and ``stats`` are public to read; ``peer`` (the links and the
    decisions about them) and ``maker`` (dialling) are its parts."""

    def __init__(self, name: str, password: bytes | None, *, heartbeat: float,
                 link_timeout: float, gossip_interval: float, max_frame: int,
                 protocol_versions: tuple[int, int], write_limit: int, gossip_fanout: int,
                 dial_backoff: tuple[float, float], connect_interval: float,
                 rng: random.Random) -> None:
        self.name = check_name(name)
        if name.startswith("_"):
            raise ValueError(f"invalid peer name {name!r}: names starting with '_' are reserved")
        self.uid = new_uid()
        self.incarnation = new_incarnation()
        self.password_set = password is not None
        self._pw_key = password_key(password) if password is not None else None
        self.heartbeat = heartbeat
        self.link_timeout = link_timeout
        self.gossip_interval = gossip_interval
        self.max_frame = max_frame
        self.protocol_versions = protocol_versions
        self.write_limit = write_limit
        self.gossip_fanout = gossip_fanout
        self.dial_backoff = dial_backoff
        self.connect_interval = connect_interval
        self._rng = rng
        self._log = _PeerLog(log, {"peer": name})
        self._max_payload = max_frame - HEADER_RESERVE
        self._enc = Encoder()
        self.stats: Counter[str] = Counter()
        self.peer = LocalPeer(self.name, self.uid, self._log, self.stats,
                              on_message=self._on_message, on_up=self._link_up,
                              on_down=self._link_down)
        self.links: dict[str, Link] = self.peer.links  # the same dict, never replaced
        self.channels: dict[str, GossipChannel] = {}
        self._surrogates: dict[str, GossipChannel] = {}
        self._handlers: dict[str, UnicastHandler] = {}
        self._stop_callbacks: list[Callable[[], None]] = []
        self._server: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task] = []
        self.topology: Topology
        self.topo_gossip: TopologyGossip
        self.routes: Routes
        self.maker: ConnectionMaker
        self._ctx: ChannelContext
        self._stopped = False
        self.address: tuple[str, int] = ("", 0)

    # ------------------------------------------------------------------ life
    @classmethod
    async def start(
        cls, name: str, listen: tuple[str, int] | str = ("127.0.0.1", 0),
        peers: Iterable[str | tuple[str, int]] = (), password: str | bytes | None = None, *,
        heartbeat: float = 0.5, link_timeout: float = 2.0, gossip_interval: float = 1.0,
        max_frame: int = 1 << 20, link_filter: Iterable[str] = (),
        protocol_versions: tuple[int, int] = (PROTOCOL_MIN, PROTOCOL_MAX),
        advertise: tuple[str, int] | str | None = None, write_limit: int = 8 << 20,
        gossip_fanout: int = 3, dial_backoff: tuple[float, float] = (0.05, 2.0),
        connect_interval: float = 0.1, rng: random.Random | None = None,
        remember_for: float = 60.0, max_peers: int = DEFAULT_MAX_PEERS,
    ) -> Router:
        """Listen on ``listen``, dial ``peers`` (HOST:PORT), and join the mesh.

        ``password`` (str or bytes) authenticates and encrypts every link; peers
        must share it.  Timings are in seconds.  The addresses of peers that were
        garbage-collected are still dialled for ``remember_for`` seconds.  At most
        ``max_peers`` peers (this one included) are known at once; gossip about
        more is refused with a warning."""
        if isinstance(password, str):
            password = password.encode()
        if password is not None and not password:
            raise ValueError("mesh password must not be empty")
        if not 0 < heartbeat < link_timeout:
            raise ValueError("need 0 < heartbeat < link_timeout")
        if max_frame < 4 * HEADER_RESERVE:
            raise ValueError(f"max_frame must be at least {4 * HEADER_RESERVE}")
        self = cls(name, password, heartbeat=heartbeat, link_timeout=link_timeout,
                   gossip_interval=gossip_interval, max_frame=max_frame,
                   protocol_versions=protocol_versions, write_limit=write_limit,
                   gossip_fanout=gossip_fanout, dial_backoff=dial_backoff,
                   connect_interval=connect_interval, rng=rng or random.Random())
        self.peer.set_link_filter(link_filter)
        host, port = parse_address(listen, listen=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self.peer.new_link(outbound=False), host, port)
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        self.address = (sock_host, sock_port)
        adv = parse_address(advertise) if advertise is not None else self.address
        self.peer.cfg = LinkConfig(
            name=self.name, uid=self.uid, incarnation=self.incarnation, host=adv[0],
            port=adv[1], min_version=protocol_versions[0], max_version=protocol_versions[1],
            pw_key=self._pw_key, max_frame=max_frame, write_limit=write_limit,
            unpackb=make_unpackb(max_frame), log=self._log,
        )
        own = PeerRecord(self.name, self.uid, self.incarnation, 1, adv[0], adv[1], {})
        self.topology = Topology(own, max_peers)
        self.routes = Routes(self.topology)
        self.maker = self.peer.maker = ConnectionMaker(
            self.peer, self.topology, self._log, rng=self._rng, link_timeout=link_timeout,
            dial_backoff=dial_backoff, connect_interval=connect_interval,
            remember_for=remember_for)
        self.topo_gossip = TopologyGossip(self.topology, self.links, self.maker, self._enc,
                                          self.stats, self._log)
        self.maker.add_self_address(self.address)
        self.maker.add_self_address(adv)
        for p in peers:
            self.maker.add(parse_address(p))
        self._ctx = ChannelContext(
            src=self.name, links=self.links, routes=self.routes, encoder=self._enc,
            stats=self.stats, log=self._log, rng=self._rng, gossip_fanout=gossip_fanout,
            max_payload=self._max_payload, send_unicast=self.send_unicast)
        if password is None and not _is_loopback(host):
            self._log.warning(
                "listening on %s without a mesh password: anyone who can reach this port can "
                "join the mesh and read its traffic (give a password)", host)
        if adv[0] in UNSPECIFIED_HOSTS:
            self._log.warning("advertising unspecified address %s:%s; give advertise=", *adv)
        self._log.info("listening on %s:%s (uid %016x, protocol %d..%d%s)", *self.address,
                       self.uid, *protocol_versions, ", password set" if password else "")
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name=f"mesh-{name}-heartbeat"),
            asyncio.create_task(self.maker.run(), name=f"mesh-{name}-connect"),
            asyncio.create_task(self._gossip_loop(), name=f"mesh-{name}-gossip"),
        ]
        return self

    async def stop(self) -> None:
        """Close every link and stop every task this router started."""
        if self._stopped:
            return
        self._stopped = True
        self.peer.stopped = self.topo_gossip.stopped = True
        for fn in list(self._stop_callbacks):
            try:
                fn()
            except Exception:
                self._log.exception("stop callback raised")
        for t in self._tasks:
            t.cancel()
        await self.maker.stop()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.topo_gossip.stop()
        if self._server is not None:
            self._server.close()
        self.peer.close_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        await asyncio.sleep(0)
        self._log.info("stopped")

    def tasks(self) -> list[asyncio.Task]:
        """The background tasks this router runs (heartbeat, connect, gossip)."""
        return list(self._tasks)

    def connect(self, addr: str | tuple[str, int]) -> None:
        """Add an address to dial (kept and retried like the initial peers)."""
        self.maker.add(parse_address(addr))

    # ------------------------------------------------------------ upper layers
    @property
    def max_payload(self) -> int:
        """Largest payload (bytes) one unicast or gossip message may carry."""
        return self.max_frame - HEADER_RESERVE

    @property
    def reads(self) -> ReadBatch:
        """Counts reads from this router's links (``reads.seq``): a consumer called
        inline can tell one read's burst of messages from the next."""
        return self.peer.batch

    def new_gossip(self, channel: str, gossiper: Gossiper) -> GossipChannel:
        check_name(channel, "channel name")
        if channel.startswith("_"):
            raise ValueError(f"channel names starting with '_' are reserved: {channel!r}")
        if channel in self.channels or channel in self._handlers:
            raise ValueError(f"channel {channel!r} is already in use on this router")
        ch = GossipChannel(self._ctx, channel, gossiper)
        self.channels[channel] = ch
        self._surrogates.pop(channel, None)
        return ch

    def register_unicast(self, channel: str, handler: UnicastHandler) -> Callable[[], None]:
        """Deliver unicast messages to this peer on ``channel`` to ``handler(src,
        payload)`` (payload as decoded: the handler must check it is bytes).
        Returns a function that unregisters."""
        check_name(channel, "channel name")
        if channel.startswith("_"):
            raise ValueError(f"channel names starting with '_' are reserved: {channel!r}")
        if channel in self._handlers or channel in self.channels:
            raise ValueError(f"channel {channel!r} is already in use on this router")
        self._handlers[channel] = handler

        def unregister() -> None:
            if self._handlers.get(channel) is handler:
                del self._handlers[channel]

        return unregister

    def add_stop_callback(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn()`` when the router stops (upper layers close their endpoints).
        Returns a function that removes it."""
        self._stop_callbacks.append(fn)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._stop_callbacks.remove(fn)

        return remove

    def send_unicast(self, channel: str, dst: str, payload: bytes) -> bool:
        """Best-effort unicast of ``payload`` to peer ``dst`` on ``channel``.
        False when there is no route; True when sent (it may still be lost, like
        a datagram).  Raises ValueError for a payload over ``max_payload``."""
        if len(payload) > self._max_payload:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {self.max_payload}")
        if dst == self.name:
            handler = self._handlers.get(channel)
            if handler is not None:
                asyncio.get_running_loop().call_soon(self._call_handler, handler, dst, payload)
            return True
        link = self.route_link(dst)
        if link is None:
            self.stats["unicast_no_route"] += 1
            return False
        if not link.send(self._enc.unicast(channel, self.name, dst, DEFAULT_TTL, payload)):
            self.stats["unicast_dropped_out"] += 1
        return True

    def route_link(self, dst: str) -> Link | None:
        """The established link a message for ``dst`` leaves on (None: no route)."""
        link = self.links.get(dst)
        if link is None:
            hop = self.routes.next_hop(dst)
            if hop is not None:
                link = self.links.get(hop)
        return link

    def unicast_encoder(self, channel: str) -> UnicastEncoder:
        """A fast encoder of unicast messages from this peer on ``channel``, for
        senders that put them on ``route_link(dst)`` themselves."""
        return UnicastEncoder(channel, self.name)

    def reachable(self) -> list[str]:
        """Names of the peers a unicast can reach now (not including ourselves)."""
        names = set(self.routes.unicast()) | set(self.links)
        return sorted(names)

    def set_link_filter(self, names: Iterable[str]) -> None:
        """Refuse links to and from these peers (replacing the previous filter);
        existing links to them are closed now."""
        self.peer.set_link_filter(names)

    @property
    def link_filter(self) -> frozenset[str]:
        return self.peer.link_filter

    def status(self) -> dict[str, Any]:
        """Peers, routes and links as plain JSON-serialisable data."""
        peers = []
        for rec in sorted(self.topology.peers.values(), key=lambda r: r.name):
            peers.append({
                "name": rec.name, "uid": f"{rec.uid:016x}", "address": f"{rec.host}:{rec.port}",
                "version": rec.version, "links": sorted(rec.links),
            })
        return {
            "name": self.name, "uid": f"{self.uid:016x}",
            "address": f"{self.address[0]}:{self.address[1]}",
            "password": self.password_set, "link_filter": sorted(self.peer.link_filter),
            "peers": peers, "routes": self.routes.unicast(), "links": self.peer.status(),
            "stats": dict(sorted(self.stats.items())),
        }

    # ------------------------------------------------------------- links
    def _link_up(self, link: Link) -> None:
        """A new neighbour: note it, and send it everything we know (topology, then
        every channel's complete state)."""
        name = link.remote_name
        assert name is not None
        rl = link.remote_listen
        host, port = rl if rl is not None else ("", 0)
        if host in UNSPECIFIED_HOSTS and link.peername:
            host = link.peername[0]
        self.topology.note_direct(name, link.remote_uid, link.remote_incarnation, host, port)
        link.send(self.topo_gossip.full_body())
        for ch in list(self.channels.values()):
            for body in ch.complete_state():
                link.send(body)
        self.topo_gossip.own_links_changed()

    def _link_down(self, link: Link) -> None:
        self.topo_gossip.own_links_changed()


    # ------------------------------------------------------------- receive
    def _on_message(self, link: Link, msg: Any) -> None:
        """One decoded message from an established link (wire.message_kind checks its
        shape).  ProtocolError closes the link.  The data path: relay and delivery."""
        kind = message_kind(msg)
        if kind == UNICAST:
            _, channel, src, dst, ttl, payload = msg
            if dst == self.name:
                handler = self._handlers.get(channel)
                if handler is not None:
                    # One path for every handler call (inlining it measured ~0.4 us of a
                    # ~22 us in-process round trip, within noise: not worth two copies).
                    self._call_handler(handler, src, payload)
                    return
                ch = self.channels.get(channel)
                if ch is None or not ch.received_unicast(src, payload):
                    self.stats["unicast_unknown_channel"] += 1
                return
            if ttl <= 1:
                self.stats["unicast_ttl_expired"] += 1
                return
            nxt = self.links.get(dst)
            if nxt is None:
                hop = self.routes.next_hop(dst)
                nxt = self.links.get(hop) if hop is not None else None
            if nxt is None or nxt is link:
                self.stats["relay_no_route"] += 1
                return
            self.stats["relayed"] += 1
            nxt.send(self._enc.unicast(channel, src, dst, ttl - 1, payload))
        elif kind == BROADCAST:
            _, channel, src, ttl, payload = msg
            if src == self.name:
                self.stats["broadcast_looped"] += 1
                return
            self.stats["broadcast_in"] += 1
            ch = self._channel_or_surrogate(channel)
            if ch is not None:
                ch.received_broadcast(link, src, ttl, payload)
        elif kind == GOSSIP:
            _, channel, src, payload = msg
            if channel in TOPOLOGY_CHANNELS:
                self.topo_gossip.received(link, channel, payload)
            else:
                self.stats["gossip_in"] += 1
                ch = self._channel_or_surrogate(channel)
                if ch is not None:
                    ch.received_gossip(link, payload)

    def _call_handler(self, handler: UnicastHandler, src: str, payload: Any) -> None:
        try:
            handler(src, payload)
        except Exception:
            self.stats["handler_errors"] += 1
            self._log.exception("unicast handler raised")

    def _channel_or_surrogate(self, channel: str) -> GossipChannel | None:
        ch = self.channels.get(channel)
        if ch is not None:
            return ch
        if not valid_name(channel) or channel.startswith("_"):
            raise ProtocolError(f"bad channel name {channel!r}")
        ch = self._surrogates.get(channel)
        if ch is None:
            if len(self._surrogates) >= 256:
                self.stats["surrogate_overflow"] += 1
                return None
            ch = GossipChannel(self._ctx, channel, SurrogateGossiper(window=max(
                10.0, 4 * self.gossip_interval)))
            self._surrogates[channel] = ch
        return ch

    # ------------------------------------------------------------- timers
    async def _heartbeat_loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.heartbeat)
            now = time.monotonic()
            # If this process itself was starved (the loop woke far too late), bytes may
            # be waiting unread on every link: judge silence only on the next tick.
            starved = now - last > 2 * self.heartbeat
            last = now
            self.peer.check_liveness(now, self.link_timeout, starved, HEARTBEAT_BODY)

    async def _gossip_loop(self) -> None:
        while True:
            await asyncio.sleep(self.gossip_interval * self._rng.uniform(0.9, 1.1))
            if not self.links:
                continue
            links = list(self.links.values())
            k = min(len(links), fanout(self.gossip_fanout, len(links)))
            # Topology anti-entropy sends a digest; the neighbour pushes back the
            # records we lack and asks for those it lacks (far fewer bytes at idle).
            body = self.topo_gossip.digest_body()
            for link in self._rng.sample(links, k):
                link.send(body)
                self.stats["topology_bytes_out"] += len(body)
            for ch in list(self.channels.values()):
                ch.periodic()

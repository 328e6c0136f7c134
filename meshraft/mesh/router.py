"""The router: one peer's presence on the mesh.

Owns the listening socket, dialling (discovery with backoff and jitter), the set
of established links (one per neighbour, duplicates resolved deterministically),
the topology and its gossip, routed unicast, spanning-tree broadcast, gossip
channels with periodic anti-entropy, heartbeats, the link filter and status.

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
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from meshraft.mesh.connection import (
    BROADCAST,
    ESTABLISHED,
    GOSSIP,
    HEARTBEAT,
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    UNICAST,
    Link,
    LinkConfig,
    ProtocolError,
    make_unpackb,
)
from meshraft.mesh.crypto import password_key
from meshraft.mesh.gossip_channel import GossipChannel, Gossiper, SurrogateGossiper
from meshraft.mesh.peer import PeerRecord, check_name, new_incarnation, new_uid, valid_name
from meshraft.mesh.routes import Routes
from meshraft.mesh.topology import DEFAULT_MAX_PEERS, Topology

log = logging.getLogger("meshraft.mesh")

TOPOLOGY_CHANNEL = "_topology"
DIGEST_CHANNEL = "_topodigest"  # periodic anti-entropy: [name, uid, incarnation, version]s
DIGEST_REPLY_CHANNEL = "_topodigest_r"  # the answer to a digest (never answered again)
DEFAULT_TTL = 64
MAX_PENDING_LINKS = 64  # connections still in the handshake, at most
HEADER_RESERVE = 1024  # bytes of a frame kept for the message header (kind, names, ttl)
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
    """A mesh peer.  Create with ``await Router.start(...)``; stop with ``await stop()``."""

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
        self._unpackb = make_unpackb(max_frame)
        self._max_payload = max_frame - HEADER_RESERVE
        self._packer = msgpack.Packer(autoreset=True, use_bin_type=True)
        self._pack = self._packer.pack
        self._heartbeat_body = msgpack.packb([HEARTBEAT])
        self.links: dict[str, Link] = {}
        self._conns: set[Link] = set()
        self._conn_seq = 0
        self._initial: list[tuple[str, int]] = []
        self._self_addrs: set[tuple[str, int]] = set()
        self._remembered: dict[tuple[str, int], float] = {}
        self.remember_for = 60.0
        self._dial_state: dict[tuple[str, int], tuple[float, float]] = {}
        self._dialing: dict[tuple[str, int], asyncio.Task] = {}
        self._refused_log_at = 0.0
        self._filter: set[str] = set()
        self.channels: dict[str, GossipChannel] = {}
        self._surrogates: dict[str, GossipChannel] = {}
        self._handlers: dict[str, UnicastHandler] = {}
        self._stop_callbacks: list[Callable[[], None]] = []
        self._server: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task] = []
        self._topo_dirty: set[str] = set()
        self._topo_flush: asyncio.TimerHandle | None = None
        self.stats: Counter[str] = Counter()
        self._rx_seq = 0  # counts reads from links (MeshPacketConn budgets inline delivery)
        self._rx_depth = 0  # >0 while a link is handling a read: writes are batched
        self._pending_flush: list[Link] = []
        self.topology: Topology
        self.routes: Routes
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
        self._filter = {check_name(n) for n in link_filter}
        self.remember_for = remember_for
        host, port = parse_address(listen, listen=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._new_link(outbound=False), host, port)
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        self.address = (sock_host, sock_port)
        adv = parse_address(advertise) if advertise is not None else self.address
        self._cfg = LinkConfig(
            name=self.name, uid=self.uid, incarnation=self.incarnation, host=adv[0],
            port=adv[1], min_version=protocol_versions[0], max_version=protocol_versions[1],
            pw_key=self._pw_key, max_frame=max_frame, write_limit=write_limit,
        )
        self._self_addrs.add(self.address)
        self._self_addrs.add(adv)
        own = PeerRecord(self.name, self.uid, self.incarnation, 1, adv[0], adv[1], {})
        self.topology = Topology(own, max_peers)
        self.routes = Routes(self.topology)
        for p in peers:
            addr = parse_address(p)
            if addr not in self._initial:
                self._initial.append(addr)
        if password is None and not _is_loopback(host):
            self._log.warning(
                "listening on %s without a mesh password: anyone who can reach this port can "
                "join the mesh and read its traffic (give a password)", host)
        if adv[0] in ("0.0.0.0", "::", ""):
            self._log.warning("advertising unspecified address %s:%s; give advertise=", *adv)
        self._log.info("listening on %s:%s (uid %016x, protocol %d..%d%s)", *self.address,
                       self.uid, *protocol_versions, ", password set" if password else "")
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name=f"mesh-{name}-heartbeat"),
            asyncio.create_task(self._connect_loop(), name=f"mesh-{name}-connect"),
            asyncio.create_task(self._gossip_loop(), name=f"mesh-{name}-gossip"),
        ]
        return self

    async def stop(self) -> None:
        """Close every link and stop every task this router started."""
        if self._stopped:
            return
        self._stopped = True
        for fn in list(self._stop_callbacks):
            try:
                fn()
            except Exception:
                self._log.exception("stop callback raised")
        for t in list(self._dialing.values()) + self._tasks:
            t.cancel()
        for t in list(self._dialing.values()) + self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._topo_flush is not None:
            self._topo_flush.cancel()
        if self._server is not None:
            self._server.close()
        for link in list(self._conns):
            link.close("router stopping", level=logging.DEBUG)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        await asyncio.sleep(0)
        self._log.info("stopped")

    def connect(self, addr: str | tuple[str, int]) -> None:
        """Add an address to dial (kept and retried like the initial peers)."""
        a = parse_address(addr)
        if a not in self._initial:
            self._initial.append(a)

    # ------------------------------------------------------------ upper layers
    @property
    def max_payload(self) -> int:
        """Largest payload (bytes) one unicast or gossip message may carry."""
        return self.max_frame - HEADER_RESERVE

    def new_gossip(self, channel: str, gossiper: Gossiper) -> GossipChannel:
        check_name(channel, "channel name")
        if channel.startswith("_"):
            raise ValueError(f"channel names starting with '_' are reserved: {channel!r}")
        if channel in self.channels or channel in self._handlers:
            raise ValueError(f"channel {channel!r} is already in use on this router")
        ch = GossipChannel(self, channel, gossiper)
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
        if not link.send(self._pack([UNICAST, channel, self.name, dst, DEFAULT_TTL, payload])):
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

    def unicast_prefix(self, channel: str) -> bytes:
        """The encoded start of every unicast message on ``channel`` from this peer,
        for senders that build messages themselves (see ``unicast_body``)."""
        return b"\x96" + self._pack(UNICAST) + self._pack(channel) + self._pack(self.name)

    def unicast_dst(self, dst: str) -> bytes:
        """The encoded destination and hop limit of a unicast message."""
        return self._pack(dst) + self._pack(DEFAULT_TTL)

    def reachable(self) -> list[str]:
        """Names of the peers a unicast can reach now (not including ourselves)."""
        names = set(self.routes.unicast()) | set(self.links)
        return sorted(names)

    def set_link_filter(self, names: Iterable[str]) -> None:
        """Refuse links to and from these peers (replacing the previous filter);
        existing links to them are closed now."""
        self._filter = {check_name(n) for n in names}
        for link in list(self._conns):
            if link.remote_name in self._filter:
                link.fail(f"peer {link.remote_name} is in the link filter", level=logging.INFO)

    @property
    def link_filter(self) -> frozenset[str]:
        return frozenset(self._filter)

    def status(self) -> dict[str, Any]:
        """Peers, routes and links as plain JSON-serialisable data."""
        now = time.monotonic()
        peers = []
        for rec in sorted(self.topology.peers.values(), key=lambda r: r.name):
            peers.append({
                "name": rec.name, "uid": f"{rec.uid:016x}", "address": f"{rec.host}:{rec.port}",
                "version": rec.version, "links": sorted(rec.links),
            })
        links = {}
        for link in sorted(self._conns, key=lambda lk: (lk.remote_name or "", lk.conn_id)):
            entry = {
                "state": link.state, "direction": "outbound" if link.outbound else "inbound",
                "remote": f"{link.peername[0]}:{link.peername[1]}" if link.peername else None,
                "uid": f"{link.remote_uid:016x}" if link.remote_uid else None,
                "protocol_version": link.version, "encrypted": link._tx is not None,
                "idle_s": round(now - link.last_recv, 3),
                "frames_in": link.frames_in, "frames_out": link.frames_out,
                "bytes_in": link.bytes_in, "bytes_out": link.bytes_out,
                "dropped_out": link.dropped_out,
            }
            key = link.remote_name if (link.state == ESTABLISHED and link.remote_name) else (
                f"pending:{link.conn_id:x}")
            links[key] = entry
        return {
            "name": self.name, "uid": f"{self.uid:016x}",
            "address": f"{self.address[0]}:{self.address[1]}",
            "password": self.password_set, "link_filter": sorted(self._filter),
            "peers": peers, "routes": self.routes.unicast(), "links": links,
            "stats": dict(sorted(self.stats.items())),
        }

    # ------------------------------------------------------------- links
    def _new_link(self, outbound: bool, target: tuple[str, int] | None = None) -> Link:
        self._conn_seq += 1
        return Link(self, self._cfg, outbound, (self.uid ^ self._conn_seq) & ((1 << 64) - 1),
                    target)

    def _link_opened(self, link: Link) -> None:
        if self._stopped:
            link.fail("router stopping", level=logging.DEBUG)
            return
        if len(self._conns) - len(self.links) >= MAX_PENDING_LINKS:
            # bounded: a flood of connections that never finish the handshake
            self.stats["pending_refused"] += 1
            link.fail(f"more than {MAX_PENDING_LINKS} connections in handshake", logging.DEBUG)
            return
        self._conns.add(link)

    def _link_ready(self, link: Link) -> str | None:
        """Handshake done: accept the link (None) or say why it is refused."""
        name, uid = link.remote_name, link.remote_uid
        assert name is not None
        if self._stopped:
            return "router stopping"
        if name == self.name:
            if uid == self.uid:
                for a in (link.target, link.remote_listen):
                    if a is not None:
                        self._self_addrs.add(a)
                return "connected to ourselves"
            return f"peer name collision: another peer (uid {uid:016x}) also calls itself {name}"
        if name in self._filter:
            return f"peer {name} is in the link filter"
        if name.startswith("_"):
            return f"peer name {name!r} is reserved"
        existing = self.links.get(name)
        if existing is not None:
            if existing.remote_uid != uid:
                if (link.remote_incarnation, uid) > (existing.remote_incarnation,
                                                     existing.remote_uid):
                    existing.close(f"peer {name} restarted (new uid {uid:016x})")
                    del self.links[name]
                    return None
                return f"older life of peer {name} (uid {uid:016x})"
            if existing.initiator != link.initiator and min(
                    existing.initiator, link.initiator) == existing.initiator:
                return f"duplicate link to {name}: keeping the one {existing.initiator} dialled"
            existing.close(f"duplicate link to {name}: keeping the one {link.initiator} dialled")
            del self.links[name]
        return None

    def _link_established(self, link: Link) -> None:
        name = link.remote_name
        assert name is not None
        self.links[name] = link
        if link.target is not None:
            self._dial_state.pop(link.target, None)
        rl = link.remote_listen
        host, port = rl if rl is not None else ("", 0)
        if host in ("0.0.0.0", "::", "") and link.peername:
            host = link.peername[0]
        self.topology.note_direct(name, link.remote_uid, link.remote_incarnation, host, port)
        self._log.info("link up %s uid %016x protocol v%s%s", link.describe(), link.remote_uid,
                       link.version, " encrypted" if link._tx else "")
        self.stats["links_established"] += 1
        # The new neighbour gets everything we know: topology, then every channel's state.
        link.send(self._pack([GOSSIP, TOPOLOGY_CHANNEL, self.name, self.topology.encode()]))
        for ch in list(self.channels.values()):
            data = self._safe(ch.name, ch.gossiper.gossip)
            if data is not None:
                for part in self._encode(ch.name, data):
                    link.send(self._pack([GOSSIP, ch.name, self.name, part]))
        self._own_links_changed()

    def _link_closed(self, link: Link, was: str) -> None:
        self._conns.discard(link)
        name = link.remote_name
        if name is not None and self.links.get(name) is link:
            del self.links[name]
            self._log.log(logging.DEBUG if self._stopped else logging.INFO, "link down %s: %s",
                          link.describe(), link.close_reason)
            self.stats["links_lost"] += 1
            if link.target is not None:
                self._dial_state[link.target] = (time.monotonic() + self.dial_backoff[0],
                                                 self.dial_backoff[0])
            self._own_links_changed()
        elif link.established_at is None and link.outbound and link.target is not None:
            self._dial_failed(link.target, link.close_reason or "handshake failed")
        elif (link.established_at is None and not self._stopped and link.close_reason
              and link.close_reason.startswith("truncated frame")):
            # A frame that fail() never saw (the peer hung up mid-frame): say so too.
            self._log.info("connection %s ended in the handshake: %s", link.describe(),
                           link.close_reason)

    def _own_links_changed(self) -> None:
        if self._stopped:
            return
        links = {n: lk.remote_uid for n, lk in self.links.items()}
        if self.topology.set_own_links(links):
            self._topo_dirty.add(self.name)
            self._topology_changed()

    def _topology_changed(self) -> None:
        recs = {n: (r.host, r.port) for n, r in self.topology.peers.items()}
        gone = self.topology.garbage_collect()
        if gone:
            # Keep dialling a forgotten peer's address for a while, so the mesh heals
            # after a partition or a restart even if nobody lists that address.
            until = time.monotonic() + self.remember_for
            for n in gone:
                if recs[n][1] and recs[n][0] not in ("0.0.0.0", "::", ""):
                    self._remembered[recs[n]] = until
            while len(self._remembered) > 1024:
                self._remembered.pop(next(iter(self._remembered)))
        for n in gone:
            self._log.info("forgot unreachable peer %s", n)
            self._topo_dirty.discard(n)
            self.stats["peers_gc"] += 1
        if self._topo_dirty and self._topo_flush is None and not self._stopped:
            self._topo_flush = asyncio.get_running_loop().call_later(0.002, self._flush_topology)

    def _flush_topology(self) -> None:
        """Send coalesced topology changes to every neighbour."""
        self._topo_flush = None
        names = sorted(self._topo_dirty)
        self._topo_dirty.clear()
        recs = self.topology.encode(names)
        if not recs:
            return
        body = self._pack([GOSSIP, TOPOLOGY_CHANNEL, self.name, recs])
        for link in list(self.links.values()):
            link.send(body)
            self.stats["topology_bytes_out"] += len(body)

    # ------------------------------------------------------------- receive
    def _flush_pending(self) -> None:
        links, self._pending_flush = self._pending_flush, []
        for link in links:
            link._flush()

    def _on_message(self, link: Link, msg: Any) -> None:
        """One decoded message from an established link.  ProtocolError closes it."""
        if type(msg) is not list or not msg:
            raise ProtocolError("message is not a non-empty array")
        kind = msg[0]
        if kind == UNICAST:
            if len(msg) != 6:
                raise ProtocolError("unicast: wrong number of fields")
            _, channel, src, dst, ttl, payload = msg
            if type(channel) is not str or type(src) is not str or type(dst) is not str or (
                    type(ttl) is not int):
                raise ProtocolError("unicast: bad header field types")
            if dst == self.name:
                handler = self._handlers.get(channel)
                if handler is not None:
                    try:
                        handler(src, payload)
                    except Exception:
                        self.stats["handler_errors"] += 1
                        self._log.exception("unicast handler raised")
                    return
                ch = self.channels.get(channel)
                if ch is not None and type(payload) is bytes:
                    self._safe(channel, ch.gossiper.on_gossip_unicast, src, payload)
                else:
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
            nxt.send(self._pack([UNICAST, channel, src, dst, ttl - 1, payload]))
        elif kind == HEARTBEAT:
            return
        elif kind == BROADCAST:
            if len(msg) != 5:
                raise ProtocolError("broadcast: wrong number of fields")
            _, channel, src, ttl, payload = msg
            if type(channel) is not str or not valid_name(src) or type(ttl) is not int or (
                    type(payload) is not bytes):
                raise ProtocolError("broadcast: bad field types")
            if src == self.name:
                self.stats["broadcast_looped"] += 1
                return
            self.stats["broadcast_in"] += 1
            ch = self._channel_or_surrogate(channel)
            if ch is None:
                return
            data = self._safe(channel, ch.gossiper.on_gossip_broadcast, src, payload)
            if data is not None and ttl > 1:
                self._relay_broadcast(channel, src, ttl - 1, self._encode(channel, data),
                                      came_from=link)
        elif kind == GOSSIP:
            if len(msg) != 4:
                raise ProtocolError("gossip: wrong number of fields")
            _, channel, src, payload = msg
            if type(channel) is not str or type(src) is not str:
                raise ProtocolError("gossip: bad field types")
            if channel == TOPOLOGY_CHANNEL:
                self._on_topology(link, payload)
                return
            if channel in (DIGEST_CHANNEL, DIGEST_REPLY_CHANNEL):
                self._on_digest(link, payload, reply=channel == DIGEST_REPLY_CHANNEL)
                return
            if type(payload) is not bytes:
                raise ProtocolError("gossip: payload is not bytes")
            self.stats["gossip_in"] += 1
            ch = self._channel_or_surrogate(channel)
            if ch is None:
                return
            delta = self._safe(channel, ch.gossiper.on_gossip, payload)
            if delta is not None:
                self._gossip_to_neighbours(channel, self._encode(channel, delta), exclude=link)
        else:
            raise ProtocolError(f"unknown message kind {kind!r}")

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
            ch = GossipChannel(self, channel, SurrogateGossiper(window=max(
                10.0, 4 * self.gossip_interval)))
            self._surrogates[channel] = ch
        return ch

    def _on_topology(self, link: Link, payload: Any) -> None:
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
            self._log.warning("another peer claims our name: %s (we are uid %016x)", c, self.uid)
        for rec in new:
            self._topo_dirty.add(rec.name)
            lk = self.links.get(rec.name)
            if lk is not None and lk.remote_uid != rec.uid:
                lk.close(f"peer {rec.name} has a new life (uid {rec.uid:016x})")
        if new:
            self._topology_changed()
            # Records GC'd right away were not news: do not relay them.
            self._topo_dirty &= set(self.topology.peers)

    def _peers_refused(self, link: Link, n: int) -> None:
        self.stats["peers_refused"] += n
        now = time.monotonic()
        if now >= self._refused_log_at:  # at most one line per 10 s: gossip repeats it
            self._refused_log_at = now + 10.0
            self._log.warning(
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
            body = self._pack([GOSSIP, TOPOLOGY_CHANNEL, self.name, self.topology.encode(push)])
            link.send(body)
            self.stats["topology_bytes_out"] += len(body)
        if not reply:
            peers = self.topology.peers
            for name, t in theirs.items():
                rec = peers.get(name)
                if rec is None or t > (rec.incarnation, rec.uid, rec.version):
                    body = self._pack([GOSSIP, DIGEST_REPLY_CHANNEL, self.name, self._digest()])
                    link.send(body)
                    self.stats["topology_bytes_out"] += len(body)
                    break

    def _call_handler(self, handler: UnicastHandler, src: str, payload: Any) -> None:
        try:
            handler(src, payload)
        except Exception:
            self.stats["handler_errors"] += 1
            self._log.exception("unicast handler raised")

    def _encode(self, channel: str, data: Any) -> list[bytes]:
        """``data.encode()`` from a gossiper, checked: a bad one is logged, not fatal."""
        parts = self._safe(channel, data.encode) if hasattr(data, "encode") else None
        if type(parts) is not list or not all(type(p) is bytes for p in parts):
            self.stats["gossiper_errors"] += 1
            self._log.warning("channel %s: gossip data did not encode to a list of bytes",
                              channel)
            return []
        return parts

    def _safe(self, channel: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a gossiper: its exceptions are logged and counted, never fatal."""
        try:
            return fn(*args)
        except Exception as exc:
            self.stats["gossiper_errors"] += 1
            self._log.warning("channel %s: gossiper %s raised %r", channel,
                              getattr(fn, "__name__", fn), exc)
            return None

    # ------------------------------------------------------------- send
    def _send_gossip_unicast(self, channel: str, dst: str, msg: bytes) -> bool:
        if dst == self.name:
            ch = self.channels.get(channel)
            if ch is not None:
                asyncio.get_running_loop().call_soon(
                    self._safe, channel, ch.gossiper.on_gossip_unicast, dst, msg)
            return True
        return self.send_unicast(channel, dst, msg)

    def _originate_broadcast(self, channel: str, parts: list[bytes]) -> None:
        self._relay_broadcast(channel, self.name, DEFAULT_TTL, parts, came_from=None)

    def _relay_broadcast(self, channel: str, src: str, ttl: int, parts: list[bytes],
                         came_from: Link | None) -> None:
        hops = self.routes.broadcast_next_hops(src)
        if not hops:
            return
        for part in parts:
            if len(part) > self.max_payload:
                self._log.warning("channel %s: broadcast part of %d bytes too large, dropped",
                                  channel, len(part))
                continue
            body = self._pack([BROADCAST, channel, src, ttl, part])
            for hop in hops:
                link = self.links.get(hop)
                if link is not None and link is not came_from:
                    link.send(body)
                    self.stats["broadcast_out"] += 1
                    self.stats[f"bytes_out:{channel}"] += len(body)

    def _gossip_to_neighbours(self, channel: str, parts: list[bytes],
                              exclude: Link | None) -> None:
        links = [lk for lk in self.links.values() if lk is not exclude]
        if not links:
            return
        targets = self._rng.sample(links, min(len(links), self._fanout(len(self.links))))
        for part in parts:
            if len(part) > self.max_payload:
                self._log.warning("channel %s: gossip part of %d bytes too large, dropped",
                                  channel, len(part))
                continue
            body = self._pack([GOSSIP, channel, self.name, part])
            for link in targets:
                link.send(body)
                self.stats["gossip_out"] += 1
                self.stats[f"bytes_out:{channel}"] += len(body)

    def _fanout(self, n: int) -> int:
        return max(1, min(self.gossip_fanout, int(math.log2(n + 1)) + 1))

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
            for link in list(self._conns):
                if link.state == ESTABLISHED:
                    if now - link.last_recv > self.link_timeout and not starved:
                        link.fail(f"heartbeat timeout: silent for {now - link.last_recv:.2f}s")
                        continue
                    link.send(self._heartbeat_body)
                elif now - link.created > self.link_timeout and not starved:
                    link.fail(f"handshake timeout after {now - link.created:.2f}s")

    async def _gossip_loop(self) -> None:
        while True:
            await asyncio.sleep(self.gossip_interval * self._rng.uniform(0.9, 1.1))
            if not self.links:
                continue
            links = list(self.links.values())
            k = min(len(links), self._fanout(len(links)))
            # Topology anti-entropy sends a digest; the neighbour pushes back the
            # records we lack and asks for those it lacks (far fewer bytes at idle).
            body = self._pack([GOSSIP, DIGEST_CHANNEL, self.name, self._digest()])
            for link in self._rng.sample(links, k):
                link.send(body)
                self.stats["topology_bytes_out"] += len(body)
            for ch in list(self.channels.values()):
                data = self._safe(ch.name, ch.gossiper.gossip)
                if data is not None:
                    self._gossip_to_neighbours(ch.name, self._encode(ch.name, data), exclude=None)

    def _dial_failed(self, addr: tuple[str, int], why: str) -> None:
        lo, hi = self.dial_backoff
        _, prev = self._dial_state.get(addr, (0.0, lo / 2))
        backoff = min(hi, prev * 2)
        self._dial_state[addr] = (time.monotonic() + backoff * self._rng.uniform(0.5, 1.5),
                                  backoff)
        self._log.debug("dial %s:%s failed (%s); next try in ~%.2fs", *addr, why, backoff)

    async def _dial(self, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(
                lambda: self._new_link(outbound=True, target=addr), addr[0], addr[1]),
                self.link_timeout)
            # Backoff is reset when the handshake completes, or grown if it fails.
            lo, _ = self.dial_backoff
            _, prev = self._dial_state.get(addr, (0.0, lo / 2))
            self._dial_state[addr] = (time.monotonic() + self.link_timeout, prev)
        except (TimeoutError, OSError) as exc:
            self._dial_failed(addr, repr(exc))
        finally:
            self._dialing.pop(addr, None)

    def _dial_targets(self) -> set[tuple[str, int]]:
        busy: set[tuple[str, int]] = set(self._self_addrs)
        for link in self._conns:
            for a in (link.target, link.remote_listen):
                if a is not None:
                    busy.add(a)
        targets = {a for a in self._initial if a not in busy}
        now = time.monotonic()
        for a, until in list(self._remembered.items()):
            if until < now:
                del self._remembered[a]
            elif a not in busy:
                targets.add(a)
        for rec in self.topology.peers.values():
            if rec.name == self.name or rec.name in self.links or rec.name in self._filter:
                continue
            if rec.port and rec.host not in ("0.0.0.0", "::", ""):
                a = (rec.host, rec.port)
                if a not in busy:
                    targets.add(a)
        return targets

    async def _connect_loop(self) -> None:
        while True:
            now = time.monotonic()
            targets = self._dial_targets()
            if len(self._dial_state) > 2 * self.topology.max_peers + 1024:
                # Backoff state of addresses nobody lists any more: bounded, not kept.
                for a in [a for a in self._dial_state
                          if a not in targets and a not in self._dialing]:
                    del self._dial_state[a]
            for addr in targets:
                if addr in self._dialing:
                    continue
                next_try, _ = self._dial_state.get(addr, (0.0, 0.0))
                if now < next_try:
                    continue
                self._dialing[addr] = asyncio.create_task(self._dial(addr))
            await asyncio.sleep(self.connect_interval * self._rng.uniform(0.8, 1.2))

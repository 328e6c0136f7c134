"""One meshraft member: a transport, a Raft node, its storage and the kv server, as a unit.

This module is the composition root of a member: it owns the wiring that
``meshraft serve`` runs, so the same member can be started from Python and from
tests. ``MemberConfig`` says what to run; ``MeshTransport`` and ``UdpTransport``
each know their Raft transport factory, how Raft names the peers, how a member's
address given to ``member add`` becomes a Raft address, and their status;
``Member`` starts them in order (client port, transport, Raft node, kv server) and
stops them in reverse::

    async with Member(MemberConfig(node_id="1", peers={"1": ("127.0.0.1", 7001)},
                                   listen=("127.0.0.1", 7001),
                                   client=("127.0.0.1", 8001), data_dir=path)) as m:
        ...  # clients talk to m.client_address

It uses only the public APIs of the layers it wires (``meshraft.mesh.Router``,
``meshraft.meshconn.create_mesh_endpoint``, ``meshraft.raft``, ``meshraft.kv``).
It never parses command lines, prints or exits: a member that cannot start raises
``StartupError`` with a one-line reason, and the CLI decides what the user sees
(docs/architecture.md#layers: the composition root).
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from meshraft.kv.compactor import DEFAULT_RETENTION, Compactor
from meshraft.kv.lease import DEFAULT_MAX_LEASES
from meshraft.kv.lease_manager import LeaseManager
from meshraft.kv.maintenance import register as register_maintenance
from meshraft.kv.server import KVServer
from meshraft.kv.state_machine import KVStateMachine, Limits
from meshraft.kv.watch import WatchLimits

__all__ = ["Member", "MemberConfig", "MeshTransport", "StartupError", "Transport",
           "UdpTransport", "make_transport", "parse_hostport"]

log = logging.getLogger("meshraft.member")

TRANSPORTS = ("mesh", "udp")


class StartupError(Exception):
    """The member could not start; the message says why, in one line."""


def parse_hostport(text: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); ValueError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


@dataclass
class MemberConfig:
    """What one member runs. ``peers``: the initial members' peer addresses (this one
    included, unless ``listen`` is given); ``listen``: this member's peer address;
    ``client``: its client address (port 0: any free port)."""

    node_id: str
    peers: dict[str, tuple[str, int]]
    listen: tuple[str, int]
    client: tuple[str, int]
    data_dir: Path
    transport: str = "mesh"  # "mesh" or "udp": what Raft's datagrams travel over
    password: bytes | None = None  # the mesh's password (mesh transport only)
    join: bool = False  # join a running cluster instead of bootstrapping
    snapshot_entries: int | None = None
    client_tls: ssl.SSLContext | None = None
    client_token: bytes | None = None
    # (max key bytes, max value bytes[, max txn ops]) from clients: state_machine.Limits
    limits: tuple[int, ...] | None = None
    max_leases: int = DEFAULT_MAX_LEASES  # leases this member lets clients grant
    # The leader compacts history to about this many revisions (0: never; meshraft.kv.compactor)
    auto_compact_retention: int = DEFAULT_RETENTION
    # Serve /metrics, /health, /livez, /readyz over HTTP here (meshraft.ops; port 0: any)
    metrics: tuple[str, int] | None = None
    # The watch service's bounds (serve --max-watches-per-connection, ...; meshraft.kv.watch)
    watch: WatchLimits | None = None


class _MemberLog(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[member {self.extra['node']}] {msg}", kwargs


ProtocolFactory = Callable[[], Any]


class Transport(Protocol):
    """What Raft's datagrams travel over, as the member wires it."""

    kind: str

    async def start(self) -> None: ...

    async def factory(self, protocol_factory: ProtocolFactory) -> Any:
        """Raft's transport factory (see ``RaftNode.start``)."""

    def raft_peers(self) -> dict[str, Any]:
        """The initial members as Raft addresses them."""

    def member_address(self, node_id: str, address: str) -> Any:
        """A new member's HOST:PORT (from ``member add``) as Raft addresses it;
        ValueError if it is not HOST:PORT."""

    def member_addresses(self) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        """How to show members' addresses, when Raft's are not peer addresses."""

    def status(self) -> dict[str, Any]:
        """The ``transport`` and ``mesh`` sections of ``status``."""

    async def stop(self) -> None: ...


class MeshTransport:
    """Raft over the gossip mesh: members are addressed by mesh name."""

    kind = "mesh"

    def __init__(self, config: MemberConfig) -> None:
        try:
            from meshraft.mesh import Router
            from meshraft.meshconn import create_mesh_endpoint
        except ImportError as exc:
            raise StartupError(f"the mesh transport is not available: {exc}") from None
        self._router_class = Router
        self._create_endpoint = create_mesh_endpoint
        self.config = config
        self.router: Any = None
        self.endpoint: Any = None  # Raft's MeshPacketConn, once the node asked for it

    async def start(self) -> None:
        c = self.config
        others = [f"{h}:{p}" for pid, (h, p) in c.peers.items() if pid != c.node_id]
        try:
            self.router = await self._router_class.start(
                name=c.node_id, listen=c.listen, peers=others, password=c.password)
        except OSError as exc:
            raise StartupError(f"cannot listen on {c.listen[0]}:{c.listen[1]}: {exc}") from None

    async def factory(self, protocol_factory: ProtocolFactory) -> Any:
        made = await self._create_endpoint(self.router, protocol_factory, channel="raft")
        self.endpoint = made[0]
        return made

    def raft_peers(self) -> dict[str, Any]:
        return {pid: pid for pid in self.config.peers}

    def member_address(self, node_id: str, address: str) -> Any:
        # Raft addresses members by mesh name; the new member dials in (--join)
        # and the mesh learns its address from gossip.
        parse_hostport(address)
        return node_id

    def member_addresses(self) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        return self._learned_addresses

    def _learned_addresses(self, names: dict[str, Any]) -> dict[str, Any]:
        # Raft knows members by mesh name: show the peer address the mesh has
        # learned for each (None while a member is not in the mesh).
        known = {peer.get("name"): peer.get("address")
                 for peer in self.router.status().get("peers", []) if isinstance(peer, dict)}
        return {nid: known.get(nid) for nid in names}

    def status(self) -> dict[str, Any]:
        return {"transport": "mesh", "mesh": self.router.status()}

    async def stop(self) -> None:
        if self.router is not None:
            await self.router.stop()


class UdpTransport:
    """Raft over plain UDP: members are addressed by (host, port)."""

    kind = "udp"

    def __init__(self, config: MemberConfig) -> None:
        from meshraft.raft import udp_transport_factory

        self.config = config
        self._udp = udp_transport_factory(config.listen)

    async def start(self) -> None:
        pass  # the socket is bound when Raft asks for it (factory)

    async def factory(self, protocol_factory: ProtocolFactory) -> Any:
        try:
            return await self._udp(protocol_factory)
        except OSError as exc:
            host, port = self.config.listen
            raise StartupError(f"cannot bind UDP {host}:{port}: {exc}") from None

    def raft_peers(self) -> dict[str, Any]:
        return dict(self.config.peers)

    def member_address(self, node_id: str, address: str) -> Any:
        return parse_hostport(address)

    def member_addresses(self) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        return None

    def status(self) -> dict[str, Any]:
        return {"transport": "udp", "mesh": {"peers": [], "routes": {}}}

    async def stop(self) -> None:
        pass  # Raft's node closes the socket it was given


def make_transport(config: MemberConfig) -> Transport:
    """The transport ``config.transport`` names (StartupError if it is not available)."""
    if config.transport == "mesh":
        return MeshTransport(config)
    if config.transport == "udp":
        return UdpTransport(config)
    raise StartupError(f"unknown transport {config.transport!r} (one of {TRANSPORTS})")


class Member:
    """One running member. ``await start()`` / ``await stop()``, or ``async with``.

    After start: ``node`` (the Raft node), ``server`` (the kv server), ``sm`` (the
    state machine), ``transport`` and ``client_address`` (the bound client address).
    """

    def __init__(self, config: MemberConfig) -> None:
        self.config = config
        self.log = _MemberLog(log, {"node": config.node_id})
        self.transport: Transport | None = None
        self.sm: KVStateMachine | None = None
        self.node: Any = None
        self.server: KVServer | None = None
        self.leases: LeaseManager | None = None  # the lease clocks (meshraft.kv.lease_manager)
        self.compactor: Compactor | None = None
        self.ops: Any = None  # meshraft.ops.http.OpsServer, with config.metrics
        self._client_sock: socket.socket | None = None

    @property
    def client_address(self) -> tuple[str, int]:
        if self.server is None:
            raise RuntimeError("the member is not running")
        return self.server.host, self.server.port

    @property
    def client_endpoint(self) -> str:
        """``HOST:PORT`` of the client address, as clients take it."""
        host, port = self.client_address
        return f"{host}:{port}"

    async def start(self) -> None:
        """Start the member; on failure, stop what was started and raise StartupError."""
        from meshraft.raft import NodeConfig, RaftNode, StorageError

        c = self.config
        self.transport = make_transport(c)
        # Take the client port first: a member that cannot serve clients should not join Raft.
        try:
            self._client_sock = socket.create_server(c.client, reuse_port=False)
        except OSError as exc:
            raise StartupError(f"cannot listen for clients on {c.client[0]}:{c.client[1]}: "
                               f"{exc.strerror or exc}") from None
        try:
            await self.transport.start()
            self.sm = KVStateMachine(Limits(*c.limits) if c.limits else None)
            node_config = NodeConfig()
            if c.snapshot_entries is not None:
                node_config.snapshot_entries = c.snapshot_entries
                node_config.compaction_margin = min(node_config.compaction_margin,
                                                    c.snapshot_entries)
            try:
                self.node = await RaftNode.start(
                    node_id=c.node_id, peers=self.transport.raft_peers(),
                    transport_factory=self.transport.factory, data_dir=c.data_dir,
                    state_machine=self.sm, join=c.join, config=node_config)
            except StorageError as exc:
                raise StartupError(str(exc)) from None
            self.server = KVServer(
                self.node, self.sm, host=c.client[0], port=c.client[1],
                status_extra=self._status_extra,
                member_address=self.transport.member_address,
                member_addresses=self.transport.member_addresses(),
                ssl=c.client_tls, token=c.client_token, watch_limits=c.watch)
            # snapshot download and move-leader (meshraft.kv.maintenance)
            register_maintenance(self.server)
            self.leases = LeaseManager(self.node, self.sm, max_leases=c.max_leases)
            self.leases.install(self.server)
            await self.server.start(sock=self._client_sock)
            self.leases.start()
            if c.auto_compact_retention > 0:
                self.compactor = Compactor(self.node, self.sm, c.auto_compact_retention)
                self.compactor.start()
            if c.metrics is not None:
                await self._start_ops(c.metrics)
        except BaseException:
            await self.stop()
            raise
        self.log.info("started: clients on %s, peers on %s:%d (%s)", self.client_endpoint,
                      c.listen[0], c.listen[1], self.transport.kind)

    def _status_extra(self) -> dict[str, Any]:
        """The transport's sections of ``status``, and where /metrics and /health are
        served (``metrics``: HOST:PORT, or None: how ``endpoint health`` finds them)."""
        extra = self.transport.status() if self.transport is not None else {}
        extra["metrics"] = self.ops.address if self.ops is not None else None
        return extra

    async def _start_ops(self, address: tuple[str, int]) -> None:
        from meshraft.ops.http import OpsServer
        from meshraft.ops.metrics import MemberMetrics, MetricsSources

        transport = self.transport
        metrics = MemberMetrics(MetricsSources(
            node=self.node, server=self.server, sm=self.sm,
            router=getattr(transport, "router", None),
            endpoint=getattr(transport, "endpoint", None), data_dir=self.config.data_dir))
        ops = OpsServer(self.node, metrics, host=address[0], port=address[1])
        try:
            await ops.start()
        except OSError as exc:
            raise StartupError(f"cannot serve metrics on {address[0]}:{address[1]}: "
                               f"{exc.strerror or exc}") from None
        metrics.attach()
        self.ops = ops
        self.log.info("metrics and health on http://%s/metrics", ops.address)

    async def stop(self) -> None:
        """Stop the kv server, the node and the transport (safe to call twice)."""
        compactor, self.compactor = self.compactor, None
        if compactor is not None:  # first: it must not propose to a stopping node
            await compactor.stop()
        leases, self.leases = self.leases, None
        if leases is not None:  # also first, for the same reason
            await leases.stop()
        server, node, transport, sock = self.server, self.node, self.transport, self._client_sock
        ops, self.ops = self.ops, None
        self.server = self.node = self.transport = self._client_sock = None
        try:
            if ops is not None:
                if ops.metrics is not None:
                    ops.metrics.detach()
                await ops.stop()
            if server is not None:
                await server.stop()
            if node is not None:
                await node.stop()
        finally:
            if transport is not None:
                await transport.stop()
            if sock is not None:
                sock.close()

    async def __aenter__(self) -> Member:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


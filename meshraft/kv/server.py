"""The kv server: the client protocol in front of one Raft node.

This module owns client connections on the client port and the translation of
requests into node operations: writes become ``node.propose_future()`` (on any
node — a follower's node forwards through Raft), linearizable reads wait for
``node.read_index_future()`` and then read the local state machine, serializable
reads skip the barrier. It must never let a client crash the process or grow
memory without bound: every frame is capped, every body decoded with strict
limits, in-flight proposals are bounded (beyond: ``busy``), and a broken
connection only ends that connection.

It uses only the node's public API (propose_future, read_index_future,
leader_change_future, propose for large commands' fragments, status) and knows
nothing of the mesh or the CLI; ``status_extra`` lets the embedder add its own
sections (the CLI adds the mesh's) to ``status``.

Security: with ``ssl`` the port speaks only TLS (a context from
``meshraft.kv.tls.server_context``; with a trusted CA, mutual TLS). With
``token`` every request must carry it (``"token"``), compared in constant time;
a missing or wrong one gets ``unauthorized`` and nothing else happens. Listening
on a non-loopback address without a token is logged as a WARNING at start.

A node that stopped on an internal error (fail-stop, ``raft.errors.NodeFailed``)
may hold half-changed state: once the server knows (the first request that meets
``NodeFailed``, or the node's ``fail_stopped``, read on every request), every
request but status, ping and members gets ``unavailable`` with the node's reason at
once, serializable reads included (a client with other endpoints moves on to them).

Why this module is over 600 lines: connection handling (TLS, bounds, framing) and
the translation of each request into node calls (leader-change retries, large
commands' fragments, membership) share the server's limits, counters and
shutdown state; split apart, each half would reach into the other's.
"""

# ruff: noqa: ASYNC109  (a per-call timeout argument is part of the node's and client's API)

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import PurePath
from typing import Any

from meshraft.kv import protocol as p
from meshraft.kv.state_machine import (
    DEFAULT_FRAGMENT_BYTES,
    INCOMPLETE,
    CommandError,
    Compacted,
    FutureRevision,
    KVStateMachine,
    check_revision,
    check_write,
    encode_command,
    fragment_command,
    validate_key,
    validate_prefix,
)
from meshraft.kv.tls import is_loopback, token_matches
from meshraft.kv.txn import APPLY_MAX_TXN_OPS
from meshraft.kv.watch import WATCH_OPS, WatchConnection, WatchHub, WatchLimits
from meshraft.raft import errors

log = logging.getLogger("meshraft.kv.server")

DEFAULT_MAX_INFLIGHT = 1024
MAX_REQUESTS_PER_CONNECTION = 256
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_REQUEST_TIMEOUT = 5.0
MAX_REQUEST_TIMEOUT = 60.0
# A client that starts a frame and then goes silent gets dropped after this long.
PARTIAL_FRAME_TIMEOUT = 30.0
LIST_PAGE_MAX = 10_000
MEMBER_OPS = ("members", "member_add", "member_promote", "member_remove")
# Requests a member that stopped serving still answers (they describe it).
ALWAYS_OPS = ("status", "ping", "members")
BUILTIN_OPS = ("put", "delete", "cas", "compact", "txn", "get", "list", *ALWAYS_OPS, *MEMBER_OPS,
               *WATCH_OPS)

# An operation served by another module (see KVServer.register_op).
OpHandler = Callable[["KVServer", Any, dict[str, Any], float], Awaitable[dict[str, Any]]]


class _NodeLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"[node {self.extra['node']}] {msg}", kwargs


def _plain(value: Any, depth: int = 0) -> Any:
    """Status data as msgpack-able plain values (dict keys as strings)."""
    if depth > 8:
        return str(value)
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "value") and hasattr(value, "name"):  # enums
        return _plain(value.value, depth + 1)
    return str(value)


def _error_kind(exc: BaseException) -> str:
    """Map the node's exceptions (meshraft.raft.errors) onto protocol codes."""
    if isinstance(exc, errors.Busy):
        return p.BUSY
    if isinstance(exc, errors.NotLeader):
        return p.NOT_LEADER
    if isinstance(exc, errors.Timeout | TimeoutError):
        return p.TIMEOUT
    if isinstance(exc, errors.RaftError):  # Unavailable, StorageFailed, Removed
        return p.UNAVAILABLE
    return p.INTERNAL


def _revision_error(rid: Any, exc: Compacted | FutureRevision, current: int) -> dict[str, Any]:
    """A read at a revision that is compacted or in the future, with the revisions."""
    if isinstance(exc, Compacted):
        return p.error_reply(rid, exc.code, exc.message, compact_revision=exc.compact_revision,
                             revision=current)
    return p.error_reply(rid, exc.code, exc.message, revision=current)


class _FragmentFailed(Exception):
    """A large command's fragments did not all make it: certainly not applied."""


class KVServer:
    """Serves the client protocol for one node and its state machine."""

    def __init__(
        self,
        node: Any,
        state_machine: KVStateMachine,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        max_frame: int | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        status_extra: Callable[[], dict[str, Any]] | None = None,
        max_entry: int = DEFAULT_FRAGMENT_BYTES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        member_address: Callable[[str, str], Any] | None = None,
        member_addresses: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        ssl: _ssl.SSLContext | None = None,
        token: bytes | None = None,
        watch_limits: WatchLimits | None = None,
    ) -> None:
        self.node = node
        self.sm = state_machine
        self.limits = state_machine.limits
        self.host = host
        self.port = port
        self.max_inflight = max_inflight
        self.max_frame = max_frame or p.max_frame_for(self.limits.max_key, self.limits.max_value)
        self.request_timeout = request_timeout
        self.status_extra = status_extra
        # Commands larger than this go through the log as several fragment entries.
        self.max_entry = max_entry
        self.max_connections = max_connections
        # "HOST:PORT" from `member add` -> the node's transport address for that member
        self.member_address = member_address
        # The node's member addresses -> what `members` shows (HOST:PORT), for transports
        # whose Raft addresses are not network addresses (the mesh's are peer names)
        self.member_addresses = member_addresses
        self.ssl = ssl
        if token is not None and not token:
            raise ValueError("an empty client token would let everyone in")
        self.token = token
        self.inflight = 0
        self.stats = {"requests": 0, "busy": 0, "bad_frames": 0, "connections": 0,
                      "unauthorized": 0}
        self._server: asyncio.base_events.Server | None = None
        self._tls_sock: socket.socket | None = None  # the listening socket in TLS mode
        self._accept_task: asyncio.Task | None = None
        self._handshakes: set[asyncio.Task] = set()
        self._conn_tasks: set[asyncio.Task] = set()
        self._requests: set[asyncio.Task] = set()
        self._stopping = False
        # Why the node stopped serving (fail-stop on an internal error), once known.
        self._node_failed: str | None = None
        self.log = _NodeLog(log, {"node": getattr(node, "node_id", "?")})
        # Watchers of every connection (meshraft.kv.watch); listens to the state machine.
        self.watch = WatchHub(state_machine, node, watch_limits,
                              _NodeLog(logging.getLogger("meshraft.kv.watch"),
                                       {"node": getattr(node, "node_id", "?")}))
        # Operations that live in their own modules (maintenance, ...), by name.
        self._ops: dict[str, OpHandler] = {}
        # Called after every request with (op, result code or "ok", seconds taken):
        # how metrics see requests without this module knowing about them.
        self.request_observers: list[Callable[[str, str, float], None]] = []

    def register_op(self, name: str, handler: OpHandler) -> None:
        """Serve requests with ``op == name`` by ``await handler(server, rid, body,
        timeout)``, which returns the reply body (``protocol.ok_reply``/``error_reply``)
        or raises ``CommandError``/``ProtocolError``. Checks that apply to every request
        (token, stopping, failed or removed node) run before the handler."""
        if name in self._ops or name in BUILTIN_OPS:
            raise ValueError(f"operation {name!r} is already served")
        self._ops[name] = handler

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on (host, port), or on ``sock`` if given (already bound)."""
        self.watch.start()
        if self.ssl is not None:
            # TLS: our own accept loop, so a plain-TCP client can be told so (see _tls_conn)
            if sock is None:
                sock = socket.create_server((self.host, self.port))
            sock.setblocking(False)
            self._tls_sock = sock
            self._accept_task = asyncio.create_task(self._accept_loop(sock))
        elif sock is not None:
            self._server = await asyncio.start_server(self._on_connection, sock=sock,
                                                      limit=2**16)
        else:
            self._server = await asyncio.start_server(
                self._on_connection, self.host, self.port, limit=2**16
            )
        if self._server is not None:
            sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        mtls = self.ssl is not None and self.ssl.verify_mode == _ssl.CERT_REQUIRED
        self.log.info("serving clients on %s:%s (%s%s)", self.host, self.port,
                      "mutual TLS" if mtls else "TLS" if self.ssl else "plain TCP",
                      ", token required" if self.token else "")
        if self.token is None and not is_loopback(self.host):
            self.log.warning(
                "serving clients on non-loopback address %s:%s WITHOUT a client token: "
                "anyone who can reach this port can read and write every key (give "
                "--client-token-file, and TLS so the token is not sent in the clear)",
                self.host, self.port)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, let requests in progress finish (up to ``grace`` seconds),
        answer new ones ``unavailable``, then close every connection."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(BaseException):
                await self._accept_task
            self._accept_task = None
            for t in list(self._handshakes):
                t.cancel()
            if self._tls_sock is not None:
                self._tls_sock.close()
        if self._requests:
            await asyncio.wait(list(self._requests), timeout=grace)
        await self.watch.stop()  # every watch cancelled "unavailable": clients move on
        for task in list(self._conn_tasks):
            task.cancel()
        for task in list(self._conn_tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    # -- TLS ---------------------------------------------------------------------------------

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                self.log.warning("accepting a client connection failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if len(self._handshakes) >= self.max_connections:
                self.stats["busy"] += 1  # a flood of silent connections: bounded, like clients
                conn.close()
                continue
            t = asyncio.create_task(self._tls_conn(conn, addr))
            self._handshakes.add(t)
            t.add_done_callback(self._handshakes.discard)

    async def _tls_conn(self, conn: socket.socket, addr: Any) -> None:
        """Look at a new connection's first byte without consuming it: a TLS handshake
        record (0x16) goes on to TLS; anything else is a plain-TCP client, which gets
        one plain error frame saying so (instead of a silent close it could not tell
        from a crash, and report as "outcome unknown")."""
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        who = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        try:
            readable = loop.create_future()
            loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
            try:
                await asyncio.wait_for(readable, PARTIAL_FRAME_TIMEOUT)
            finally:
                loop.remove_reader(conn.fileno())
            first = conn.recv(1, socket.MSG_PEEK)
        except (OSError, TimeoutError):
            conn.close()
            return
        except asyncio.CancelledError:  # the server is stopping
            conn.close()
            raise
        if not first:
            conn.close()
            return
        if first[0] != 0x16:
            self.stats["bad_frames"] += 1
            self.log.info("client %s sent plain TCP to the TLS client port; told it so", who)
            try:
                with contextlib.suppress(BlockingIOError):
                    conn.recv(1 << 16)  # what it sent: unread bytes would turn close into RST
                await loop.sock_sendall(conn, p.encode_frame(p.error_reply(
                    None, p.TLS_REQUIRED, "this client port speaks TLS only; connect with TLS "
                    "(--cacert, and --cert/--key if it asks for a client certificate)")))
                conn.shutdown(socket.SHUT_WR)
                async with asyncio.timeout(1.0):
                    while await loop.sock_recv(conn, 1 << 16):
                        pass
            except (OSError, TimeoutError):
                pass
            finally:
                conn.close()
            return
        reader = asyncio.StreamReader(limit=2**16)
        protocol = asyncio.StreamReaderProtocol(reader, self._on_connection)
        try:
            await loop.connect_accepted_socket(lambda: protocol, conn, ssl=self.ssl,
                                               ssl_handshake_timeout=10.0)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.log.info("TLS handshake with client %s failed: %s", who, exc)
            conn.close()

    # -- connections -------------------------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        if len(self._conn_tasks) >= self.max_connections:
            self.stats["busy"] += 1
            with contextlib.suppress(Exception):
                await self._send(writer, p.error_reply(
                    None, p.BUSY, f"too many client connections ({self.max_connections})"))
            writer.close()
            return
        self._conn_tasks.add(task)
        self.stats["connections"] += 1
        slots = asyncio.Semaphore(MAX_REQUESTS_PER_CONNECTION)
        # The connection's watches and their pushed frames (meshraft.kv.watch).
        watches = self.watch.connection(writer, peer)
        pending: set[asyncio.Task] = set()
        try:
            while True:
                try:
                    header = await reader.readexactly(p.HEADER.size)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        self.log.info("client %s sent a truncated frame header", peer)
                    if pending:  # a half-closed client still gets the answers it asked for
                        await asyncio.wait(list(pending), timeout=MAX_REQUEST_TIMEOUT)
                    return
                (size,) = p.HEADER.unpack(header)
                if size > self.max_frame:
                    # The length is not to be trusted, so neither is the framing: reply, close.
                    self.stats["bad_frames"] += 1
                    self.log.info("client %s: frame of %d bytes over the cap; closing", peer, size)
                    err = p.FrameTooLarge(size, self.max_frame)
                    await self._send(writer, p.error_reply(
                        None, p.TOO_LARGE, err.message + "; closing the connection"))
                    return
                try:
                    async with asyncio.timeout(PARTIAL_FRAME_TIMEOUT):  # no task per frame
                        payload = await reader.readexactly(size)
                except (asyncio.IncompleteReadError, TimeoutError):
                    self.stats["bad_frames"] += 1
                    self.log.info("client %s sent a truncated frame (%d bytes announced)",
                                  peer, size)
                    with contextlib.suppress(Exception):
                        await self._send(writer, p.error_reply(
                            None, p.BAD_REQUEST, "truncated frame; closing the connection"))
                    return
                await slots.acquire()
                t = asyncio.create_task(self._serve_one(payload, writer, slots, watches))
                pending.add(t)
                t.add_done_callback(pending.discard)
                self._requests.add(t)
                t.add_done_callback(self._requests.discard)
        except (ConnectionError, OSError):
            return
        finally:
            for t in list(pending):
                t.cancel()
            watches.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._conn_tasks.discard(task)

    async def _send(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        if writer.is_closing():
            return
        writer.write(p.encode_frame(body))
        await writer.drain()

    async def _serve_one(
        self, payload: bytes, writer: asyncio.StreamWriter, slots: asyncio.Semaphore,
        watches: WatchConnection | None = None,
    ) -> None:
        try:
            reply = await self.handle_payload(payload, watches)
            with contextlib.suppress(ConnectionError, OSError):
                await self._send(writer, reply)
        finally:
            slots.release()

    # -- requests ----------------------------------------------------------------------------

    async def handle_payload(self, payload: bytes,
                             watches: WatchConnection | None = None) -> dict[str, Any]:
        """One request frame's body -> its reply body. Never raises. ``watches``: the
        connection's watch side (watch requests need it; they fail without one)."""
        self.stats["requests"] += 1
        try:
            # A transaction's lists may hold up to the ceiling of ops, so that a member's
            # own, smaller limit is a clear error (from check_write), not an undecodable frame.
            body = p.decode_body(payload, self.max_frame, max_items=max(64, APPLY_MAX_TXN_OPS))
        except p.ProtocolError as exc:
            self.stats["bad_frames"] += 1
            return p.error_reply(None, exc.code, exc.message)
        rid = body.get("id")
        if self.token is not None and not token_matches(body.get("token"), self.token):
            self.stats["unauthorized"] += 1
            n = self.stats["unauthorized"]
            if n == 1 or n % 1000 == 0:  # noticed, without letting a client flood the log
                self.log.warning("refused %d request(s) without a valid client token", n)
            reply = p.error_reply(
                rid, p.UNAUTHORIZED,
                "unauthorized: " + ("missing client token" if body.get("token") is None
                                    else "wrong client token"))
            return reply  # no node id or leader either: an outsider learns nothing
        started = time.monotonic()
        try:
            reply = await self.handle(body, watches)
        except (CommandError, p.ProtocolError) as exc:
            reply = p.error_reply(rid, exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not take the connection down with it
            self.log.exception("request %r failed", body.get("op"))
            reply = p.error_reply(rid, p.INTERNAL, f"internal error: {exc.__class__.__name__}")
        # Who answered and who leads, so clients can find the leader's endpoint.
        reply["node"] = str(getattr(self.node, "node_id", ""))
        if "leader" not in reply:
            leader = getattr(self.node, "leader_id", None)
            reply["leader"] = None if leader is None else str(leader)
        if self.request_observers:
            self._observe(body.get("op"), reply, time.monotonic() - started)
        return reply

    def _observe(self, op: Any, reply: dict[str, Any], seconds: float) -> None:
        # Operation names are bounded (unknown ones are one label), never keys.
        name = op if isinstance(op, str) and (op in BUILTIN_OPS or op in self._ops) else "other"
        code = "ok" if reply.get("ok") else str(reply.get("error", "unknown"))
        for observer in self.request_observers:
            try:
                observer(name, code, seconds)
            except Exception:  # metrics must never fail a request
                self.log.exception("a request observer failed")

    def _timeout(self, body: dict[str, Any]) -> float:
        t = body.get("timeout")
        if t is None:
            return self.request_timeout
        if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
            raise p.ProtocolError(p.BAD_REQUEST, "timeout must be a positive number of seconds")
        return min(float(t), MAX_REQUEST_TIMEOUT)

    async def handle(self, body: dict[str, Any],
                     watches: WatchConnection | None = None) -> dict[str, Any]:
        rid = body.get("id")
        op = body.get("op")
        if not isinstance(op, str):
            return p.error_reply(rid, p.BAD_REQUEST, "request needs an 'op' string")
        timeout = self._timeout(body)
        if self._stopping:
            return p.error_reply(rid, p.UNAVAILABLE, "this member is shutting down")
        if op not in ALWAYS_OPS and (
                self._node_failed is not None or self._fail_stopped() is not None):
            return p.error_reply(rid, p.UNAVAILABLE,
                                 f"node {getattr(self.node, 'node_id', '?')}: "
                                 f"{self._node_failed}; ask another member")
        if op not in ALWAYS_OPS and getattr(self.node, "role", "") == "removed":
            # Not even a serializable read: its copy stops at its removal.
            return p.error_reply(rid, p.UNAVAILABLE,
                                 f"node {getattr(self.node, 'node_id', '?')} was removed from "
                                 "the cluster; it serves nothing more (ask another member)")
        if op in ("put", "delete", "cas", "compact", "txn"):
            return await self._write(rid, body, timeout)
        if op == "get":
            key = validate_key(body.get("key"), self.limits)
            revision = check_revision(body.get("revision"))
            await self._barrier(body, timeout)
            try:
                kv = self.sm.get(key, revision)
            except (Compacted, FutureRevision) as exc:
                return _revision_error(rid, exc, self.sm.revision)
            if kv is None:
                return p.error_reply(rid, p.NOT_FOUND, "key not found", revision=self.sm.revision)
            return p.ok_reply(rid, {"kv": kv.to_wire(), "revision": self.sm.revision})
        if op == "list":
            return await self._list(rid, body, timeout)
        if op in WATCH_OPS:
            return self.watch.handle(op, rid, body, watches)
        if op == "status":
            return p.ok_reply(rid, self.status())
        if op == "ping":
            return p.ok_reply(rid, {})
        if op in MEMBER_OPS:
            return await self._member(rid, op, body, timeout)
        handler = self._ops.get(op)
        if handler is not None:
            return await handler(self, rid, body, timeout)
        return p.error_reply(rid, p.BAD_REQUEST, f"unknown operation {op[:64]!r}")

    def _fail_stopped(self) -> str | None:
        """Has the node stopped after an internal error (fail-stop) that no request has
        met yet? Asked on every request, so not one is served from half-changed state.
        (A failed disk is not a fail-stop: its member still serves serializable reads.)"""
        reason = getattr(self.node, "fail_stopped", None)
        if reason is not None:
            self._note_failure(errors.NodeFailed(str(reason)))
        return reason

    def _note_failure(self, exc: BaseException) -> None:
        if isinstance(exc, errors.NodeFailed) and self._node_failed is None:
            self._node_failed = str(exc)
            self.log.error("the node stopped serving; every request but status now gets "
                           "unavailable: %s", exc)

    async def _barrier(self, body: dict[str, Any], timeout: float) -> None:
        serializable = body.get("serializable", False)
        if not isinstance(serializable, bool):
            raise p.ProtocolError(p.BAD_REQUEST, "serializable must be true or false")
        if serializable:
            return
        try:
            # Reads have no side effect: always safe to ask again after a leader change.
            await self._retry_on_leader_change(lambda _: self.node.read_index_future(),
                                               timeout, True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._note_failure(exc)
            kind = _error_kind(exc)
            if kind == p.INTERNAL:
                raise
            # A read that did not happen has no side effect: never "outcome unknown".
            code = p.UNAVAILABLE if kind == p.TIMEOUT else kind
            raise p.ProtocolError(code, f"read barrier failed: {exc or kind}") from None

    async def _list(self, rid: Any, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        prefix = validate_prefix(body.get("prefix", b""), self.limits)
        after = body.get("after")
        if after is not None:
            after = validate_prefix(after, self.limits)
        limit = body.get("limit", LIST_PAGE_MAX)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
            raise p.ProtocolError(p.BAD_REQUEST, "limit must be a positive integer")
        limit = min(limit, LIST_PAGE_MAX)
        revision = check_revision(body.get("revision"))
        await self._barrier(body, timeout)
        try:
            found = self.sm.list(prefix, revision=revision)
        except (Compacted, FutureRevision) as exc:
            return _revision_error(rid, exc, self.sm.revision)
        kvs: list[dict[str, Any]] = []
        size = 0
        more = False
        for kv in found:
            if after is not None and kv.key <= after:
                continue
            item_size = len(kv.key) + len(kv.value) + 64
            if len(kvs) >= limit or (kvs and size + item_size > self.max_frame // 2):
                more = True
                break
            kvs.append(kv.to_wire())
            size += item_size
        return p.ok_reply(rid, {"kvs": kvs, "more": more, "revision": self.sm.revision})

    async def write(self, rid: Any, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Serve a write request (a state machine write command, checked by
        ``check_write``) through the log; for operations registered by other modules
        (leases) whose writes are ordinary state machine commands."""
        return await self._write(rid, body, timeout)

    async def _write(self, rid: Any, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        cmd = check_write(body, self.limits)
        if self.inflight >= self.max_inflight:
            self.stats["busy"] += 1
            return p.error_reply(rid, p.BUSY, "server busy: too many writes in flight, retry")
        self.inflight += 1
        try:
            data = encode_command(cmd)
            if len(data) <= self.max_entry:
                # With a client id the state machine deduplicates, so the same command
                # may be proposed again when the leader it was forwarded to is gone.
                result = await self._retry_on_leader_change(
                    lambda to: self.node.propose_future(data, result_to=to), timeout,
                    "cid" in cmd)
            else:
                result = await self._propose_fragments(data, timeout)
        except asyncio.CancelledError:
            raise
        except _FragmentFailed as exc:
            return p.error_reply(rid, p.UNAVAILABLE, exc.args[0])
        except Exception as exc:
            return self._propose_error(rid, exc)
        finally:
            self.inflight -= 1
        if not isinstance(result, dict):
            return p.error_reply(rid, p.INTERNAL, "state machine gave no answer")
        if "error" in result:
            details = {k: v for k, v in result.items() if k not in ("error", "message")}
            return p.error_reply(rid, result["error"], result.get("message", ""), **details)
        return p.ok_reply(rid, dict(result))

    async def _member(self, rid: Any, op: str, body: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        if op == "members":
            st = self.node.status()
            addresses = st.get("addresses", {})
            if self.member_addresses is not None:
                try:
                    addresses = self.member_addresses(dict(addresses))
                except Exception as exc:  # the list must answer even if addresses cannot
                    self.log.warning("could not look up member addresses: %r", exc)
            # Match indexes are known to the leader only; others answer with none.
            return p.ok_reply(rid, _plain({
                "voters": st.get("voters", []), "learners": st.get("learners", []),
                "addresses": addresses, "leader": st.get("leader"),
                "match": st.get("progress", {}) if st.get("role") == "leader" else {},
                "last_index": st.get("last_index"), "removed_ids": st.get("removed_ids", {}),
                "answered_by": st.get("id"), "role": st.get("role"),
                "lead_transferee": st.get("lead_transferee")}))
        nid = body.get("member")
        if not isinstance(nid, str) or not 0 < len(nid) <= 64 or not nid.isprintable():
            raise p.ProtocolError(p.BAD_REQUEST, "member id must be a short printable string")
        try:
            if op == "member_add":
                addr = body.get("address")
                if not isinstance(addr, str) or not addr:
                    raise p.ProtocolError(p.BAD_REQUEST, "member_add needs an address")
                learner = body.get("learner", False)
                if not isinstance(learner, bool):
                    raise p.ProtocolError(p.BAD_REQUEST, "learner must be true or false")
                try:
                    address = self.member_address(nid, addr) if self.member_address else addr
                except ValueError as exc:
                    raise p.ProtocolError(p.BAD_REQUEST, str(exc)) from None
                await self.node.add_member(nid, address, learner=learner, timeout=timeout)
            elif op == "member_promote":
                await self.node.promote_member(nid, timeout=timeout)
            else:
                await self.node.remove_member(nid, timeout=timeout)
        except (asyncio.CancelledError, p.ProtocolError):
            raise
        except ValueError as exc:  # the change can never succeed (unknown member, ...)
            return p.error_reply(rid, p.BAD_REQUEST, str(exc))
        except errors.Busy as exc:  # no-op not committed, another change pending: retry
            return p.error_reply(rid, p.BUSY, str(exc))
        except errors.Removed as exc:
            return p.error_reply(rid, p.UNAVAILABLE, f"{exc}; it serves nothing more")
        except Exception as exc:
            return self._propose_error(rid, exc)
        return p.ok_reply(rid, {})

    async def _retry_on_leader_change(
            self, submit: Callable[[asyncio.Future | None], asyncio.Future],
            timeout: float, may_retry: bool) -> Any:
        """Await ``submit(outcome)``'s future for at most ``timeout`` seconds. With
        ``may_retry`` (only for requests that are safe to repeat), if the leader changes
        while it waits (a request forwarded to a leader that died is lost with it),
        submit again and take the first attempt that succeeds.

        Costs no task and no polling timer per request: the node's leader-change
        future is shared by every request waiting on it."""
        outcome: asyncio.Future | None = (asyncio.get_running_loop().create_future()
                                          if may_retry else None)
        attempts = [submit(outcome)]  # an error known at once is raised here, as is
        try:
            async with asyncio.timeout(timeout):
                if outcome is None:
                    return await attempts[0]
                return await self._first_success(submit, attempts, outcome)
        except TimeoutError:
            raise errors.Timeout(f"not done within {timeout}s (outcome unknown)") from None
        finally:
            for f in attempts:  # an entry may still apply; deduplication keeps that harmless
                f.cancel()

    async def _first_success(self, submit: Callable[[asyncio.Future | None], asyncio.Future],
                             attempts: list[asyncio.Future], outcome: asyncio.Future) -> Any:
        """The first of ``attempts`` to succeed; another attempt whenever the leader
        changes (at most four in all); the last error once every attempt failed.

        The task awaits ``outcome`` alone: the node ends it itself when an attempt is
        applied (``propose_future(result_to=)``), so the answer is written one loop
        iteration after the apply, where a wait on several futures would take two.
        The callbacks below end it when every attempt failed, and ask again on a
        leader change."""
        leader = getattr(self.node, "leader_id", None)
        maybe_applied = False
        change: asyncio.Future | None = None

        def attempt_done(f: asyncio.Future) -> None:
            nonlocal maybe_applied
            if outcome.done() or f.cancelled():
                return
            exc = f.exception()
            if exc is None:  # (a node that does not take result_to ends up here)
                outcome.set_result(f.result())
                return
            if isinstance(exc, errors.Timeout | TimeoutError):
                maybe_applied = True
            if all(a.done() for a in attempts):
                if maybe_applied and not isinstance(exc, errors.Timeout):
                    # an earlier attempt may still apply: the outcome is unknown
                    exc = errors.Timeout(f"outcome unknown (last attempt: {exc})")
                outcome.set_exception(exc)
            # else: that attempt failed but another one is still running: wait for it

        def leader_changed(_: asyncio.Future) -> None:
            nonlocal leader, change
            change = None
            if outcome.done():
                return
            now_leader = getattr(self.node, "leader_id", None)
            if now_leader is not None and now_leader != leader and len(attempts) < 4:
                self.log.info("leader changed (%s -> %s) during a request; asking again",
                              leader, now_leader)
                self.stats["retried_on_leader_change"] = (
                    self.stats.get("retried_on_leader_change", 0) + 1)
                try:
                    again = submit(outcome)
                except (errors.RaftError, ValueError) as exc:  # e.g. busy: keep waiting
                    self.log.info("asking again failed: %s", exc)
                except Exception as exc:  # a bug: the request fails with it, not hangs
                    outcome.set_exception(exc)
                    return
                else:
                    attempts.append(again)
                    again.add_done_callback(attempt_done)
            leader = now_leader if now_leader is not None else leader
            change = self.node.leader_change_future()
            change.add_done_callback(leader_changed)

        for a in attempts:
            a.add_done_callback(attempt_done)
        change = self.node.leader_change_future()
        change.add_done_callback(leader_changed)
        try:
            return await outcome
        finally:
            if change is not None:  # the shared future must not keep our callback
                change.remove_done_callback(leader_changed)

    async def _propose_fragments(self, data: bytes, timeout: float) -> Any:
        """Propose a large command as fragments, in order; the last one's answer is the
        command's. A failure before the last fragment means the command was not applied."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        frags = fragment_command(data, os.urandom(8).hex(), self.max_entry)
        for i, frag in enumerate(frags):
            remaining = deadline - loop.time()
            last = i == len(frags) - 1
            if remaining <= 0:
                raise _FragmentFailed("timed out sending a large command; it was not applied")
            try:
                result = await self.node.propose(frag, timeout=remaining)
            except Exception as exc:
                if last or isinstance(exc, asyncio.CancelledError):
                    raise
                raise _FragmentFailed(
                    f"sending a large command failed ({_error_kind(exc)}); it was not applied"
                ) from None
            if not last and (not isinstance(result, dict) or result.get("fragment") != i):
                raise _FragmentFailed("a fragment of the command was lost; it was not applied")
            if last and isinstance(result, dict) and result.get("error") == INCOMPLETE:
                raise _FragmentFailed("a fragment of the command was lost; it was not applied")
        return result

    def _propose_error(self, rid: Any, exc: Exception) -> dict[str, Any]:
        self._note_failure(exc)
        if isinstance(exc, ValueError):  # the node refuses an entry it cannot carry
            return p.error_reply(rid, p.TOO_LARGE, f"command refused by raft: {exc}")
        kind = _error_kind(exc)
        if kind == p.INTERNAL:
            raise exc
        details: dict[str, Any] = {}
        leader = getattr(exc, "leader_id", None)
        if leader is not None:
            details["leader"] = str(leader)
        msg = {
            p.TIMEOUT: "timed out waiting for the write to apply; it may still be applied",
            p.BUSY: "node busy: too many proposals in flight, retry",
        }.get(kind, str(exc) or kind)
        return p.error_reply(rid, kind, msg, **details)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = dict(self.node.status())
        if self.status_extra is not None:
            try:
                st.update(self.status_extra())
            except Exception as exc:  # status must answer even if a part of it cannot
                st["status_extra_error"] = repr(exc)
        st["kv"] = {
            "revision": self.sm.revision,
            "compact_revision": self.sm.compact_revision,
            "keys": len(self.sm),
            "sessions": self.sm.session_count,
            "inflight": self.inflight,
            "client": f"{self.host}:{self.port}",
        }
        st["watch"] = self.watch.status()
        return _plain(st)

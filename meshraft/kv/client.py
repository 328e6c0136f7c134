"""The Python client for meshraft's kv service.

This module owns the client side of the protocol: connecting to one of several
endpoints, request ids and many requests in flight per connection, retries
with backoff across endpoints, and exactly-once writes (a client id plus a
sequence number per write, retried with the same number). It never reports a
write whose outcome it does not know as failed: that is ``OutcomeUnknown``.

``AsyncClient`` is the asyncio client (jepsen-lite, applications);
``Client`` is a thin synchronous wrapper (the CLI, scripts). What follows a
failed try (retry here, elsewhere, or raise) is decided by the pure policy in
``meshraft.kv.retry``; this module only carries it out.

Why this module is over 600 lines: a connection (framing, request ids, TLS
diagnosis), the asyncio client (leader discovery, exactly-once writes, the retry
loop) and its synchronous twin share private state and are one unit to read;
the pieces that stand alone (errors, retry policy) have their own modules.

Errors (all subclasses of ``MeshraftError``, defined in ``meshraft.kv.errors``):

- ``BadRequest`` (``TooLarge``): the request is invalid; retrying will not help.
- ``Unavailable`` (``Busy``): the request certainly did not take effect.
- ``OutcomeUnknown``: the write was sent and may or may not take effect.
- ``Unauthorized``: the server wants a client token and this one is missing or wrong.
- ``TLSFailure``: the TLS handshake failed at every endpoint (wrong CA, no client
  certificate where the server requires one, or TLS against a plain port).

Security: ``ssl`` (an ``ssl.SSLContext``) or ``cacert``/``cert``/``key`` paths
make every connection TLS (see ``meshraft.kv.tls.client_context``); ``token`` is
sent with every request. A plain connection to a TLS port is reported as such.

A get of an absent key returns ``None``; a cas whose expectation does not hold
returns ``CasResult(succeeded=False)``. Those are answers, not errors.
"""

# ruff: noqa: ASYNC109  (a per-call timeout argument is part of the node's and client's API)

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import ssl as _ssl
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshraft.kv import protocol as p
from meshraft.kv import retry
from meshraft.kv.errors import (
    BadRequest,
    Busy,
    Compacted,
    FutureRevision,
    LeaseNotFound,
    MeshraftError,
    OutcomeUnknown,
    ProtocolViolation,
    TLSFailure,
    TooLarge,
    TooManyLeases,
    Unauthorized,
    Unavailable,
)
from meshraft.kv.retry import Action, Backoff, Event
from meshraft.kv.state_machine import APPLY_MAX_KEY, APPLY_MAX_VALUE
from meshraft.kv.tls import client_context
from meshraft.kv.txn import APPLY_MAX_TXN_OPS, Compare, Op, to_wire_list

if TYPE_CHECKING:
    from meshraft.kv.watch_client import SyncWatch, Watch

__all__ = [
    "AsyncClient", "BadRequest", "Busy", "CasResult", "Client", "CompactResult", "Compacted",
    "DeleteResult", "FutureRevision", "KeyValue",
    "MeshraftError", "OutcomeUnknown", "ProtocolViolation", "PutResult", "TLSFailure",
    "TooLarge", "Unauthorized", "Unavailable", "parse_endpoint", "parse_endpoints",
]
__all__ += ["Compare", "ListResult", "Op", "TxnResult"]  # transactions (meshraft.kv.txn)
__all__ += ["LeaseGrant", "LeaseNotFound", "LeaseTTL", "TooManyLeases"]  # leases

log = logging.getLogger("meshraft.kv.client")

DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPT_TIMEOUT = 2.0
DEFAULT_CONNECT_TIMEOUT = 1.0
# Replies may be larger than requests (a list page), and a member may admit values up
# to the apply ceiling.
MAX_REPLY_FRAME = max(4 * p.DEFAULT_MAX_FRAME,
                      p.max_frame_for(APPLY_MAX_KEY, APPLY_MAX_VALUE))
# Writes one client id may have in flight: the state machine keeps answers for these.
MAX_WRITES_IN_FLIGHT = 64


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0  # the lease the key is attached to (0: none)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> KeyValue:
        return cls(
            bytes(d["key"]), bytes(d["value"]), int(d["create_revision"]),
            int(d["mod_revision"]), int(d["version"]), int(d.get("lease") or 0),
        )


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    id: int
    ttl: int  # seconds


@dataclass(frozen=True, slots=True)
class LeaseTTL:
    id: int
    ttl: int  # whole seconds left on the leader's clock (rounded up)
    granted_ttl: int
    remaining: float  # seconds left, to the millisecond
    key_count: int
    keys: tuple[bytes, ...] | None = None  # with keys=True (at most 1000)


# A lease's own "no" answers, raised as their own classes (meshraft.kv.errors).
_LEASE_ERRORS = {"lease-not-found": LeaseNotFound, "too-many-leases": TooManyLeases,
                 "lease-too-many-keys": BadRequest}


def _raise_lease_error(reply: dict[str, Any]) -> None:
    cls = _LEASE_ERRORS.get(reply.get("error"))  # type: ignore[arg-type]
    if cls is not None:
        raise cls(str(reply.get("message", "")), code=str(reply.get("error")))


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    create_revision: int
    version: int


@dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int
    deleted: int


@dataclass(frozen=True, slots=True)
class CompactResult:
    revision: int  # the store's current revision (compaction does not change it)
    compact_revision: int


# Errors of a read at a revision (and of compact): raised as their own classes.
_REVISION_ERRORS = (p.COMPACTED, p.FUTURE_REVISION)


def _raise_revision_error(reply: dict[str, Any]) -> None:
    """Raise Compacted / FutureRevision for such an error reply (else return)."""
    code = reply.get("error")
    if code not in _REVISION_ERRORS:
        return
    details = {k: reply[k] for k in ("compact_revision", "revision") if k in reply}
    cls = Compacted if code == p.COMPACTED else FutureRevision
    raise cls(str(reply.get("message", code)), **details)


def _revision_arg(revision: int | None) -> int:
    if revision is None:
        return 0
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise BadRequest("revision must be a non-negative integer")
    return revision


@dataclass(frozen=True, slots=True)
class CasResult:
    succeeded: bool
    revision: int
    # the key's mod_revision when the cas failed (0: the key was absent)
    mod_revision: int = 0


@dataclass(frozen=True, slots=True)
class ListResult:
    """A list inside a transaction: the keys, and whether its limit cut off more."""

    kvs: list[KeyValue]
    more: bool


@dataclass(frozen=True, slots=True)
class TxnResult:
    """A transaction's outcome: ``succeeded`` (the compares held, so the success ops
    ran; else the failure ops ran), the store ``revision`` after it (all its writes
    have this mod_revision), and one response per op that ran, in order: PutResult,
    DeleteResult, KeyValue or None (get), ListResult (list)."""

    succeeded: bool
    revision: int
    responses: list[Any]


def _txn_response(r: dict[str, Any], revision: int) -> Any:
    op = r.get("op")
    if op == "put":
        return PutResult(r["revision"], r.get("create_revision", 0), r.get("version", 0))
    if op == "delete":
        return DeleteResult(revision, r.get("deleted", 0))
    if op == "get":
        return None if r.get("kv") is None else KeyValue.from_wire(r["kv"])
    if op == "list":
        return ListResult([KeyValue.from_wire(d) for d in r.get("kvs", [])],
                          bool(r.get("more")))
    raise ProtocolViolation(f"unknown response in a transaction's answer: {op!r}")


def parse_endpoint(endpoint: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(endpoint, tuple):
        return endpoint[0], int(endpoint[1])
    host, sep, port = endpoint.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def parse_endpoints(text: str | Iterable[str | tuple[str, int]]) -> list[tuple[str, int]]:
    items = text.split(",") if isinstance(text, str) else list(text)
    out = [parse_endpoint(e) for e in items if not (isinstance(e, str) and not e.strip())]
    if not out:
        raise ValueError("no endpoints given")
    return out


def _as_bytes(x: bytes | str, what: str) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, bytearray | memoryview):
        return bytes(x)
    if isinstance(x, str):
        return x.encode("utf-8")
    raise TypeError(f"{what} must be bytes or str, not {type(x).__name__}")


class _ConnectionLost(Exception):
    """The connection ended; ``sent`` tells whether the request had been written,
    ``code`` the error code the server gave for ending it (if it gave one)."""

    def __init__(self, message: str, sent: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.sent = sent
        self.code = code


class _Connection:
    """One TCP connection to one endpoint; replies are matched to requests by id."""

    def __init__(self, endpoint: tuple[str, int],
                 ssl: _ssl.SSLContext | None = None) -> None:
        self.endpoint = endpoint
        self.ssl = ssl
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.waiters: dict[int, asyncio.Future] = {}
        # Watches (meshraft.kv.watch_client): pushed frames go to their sink by watch id;
        # a watch request's sink is attached as its reply is read, before any frame.
        self.pushes: dict[int, Callable[[dict[str, Any] | None], None]] = {}
        self.push_for: dict[int, Callable[[dict[str, Any] | None], None]] = {}
        self.heard = 0.0  # loop time of the last frame read
        self.probe: asyncio.Future | None = None  # a watch's liveness ping in flight
        self.ids = itertools.count(1)
        self.reader_task: asyncio.Task | None = None
        self.closed = False

    async def open(self, timeout: float) -> None:
        tls: dict[str, Any] = {}
        if self.ssl is not None:
            tls = {"ssl": self.ssl, "ssl_handshake_timeout": timeout}
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(*self.endpoint, limit=2**16, **tls), timeout)
        self.reader_task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        assert self.reader is not None
        error: BaseException = _ConnectionLost("connection closed by the server", True)
        try:
            while True:
                try:
                    payload = await p.read_frame(self.reader, MAX_REPLY_FRAME)
                except p.FrameTooLarge as exc:
                    if self.ssl is None and exc.size >> 24 in (0x15, 0x16):
                        # 0x15/0x16 0x03: a TLS alert or handshake record, not our framing
                        raise p.ProtocolError(
                            p.BAD_REQUEST, "the server speaks TLS and this client does not "
                            "(give --cacert, or ssl=/cacert= in Python)") from None
                    raise
                body = p.decode_body(payload, MAX_REPLY_FRAME, max_items=1 << 20)
                self.heard = asyncio.get_running_loop().time()
                rid = body.get("id")
                if rid is None and "watch" in body:  # a watch's pushed frame
                    sink = self.pushes.get(body["watch"])  # type: ignore[arg-type]
                    if sink is not None:
                        sink(body)
                    continue
                if rid is None and body.get("error") == p.TLS_REQUIRED:
                    error = TLSFailure(
                        f"{self.endpoint[0]}:{self.endpoint[1]} speaks TLS and this client "
                        "does not (give --cacert, or ssl=/cacert= in Python)")
                    continue
                if rid is None:
                    # A connection-level error from the server (it is about to close).
                    # busy here means the connection was refused before any request was
                    # read; anything else may have followed requests it did serve.
                    code = body.get("error")
                    error = _ConnectionLost(
                        f"server error: {code}: {body.get('message')}", code != p.BUSY,
                        code if isinstance(code, str) else None)
                    continue
                fut = self.waiters.pop(rid, None)
                sink = self.push_for.pop(rid, None)
                if sink is not None and body.get("ok"):
                    wid = (body.get("result") or {}).get("watch_id")
                    if isinstance(wid, int):
                        self.pushes[wid] = sink
                        if fut is None or fut.done():  # the watch gave up waiting for it
                            sink({"watch": wid, "abandoned": True})
                if fut is not None and not fut.done():
                    fut.set_result(body)
        except asyncio.CancelledError:
            error = _ConnectionLost("connection closed", True)
            raise
        except _ssl.SSLError as exc:  # e.g. TLS 1.3: the server refuses our certificate late
            error = TLSFailure(
                f"TLS with {self.endpoint[0]}:{self.endpoint[1]} failed: {_tls_reason(exc)}")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except p.ProtocolError as exc:
            error = ProtocolViolation(f"bad reply from {self.endpoint}: {exc.message}")
        finally:
            self.closed = True
            sinks, self.pushes = list(self.pushes.values()), {}
            for sink in sinks:
                sink(None)  # the watch resumes elsewhere
            for fut in self.waiters.values():
                if not fut.done():
                    fut.set_exception(error)
            self.waiters.clear()
            if self.writer is not None:
                self.writer.close()

    async def request(self, body: dict[str, Any], timeout: float,
                      push: Callable[[dict[str, Any] | None], None] | None = None
                      ) -> dict[str, Any]:
        """Send one request and wait for its reply. Raises _ConnectionLost or TimeoutError
        (after sending). ``push``: for a watch request, where its pushed frames go."""
        if self.closed or self.writer is None:
            raise _ConnectionLost("not connected", False)
        rid = next(self.ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiters[rid] = fut
        if push is not None:
            self.push_for[rid] = push
        try:
            try:
                self.writer.write(p.encode_frame({**body, "id": rid}))
                await self.writer.drain()
            except (ConnectionError, OSError) as exc:
                raise _ConnectionLost(str(exc), True) from None
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.waiters.pop(rid, None)
            if fut.done():  # else a watch's reply may still come: its sink cancels it then
                self.push_for.pop(rid, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: the reader may have failed it after a send error

    async def close(self) -> None:
        self.closed = True
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        if self.reader_task is not None:
            self.reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self.reader_task


class AsyncClient:
    """An asyncio client for a meshraft cluster.

    ``endpoints``: client addresses of any members ("HOST:PORT" strings, tuples, or
    one comma-separated string). ``timeout``: the total time one operation may
    take, retries included. ``attempt_timeout``: how long one try on one endpoint
    may take before the client tries another (the same write, same sequence number).
    ``ssl``: an ``ssl.SSLContext`` for TLS to every endpoint, or give ``cacert`` (and
    ``cert``/``key`` for mutual TLS) paths instead; ``token``: the server's client
    token, sent with every request. ``retry_refused=False``: an operation ends with
    Unavailable as soon as every endpoint has refused the connection (nothing listens
    there) instead of retrying until ``timeout`` (for asking one given member).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str | tuple[str, int]],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        client_id: str | None = None,
        backoff: tuple[float, float] = (0.02, 0.5),
        rng: random.Random | None = None,
        prefer_leader: bool = True,
        ssl: _ssl.SSLContext | None = None,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        token: bytes | str | None = None,
        retry_refused: bool = True,
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        if ssl is None and (cacert or cert or key):
            ssl = client_context(cacert, cert, key)
        self.ssl = ssl
        if token is not None and not token:
            raise ValueError("the client token is empty")
        self.token = token
        self.retry_refused = retry_refused
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.connect_timeout = connect_timeout
        self.client_id = client_id or os.urandom(8).hex()
        self.backoff = backoff
        self.rng = rng or random.Random()
        self._current = 0
        self._conns: dict[tuple[str, int], _Connection] = {}
        self._seq = 0
        self._outstanding: set[int] = set()
        self._write_slots = asyncio.Semaphore(MAX_WRITES_IN_FLIGHT)
        self.retries = 0  # how many times a request was tried again (for tools)
        # Leader discovery: replies say which member answered and which one leads.
        self.prefer_leader = prefer_leader and len(self.endpoints) > 1
        self._ids: dict[str, tuple[str, int]] = {}
        self._probe: asyncio.Task | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(BaseException):
                await self._probe
            self._probe = None
        conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            await c.close()

    @property
    def endpoint(self) -> tuple[str, int]:
        """The endpoint the client currently prefers."""
        return self.endpoints[self._current]

    # -- operations ---------------------------------------------------------------------------

    async def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0,
                  timeout: float | None = None) -> PutResult:
        """Set ``key``; with ``lease`` (an id from lease_grant) the key is deleted when
        the lease is revoked or expires (LeaseNotFound if there is no such lease)."""
        body = {"op": "put", "key": _as_bytes(key, "key"), "value": _as_bytes(value, "value")}
        if lease:
            body["lease"] = lease
        r = await self._write(body, timeout, answers=tuple(_LEASE_ERRORS))
        _raise_lease_error(r)
        res = r["result"]
        return PutResult(res["revision"], res.get("create_revision", 0), res.get("version", 0))

    async def delete(self, key: bytes | str, *, timeout: float | None = None) -> DeleteResult:
        r = await self._write({"op": "delete", "key": _as_bytes(key, "key")}, timeout)
        return DeleteResult(r["result"]["revision"], r["result"].get("deleted", 0))

    async def cas(self, key: bytes | str, expected: bytes | str | None, new: bytes | str, *,
                  timeout: float | None = None) -> CasResult:
        """Set ``key`` to ``new`` only if its value is ``expected`` (None: only if absent)."""
        r = await self._write({
            "op": "cas", "key": _as_bytes(key, "key"),
            "expected": None if expected is None else _as_bytes(expected, "expected"),
            "value": _as_bytes(new, "new value"),
        }, timeout, answers=(p.CAS_MISMATCH,))
        if r.get("ok"):
            return CasResult(True, r["result"]["revision"])
        return CasResult(False, r.get("revision", 0), r.get("mod_revision", 0))

    async def txn(self, compare: Sequence[Compare | dict[str, Any]] = (),
                  success: Sequence[Op | dict[str, Any]] = (),
                  failure: Sequence[Op | dict[str, Any]] = (), *,
                  timeout: float | None = None) -> TxnResult:
        """If every compare holds, run the ``success`` ops, else the ``failure`` ops,
        atomically (one revision). Compares: ``Compare.value(key) == b"x"``,
        ``Compare.version(key) == 0`` (absent), ``.create``/``.mod``/``.lease``, with
        ``==``/``!=``/``>``/``<``. Ops: ``Op.put(key, value)``, ``Op.delete(key)``,
        ``Op.get(key)``, ``Op.list(prefix)``. Exactly once, like put; a bad
        transaction (a key written twice, too many ops) raises BadRequest/TooLarge."""
        body = {"op": "txn", "compare": to_wire_list(compare, "compare"),
                "success": to_wire_list(success, "success"),
                "failure": to_wire_list(failure, "failure")}
        for name in ("compare", "success", "failure"):
            if len(body[name]) > APPLY_MAX_TXN_OPS:  # no member decodes more
                raise TooLarge(f"too many operations in the transaction: {len(body[name])} "
                               f"in {name}, no member accepts more than {APPLY_MAX_TXN_OPS}")
        r = await self._write(body, timeout)
        res = r["result"]
        return TxnResult(bool(res["succeeded"]), int(res["revision"]),
                         [_txn_response(x, int(res["revision"]))
                          for x in res.get("responses", [])])

    async def get(self, key: bytes | str, *, serializable: bool = False,
                  timeout: float | None = None, revision: int | None = None) -> KeyValue | None:
        """``key``'s value, or None if absent; with ``revision``, as it was at that
        revision (raises ``Compacted`` / ``FutureRevision``)."""
        req: dict[str, Any] = {"op": "get", "key": _as_bytes(key, "key"),
                               "serializable": serializable}
        if revision:
            req["revision"] = _revision_arg(revision)
        r = await self._read(req, timeout, answers=(p.NOT_FOUND, *_REVISION_ERRORS))
        if not r.get("ok"):
            _raise_revision_error(r)
            return None
        return KeyValue.from_wire(r["result"]["kv"])

    async def list(self, prefix: bytes | str = b"", *, serializable: bool = False,
                   timeout: float | None = None, limit: int | None = None,
                   revision: int | None = None) -> list[KeyValue]:
        """Every key with ``prefix``, sorted, fetched in pages (each page linearizable).
        With ``revision``, the keys as they were at that revision (every page reads that
        same revision; raises ``Compacted`` / ``FutureRevision``)."""
        out: list[KeyValue] = []
        after: bytes | None = None
        rev = _revision_arg(revision)
        while True:
            req: dict[str, Any] = {"op": "list", "prefix": _as_bytes(prefix, "prefix"),
                                   "serializable": serializable}
            if rev:
                req["revision"] = rev
            if after is not None:
                req["after"] = after
            if limit is not None:
                req["limit"] = limit - len(out)
            r = await self._read(req, timeout, answers=_REVISION_ERRORS)
            _raise_revision_error(r)
            page = [KeyValue.from_wire(d) for d in r["result"]["kvs"]]
            out.extend(page)
            if not r["result"].get("more") or not page or (limit is not None
                                                            and len(out) >= limit):
                return out
            after = page[-1].key

    async def compact(self, revision: int, *, timeout: float | None = None) -> CompactResult:
        """Drop the history before ``revision`` (through the log, on every member).
        Raises ``Compacted`` if it is at or below the compaction point, ``FutureRevision``
        if it is above the current revision."""
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise BadRequest("revision must be a non-negative integer")
        r = await self._write({"op": "compact", "revision": revision}, timeout,
                              answers=_REVISION_ERRORS)
        _raise_revision_error(r)
        res = r["result"]
        return CompactResult(res["revision"], res["compact_revision"])

    async def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The status of the node the client talks to (the first endpoint that answers)."""
        r = await self._read({"op": "status"}, timeout)
        return r["result"]

    async def members(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The cluster's voters, learners and their addresses, as one member knows them."""
        r = await self._read({"op": "members"}, timeout)
        return r["result"]

    async def add_member(self, member: str, address: str, *, learner: bool = False,
                         timeout: float | None = None) -> None:
        """Add a member (``address``: its HOST:PORT peer address); it then starts with
        ``serve --join``. A learner receives the log but does not vote."""
        await self._call({"op": "member_add", "member": member, "address": address,
                          "learner": learner}, timeout, write=True, answers=())

    async def promote_member(self, member: str, *, timeout: float | None = None) -> None:
        await self._call({"op": "member_promote", "member": member}, timeout, write=True,
                         answers=())

    async def remove_member(self, member: str, *, timeout: float | None = None) -> None:
        await self._call({"op": "member_remove", "member": member}, timeout, write=True,
                         answers=())

    async def ping(self, *, timeout: float | None = None) -> None:
        await self._read({"op": "ping"}, timeout)

    # -- watch (meshraft.kv.watch_client) -------------------------------------------------------

    def watch(self, key: bytes | str, *, prefix: bool = False,
              start_revision: int | None = None, prev_kv: bool = False,
              progress_notify: bool = True) -> Watch:
        """Every change to ``key`` (or every key under it, with ``prefix``) from
        ``start_revision`` (inclusive; None: from now) on: ``async for ev in watch``,
        ``async with client.watch(...) as w``, ``await watch.cancel()``. It resumes by
        itself on another member after a failure, and raises ``Compacted`` when the
        history it needs is gone, ``Unavailable`` when no member would serve it for
        the client's ``timeout``."""
        from meshraft.kv.watch_client import Watch

        return Watch(_WatchLink(self), _as_bytes(key, "key"), prefix=prefix,
                     start_revision=start_revision, prev_kv=prev_kv,
                     progress_notify=progress_notify)

    # -- leases (served by meshraft.kv.lease_manager) -----------------------------------------

    async def lease_grant(self, ttl: int, *, lease_id: int = 0,
                          timeout: float | None = None) -> LeaseGrant:
        """A new lease of ``ttl`` whole seconds (``lease_id`` 0: the cluster picks)."""
        r = await self._write({"op": "lease_grant", "ttl": ttl, "lease_id": lease_id}, timeout,
                              answers=tuple(_LEASE_ERRORS))
        _raise_lease_error(r)
        return LeaseGrant(int(r["result"]["id"]), int(r["result"]["ttl"]))

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> DeleteResult:
        """Revoke the lease: its keys are deleted in one revision (LeaseNotFound)."""
        r = await self._write({"op": "lease_revoke", "lease_id": lease_id}, timeout,
                              answers=tuple(_LEASE_ERRORS))
        _raise_lease_error(r)
        return DeleteResult(r["result"]["revision"], r["result"].get("deleted", 0))

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Renew the lease on the leader; its TTL in seconds. Once this returns, the
        lease lives at least that long after this call began (LeaseNotFound: gone)."""
        r = await self._read({"op": "lease_keepalive", "lease_id": lease_id}, timeout,
                             answers=tuple(_LEASE_ERRORS))
        _raise_lease_error(r)
        return int(r["result"]["ttl"])

    async def lease_ttl(self, lease_id: int, *, keys: bool = False,
                        timeout: float | None = None) -> LeaseTTL:
        """The lease's remaining time on the leader's clock (LeaseNotFound)."""
        r = await self._read({"op": "lease_ttl", "lease_id": lease_id, "keys": keys}, timeout,
                             answers=tuple(_LEASE_ERRORS))
        _raise_lease_error(r)
        res = r["result"]
        return LeaseTTL(int(res["id"]), int(res["ttl"]), int(res["granted_ttl"]),
                        float(res["remaining"]), int(res["key_count"]),
                        tuple(bytes(k) for k in res["keys"]) if "keys" in res else None)

    async def leases(self, *, timeout: float | None = None) -> list[int]:
        """The ids of every live lease, in order."""
        out: list[int] = []
        while True:
            r = await self._read({"op": "lease_leases", "after": out[-1] if out else 0},
                                 timeout)
            out.extend(int(i) for i in r["result"]["leases"])
            if not r["result"].get("more") or not r["result"]["leases"]:
                return out

    # -- maintenance (served by meshraft.kv.maintenance) ---------------------------------------

    async def move_leader(self, member: str, *,
                          timeout: float | None = None) -> dict[str, Any]:
        """Hand leadership to voter ``member`` (the request goes to the leader); returns
        ``{"leader", "term"}`` once it leads. BadRequest: an unknown id, a learner, or a
        voter that has not caught up."""
        r = await self._read({"op": "move_leader", "member": member}, timeout)
        return r["result"]

    async def snapshot(self, sink: Callable[[dict[str, Any], bytes], Any], *,
                       timeout: float | None = None) -> dict[str, Any]:
        """Download a consistent snapshot (the state at one revision) from one member,
        chunk by chunk: ``sink(info, chunk)`` for each chunk in order (``info``: revision,
        keys, compact_revision, size, checksum, node). Returns ``info``. The member holds
        the snapshot until the last chunk; each chunk is asked for once the previous one
        was sunk, so a slow sink never grows the member's buffers."""
        total = self.timeout if timeout is None else timeout
        r = await self._read({"op": "snapshot_begin"}, total)
        info = dict(r["result"])
        node = r.get("node")
        info["node"] = node
        endpoint = self._ids.get(node, self.endpoint) if isinstance(node, str) else self.endpoint
        # The held snapshot lives on that member only: ask it, and only it, for chunks.
        pinned = AsyncClient([endpoint], ssl=self.ssl, token=self.token, timeout=total,
                             attempt_timeout=self.attempt_timeout, prefer_leader=False,
                             retry_refused=False)
        sid, size, offset = info["snapshot"], info["size"], 0
        try:
            while offset < size:
                c = await pinned._read({"op": "snapshot_chunk", "snapshot": sid,
                                        "offset": offset}, total)
                chunk = c["result"]["data"]
                if not chunk:
                    raise ProtocolViolation(f"member {node} sent an empty chunk at {offset}")
                res = sink(info, chunk)
                if asyncio.iscoroutine(res):
                    await res
                offset += len(chunk)
            with contextlib.suppress(MeshraftError):
                await pinned._read({"op": "snapshot_end", "snapshot": sid}, 2.0)
        finally:
            await pinned.close()
        return info

    # -- machinery ----------------------------------------------------------------------------

    async def _connection(self, endpoint: tuple[str, int]) -> _Connection:
        conn = self._conns.get(endpoint)
        if conn is not None and not conn.closed:
            return conn
        conn = _Connection(endpoint, self.ssl)
        await conn.open(self.connect_timeout)
        other = self._conns.get(endpoint)
        if other is not None and not other.closed:  # someone connected meanwhile: share it
            await conn.close()
            return other
        self._conns[endpoint] = conn
        return conn

    def _learn(self, endpoint: tuple[str, int], reply: dict[str, Any]) -> None:
        """Remember which member an endpoint is; move to the leader's endpoint if known."""
        node, leader = reply.get("node"), reply.get("leader")
        if not isinstance(node, str) or not node:
            return
        self._ids[node] = endpoint
        if not self.prefer_leader or not isinstance(leader, str) or leader == node:
            return
        target = self._ids.get(leader)
        if target is not None:
            if target in self.endpoints:
                self._current = self.endpoints.index(target)
        elif self._probe is None or self._probe.done():
            unknown = [e for e in self.endpoints if e not in self._ids.values()]
            if unknown:
                self._probe = asyncio.ensure_future(self._identify(unknown))

    async def _identify(self, endpoints: list[tuple[str, int]]) -> None:
        """Ask endpoints we have not heard from who they are (one ping each)."""
        for ep in endpoints:
            try:
                conn = await self._connection(ep)
                reply = await conn.request({"op": "ping"}, self.attempt_timeout)
            except (OSError, TimeoutError, _ConnectionLost, MeshraftError):
                continue
            node = reply.get("node")
            if isinstance(node, str) and node:
                self._ids[node] = ep
                if self.prefer_leader and reply.get("leader") == node:
                    self._current = self.endpoints.index(ep)

    def _rotate(self) -> None:
        self._current = (self._current + 1) % len(self.endpoints)

    async def _backoff(self, attempt: int, deadline: float) -> None:
        lo, hi = self.backoff
        delay = min(hi, lo * (2 ** min(attempt, 10))) * (0.5 + self.rng.random() / 2)
        delay = min(delay, max(0.0, deadline - time.monotonic()))
        if delay > 0:
            await asyncio.sleep(delay)

    async def _write(self, body: dict[str, Any], timeout: float | None,
                     answers: tuple[str, ...] = ()) -> dict[str, Any]:
        async with self._write_slots:
            self._seq += 1
            seq = self._seq
            self._outstanding.add(seq)
            try:
                body = {**body, "cid": self.client_id, "seq": seq}
                return await self._call(body, timeout, write=True, answers=answers)
            finally:
                self._outstanding.discard(seq)

    async def _read(self, body: dict[str, Any], timeout: float | None,
                    answers: tuple[str, ...] = ()) -> dict[str, Any]:
        return await self._call(body, timeout, write=False, answers=answers)

    async def _call(self, body: dict[str, Any], timeout: float | None, *, write: bool,
                    answers: tuple[str, ...]) -> dict[str, Any]:
        """Try ``body`` on the endpoints until it is answered, fails for good, or its
        time runs out. What follows each failed try is ``retry.decide``'s choice."""
        total = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + total
        maybe_applied = False  # some attempt of this write may have reached the log
        last = "no endpoint answered"
        last_code: str | None = None
        attempt = 0
        tls_failed: set[tuple[str, int]] = set()
        refused: set[tuple[str, int]] = set()
        hint: tuple[str, int] | None = None  # the leader's endpoint, after a not-leader
        redirected = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if attempt:
                self.retries += 1
            endpoint = self.endpoint
            per_try = min(self.attempt_timeout, remaining)
            try:
                conn = await self._connection(endpoint)
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                event, last = self._connect_failure(endpoint, exc)
                failed_at = tls_failed if event is Event.TLS_FAILED else (
                    refused if event is Event.CONNECT_REFUSED else set())
                failed_at.add(endpoint)
                last_code = event
                d = retry.decide(event, last, write=write, maybe_applied=maybe_applied,
                                 everywhere=len(failed_at) >= len(self.endpoints),
                                 retry_refused=self.retry_refused)
            else:
                if write and "seq" in body:
                    # The ack floor lets the server forget answers this client has seen.
                    body["ack"] = min(self._outstanding) if self._outstanding else body["seq"]
                # The server gets a little less time than we wait, so its answer can arrive.
                req = {**body, "timeout": max(0.05, per_try - 0.05)}
                if self.token is not None:
                    req["token"] = self.token
                try:
                    reply = await conn.request(req, per_try + 0.25)
                except _ConnectionLost as exc:
                    await conn.close()
                    event = Event.LOST_SENT if exc.sent else Event.LOST_UNSENT
                    last = f"{endpoint[0]}:{endpoint[1]}: {exc}"
                    last_code = exc.code or event
                    d = retry.decide(event, last, write=write, maybe_applied=maybe_applied)
                except TimeoutError:
                    last = f"{endpoint[0]}:{endpoint[1]} did not answer in {per_try:.1f}s"
                    last_code = Event.NO_ANSWER
                    d = retry.decide(Event.NO_ANSWER, last, write=write,
                                     maybe_applied=maybe_applied)
                else:
                    self._learn(endpoint, reply)
                    if reply.get("ok"):
                        return reply
                    d, last_code, message = self._reply_decision(
                        reply, write=write, maybe_applied=maybe_applied,
                        deduplicated="seq" in body, answers=answers)
                    if d.action is Action.RETURN:
                        return reply
                    last = f"{endpoint[0]}:{endpoint[1]}: {last_code}: {message}"
                    if last_code == p.NOT_LEADER and d.action is Action.RETRY_NEXT:
                        hint = self._ids.get(reply.get("leader"))  # type: ignore[arg-type]
            maybe_applied = d.maybe_applied
            if d.action is Action.RAISE:
                raise d.exception() from None
            if hint is not None and hint != endpoint and hint in self.endpoints:
                # Only the leader serves it (a lease keepalive): go there, at once the
                # first time (the leader's endpoint is known from its replies).
                self._current = self.endpoints.index(hint)
                hint = None
                attempt += 1
                if not redirected:
                    redirected = True
                    continue
                await self._backoff(attempt, deadline)
                continue
            hint = None
            if d.action is Action.RETRY_NEXT:
                self._rotate()
            attempt += 1
            if d.backoff is Backoff.ATTEMPT:
                await self._backoff(attempt, deadline)
            elif d.backoff is Backoff.ROUND and attempt % len(self.endpoints) == 0:
                await self._backoff(attempt // len(self.endpoints), deadline)
        raise retry.give_up(total, last, maybe_applied=maybe_applied, last_code=last_code)

    def _reply_decision(self, reply: dict[str, Any], *, write: bool, maybe_applied: bool,
                        deduplicated: bool,
                        answers: tuple[str, ...]) -> tuple[retry.Decision, str, str]:
        """An error reply's decision, code and message."""
        code = reply.get("error")
        if not isinstance(code, str):
            code = str(code)
        message = str(reply.get("message", ""))
        leader = reply.get("leader")
        if not isinstance(leader, str) or not leader:
            leader = None
        # A leader that none of the endpoints is (and every endpoint is known).
        elsewhere = leader is not None and leader not in self._ids and all(
            e in self._ids.values() for e in self.endpoints)
        d = retry.decide(code, message, write=write, maybe_applied=maybe_applied,
                         deduplicated=deduplicated, answers=answers, leader=leader,
                         leader_elsewhere=elsewhere)
        return d, code, message

    def _connect_failure(self, endpoint: tuple[str, int],
                         exc: BaseException) -> tuple[Event, str]:
        """A failed connect as a retry event, and what to tell the user about it."""
        where = f"{endpoint[0]}:{endpoint[1]}"
        if isinstance(exc, _ssl.SSLError) or (isinstance(exc, ConnectionResetError)
                                               and self.ssl is not None):
            # (A reset in the handshake: the server refused it without an alert.)
            reason = _tls_reason(exc) if isinstance(exc, _ssl.SSLError) else (
                "the server ended the handshake: it may require a client certificate "
                "signed by its --trusted-ca (give --cert and --key), or not trust ours")
            return Event.TLS_FAILED, f"TLS with {where} failed: {reason}"
        if isinstance(exc, ConnectionResetError):
            return Event.CONNECT_RESET, f"cannot connect to {where}: {exc}"
        event = (Event.CONNECT_REFUSED if isinstance(exc, ConnectionRefusedError)
                 else Event.CONNECT_FAILED)
        return event, f"cannot connect to {where}: {exc or 'timed out'}"


class _WatchLink:
    """What a watch (meshraft.kv.watch_client) needs of its client: its endpoints and
    connections, requests with the token, pushed frames, a liveness check."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.endpoints = client.endpoints
        self.timeout = client.timeout
        self.attempt_timeout = client.attempt_timeout

    def preferred(self) -> int:
        return self.client._current

    async def open(self, endpoint: tuple[str, int]) -> _Connection:
        return await self.client._connection(endpoint)

    async def request(self, conn: _Connection, body: dict[str, Any], timeout: float,
                      push: Callable[[dict[str, Any] | None], None] | None = None
                      ) -> dict[str, Any]:
        req = {**body, "timeout": max(0.05, timeout - 0.05)}
        if self.client.token is not None:
            req["token"] = self.client.token
        try:
            reply = await conn.request(req, timeout, push)
        except _ConnectionLost as exc:
            raise ConnectionError(str(exc)) from None
        self.client._learn(conn.endpoint, reply)
        return reply

    async def alive(self, conn: _Connection) -> bool:
        """Does ``conn`` still answer? (one ping per connection at a time)"""
        if conn.closed:
            return False
        loop = asyncio.get_running_loop()
        if loop.time() - conn.heard < 1.0:
            return True
        probe = conn.probe  # shared by every watch on this connection
        if probe is None or probe.done():
            probe = conn.probe = asyncio.ensure_future(self._ping(conn))
        return await asyncio.shield(probe)

    async def _ping(self, conn: _Connection) -> bool:
        try:
            await self.request(conn, {"op": "ping"}, self.attempt_timeout)
        except (ConnectionError, TimeoutError, OSError):
            return False
        return True

    def detach(self, conn: _Connection, watch_id: int) -> None:
        conn.pushes.pop(watch_id, None)


def _tls_reason(exc: _ssl.SSLError) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
    hints = {
        "WRONG_VERSION_NUMBER": "the endpoint does not speak TLS (is it a plain port?)",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED":
            "the server requires a client certificate (give --cert and --key)",
        "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused our client certificate",
        "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust our client certificate's CA",
        "UNEXPECTED_EOF_WHILE_READING": "the server ended the handshake: it may require a "
            "client certificate signed by its --trusted-ca (give --cert and --key)",
    }
    if isinstance(reason, str) and reason in hints:
        return f"{hints[reason]} [{reason}]"
    if isinstance(exc, _ssl.SSLCertVerificationError):
        return f"cannot verify the server's certificate ({reason}); check --cacert"
    return str(reason)


class Client:
    """A synchronous client: the same operations as ``AsyncClient``, blocking.

    It runs its own event loop in a background thread, so it also works from code
    that is itself running inside an event loop (though an async caller should
    prefer ``AsyncClient``). Close it (or use ``with``) to stop that thread.
    """

    def __init__(self, endpoints: str | Sequence[str | tuple[str, int]], **kwargs: Any) -> None:
        self._client = AsyncClient(endpoints, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="meshraft-client", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self, coro):
        if self._closed:
            coro.close()
            raise RuntimeError("client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def client_id(self) -> str:
        return self._client.client_id

    def run_async(self, fn: Callable[[AsyncClient], Coroutine[Any, Any, Any]]) -> Any:
        """Run ``fn(async_client)`` on this client's event loop and wait for its result:
        for code built on ``AsyncClient`` (``meshraft.recipes``) to offer a blocking twin.
        Tasks it starts keep running on that loop until the client is closed."""
        return self._run(fn(self._client))

    def put(self, key, value, **kw) -> PutResult:
        return self._run(self._client.put(key, value, **kw))

    def get(self, key, **kw) -> KeyValue | None:
        return self._run(self._client.get(key, **kw))

    def delete(self, key, **kw) -> DeleteResult:
        return self._run(self._client.delete(key, **kw))

    def cas(self, key, expected, new, **kw) -> CasResult:
        return self._run(self._client.cas(key, expected, new, **kw))

    def txn(self, compare=(), success=(), failure=(), **kw) -> TxnResult:
        return self._run(self._client.txn(compare, success, failure, **kw))

    def list(self, prefix=b"", **kw) -> list[KeyValue]:
        return self._run(self._client.list(prefix, **kw))

    def compact(self, revision: int, **kw) -> CompactResult:
        return self._run(self._client.compact(revision, **kw))

    def status(self, **kw) -> dict[str, Any]:
        return self._run(self._client.status(**kw))

    def members(self, **kw) -> dict[str, Any]:
        return self._run(self._client.members(**kw))

    def add_member(self, member: str, address: str, **kw) -> None:
        self._run(self._client.add_member(member, address, **kw))

    def promote_member(self, member: str, **kw) -> None:
        self._run(self._client.promote_member(member, **kw))

    def remove_member(self, member: str, **kw) -> None:
        self._run(self._client.remove_member(member, **kw))

    def watch(self, key, **kw) -> SyncWatch:
        """As ``AsyncClient.watch``: ``for ev in client.watch(...)``; ``close()`` it
        (or use ``with``)."""
        from meshraft.kv.watch_client import SyncWatch

        return SyncWatch(self._client.watch(key, **kw), self._run)

    def move_leader(self, member: str, **kw) -> dict[str, Any]:
        return self._run(self._client.move_leader(member, **kw))

    def lease_grant(self, ttl: int, **kw) -> LeaseGrant:
        return self._run(self._client.lease_grant(ttl, **kw))

    def lease_revoke(self, lease_id: int, **kw) -> DeleteResult:
        return self._run(self._client.lease_revoke(lease_id, **kw))

    def lease_keepalive(self, lease_id: int, **kw) -> int:
        return self._run(self._client.lease_keepalive(lease_id, **kw))

    def lease_ttl(self, lease_id: int, **kw) -> LeaseTTL:
        return self._run(self._client.lease_ttl(lease_id, **kw))

    def leases(self, **kw) -> list[int]:
        return self._run(self._client.leases(**kw))

    def close(self) -> None:
        if self._closed:
            return
        # Bounded: at interpreter exit the loop's daemon thread may already be
        # frozen, and an unbounded wait here would hang the exiting program.
        if self._thread.is_alive() and not sys.is_finalizing():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(5)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def __del__(self) -> None:
        # A forgotten close() must not leave a thread and sockets behind.
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

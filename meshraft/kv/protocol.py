"""The client protocol: length-prefixed msgpack frames over TCP.

This module owns the wire format between clients and a kv server, the error
codes both sides speak, and the limits on what a peer may send. It does no
networking of its own beyond reading/writing frames on asyncio streams, and it
never unpickles or evaluates anything: bodies are msgpack with strict limits.

Frame: a 4-byte big-endian length, then that many bytes of msgpack. A frame
longer than the cap is refused before it is read (the connection is then
closed: once a length cannot be trusted, neither can the framing).

Request body, a map: ``{"id": int, "op": str, ...arguments}``. Several
requests may be in flight on one connection; replies come back in any order
and carry the request's id:

- success: ``{"id": 7, "ok": true, "result": {...}}``
- failure: ``{"id": 7, "ok": false, "error": CODE, "message": str, ...details}``

A reply to a frame whose id could not be read carries ``"id": null``. Replies to
requests also carry ``node`` (the id of the member that answered) and ``leader``
(the leader it knows, or nil), so a client can find the leader's endpoint.

Operations and their arguments (keys and values are msgpack bin):

- ``put`` key value [cid seq ack]    -> {revision, create_revision, version}
- ``delete`` key [cid seq ack]       -> {revision, deleted}
- ``cas`` key expected(nil = absent) value [cid seq ack] -> {revision, succeeded}
  (a mismatch is the error ``cas-mismatch`` with ``revision`` and ``mod_revision``)
- ``txn`` compare success failure [cid seq ack] -> {succeeded, revision, responses}
  (compares on any keys, then one list of put/delete/get/list ops, all writes at one
  revision; see meshraft.kv.txn for the fields)
- ``get`` key [serializable revision] -> {kv: {key value create_revision mod_revision version},
  revision}; an absent key is the error ``not-found`` with ``revision``
- ``list`` [prefix after limit serializable revision] -> {kvs: [...], more: bool, revision}
  (``revision``: read the store as it was at that revision; 0 or absent = now. Below the
  compaction point: error ``compacted`` with ``compact_revision``; above the current
  revision: error ``future-revision`` with ``revision``; ``revision`` in the reply is
  always the current one)
- ``compact`` revision [cid seq ack] -> {revision, compact_revision}: drop history below
  ``revision`` (errors ``future-revision``, ``compacted`` as above)
- ``status``                         -> the node's status (plain data)
- ``members``                        -> {voters, learners, addresses, leader}
- ``member_add`` member address [learner] / ``member_promote`` member /
  ``member_remove`` member           -> {} once the change is applied
- ``ping``                           -> {}
- ``lease_grant`` ttl [lease_id cid seq ack] -> {id, ttl, revision}; ``lease_revoke``
  lease_id [cid seq ack] -> {revision, deleted}; ``lease_keepalive`` lease_id -> {id, ttl}
  (on the leader, or forwarded through the log by a follower); ``lease_ttl`` lease_id
  [keys] -> {id, ttl, granted_ttl, remaining, key_count, keys?, more?} and
  ``lease_leases`` [after] -> {leases, more} (leader only: ``not-leader`` with
  ``leader`` elsewhere). ``put`` may carry ``lease``. Errors ``lease-not-found``,
  ``too-many-leases``, ``lease-too-many-keys`` (meshraft.kv.lease, lease_manager).

- ``watch`` key [prefix start_revision prev_kv] -> {watch_id, revision};
  ``watch_cancel`` watch_id -> {}; ``watch_progress`` -> {} and then a progress frame
  for every caught-up watch on the connection (meshraft.kv.watch).

Pushed frames (no ``id``; a client tells them by the ``watch`` key), only after a
``watch`` reply on the same connection:

- events: ``{"watch": W, "revision": R, "events": [{type, kv, prev_kv?}, ...]}``,
  whole revisions in order; every event of this watch at or below R has been sent.
- progress: the same with no events and ``"progress": true``.
- cancel: ``{"watch": W, "canceled": true, "error": CODE, "message": str}`` with
  CODE ``compacted`` (and ``compact_revision``), ``slow-watcher`` (its buffer
  overflowed; resume from the last revision + 1) or ``unavailable`` (the member
  stops, was removed, or has no leader).

``cid``/``seq``/``ack`` make a write exactly-once (see state_machine). Any
request may carry ``timeout`` (seconds) to bound how long the server waits.
When the server has a client token, every request carries it as ``token``
(bin or str); without it, or with a wrong one, the reply is ``unauthorized``
and the request has no effect. The connection itself may be TLS (see kv.tls).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

from meshraft.kv.lease import LEASE_NOT_FOUND, LEASE_TOO_MANY_KEYS, TOO_MANY_LEASES
from meshraft.kv.state_machine import (
    BAD_REQUEST,
    CAS_MISMATCH,
    COMPACTED,
    DEFAULT_MAX_KEY,
    DEFAULT_MAX_VALUE,
    FUTURE_REVISION,
    NOT_FOUND,
    STALE,
    TOO_LARGE,
)

# Error codes. not-found and cas-mismatch are an operation's own "no";
# timeout means the outcome is unknown (a write may still be applied).
UNAUTHORIZED = "unauthorized"  # missing or wrong client token: nothing happened
BUSY = "busy"  # too many requests in flight: retry later
UNAVAILABLE = "unavailable"  # no leader, no quorum, or the node is stopping: certainly not applied
NOT_LEADER = "not-leader"  # this node cannot serve it now; try another (``leader`` may say who)
TIMEOUT = "timeout"  # deadline passed after the write was proposed: outcome unknown
INTERNAL = "internal"  # a bug on the server; the message says what
TLS_REQUIRED = "tls-required"  # a plain-TCP client on a TLS port (sent in plain, id nil)

ERROR_CODES = frozenset({
    NOT_FOUND, CAS_MISMATCH, BAD_REQUEST, TOO_LARGE, UNAUTHORIZED, BUSY, UNAVAILABLE,
    NOT_LEADER, TIMEOUT, STALE, INTERNAL, TLS_REQUIRED, COMPACTED, FUTURE_REVISION,
    LEASE_NOT_FOUND, TOO_MANY_LEASES, LEASE_TOO_MANY_KEYS,
})

__all__ = [
    "BAD_REQUEST", "BUSY", "CAS_MISMATCH", "COMPACTED", "ERROR_CODES", "FUTURE_REVISION",
    "INTERNAL", "LEASE_NOT_FOUND", "LEASE_TOO_MANY_KEYS", "NOT_FOUND", "NOT_LEADER", "STALE",
    "TIMEOUT", "TLS_REQUIRED", "TOO_LARGE", "TOO_MANY_LEASES", "UNAUTHORIZED", "UNAVAILABLE",
    "FrameTooLarge",
    "ProtocolError", "decode_body", "encode_frame", "max_frame_for", "read_frame",
]

HEADER = struct.Struct(">I")
# Room around the largest key + value for the request's other fields.
FRAME_OVERHEAD = 64 * 1024


def max_frame_for(max_key: int = DEFAULT_MAX_KEY, max_value: int = DEFAULT_MAX_VALUE) -> int:
    """The frame cap that fits a request with the largest key and value allowed."""
    # cas carries two values (expected and new).
    return max_key + 2 * max_value + FRAME_OVERHEAD


DEFAULT_MAX_FRAME = max_frame_for()


class ProtocolError(Exception):
    """A frame or body that breaks the protocol. ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int, cap: int) -> None:
        super().__init__(TOO_LARGE, f"frame of {size} bytes exceeds the cap of {cap} bytes")
        self.size = size
        self.cap = cap


def encode_frame(body: dict[str, Any]) -> bytes:
    payload = msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> bytes:
    """Read one frame's body. Raises ``asyncio.IncompleteReadError`` at EOF (clean when
    ``partial`` is empty) and ``FrameTooLarge`` without reading the oversized body."""
    header = await reader.readexactly(HEADER.size)
    (size,) = HEADER.unpack(header)
    if size > max_frame:
        raise FrameTooLarge(size, max_frame)
    return await reader.readexactly(size)


def decode_body(payload: bytes, max_frame: int, max_items: int = 64) -> dict[str, Any]:
    """Decode one body into a map with an int (or nil) ``id``. Raises ProtocolError."""
    try:
        body = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_frame,
            max_str_len=max_frame,
            max_array_len=max_items,
            max_map_len=max_items,
            max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise ProtocolError(BAD_REQUEST, "frame holds trailing bytes after the message") from None
    except Exception as exc:  # msgpack raises several types on hostile bytes
        raise ProtocolError(
            BAD_REQUEST, f"frame is not valid msgpack ({exc.__class__.__name__})") from None
    if not isinstance(body, dict):
        raise ProtocolError(BAD_REQUEST, "message must be a msgpack map")
    rid = body.get("id")
    if rid is not None and (not isinstance(rid, int) or isinstance(rid, bool)):
        raise ProtocolError(BAD_REQUEST, "request id must be an integer")
    return body


def ok_reply(request_id: int | None, result: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error_reply(request_id: int | None, code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": code, "message": message, **details}

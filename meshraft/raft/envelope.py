"""What the node wraps around the state machine's bytes and its members' addresses.

This module owns three encodings of member facts that travel over the network or
sit on disk, and their strict decoders:

- the snapshot envelope (on disk and sent to lagging followers): the member
  address book, the ids removed so far, and the state machine's own ``snapshot()``
  bytes, so a member that restarts from a snapshot still knows how to reach
  members added since boot and which ids may never come back;
- the context of a membership change entry: the new member's address and the
  proposer's tag;
- transport addresses themselves: a non-empty string (a mesh peer name or
  ``HOST:PORT``) or a ``(host, port)`` pair as a UDP socket reports it
  (``(host, port, flowinfo, scope_id)`` for IPv6).

A decoder of network or disk input checks every field's type and raises
ValueError for anything else; it never returns a value of a type its caller does
not expect. This module must never do IO nor know what a transport is beyond the
address shapes above.
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = [
    "Address",
    "check_address",
    "check_member_id",
    "decode_member_context",
    "decode_snapshot_envelope_full",
    "encode_member_context",
    "encode_snapshot_envelope",
    "norm_addr",
]

# A member's transport address: a mesh peer name or "HOST:PORT" (str), or a UDP
# socket address (host, port[, flowinfo, scope_id]).
Address = str | tuple[Any, ...]

MAX_ID_LEN = 256  # bytes of a member id (as messages.py allows)
MAX_ADDR_LEN = 1024  # characters of a string address or of a host
MAX_INDEX = (1 << 63) - 1


def norm_addr(addr: Any) -> Any:
    """Addresses travel through msgpack (lists) and come back from sockets (tuples)."""
    if isinstance(addr, list):
        return tuple(addr)
    return addr


def _is_uint(v: object, limit: int = MAX_INDEX) -> bool:
    return type(v) is int and 0 <= v <= limit  # (bool is not an int here)


def check_member_id(v: object, what: str = "member id") -> str:
    """A member id: a non-empty str of at most 256 characters; else ValueError."""
    if not isinstance(v, str) or not v or len(v) > MAX_ID_LEN:
        raise ValueError(f"bad {what}: {v!r:.80}")
    return v


def check_address(v: object, what: str = "address") -> Address:
    """A transport address (normalised to a tuple if it is a pair); else ValueError."""
    if isinstance(v, str):
        if v and len(v) <= MAX_ADDR_LEN:
            return v
    elif isinstance(v, list | tuple) and len(v) in (2, 4):
        host, port, *rest = v
        if (isinstance(host, str) and 0 < len(host) <= MAX_ADDR_LEN
                and _is_uint(port, 65535) and all(_is_uint(x, 1 << 32) for x in rest)):
            return tuple(v)
    raise ValueError(f"bad {what}: {v!r:.80} (a HOST:PORT or peer name string, or a "
                     "(host, port) pair)")


def encode_snapshot_envelope(addresses: dict[str, Any], data: bytes,
                             removed: dict[str, int] | None = None) -> bytes:
    """Version 1: [1, addresses, data]; version 2 adds the removed ids (and their
    removal index) — written only once an id was removed."""
    addrs = {k: v for k, v in addresses.items()}
    if not removed:
        return msgpack.packb([1, addrs, data], use_bin_type=True)
    return msgpack.packb([2, addrs, data, dict(removed)], use_bin_type=True)


def decode_snapshot_envelope_full(blob: bytes) -> tuple[dict[str, Any], bytes, dict[str, int]]:
    """(addresses, the state machine's data, removed id -> index of its removal).

    Raises ValueError for anything but a well-formed envelope: a version it knows,
    member ids that are strings, addresses that are addresses (``check_address``),
    removal indexes that are non-negative ints, data that is bytes."""
    if not blob:
        return {}, b"", {}
    # A snapshot arrives from the leader over the network: strict limits, no ext types.
    try:
        obj = msgpack.unpackb(blob, raw=False, strict_map_key=True, max_str_len=1024,
                              max_array_len=1 << 16, max_map_len=1 << 16, max_ext_len=0)
    except Exception as exc:  # msgpack raises ValueError, ExtraData, TypeError, ...
        raise ValueError(f"not a snapshot envelope: {type(exc).__name__}") from None
    if not (isinstance(obj, list) and len(obj) in (3, 4) and isinstance(obj[1], dict)
            and isinstance(obj[2], bytes)):
        raise ValueError("not a snapshot envelope")
    version = obj[0]
    if type(version) is not int or version not in (1, 2) or len(obj) != version + 2:
        raise ValueError(f"unknown snapshot envelope version {version!r:.20}")
    addresses = {check_member_id(k, "member id in the snapshot envelope"):
                 check_address(v, "member address in the snapshot envelope")
                 for k, v in obj[1].items()}
    removed: dict[str, int] = {}
    if version == 2:
        if not isinstance(obj[3], dict):
            raise ValueError("not a snapshot envelope (removed ids)")
        for k, v in obj[3].items():
            if not _is_uint(v):
                raise ValueError("not a snapshot envelope (removed ids)")
            removed[check_member_id(k, "removed id in the snapshot envelope")] = v
    return addresses, obj[2], removed


def encode_member_context(address: Any, tag: bytes) -> bytes:
    """The context of a membership change: the member's address (None for a
    promotion or removal) and the proposer's tag."""
    return msgpack.packb([address, tag], use_bin_type=True)


def decode_member_context(context: bytes) -> tuple[Address | None, bytes]:
    """(address or None, tag); ValueError if ``context`` is not such a pair. The
    context comes from the log, i.e. from whoever proposed the change."""
    if not context:
        return None, b""
    try:
        obj = msgpack.unpackb(context, raw=False, max_str_len=MAX_ADDR_LEN,
                              max_bin_len=1024, max_array_len=16, max_map_len=16,
                              max_ext_len=0)
    except Exception as exc:
        raise ValueError(f"not a member change context: {type(exc).__name__}") from None
    if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[1], bytes)):
        raise ValueError("not a member change context")
    address = None if obj[0] is None else check_address(obj[0], "member address")
    return address, obj[1]

"""Removal notices: the node-to-node control datagram "you were removed at index N".

A member that was removed may never learn the commit of its own removal (it is no
longer sent appends); the others tell it with this notice, which it trusts only
from a member it knows at the address it knows it by (the node checks that).

This module owns the notice's wire format and its strict decoder. It must never
do IO nor decide whom to trust.

Format: the byte 0xC1 (never the first byte of msgpack, so never a Raft message)
followed by msgpack ``["removed", to, from, index]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from .envelope import check_member_id

__all__ = ["CONTROL_BYTE", "REMOVED_NOTICE_EVERY", "RemovedNotice", "decode_removed_notice",
           "encode_removed_notice", "is_control"]

CONTROL_BYTE = 0xC1  # first byte of a node-to-node control datagram
REMOVED_NOTICE_EVERY = 0.5  # seconds between notices to the same removed member


@dataclass(frozen=True, slots=True)
class RemovedNotice:
    to: str  # the member that was removed
    frm: str  # the member telling it
    index: int  # log index of the removal


def is_control(data: bytes) -> bool:
    return data[:1] == b"\xc1"


def encode_removed_notice(n: RemovedNotice) -> bytes:
    return b"\xc1" + msgpack.packb(["removed", n.to, n.frm, n.index], use_bin_type=True)


def decode_removed_notice(data: bytes) -> RemovedNotice:
    """The notice in a control datagram; ValueError for anything else."""
    if not is_control(data):
        raise ValueError("not a control datagram")
    try:
        obj = msgpack.unpackb(data[1:], raw=False, max_str_len=256, max_bin_len=0,
                              max_array_len=8, max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises ValueError, ExtraData, TypeError, ...
        raise ValueError(f"not msgpack: {type(exc).__name__}") from None
    if not (isinstance(obj, list) and len(obj) == 4 and obj[0] == "removed"):
        raise ValueError("not a removal notice")
    _, to, frm, index = obj
    if type(index) is not int or not 0 <= index < 1 << 63:
        raise ValueError(f"bad removal index {index!r:.20}")
    return RemovedNotice(check_member_id(to, "recipient"), check_member_id(frm, "sender"),
                         index)

"""Raft's data types: log entries, hard state, snapshots, and the messages
peers exchange.

This module owns the shapes that cross the boundaries between the core, the
storage and the node. It must never do IO. ``Entry``, ``HardState``,
``ConfState``, ``SnapshotMeta`` and ``Snapshot`` are a contract with
``storage``; extend them only by adding fields with defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class EntryType(IntEnum):
    NORMAL = 0  # application data (``data`` is opaque bytes); empty data is the leader's no-op
    CONF_CHANGE = 1  # a membership change (``data`` is an encoded ConfChange)


@dataclass(slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(slots=True)
class ConfState:
    voters: list[str] = field(default_factory=list)
    learners: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True)
class Snapshot:
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

"""Errors the Raft node and its storage raise to their callers.

This module owns the exception hierarchy that layers above raft (kv, the CLI)
catch. It must never import anything else from meshraft: it is the one module
every layer can depend on without cycles.

Promises to callers:

- ``NotLeader``, ``Unavailable`` (and its ``Busy``): the operation certainly did
  not take effect.
- ``Timeout``: the deadline passed; the operation MAY still take effect.
- ``StorageFailed``: the node's disk failed (fsync error, ENOSPC); the node no
  longer accepts writes, but everything it acknowledged before is on disk.
- ``Removed``: this node was removed from the cluster.
- ``NodeFailed``: an internal error (a bug) stopped this node (fail-stop): it
  serves nothing more until it is restarted; ``status()["failed"]`` says why.
- ``StorageError`` and its subclasses are raised on start when a data dir cannot
  be used (corrupt WAL or snapshot, locked by another process).
"""

from __future__ import annotations


class RaftError(Exception):
    """Base of every error raised by meshraft.raft."""


class NotLeader(RaftError):
    """The operation needs the leader and this node is not it."""

    def __init__(self, message: str = "not the leader", leader_id: str | None = None) -> None:
        super().__init__(message)
        self.leader_id = leader_id


class Unavailable(RaftError):
    """No leader known, no quorum, or the node is stopped: certainly not applied."""


class Busy(Unavailable):
    """Too many proposals in flight on this node: certainly not applied; retry later."""


class Timeout(RaftError):
    """The deadline passed; the operation's outcome is unknown (it may still apply)."""


class StorageFailed(RaftError):
    """The disk failed under a running node; it accepts no more writes."""


class Removed(RaftError):
    """This node was removed from the cluster."""


class NodeFailed(RaftError):
    """An internal error (a bug) stopped this node: it may have left the Raft state
    half-changed, so the node serves nothing more (fail-stop) until restarted from its
    data dir. A request made after that certainly did not take effect here; one in
    flight when it happened gets Timeout (the others may still apply it)."""


class StorageError(RaftError):
    """A data dir cannot be opened (corrupt, locked, unreadable)."""


class DataDirLocked(StorageError):
    """Another process holds the data dir's lock file."""


class CorruptWAL(StorageError):
    """A WAL record that is not the torn tail failed its checksum or framing."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(
            f"corrupt WAL record in {path} at offset {offset}: {reason}; refusing to start "
            "(the records after it would be lost). Do not start it from an older copy of "
            "this data dir (it could vote twice in a term or forget entries it acknowledged): "
            "remove the member (meshraft member remove ID), wipe its data dir and add it back "
            "under a new id."
        )
        self.path = path
        self.offset = offset
        self.reason = reason


class CorruptSnapshot(StorageError):
    """A snapshot file the WAL depends on failed its checksum or framing."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt snapshot {path}: {reason}; refusing to start")
        self.path = path
        self.reason = reason

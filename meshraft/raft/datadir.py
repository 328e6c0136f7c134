"""Identity markers in a member's data dir, beside what ``storage`` keeps there.

    DATA_DIR/MEMBER_ID   the id the data dir belongs to (written on first start)
    DATA_DIR/REMOVED     written when the member learns it was removed: JSON
                         {"id", "index", "time"}; the dir may never serve again
    DATA_DIR/CLUSTER_ID  the cluster the data dir belongs to (16 hex digits), for a
                         cluster restored from a backup and members that joined it;
                         absent for a cluster bootstrapped from nothing (``cluster``)

This module owns those files: writing them durably (write, fsync, rename,
fsync the directory) and refusing a data dir that is marked REMOVED or belongs to
another id. It must never touch the WAL or the snapshots (that is ``storage``) nor
decide when a member was removed (that is the node, from the log).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .errors import StorageError

__all__ = ["CLUSTER_ID_FILE", "MEMBER_ID_FILE", "REMOVED_MARKER", "RemovedMemberDataDir",
           "check_data_dir_identity", "mark_removed", "read_cluster_id", "write_cluster_id",
           "write_member_id"]

REMOVED_MARKER = "REMOVED"  # in the data dir of a member that was removed
MEMBER_ID_FILE = "MEMBER_ID"  # the id the data dir belongs to
CLUSTER_ID_FILE = "CLUSTER_ID"  # the cluster it belongs to (restored clusters only)
CLUSTER_ID_HEX = 16  # hex digits of a cluster id (64 bits)


class RemovedMemberDataDir(StorageError):
    """The data dir belongs to a member that was removed; it must be wiped."""


def check_data_dir_identity(data_dir: str | os.PathLike, node_id: str) -> None:
    """Refuse a data dir marked REMOVED, or one that belongs to another id."""
    d = Path(data_dir)
    marker = d / REMOVED_MARKER
    if marker.exists():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        if not isinstance(info, dict):
            info = {}
        raise RemovedMemberDataDir(
            f"data dir {d} belongs to member {info.get('id', '?')}, which was removed from "
            f"the cluster (at log index {info.get('index', '?')}); a removed member cannot "
            f"come back with its old data: wipe {d} (rm -r {d}) and join with a new id "
            "(ids are never reused)")
    idf = d / MEMBER_ID_FILE
    if idf.exists():
        try:
            owner = idf.read_text().strip()
        except OSError as exc:
            raise StorageError(f"cannot read {idf}: {exc}") from None
        if owner != node_id:
            raise StorageError(
                f"data dir {d} belongs to member {owner}, not {node_id}: start it with "
                f"--id {owner}, or wipe {d} to use it for a new member")


def write_small_file(path: Path, text: str) -> None:
    """Write, fsync, rename, fsync the directory: the marker survives a crash."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_member_id(data_dir: str | os.PathLike, node_id: str) -> None:
    """Record which member the data dir belongs to (once; blocking IO)."""
    idf = Path(data_dir) / MEMBER_ID_FILE
    if not idf.exists():
        write_small_file(idf, node_id + "\n")


def mark_removed(data_dir: str | os.PathLike, node_id: str, index: int) -> None:
    """Mark the data dir as belonging to a removed member (blocking IO; OSError)."""
    write_small_file(Path(data_dir) / REMOVED_MARKER, json.dumps(
        {"id": node_id, "index": index, "time": time.time()}) + "\n")


def _valid_cluster_id(text: str) -> bool:
    return len(text) == CLUSTER_ID_HEX and all(c in "0123456789abcdef" for c in text)


def read_cluster_id(data_dir: str | os.PathLike) -> str | None:
    """The cluster id the data dir belongs to, or None (a cluster that has none).
    StorageError if the file is there but unreadable or not a cluster id."""
    path = Path(data_dir) / CLUSTER_ID_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from None
    if not _valid_cluster_id(text):
        raise StorageError(f"{path} holds {text[:40]!r}, not a cluster id "
                           f"({CLUSTER_ID_HEX} hex digits)")
    return text


def write_cluster_id(data_dir: str | os.PathLike, cluster_id: str) -> None:
    """Record which cluster the data dir belongs to (blocking IO; ValueError for a
    malformed id)."""
    if not _valid_cluster_id(cluster_id):
        raise ValueError(f"not a cluster id: {cluster_id!r:.40}")
    write_small_file(Path(data_dir) / CLUSTER_ID_FILE, cluster_id + "\n")

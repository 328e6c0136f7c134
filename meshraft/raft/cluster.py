"""Cluster identity on the wire: members of different clusters refuse each other.

A cluster restored from a backup (``meshraft snapshot restore``) has a cluster id
(``datadir.CLUSTER_ID_FILE``), and its members tag every datagram they send with
it: the byte 0xC7, then the id's 8 bytes, then the datagram as before (a Raft
message or a control datagram). A member takes a datagram only if its tag is its
own cluster's: a member of the cluster the backup was taken from (no id, or
another one) talking to a restored member, or the other way round, is refused
with a WARNING naming both clusters. Without this, an old member restarted with
its old data dir and the same peer addresses could win an election with its
longer log and overwrite the restored cluster's data.

A cluster bootstrapped from nothing has no id and sends untagged datagrams, as
before. A brand-new member joining a restored cluster (``serve --join`` with an
empty data dir) adopts the id of the first tagged datagram it gets and records it
(it has no data that could be mixed up with another cluster's).

0xC7 is msgpack's ext8: never the first byte of a Raft message (a msgpack array)
nor of a control datagram (0xC1, see ``notices``). This module owns the tag and
the decision; it never reads or writes anything but the CLUSTER_ID file (through
``datadir``) and never decides anything about Raft.
See docs/architecture.md#backups-and-leader-moves.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from meshraft.raft.datadir import CLUSTER_ID_HEX, write_cluster_id

__all__ = ["CLUSTER_TAG_BYTE", "ClusterGate"]

CLUSTER_TAG_BYTE = 0xC7
_TAG_LEN = 1 + CLUSTER_ID_HEX // 2
_MAX_LOGGED_SOURCES = 256  # distinct refused senders remembered for log rate limiting


class ClusterGate:
    """Tags outgoing datagrams with this member's cluster id and checks incoming ones.

    ``cluster_id``: this member's (None: a cluster without one); ``may_adopt``: a
    brand-new joining member, which takes the id of the first tagged datagram."""

    def __init__(self, data_dir: str | os.PathLike, cluster_id: str | None, *,
                 may_adopt: bool, logger: logging.Logger | logging.LoggerAdapter) -> None:
        self.data_dir = data_dir
        self.log = logger
        self.may_adopt = may_adopt and cluster_id is None
        self.refused = 0
        self._refused_from: dict[str, int] = {}
        self._set(cluster_id)

    def _set(self, cluster_id: str | None) -> None:
        self.cluster_id = cluster_id
        self._tag = b"" if cluster_id is None else bytes([CLUSTER_TAG_BYTE]) + bytes.fromhex(
            cluster_id)

    def wrap(self, data: bytes) -> bytes:
        """``data`` as this member sends it (tagged if its cluster has an id)."""
        return self._tag + data if self._tag else data

    def accept(self, data: bytes, addr: Any) -> bytes | None:
        """The datagram without its tag if it comes from this member's cluster; None
        (refused, counted, logged) if not."""
        tagged = len(data) > 0 and data[0] == CLUSTER_TAG_BYTE
        if not tagged:
            if self.cluster_id is None:
                return data
            self._refuse(None, addr)
            return None
        if len(data) < _TAG_LEN:
            self._refuse("(truncated tag)", addr)
            return None
        theirs = data[1:_TAG_LEN].hex()
        if theirs == self.cluster_id:
            return data[_TAG_LEN:]
        if self.cluster_id is None and self.may_adopt:
            try:
                write_cluster_id(self.data_dir, theirs)  # once: a small fsynced file
            except OSError as exc:
                self.log.error("cannot record cluster id %s: %s", theirs, exc)
                return None
            self.may_adopt = False
            self._set(theirs)
            self.log.info("joined cluster %s (recorded in the data dir)", theirs)
            return data[_TAG_LEN:]
        self._refuse(theirs, addr)
        return None

    def _refuse(self, theirs: str | None, addr: Any) -> None:
        self.refused += 1
        source = repr(addr)[:200]
        n = self._refused_from.get(source, 0) + 1
        if n == 1 and len(self._refused_from) >= _MAX_LOGGED_SOURCES:
            self._refused_from.clear()
        self._refused_from[source] = n
        if n > 3 and n % 1000:
            return  # counted always, logged sparingly
        mine = self.cluster_id or "(none: bootstrapped, not restored)"
        other = theirs or "(none: a cluster bootstrapped, not restored)"
        self.log.warning(
            "refused datagram #%d from %s: it belongs to cluster %s, this member to cluster "
            "%s. A member of another cluster (the one a backup was restored from, or a "
            "restored copy) must never join this one: stop it, or give it a data dir of "
            "this cluster (snapshot restore, or an empty dir with --join)",
            n, source, other, mine)

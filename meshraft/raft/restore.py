"""A new member's data dir that starts from a state machine snapshot (restore).

``seed_data_dir`` writes what a member of a NEW cluster needs to start from a
backup: the member id, the new cluster's id (``cluster`` makes members of other
clusters refuse it and be refused), and a Raft snapshot at log index 1, term 1,
whose configuration is the new voters and whose data is the node's envelope
around the state machine's bytes. Every member of the new cluster is seeded the
same way from the same backup, so their logs agree from index 1 on; the first
election then happens at term 2, and the log continues after the snapshot.

This module owns only that seeding. It must never change an existing data dir:
a data dir that holds anything at all is refused (``NonEmptyDataDir``), so a
restore can never mix a backup into a member's data. It knows nothing of what
the state machine's bytes mean (the caller checks them).
See docs/architecture.md#backups-and-leader-moves.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from meshraft.raft.datadir import write_cluster_id, write_member_id
from meshraft.raft.envelope import check_member_id, encode_snapshot_envelope
from meshraft.raft.errors import StorageError
from meshraft.raft.messages import ConfState, HardState, Snapshot, SnapshotMeta
from meshraft.raft.storage import Storage

__all__ = ["RESTORED_INDEX", "RESTORED_TERM", "NonEmptyDataDir", "check_empty", "seed_data_dir"]

log = logging.getLogger("meshraft.raft.restore")

RESTORED_INDEX = 1  # the log index (and term) of a restored member's first snapshot
RESTORED_TERM = 1


class NonEmptyDataDir(StorageError):
    """The data dir given for a restore already holds files."""


def check_empty(data_dir: str | os.PathLike) -> None:
    """Refuse a data dir that exists and holds anything (a file, not a directory: too)."""
    d = Path(data_dir)
    if d.exists() and not d.is_dir():
        raise NonEmptyDataDir(f"{d} exists and is not a directory")
    if d.is_dir() and any(d.iterdir()):
        raise NonEmptyDataDir(
            f"data dir {d} is not empty: a restore writes a new member's data dir and "
            "never mixes a backup into existing data; give a new or empty directory")


async def seed_data_dir(data_dir: str | os.PathLike, node_id: str, voters: list[str],
                        state_machine_data: bytes, cluster_id: str) -> None:
    """Create ``data_dir`` for member ``node_id`` of a new cluster of ``voters`` whose
    state is ``state_machine_data``. Raises NonEmptyDataDir, StorageError, ValueError
    (a bad id or cluster id), OSError."""
    check_member_id(node_id)
    for v in voters:
        check_member_id(v, "voter id")
    if node_id not in voters:
        raise ValueError(f"member {node_id} is not one of the voters {sorted(voters)}")
    check_empty(data_dir)
    d = Path(data_dir)
    await asyncio.to_thread(d.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(write_cluster_id, d, cluster_id)  # ValueError first: nothing else
    await asyncio.to_thread(write_member_id, d, node_id)
    storage = await asyncio.to_thread(Storage.open, d, logger=logging.LoggerAdapter(
        log, {"node": node_id}))
    try:
        meta = SnapshotMeta(index=RESTORED_INDEX, term=RESTORED_TERM,
                            conf_state=ConfState(voters=sorted(set(voters)), learners=[]))
        # No addresses in the envelope: the members' --peers give them.
        snap = Snapshot(meta=meta, data=encode_snapshot_envelope({}, state_machine_data))
        await storage.save(HardState(term=RESTORED_TERM, vote=None, commit=RESTORED_INDEX),
                           snapshot=snap)
    finally:
        storage.close()

"""Coordination recipes on meshraft's leases, transactions and watch.

What it offers (asyncio first; each has a blocking twin over ``meshraft.Client``):

- ``Session(client, ttl)`` / ``SyncSession``: a lease kept alive in the background,
  with an ``expired`` signal the holder must watch.
- ``Lock(session, name)`` / ``SyncLock``: a queue in create-revision order;
  ``acquire()`` returns a fencing token, ``fence()`` the compare for guarded writes.
- ``Election(session, name)`` / ``SyncElection``: campaign, proclaim, leader,
  observe, resign.

The semantics follow etcd's clientv3/concurrency package. This package only uses
the public client API (``meshraft.kv.client``); the cluster knows nothing of it.
See docs/architecture.md#recipes.
"""

from meshraft.recipes.election import Election, Leader, SyncElection
from meshraft.recipes.lock import Lock, LockNotHeld, SyncLock
from meshraft.recipes.session import DEFAULT_TTL, Session, SessionExpired, SyncSession

__all__ = [
    "DEFAULT_TTL", "Election", "Leader", "Lock", "LockNotHeld", "Session",
    "SessionExpired", "SyncElection", "SyncLock", "SyncSession",
]

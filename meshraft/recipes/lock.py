"""A distributed lock with fencing tokens, on a session's lease.

This module owns ``Lock`` (asyncio) and ``SyncLock``, and the queue both the lock
and the election (``meshraft.recipes.election``) stand in (``wait_turn``).

How it works (etcd's clientv3/concurrency semantics): a contender creates the key
``NAME/<lease id in hex>`` with its session's lease, in a transaction that only
creates it if absent. Contenders are served in the order of their keys' create
revisions: each lists the prefix once, then waits, by watching, for the deletion
of the keys with a smaller create revision than its own, newest first (so a release
wakes only the waiter just behind it; no key created later can be ahead of it, so
it never needs to list again). ``acquire()`` returns the **fencing token**: the lock key's create
revision, larger for every later holder. ``fence()`` is the compare that a
transaction guarded by the token needs (etcd's ``IsOwner()``): it holds only while
this very key (same create revision) still exists.

What a lock cannot promise: a holder that stalls (a GC pause, a stopped process)
longer than its lease may resume after the cluster gave the lock to someone else;
only a write guarded by ``fence()`` (or a store that checks the token) stays
safe then. ``is_held()`` / ``ensure_held()`` tell a holder before it acts, but
nothing can tell it *while* it acts. It never retries an operation itself (the
client does), and it never deletes a key that is not its own.
See docs/architecture.md#recipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshraft.kv.client import KeyValue
from meshraft.kv.errors import Compacted, MeshraftError
from meshraft.kv.txn import Compare, Op
from meshraft.recipes.session import Session, SessionExpired, SyncSession

if TYPE_CHECKING:
    from meshraft.kv.client import AsyncClient
    from meshraft.kv.watch_client import Watch

__all__ = ["Lock", "LockNotHeld", "SyncLock", "claim", "contender_key", "contenders",
           "prefix_of", "remove", "wait_turn"]

log = logging.getLogger("meshraft.recipes.lock")

# Watch cancellations under way (a reference, so that they are not collected early);
# at most one per watch a waiter made, each one request.
_BACKGROUND: set[asyncio.Task] = set()
# A watch the waiter no longer needs is cancelled (on the member, too) this long after,
# not at once: the cancel's request is a socket write (a system call that wakes the
# member: about 0.1 ms on a small VM), and made at once it would run in the new
# holder's event loop before acquire() returns to it.
CANCEL_AFTER = 0.002


class LockNotHeld(MeshraftError):
    """The lock (or leadership) is not held by this contender (any more)."""

    code = "lock-not-held"


def prefix_of(name: bytes | str) -> bytes:
    b = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    if not b:
        raise ValueError("a lock or election name must not be empty")
    return b if b.endswith(b"/") else b + b"/"


def contender_key(prefix: bytes, lease: int) -> bytes:
    return prefix + f"{lease:x}".encode()


def contenders(prefix: bytes, kvs: list[KeyValue]) -> list[KeyValue]:
    """The keys directly under ``prefix`` (not those of a lock named ``prefix/sub``)."""
    return [kv for kv in kvs if b"/" not in kv.key[len(prefix):]]


async def claim(session: Session, prefix: bytes, value: bytes) -> tuple[bytes, int]:
    """Create this session's key under ``prefix`` if absent: (key, create revision)."""
    await session.open()
    session.check()
    client = session.client
    key = contender_key(prefix, session.lease)
    r = await client.txn([Compare.create(key) == 0],
                         [Op.put(key, value, lease=session.lease)], [Op.get(key)])
    if r.succeeded:
        return key, r.revision
    kv = r.responses[0]
    if kv is None:  # deleted between the compare and now cannot happen in one txn
        raise LockNotHeld(f"{key!r} vanished inside a transaction")
    return key, kv.create_revision


async def wait_turn(session: Session, prefix: bytes, key: bytes, rev: int) -> None:
    """Wait until no key under ``prefix`` has a smaller create revision than ``rev``.
    Raises SessionExpired if the session expires (or our key disappears) meanwhile.

    One linearizable list at the start; then no more reads: a key created later has
    a larger create revision than ours, so the keys ahead of us are a subset of the
    listed ones. We wait for their deletions newest first (each waiter watches the
    key just before its own, so a release wakes one waiter, not the whole queue); a
    key already deleted is reported at once from the watch history. The handoff is
    then one watch event after the release commits.

    The watch is read in this very task, not in one of its own: a task's end reaches
    its waiter only through callbacks, each a loop iteration on the new holder's path.
    Our key's deletion and the session's expiry are watched beside it, and either
    cancels the watch being read, which ends its iteration."""
    client = session.client
    session.check()
    kvs = contenders(prefix, await client.list(prefix))
    mine = next((kv for kv in kvs if kv.key == key and kv.create_revision == rev), None)
    if mine is None:
        raise SessionExpired(f"the contender key {key!r} is gone (its lease "
                             f"{session.lease:x} expired or was revoked)")
    earlier = sorted((kv for kv in kvs if kv.create_revision < rev),
                     key=lambda kv: kv.create_revision, reverse=True)
    if not earlier:
        return
    own = asyncio.ensure_future(_own_deleted(client, mine))  # our key going: we lost
    expired = asyncio.ensure_future(session.expired.wait())
    reading: list[Watch] = []  # the watch being read, if any

    def interrupt(_: asyncio.Future) -> None:
        for w in reading:
            _in_background(w.cancel())  # its iteration ends at once

    def interrupted() -> bool:
        return own.done() or expired.done()

    own.add_done_callback(interrupt)
    expired.add_done_callback(interrupt)
    try:
        for kv in earlier:
            if not await _deleted(client, kv, reading, interrupted):
                break
        session.check()  # (raises if `expired` ended the wait)
        if own.done():
            own.result()  # an error of that watch itself, else:
            raise SessionExpired(f"our contender key was deleted (lease {session.lease:x} "
                                 "expired or was revoked)")
    finally:
        own.remove_done_callback(interrupt)
        expired.remove_done_callback(interrupt)
        # Cancelled, not awaited: they end in the loop's next iterations, and the
        # lock's new holder need not wait for that (it is on the handoff's path).
        _cancel_in_background(own)
        _cancel_in_background(expired)


async def _own_deleted(client: AsyncClient, kv: KeyValue) -> None:
    """Return once our own key ``kv`` is deleted (from its history: no read, so that
    it never competes with the read on the handoff's path)."""
    while True:
        w = client.watch(kv.key, start_revision=kv.mod_revision + 1)
        try:
            async for ev in w:
                if ev.type == "DELETE" or ev.create_revision != kv.create_revision:
                    return
        except Compacted:
            now = await client.get(kv.key)
            if now is None or now.create_revision != kv.create_revision:
                return
            kv = now
        finally:
            _cancel_later(w)


async def _deleted(client: AsyncClient, kv: KeyValue, reading: list[Watch],
                   interrupted: Callable[[], bool]) -> bool:
    """True once ``kv`` (as read) is deleted or replaced by a newer incarnation; False
    if ``interrupted()`` (the watch in ``reading`` was then cancelled under us).

    Watch from now, then read: a deletion before the watch began shows in the read
    (linearizable, after the subscription), a later one comes as an event. (A watch
    from ``kv.mod_revision + 1`` would also see an earlier deletion, but from the
    member's history, which a member sends in its catch-up rounds, tens of
    milliseconds later: a release racing the waiter's set-up would pay for that.)"""
    while not interrupted():
        w = client.watch(kv.key)
        reading[:] = [w]
        try:
            await w.__aenter__()  # subscribed: every later change comes as an event
            now = await client.get(kv.key)
            if now is None or now.create_revision != kv.create_revision:
                return True
            async for ev in w:
                if ev.type == "DELETE" or ev.create_revision != kv.create_revision:
                    return True
            return False  # the iteration ended: the watch was cancelled (interrupted)
        except Compacted:  # a resumed watch found its history gone: look again
            continue
        finally:
            reading.clear()
            # Not awaited, and a moment later: the cancel is not on the handoff's path.
            _cancel_later(w)
    return False


def _cancel_later(w: Watch) -> None:
    asyncio.get_running_loop().call_later(CANCEL_AFTER, lambda: _in_background(w.cancel()))


def _in_background(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _cancel_in_background(task: asyncio.Future) -> None:
    """Cancel ``task`` (if still running) without waiting for it to end; whatever it
    ends with (its cancellation, or an error of a watch we no longer need) is
    collected, so nothing is logged as never retrieved."""
    if not task.done():
        task.cancel()
        _BACKGROUND.add(task)
        task.add_done_callback(_collected)
    else:
        _collected(task)


def _collected(task: asyncio.Future) -> None:
    _BACKGROUND.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: an error here was superseded by the outcome


async def remove(session: Session, key: bytes, rev: int) -> bool:
    """Delete ``key`` if it is still the one created at ``rev`` (best to call with
    the session's client alive). True when it was deleted."""
    r = await session.client.txn([Compare.create(key) == rev], [Op.delete(key)], [])
    return r.succeeded


class Lock:
    """A mutex named ``name`` on ``session``'s lease: ``token = await lock.acquire()``,
    ``await lock.release()``, or ``async with Lock(session, name) as token``.

    ``acquire(timeout=None)`` waits its turn (TimeoutError after ``timeout``; the
    place in the queue is then given up), raises ``SessionExpired`` if the session
    expires meanwhile. ``fence()`` gives the transaction compare for writes guarded
    by the token; ``is_held()`` / ``ensure_held()`` check before acting."""

    def __init__(self, session: Session, name: bytes | str) -> None:
        self.session = session
        self.prefix = prefix_of(name)
        self.key = b""
        self.token = 0  # the key's create revision while held; 0 when not held

    async def acquire(self, *, timeout: float | None = None) -> int:  # noqa: ASYNC109
        key, rev = await claim(self.session, self.prefix, b"")
        try:
            async with asyncio.timeout(timeout):
                await wait_turn(self.session, self.prefix, key, rev)
        except BaseException:
            # Give up the place in the queue (best effort: the lease would anyway).
            with contextlib.suppress(Exception):
                await asyncio.shield(remove(self.session, key, rev))
            raise
        self.key, self.token = key, rev
        log.debug("[client %s] lock %r acquired, token %d",
                  self.session.client.client_id, self.prefix, rev)
        return rev

    async def release(self) -> None:
        """Give the lock up (deleting our key; nothing if the lease already did)."""
        if not self.token:
            return
        key, self.key, self.token = self.key, b"", 0
        # A plain delete (etcd's Unlock): the key is this session's own (its name is
        # the lease id), so nobody else's key can be under that name.
        await self.session.client.delete(key)

    def fence(self) -> Compare:
        """The compare that holds only while this holder's key is the lock key it
        acquired (etcd's IsOwner): add it to every write the lock guards."""
        if not self.token:
            raise LockNotHeld(f"lock {self.prefix!r} is not held")
        return Compare.create(self.key) == self.token

    async def is_held(self) -> bool:
        """False if the session expired or the key is gone (confirmed by a read)."""
        if not self.token or self.session.expired.is_set():
            return False
        kv = await self.session.client.get(self.key)
        return kv is not None and kv.create_revision == self.token

    async def ensure_held(self) -> int:
        """The token, or LockNotHeld / SessionExpired if the lock is lost."""
        self.session.check()
        if not await self.is_held():
            raise LockNotHeld(f"lock {self.prefix!r} is no longer held (token {self.token})")
        return self.token

    async def __aenter__(self) -> int:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class SyncLock:
    """``Lock`` for the synchronous client (on a ``SyncSession``): ``with SyncLock(s,
    name) as token``, ``acquire()``, ``release()``, ``fence()``, ``is_held()``."""

    def __init__(self, session: SyncSession, name: bytes | str) -> None:
        self.sync_session = session
        self.lock = Lock(session.session, name)

    def _run(self, make: Any) -> Any:
        return self.sync_session.client.run_async(lambda _ac: make())

    @property
    def token(self) -> int:
        return self.lock.token

    def acquire(self, *, timeout: float | None = None) -> int:
        return self._run(lambda: self.lock.acquire(timeout=timeout))

    def release(self) -> None:
        self._run(self.lock.release)

    def fence(self) -> Compare:
        return self.lock.fence()

    def is_held(self) -> bool:
        return self._run(self.lock.is_held)

    def ensure_held(self) -> int:
        return self._run(self.lock.ensure_held)

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

"""A session: one lease, kept alive in the background, and the signal that it is gone.

This module owns ``Session`` (asyncio) and ``SyncSession`` (over the synchronous
``meshraft.kv.client.Client``). A session grants a lease of ``ttl`` seconds, renews
it every ``ttl / 3`` seconds, and sets its ``expired`` event as soon as the holder
must assume the lease is gone:

- a keepalive answered "lease not found" (the cluster revoked or expired it), or
- no keepalive was acknowledged for ``ttl`` seconds, counted from the moment the
  last acknowledged keepalive was *sent* (the cluster promises the lease lives at
  least ``ttl`` after that moment, and nothing more, so the holder must assume
  the worst once it has passed).

``close()`` stops the renewals and revokes the lease (its keys are deleted). The
session never decides anything for the cluster: it only reads the client's answers
and the local monotonic clock. It knows nothing of locks or elections
(``meshraft.recipes.lock`` and ``meshraft.recipes.election`` build on it).
See docs/architecture.md#recipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshraft.kv.errors import LeaseNotFound, MeshraftError

if TYPE_CHECKING:
    from meshraft.kv.client import AsyncClient, Client

__all__ = ["DEFAULT_TTL", "Session", "SessionExpired", "SyncSession"]

log = logging.getLogger("meshraft.recipes.session")

DEFAULT_TTL = 60  # seconds, as etcd's concurrency.NewSession
# Seconds between keepalive tries after one failed (the member may be gone).
RETRY_INTERVAL = 0.2


class SessionExpired(MeshraftError):
    """The session's lease is gone (or must be assumed gone): whatever it guarded
    (a lock, a leadership) is no longer held."""

    code = "session-expired"


class Session:
    """A lease of ``ttl`` whole seconds kept alive in the background.

    ``async with Session(client, ttl) as s`` (or ``await s.open()`` ... ``await
    s.close()``). ``s.lease`` is the lease id, ``s.expired`` an ``asyncio.Event``
    set when the lease is (or must be assumed) gone; ``s.check()`` raises
    ``SessionExpired`` then. ``lease_id`` reuses an existing lease instead of
    granting one."""

    def __init__(self, client: AsyncClient, ttl: int = DEFAULT_TTL, *,
                 lease_id: int = 0) -> None:
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
            raise ValueError("a session's ttl is a whole number of seconds, at least 1")
        self.client = client
        self.ttl = ttl
        self.lease = lease_id
        self.expired = asyncio.Event()
        self.reason = ""
        self._opened = False
        self._closed = False
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._open_lock = asyncio.Lock()
        self._callbacks: list[Callable[[], Any]] = []
        self.last_ack_sent = 0.0  # loop time at which the last acknowledged keepalive was sent

    async def open(self) -> Session:
        """Grant the lease (unless given one) and start keeping it alive. Idempotent."""
        async with self._open_lock:
            if self._closed:
                raise SessionExpired("the session is closed")
            if self._opened:
                return self
            loop = asyncio.get_running_loop()
            sent = loop.time()
            if self.lease:
                await self.client.lease_keepalive(self.lease)
            else:
                self.lease = (await self.client.lease_grant(self.ttl)).id
            self._ack(sent)
            self._opened = True
            self._task = loop.create_task(self._keepalive(), name=f"session-{self.lease:x}")
            log.debug("[client %s] session opened on lease %x (ttl %ds)",
                      self.client.client_id, self.lease, self.ttl)
            return self

    async def __aenter__(self) -> Session:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def on_expired(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` (on the session's loop) once the session expires."""
        if self.expired.is_set():
            callback()
        else:
            self._callbacks.append(callback)

    def check(self) -> None:
        """Raise ``SessionExpired`` if the lease is gone or must be assumed gone."""
        if self.expired.is_set():
            raise SessionExpired(f"the session's lease {self.lease:x} expired: {self.reason}")
        if self._closed:
            raise SessionExpired("the session is closed")

    async def close(self, *, revoke: bool = True) -> None:
        """Stop renewing and (with ``revoke``) revoke the lease, deleting its keys.
        A lease the cluster no longer knows is not an error."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if revoke and self._opened and not self.expired.is_set():
            with contextlib.suppress(LeaseNotFound):
                await self.client.lease_revoke(self.lease)
        self._expire("the session was closed")

    # -- keeping the lease alive --------------------------------------------------------------

    def _ack(self, sent: float) -> None:
        """A keepalive sent at loop time ``sent`` was acknowledged: the lease lives until
        at least ``sent + ttl``; arm the timer that gives it up then."""
        if sent <= self.last_ack_sent or self.expired.is_set():
            return
        self.last_ack_sent = sent
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(sent + self.ttl, self._expire,
                                   f"no keepalive acknowledged for {self.ttl}s")

    def _expire(self, reason: str) -> None:
        if self.expired.is_set():
            return
        self.reason = reason
        self.expired.set()
        if reason != "the session was closed":
            log.warning("[client %s] session lease %x expired: %s",
                        self.client.client_id, self.lease, reason)
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a callback's failure must not stop the others
                log.exception("[client %s] session expiry callback failed",
                              self.client.client_id)

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.ttl / 3
        while not self.expired.is_set():
            await asyncio.sleep(max(0.0, self.last_ack_sent + interval - loop.time()))
            while not self.expired.is_set():
                sent = loop.time()
                # Bounded: past the deadline an answer no longer helps.
                left = self.last_ack_sent + self.ttl - sent
                try:
                    await self.client.lease_keepalive(self.lease, timeout=max(0.1, left))
                except LeaseNotFound:
                    self._expire("the cluster no longer knows the lease")
                    return
                except MeshraftError as exc:
                    log.info("[client %s] keepalive of lease %x failed (%s); retrying",
                             self.client.client_id, self.lease, exc)
                    await asyncio.sleep(RETRY_INTERVAL)
                    continue
                self._ack(sent)
                break


class SyncSession:
    """``Session`` for the synchronous ``Client``: the renewals run on the client's
    event loop thread. ``expired`` is a ``threading.Event``; ``with SyncSession(c, ttl)
    as s``; ``close()`` revokes."""

    def __init__(self, client: Client, ttl: int = DEFAULT_TTL, *, lease_id: int = 0) -> None:
        self.client = client
        self.expired = threading.Event()
        self.session: Session = client.run_async(
            lambda ac: _make_session(ac, ttl, lease_id, self.expired.set))

    @property
    def lease(self) -> int:
        return self.session.lease

    @property
    def ttl(self) -> int:
        return self.session.ttl

    def check(self) -> None:
        self.session.check()

    def close(self, *, revoke: bool = True) -> None:
        self.client.run_async(lambda _ac: self.session.close(revoke=revoke))

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make_session(client: AsyncClient, ttl: int, lease_id: int,
                        on_expired: Callable[[], Any]) -> Session:
    s = await Session(client, ttl, lease_id=lease_id).open()
    s.on_expired(on_expired)  # on the loop's thread, like every later expiry
    return s

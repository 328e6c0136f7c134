"""The client side of watch: a stream of events that survives losing its member.

This module owns ``Watch`` (``async for event in client.watch(...)``), its
synchronous twin ``SyncWatch`` (``for event in client.watch(...)``), the
``WatchEvent`` they yield, and the resume logic: after a lost connection, a
member that went silent, a ``slow-watcher`` or ``unavailable`` cancel, or this
client's own queue overflowing, the watch subscribes again on another member
from the last revision it delivered plus one. It never yields an event twice,
out of order, or skips one: events below the resume point are dropped, and a
gap that cannot be filled (compacted history) raises ``Compacted``.

It talks to the cluster only through the ``link`` that ``meshraft.kv.client``
gives it (connections, requests with the client's token, and pushed frames
routed by watch id); it knows nothing of framing or TLS.

Liveness: pushed frames prove the connection alive. After ``idle`` seconds
without one (3 s), the watch asks the link whether its connection still
answers (one ``ping`` per connection however many watches share it, answered
within the client's ``attempt_timeout``); no answer means the member is gone
(killed, stopped, or its network is), and the watch moves on.
"""

# ruff: noqa: ASYNC109  (a per-call timeout argument is part of the client's API)

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from meshraft.kv import protocol as p
from meshraft.kv.client import KeyValue
from meshraft.kv.errors import (
    BadRequest,
    Compacted,
    MeshraftError,
    ProtocolViolation,
    TooLarge,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger("meshraft.kv.watch_client")

# Events (and progress frames) one watch holds for a consumer that has not taken them
# yet; beyond it the watch re-subscribes from where the consumer is (nothing is lost).
MAX_QUEUED_EVENTS = 10_000
# Seconds without any pushed frame before the watch checks its connection.
DEFAULT_IDLE = 3.0
# Cancel codes after which the watch subscribes again, and whether on another member.
RESUME_CODES = {"slow-watcher": False, p.UNAVAILABLE: True, p.BUSY: True,
                p.NOT_LEADER: True, p.TIMEOUT: True}
_FATAL = {p.BAD_REQUEST: BadRequest, p.TOO_LARGE: TooLarge, p.UNAUTHORIZED: Unauthorized}


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: ``type`` "PUT" or "DELETE" (then ``value`` is empty and ``version``
    0); ``prev_kv`` the key's previous version (only with ``prev_kv=True``)."""

    type: str
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    prev_kv: KeyValue | None = None
    lease: int = 0

    @property
    def revision(self) -> int:
        """The revision of the change (its ``mod_revision``)."""
        return self.mod_revision

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> WatchEvent:
        kv = d["kv"]
        prev = d.get("prev_kv")
        return cls(str(d["type"]), bytes(kv["key"]), bytes(kv["value"]),
                   int(kv["create_revision"]), int(kv["mod_revision"]), int(kv["version"]),
                   KeyValue.from_wire(prev) if prev is not None else None,
                   int(kv.get("lease") or 0))


class WatchLink(Protocol):
    """What a watch needs from its client (``meshraft.kv.client`` provides it)."""

    endpoints: list[tuple[str, int]]
    timeout: float
    attempt_timeout: float

    def preferred(self) -> int: ...

    async def open(self, endpoint: tuple[str, int]) -> Any: ...

    async def request(self, conn: Any, body: dict[str, Any], timeout: float,
                      push: Callable[[dict[str, Any] | None], None] | None = None
                      ) -> dict[str, Any]: ...

    async def alive(self, conn: Any) -> bool: ...

    def detach(self, conn: Any, watch_id: int) -> None: ...


class Watch:
    """A watch on a key or prefix; iterate it with ``async for``. See the module doc.

    ``revision``: the newest revision up to which this watch has delivered every
    event (from progress notifications, too). ``resumes``: how many times it
    subscribed again after a failure. ``endpoint``: the member it is on."""

    def __init__(self, link: WatchLink, key: bytes, *, prefix: bool = False,
                 start_revision: int | None = None, prev_kv: bool = False,
                 progress_notify: bool = True, idle: float = DEFAULT_IDLE) -> None:
        if start_revision is not None and (not isinstance(start_revision, int)
                                           or isinstance(start_revision, bool)
                                           or start_revision < 0):
            raise BadRequest("start_revision must be a non-negative integer")
        self.link = link
        self.key = key
        self.prefix = prefix
        self.prev_kv = prev_kv
        self.progress_notify = progress_notify
        self.idle = idle
        self.next_rev = start_revision or 0  # 0: from now (known after subscribing)
        self.revision = max(0, self.next_rev - 1)
        self.resumes = 0
        self.endpoint: tuple[str, int] | None = None
        self._ep = link.preferred()
        self._conn: Any = None
        self._wid: int | None = None
        self._gen = 0
        self._frames: deque[dict[str, Any] | None] = deque()
        self._queued = 0
        self._overflow = False
        self._waiter: asyncio.Future | None = None
        self._buf: deque[tuple[WatchEvent, int]] = deque()
        self._closed = False
        self._error: BaseException | None = None

    # -- iteration ---------------------------------------------------------------------------

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._buf:
            if self._closed:
                raise StopAsyncIteration
            await self._fill()
        ev, rev = self._buf.popleft()
        if rev:
            self.revision = max(self.revision, rev)
        return ev

    async def next_batch(self) -> list[WatchEvent]:
        """Every event received and not yet taken (at least one); [] once cancelled."""
        while not self._buf:
            if self._closed:
                return []
            await self._fill()
        out = []
        while self._buf:
            ev, rev = self._buf.popleft()
            if rev:
                self.revision = max(self.revision, rev)
            out.append(ev)
        return out

    async def __aenter__(self) -> Watch:
        if self._conn is None and not self._closed:
            await self._subscribe()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel()

    async def cancel(self) -> None:
        """End the watch (on the server too); iteration then stops."""
        if self._closed:
            return
        self._closed = True
        self._buf.clear()
        conn, wid = self._conn, self._wid
        self._drop_subscription()
        self._wake()
        if conn is not None and wid is not None:
            with contextlib.suppress(Exception):
                await self.link.request(conn, {"op": "watch_cancel", "watch_id": wid},
                                        self.link.attempt_timeout)

    # -- the subscription --------------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _drop_subscription(self) -> None:
        if self._conn is not None and self._wid is not None:
            self.link.detach(self._conn, self._wid)
        self._conn = None
        self._wid = None
        self._gen += 1
        self._frames.clear()
        self._queued = 0
        self._overflow = False

    def _sink(self, gen: int, conn: Any) -> Callable[[dict[str, Any] | None], None]:
        def push(frame: dict[str, Any] | None) -> None:
            if frame is not None and frame.get("abandoned"):
                # A subscription we stopped waiting for was made after all: end it.
                self._orphaned(conn, int(frame["watch"]))
                return
            if gen != self._gen or self._overflow:
                return
            n = max(1, len(frame.get("events") or ())) if frame is not None else 1
            if frame is not None and self._queued + n > MAX_QUEUED_EVENTS:
                self._overflow = True  # resubscribe from what the consumer has taken
                self._frames.append({"overflow": True})
            else:
                self._frames.append(frame)
                self._queued += n
            self._wake()
        return push

    async def _subscribe(self) -> None:
        """Subscribe on some member from ``next_rev``; retries across endpoints for up to
        the client's ``timeout``; raises for errors that retrying cannot fix."""
        link = self.link
        deadline = time.monotonic() + link.timeout
        attempt = 0
        last = "no endpoint answered"
        while not self._closed:
            endpoint = link.endpoints[self._ep % len(link.endpoints)]
            where = f"{endpoint[0]}:{endpoint[1]}"
            body = {"op": "watch", "key": self.key, "prefix": self.prefix,
                    "prev_kv": self.prev_kv, "progress_notify": self.progress_notify,
                    "start_revision": self.next_rev}
            self._drop_subscription()
            gen = self._gen
            try:
                conn = await link.open(endpoint)
                reply = await link.request(conn, body, link.attempt_timeout,
                                           push=self._sink(gen, conn))
            except (ConnectionError, OSError, TimeoutError, Unavailable) as exc:
                last = f"{where}: {exc or type(exc).__name__}"
            else:
                if reply.get("ok"):
                    res = reply.get("result") or {}
                    self._conn, self._wid, self.endpoint = conn, int(res["watch_id"]), endpoint
                    if not self.next_rev:
                        self.next_rev = int(res.get("revision", 0)) + 1
                        self.revision = max(self.revision, self.next_rev - 1)
                    return
                code = str(reply.get("error"))
                message = str(reply.get("message", ""))
                self._raise_fatal(code, message, reply)
                last = f"{where}: {code}: {message}"
            attempt += 1
            self._ep += 1
            if time.monotonic() >= deadline:
                raise Unavailable(f"no member would serve the watch for {link.timeout:g}s "
                                  f"(last: {last})")
            if attempt % len(link.endpoints) == 0:
                await asyncio.sleep(min(0.5, 0.05 * 2 ** min(attempt // len(link.endpoints),
                                                             4)))

    def _orphaned(self, conn: Any, wid: int) -> None:
        self.link.detach(conn, wid)
        task = asyncio.ensure_future(self.link.request(
            conn, {"op": "watch_cancel", "watch_id": wid}, self.link.attempt_timeout))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # best effort

    def _raise_fatal(self, code: str, message: str, details: dict[str, Any]) -> None:
        if code == p.COMPACTED:
            self._closed = True
            raise Compacted(message, compact_revision=details.get("compact_revision"))
        if code in RESUME_CODES:
            return
        self._closed = True
        raise _FATAL.get(code, MeshraftError)(message or code, code=code)

    async def _resume(self, why: str, elsewhere: bool, server_knows: bool = True) -> None:
        log.info("watch on %r resumes from revision %d%s: %s", self.key, self.next_rev,
                 " on another member" if elsewhere else "", why)
        conn, wid = self._conn, self._wid
        self._drop_subscription()
        if conn is not None and wid is not None and not elsewhere and server_knows:
            with contextlib.suppress(Exception):  # best effort: the server forgets it anyway
                await self.link.request(conn, {"op": "watch_cancel", "watch_id": wid},
                                        self.link.attempt_timeout)
        if elsewhere:
            self._ep += 1
        self.resumes += 1

    async def _next_frame(self) -> dict[str, Any] | None:
        """The next pushed frame; None when the connection is lost or went silent."""
        loop = asyncio.get_running_loop()
        while not self._frames:
            if self._closed:
                return {"closed": True}
            # No wait_for: in 3.11 it can swallow a cancellation that races with the
            # result, and a caller's asyncio.timeout around `async for` must always work.
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(self.idle, _set_idle, waiter)
            try:
                idle = await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if idle and not self._frames and self._conn is not None and not await (
                    self.link.alive(self._conn)):
                return None
        frame = self._frames.popleft()
        if frame is not None:
            self._queued -= max(1, len(frame.get("events") or ()))
        return frame

    async def _fill(self) -> None:
        """Wait for the next frame and turn it into events (or a resume)."""
        if self._conn is None:
            await self._subscribe()
            return
        frame = await self._next_frame()
        if frame is None:
            conn = self._conn
            await self._resume("the connection was lost or stopped answering", True)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            return
        if frame.get("closed"):
            return
        if frame.get("overflow"):
            await self._resume(f"more than {MAX_QUEUED_EVENTS} events waited in this "
                               "client", False)
            return
        if frame.get("canceled"):
            code = str(frame.get("error"))
            message = str(frame.get("message", ""))
            self._raise_fatal(code, message, frame)
            # (the server has forgotten this watch already)
            await self._resume(f"{code}: {message}", RESUME_CODES[code], server_knows=False)
            return
        try:
            revision = int(frame["revision"])
            events = [WatchEvent.from_wire(e) for e in frame.get("events") or ()]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolViolation(f"bad watch frame: {exc!r}") from None
        fresh = [ev for ev in events if ev.mod_revision >= self.next_rev]
        for i, ev in enumerate(fresh):
            self._buf.append((ev, revision if i == len(fresh) - 1 else 0))
        if not fresh:  # a progress notification (or only events delivered before)
            self.revision = max(self.revision, revision)
        self.next_rev = max(self.next_rev, revision + 1)


def _set_idle(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(True)


class SyncWatch:
    """``Watch`` for the synchronous client: ``for event in watch``; ``close()``."""

    def __init__(self, watch: Watch,
                 run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self._watch = watch
        self._run = run
        self._batch: deque[WatchEvent] = deque()
        self._rev = 0  # what the caller has been given all events up to
        self._batch_end = 0

    @property
    def revision(self) -> int:
        """As ``Watch.revision``, counting only the events this iterator handed out."""
        return self._rev if self._batch else max(self._rev, self._watch.revision)

    @property
    def resumes(self) -> int:
        return self._watch.resumes

    @property
    def endpoint(self) -> tuple[str, int] | None:
        return self._watch.endpoint

    def __iter__(self) -> SyncWatch:
        return self

    def __next__(self) -> WatchEvent:
        if not self._batch:
            self._batch.extend(self._run(self._watch.next_batch()))
            if not self._batch:
                raise StopIteration
            self._batch_end = self._watch.revision
        ev = self._batch.popleft()
        if not self._batch:
            done = self._batch_end
        else:  # a revision is complete once its last event is handed out
            done = ev.revision if self._batch[0].revision != ev.revision else ev.revision - 1
        self._rev = max(self._rev, done)
        return ev

    def start(self) -> SyncWatch:
        """Subscribe now (iteration would do it on the first event)."""
        self._run(self._watch.__aenter__())
        return self

    def close(self) -> None:
        self._batch.clear()
        self._run(self._watch.cancel())

    cancel = close

    def __enter__(self) -> SyncWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

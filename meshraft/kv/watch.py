"""The server side of watch: who watches what, and getting every event to them.

This module owns the watch hub of one member: the watchers of every client
connection, the index that finds the watchers of a changed key, catch-up from
the state machine's history, progress notifications, cancels, and the bounds
that keep a slow client from growing the server. It never touches the store
(it only reads ``events_since`` and listens to ``on_revision``/``on_restore``/
``on_compact``), never blocks the apply path (``on_revision`` only appends and
schedules one flush), and never drops an event silently: a watcher that cannot
be served is cancelled with a code that tells the client what to do.

The path of an event (see docs/architecture.md#watch):

1. apply -> ``on_revision(rev, events)``: appended to ``pending``; one flush is
   scheduled with ``call_soon`` (all revisions applied in one go share it), or a
   little later if the last flush was expensive (``FLUSH_SPACING``: with many
   connections to write, more revisions then share one write per connection).
   When the node has applied a batch it calls ``flush_due``: a flush that is
   not held back runs then, without waiting for the loop's next iteration.
2. flush: each event's key is looked up in the exact-key index and, for each
   distinct prefix length, in the prefix index (cost: events x distinct prefix
   lengths, not events x watchers). Watchers are grouped by (key, prefix,
   prev_kv): a group's matching events are encoded once and that byte string
   is spliced into every member's frame behind a small per-watcher header.
3. each connection writes its frames with one ``writelines``. When the
   connection's transport buffer is over ``write_buffer`` bytes the frames
   wait in the watcher's own queue instead (shared bytes, counted per
   watcher); a queue over ``buffer_events`` events or ``buffer_bytes`` bytes
   cancels that watch with ``slow-watcher`` (the client resumes from its last
   revision). One pump task per connection with a backlog (none otherwise)
   drains the queues when the transport drains.

A watcher that starts in the past is "unsynced": the connection's pump sends
its history in chunks (``events_since``, at most ``catchup_events`` events per
step, only up to the revision the hub has flushed) while the transport has
room, then it joins the live path. A watcher whose start is in the future is
live at once and simply sees nothing before its start.

Progress: every ``progress_interval`` seconds a watcher that is caught up and
was sent nothing since the last tick gets ``{"watch", "revision": R,
"progress": true}`` with R the member's applied revision (all events <= R
were sent). ``watch_progress`` asks for one now for every watch of the
connection (a watch still catching up gets it once caught up).

Availability: a member that has had no leader for longer than
``leaderless_timeout`` (about two election timeouts), that was removed, or
that is stopping cancels its watches with ``unavailable`` and refuses new ones,
so clients move on to a member that is still part of the cluster.

Why this module is over 600 lines: the index, the per-connection output with
its bounds, catch-up and the request handlers share the watcher's state (its
next revision, whether it is synced, its queue); split apart, each piece would
have to reach into the others' private state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgpack

from meshraft.kv import protocol as p
from meshraft.kv.state_machine import (
    Compacted,
    Event,
    KVStateMachine,
    validate_key,
    validate_prefix,
)

log = logging.getLogger("meshraft.kv.watch")

WATCH_OPS = ("watch", "watch_cancel", "watch_progress")
SLOW_WATCHER = "slow-watcher"

DEFAULT_MAX_WATCHES_PER_CONNECTION = 1024
# Events one watch may have waiting on the server for a client that reads too slowly.
DEFAULT_BUFFER_EVENTS = 1000
DEFAULT_PROGRESS_INTERVAL = 5.0
# Frames carry whole revisions; beyond this many bytes of events a batch becomes several.
FRAME_EVENT_BYTES = 1 << 20
# After a flush that took t seconds, the next one waits until FLUSH_SPACING * t later
# (at most MAX_FLUSH_DELAY): cheap flushes go out at once, a flush that writes to
# hundreds of connections lets the following revisions gather into one batch.
FLUSH_SPACING = 2.0
MAX_FLUSH_DELAY = 0.01

_packb = msgpack.Packer(use_bin_type=True).pack
_KEY_WATCH = _packb("watch")
_KEY_REVISION = _packb("revision")
_KEY_EVENTS = _packb("events")
_MAP3 = b"\x83"  # a fixmap of three entries: watch, revision, events


@dataclass(frozen=True, slots=True)
class WatchLimits:
    """The bounds of one member's watch service (``serve`` flags)."""

    max_watches_per_connection: int = DEFAULT_MAX_WATCHES_PER_CONNECTION
    buffer_events: int = DEFAULT_BUFFER_EVENTS  # per watch, waiting for a slow client
    buffer_bytes: int = 16 << 20  # per watch, the same in bytes
    connection_bytes: int = 64 << 20  # all watches of one connection together
    total_bytes: int = 512 << 20  # all watches of this member together
    write_buffer: int = 256 << 10  # transport bytes beyond which frames wait in queues
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    catchup_events: int = 1000  # history events read per catch-up step
    leaderless_timeout: float | None = None  # None: two election timeouts of the node

    def __post_init__(self) -> None:
        if self.max_watches_per_connection < 1:
            raise ValueError("max watches per connection must be at least 1")
        if self.buffer_events < 1 or self.buffer_bytes < 1:
            raise ValueError("the per-watch buffer must hold at least one event")
        if not self.progress_interval > 0:
            raise ValueError("the progress interval must be positive")


class Watcher:
    """One watch of one connection."""

    __slots__ = (
        "canceled",
        "conn",
        "group",
        "id",
        "key",
        "next_rev",
        "prefix",
        "prev_kv",
        "progress_notify",
        "progress_wanted",
        "queue",
        "queued_bytes",
        "queued_events",
        "sent",
        "synced",
    )

    def __init__(self, wid: int, key: bytes, prefix: bool, prev_kv: bool,
                 progress_notify: bool, next_rev: int, conn: WatchConnection) -> None:
        self.id = wid
        self.key = key
        self.prefix = prefix
        self.prev_kv = prev_kv
        self.progress_notify = progress_notify
        self.next_rev = next_rev  # the first revision this watcher has not been sent
        self.conn = conn
        self.group: _Group | None = None
        self.synced = False
        # frames waiting for the connection to drain: (header, events bytes, event count)
        # (None while empty: an idle watcher costs no deque)
        self.queue: deque[tuple[bytes, bytes, int]] | None = None
        self.queued_events = 0
        self.queued_bytes = 0
        self.sent = False  # anything sent since the last progress tick
        self.progress_wanted = False
        self.canceled = False

    def matches(self, key: bytes) -> bool:
        return key.startswith(self.key) if self.prefix else key == self.key


class _Group:
    """Watchers with the same key, prefix flag and prev_kv flag: one encoding serves all."""

    __slots__ = ("spec", "watchers")

    def __init__(self, spec: tuple[bytes, bool, bool]) -> None:
        self.spec = spec
        self.watchers: dict[Watcher, None] = {}  # insertion-ordered set


def _frame_head(wid: int, revision: int, body_len: int) -> bytes:
    head = _MAP3 + _KEY_WATCH + _packb(wid) + _KEY_REVISION + _packb(revision) + _KEY_EVENTS
    return p.HEADER.pack(len(head) + body_len) + head


def _encode_events(events: list[Event], prev_kv: bool) -> bytes:
    n = len(events)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 65536:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(_packb(ev.to_wire(prev_kv)) for ev in events)


def _event_size(ev: Event) -> int:
    size = len(ev.kv.key) + len(ev.kv.value) + 96
    if ev.prev_kv is not None:
        size += len(ev.prev_kv.key) + len(ev.prev_kv.value) + 64
    return size


def _chunks(revs: list[tuple[int, list[Event]]]) -> list[tuple[int, list[Event]]]:
    """Whole revisions' events as frames of about FRAME_EVENT_BYTES at most:
    (the last revision in the frame, its events)."""
    out: list[tuple[int, list[Event]]] = []
    cur: list[Event] = []
    size = 0
    last = 0
    for rev, evs in revs:
        rsize = sum(_event_size(e) for e in evs)
        if cur and size + rsize > FRAME_EVENT_BYTES:
            out.append((last, cur))
            cur, size = [], 0
        cur.extend(evs)
        size += rsize
        last = rev
    if cur:
        out.append((last, cur))
    return out


class WatchConnection:
    """The watch side of one client connection: its watchers and its output.

    Frames are written whole and synchronously, so they never interleave with
    the request replies the server writes on the same writer."""

    def __init__(self, hub: WatchHub, writer: asyncio.StreamWriter, peer: Any) -> None:
        self.hub = hub
        self.writer = writer
        self.peer = peer
        self.watchers: dict[int, Watcher] = {}
        self.ids = 0
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.queued_bytes = 0
        self.backlog: dict[Watcher, None] = {}  # watchers with queued frames or catching up
        self.pump: asyncio.Task | None = None
        self.closed = False
        transport = writer.transport
        with contextlib.suppress(Exception):  # drain() then waits for our bound, not 64 KiB
            transport.set_write_buffer_limits(high=hub.limits.write_buffer)

    # -- output ------------------------------------------------------------------------------

    def buffered(self) -> int:
        transport = self.writer.transport
        try:
            size = transport.get_write_buffer_size() if transport is not None else 0
        except Exception:  # a transport that cannot tell: treat it as empty
            size = 0
        return size + self.out_bytes

    def has_room(self) -> bool:
        return self.buffered() < self.hub.limits.write_buffer

    def write(self, head: bytes, body: bytes) -> None:
        self.out.append(head)
        self.out.append(body)
        self.out_bytes += len(head) + len(body)

    def flush_writes(self) -> None:
        if not self.out:
            return
        out, self.out, self.out_bytes = self.out, [], 0
        if self.closed or self.writer.is_closing():
            return
        try:
            self.writer.writelines(out)
        except (ConnectionError, OSError, RuntimeError):
            self.closed = True

    def send_frame(self, w: Watcher, revision: int, events: list[Event],
                   body: bytes | None = None) -> None:
        """Send (or queue, when the client reads too slowly) the events of whole
        revisions up to ``revision`` to ``w``; ``body`` is their shared encoding."""
        if body is None:
            body = _encode_events(events, w.prev_kv)
        head = _frame_head(w.id, revision, len(body))
        w.next_rev = revision + 1
        w.sent = True
        self.hub.stats["events_sent"] += len(events)
        if not w.queue and self.has_room():
            self.write(head, body)
            return
        limits = self.hub.limits
        size = len(head) + len(body)
        if (w.queued_events + len(events) > limits.buffer_events
                or w.queued_bytes + size > limits.buffer_bytes
                or self.queued_bytes + size > limits.connection_bytes
                or self.hub.stats["queued_bytes"] + size > limits.total_bytes):
            self.cancel(w, SLOW_WATCHER,
                        f"the client read too slowly: more than {limits.buffer_events} events "
                        f"or {limits.buffer_bytes} bytes waited for this watch; resume from "
                        "the last revision received + 1")
            return
        if w.queue is None:
            w.queue = deque()
        w.queue.append((head, body, len(events)))
        w.queued_events += len(events)
        w.queued_bytes += size
        self.queued_bytes += size
        self.hub.stats["queued_bytes"] += size
        self.want_pump(w)

    def send_plain(self, body: dict[str, Any]) -> None:
        frame = p.encode_frame(body)
        self.write(frame, b"")

    def progress(self, w: Watcher) -> None:
        self.send_plain({"watch": w.id, "revision": self.hub.flushed, "events": [],
                         "progress": True})
        w.progress_wanted = False
        w.sent = True

    def cancel(self, w: Watcher, code: str, message: str, **details: Any) -> None:
        """End ``w`` with a cancel frame. The frame goes out even past the write buffer
        (one small frame per watch: bounded by the watches per connection)."""
        if w.canceled:
            return
        self.drop(w)
        self.hub.stats["canceled_" + code.replace("-", "_")] = (
            self.hub.stats.get("canceled_" + code.replace("-", "_"), 0) + 1)
        self.send_plain({"watch": w.id, "canceled": True, "error": code, "message": message,
                         **details})
        self.flush_writes()

    def drop(self, w: Watcher) -> None:
        """Forget ``w`` and whatever waits for it."""
        w.canceled = True
        self.watchers.pop(w.id, None)
        self.backlog.pop(w, None)
        self.queued_bytes -= w.queued_bytes
        self.hub.stats["queued_bytes"] -= w.queued_bytes
        w.queue = None
        w.queued_events = w.queued_bytes = 0
        self.hub.remove(w)

    def want_pump(self, w: Watcher) -> None:
        self.backlog[w] = None
        if self.pump is None or self.pump.done():
            self.pump = asyncio.get_running_loop().create_task(self.run_pump())

    async def run_pump(self) -> None:
        """Drain queued frames and catch watchers up from history, as fast as the
        client reads. Runs only while some watcher of this connection needs it."""
        try:
            while self.backlog and not self.closed:
                if not self.has_room():
                    self.flush_writes()
                    await self.writer.drain()
                    if not self.has_room():
                        await asyncio.sleep(0.01)
                    continue
                progressed = False
                for w in list(self.backlog):
                    if not self.has_room():
                        break
                    if w.queue:
                        head, body, n = w.queue.popleft()
                        if not w.queue:
                            w.queue = None
                        w.queued_events -= n
                        size = len(head) + len(body)
                        w.queued_bytes -= size
                        self.queued_bytes -= size
                        self.hub.stats["queued_bytes"] -= size
                        self.write(head, body)
                        progressed = True
                    elif not w.synced:
                        self.hub.catch_up_step(w)
                        progressed = True
                    if not w.queue and w.synced and not w.canceled:
                        self.backlog.pop(w, None)
                        if w.progress_wanted:
                            self.hub.flush()
                            self.progress(w)
                self.flush_writes()
                # Let requests and applies run between steps; a transport that does not
                # pause at our bound (it cannot tell its size) is polled, never spun on.
                await asyncio.sleep(0 if progressed else 0.01)
        except (ConnectionError, OSError):
            self.closed = True
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not leave watchers silently stuck
            self.hub.log.exception("watch output of client %s failed; closing it", self.peer)
            self.closed = True
            self.writer.close()

    def close(self) -> None:
        """The connection ended: forget its watchers."""
        self.closed = True
        for w in list(self.watchers.values()):
            self.drop(w)
        self.out.clear()
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
        self.hub.connections.pop(self, None)


class WatchHub:
    """Every watcher of one member, indexed by key and prefix. Listens to the state
    machine; the server hands it the watch requests with their connection."""

    def __init__(self, sm: KVStateMachine, node: Any, limits: WatchLimits | None = None,
                 logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        self.sm = sm
        self.node = node
        self.limits = limits or WatchLimits()
        self.log = logger or log
        self.connections: dict[WatchConnection, None] = {}
        self.groups: dict[tuple[bytes, bool, bool], _Group] = {}
        self.exact: dict[bytes, list[_Group]] = {}
        # prefix length -> prefix -> groups: one dict lookup per distinct length and event
        self.prefixes: dict[int, dict[bytes, list[_Group]]] = {}
        self.pending: list[tuple[int, tuple[Event, ...]]] = []
        self.flushed = sm.revision  # every event up to here went to the live watchers
        self.stats: dict[str, int] = {"watchers": 0, "events_sent": 0, "queued_bytes": 0,
                                      "flushes": 0}
        self._scheduled = False
        self._next_flush = 0.0  # loop time before which no flush runs unless asked for
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task | None = None
        self._leader_seen = 0.0
        self.unavailable: str | None = None  # why this member serves no watch now
        self.stopping = False
        timeout = self.limits.leaderless_timeout
        if timeout is None:
            cfg = getattr(node, "config", None)
            tick = getattr(cfg, "tick_interval", 0.05)
            ticks = getattr(cfg, "election_ticks", 10)
            timeout = max(1.0, 4 * tick * ticks)  # two of the longest election timeouts
        self.leaderless_timeout = float(timeout)
        sm.add_listener(self)
        # The node says when a batch of entries was applied: their events go out then,
        # not one loop iteration later (the scheduled flush finds nothing left).
        observers = getattr(node, "applied_observers", None)
        if observers is not None:
            observers.append(self.flush_due)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._leader_seen = self._loop.time()
        self._ticker = self._loop.create_task(self._tick())

    async def stop(self) -> None:
        """Cancel every watch with ``unavailable`` (the member is stopping)."""
        self.stopping = True
        self.sm.remove_listener(self)
        observers = getattr(self.node, "applied_observers", None)
        if observers is not None and self.flush_due in observers:
            observers.remove(self.flush_due)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(BaseException):
                await self._ticker
        self.flush()
        self.cancel_all(p.UNAVAILABLE, "this member is shutting down; resume elsewhere")

    def connection(self, writer: asyncio.StreamWriter, peer: Any) -> WatchConnection:
        conn = WatchConnection(self, writer, peer)
        self.connections[conn] = None
        return conn

    def cancel_all(self, code: str, message: str) -> None:
        for conn in list(self.connections):
            for w in list(conn.watchers.values()):
                conn.cancel(w, code, message)

    async def _tick(self) -> None:
        """Progress notifications and the member's availability, for all watchers."""
        assert self._loop is not None
        loop = self._loop
        step = min(0.25, self.limits.progress_interval)
        next_progress = loop.time() + self.limits.progress_interval
        while True:
            await asyncio.sleep(step)
            try:
                now = loop.time()
                self.check_available(now)
                if now >= next_progress:
                    next_progress = now + self.limits.progress_interval
                    self.progress_tick()
            except Exception:
                self.log.exception("watch tick failed")

    def check_available(self, now: float) -> None:
        node = self.node
        reason = None
        if getattr(node, "role", "") == "removed":
            reason = "this member was removed from the cluster"
        elif getattr(node, "fail_stopped", None) is not None:
            reason = f"this member stopped serving: {node.fail_stopped}"
        elif getattr(node, "leader_id", None) is not None:
            self._leader_seen = now
        elif now - self._leader_seen > self.leaderless_timeout:
            reason = (f"this member has had no leader for {now - self._leader_seen:.1f}s "
                      "(partitioned or no quorum)")
        if reason is not None and self.unavailable is None:
            self.log.info("cancelling every watch: %s", reason)
            self.flush()
            self.cancel_all(p.UNAVAILABLE, reason + "; resume on another member")
        self.unavailable = reason

    def progress_tick(self) -> None:
        self.flush()
        for conn in list(self.connections):
            for w in conn.watchers.values():
                if w.sent:
                    w.sent = False
                elif w.progress_notify and w.synced and not w.queue and conn.has_room():
                    conn.progress(w)
                    w.sent = False
            conn.flush_writes()

    # -- index -------------------------------------------------------------------------------

    def add(self, w: Watcher) -> None:
        spec = (w.key, w.prefix, w.prev_kv)
        g = self.groups.get(spec)
        if g is None:
            g = self.groups[spec] = _Group(spec)
            if w.prefix:
                self.prefixes.setdefault(len(w.key), {}).setdefault(w.key, []).append(g)
            else:
                self.exact.setdefault(w.key, []).append(g)
        g.watchers[w] = None
        w.group = g
        self.stats["watchers"] += 1

    def remove(self, w: Watcher) -> None:
        g = w.group
        if g is None:
            return
        w.group = None
        self.stats["watchers"] -= 1
        g.watchers.pop(w, None)
        if g.watchers:
            return
        del self.groups[g.spec]
        if w.prefix:
            by_len = self.prefixes[len(w.key)]
            by_len[w.key].remove(g)
            if not by_len[w.key]:
                del by_len[w.key]
                if not by_len:
                    del self.prefixes[len(w.key)]
        else:
            self.exact[w.key].remove(g)
            if not self.exact[w.key]:
                del self.exact[w.key]

    # -- the state machine's listener ---------------------------------------------------------

    def on_revision(self, revision: int, events: tuple[Event, ...]) -> None:
        if self._loop is None:  # not serving yet: nobody watches
            self.flushed = revision
            return
        self.pending.append((revision, events))
        if not self._scheduled:
            self._scheduled = True
            delay = self._next_flush - self._loop.time()
            if delay > 0:
                self._loop.call_later(delay, self.flush)
            else:
                self._loop.call_soon(self.flush)

    def on_restore(self, revision: int) -> None:
        self.flush()
        before = self.flushed
        self.flushed = revision
        for conn in self.connections:
            for w in conn.watchers.values():
                if w.synced:
                    w.next_rev = max(w.next_rev, before + 1)
                if w.next_rev <= revision:
                    w.synced = False
                    conn.want_pump(w)

    def on_compact(self, compact_revision: int) -> None:
        for conn in list(self.connections):
            for w in list(conn.watchers.values()):
                if not w.synced and w.next_rev < compact_revision:
                    conn.cancel(w, p.COMPACTED, f"compacted at {compact_revision}: the "
                                f"history from revision {w.next_rev} is gone",
                                compact_revision=compact_revision)

    def flush_due(self) -> None:
        """Flush now if a flush is scheduled and not held back by ``FLUSH_SPACING``."""
        if self._scheduled and self._loop is not None and self._loop.time() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Send the pending revisions' events to the live watchers they match."""
        self._scheduled = False
        if not self.pending:
            return
        started = time.perf_counter()
        try:
            self._flush()
        finally:
            if self._loop is not None:
                # Busy flushes (many connections to write) wait a little longer for the
                # next one, so that more revisions share it: flushing takes at most
                # about 1 / (1 + FLUSH_SPACING) of the time (see docs/architecture.md#watch).
                cost = time.perf_counter() - started
                self._next_flush = self._loop.time() + min(cost * FLUSH_SPACING,
                                                           MAX_FLUSH_DELAY)

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        self.stats["flushes"] += 1
        last = batch[-1][0]
        self.flushed = last
        if not self.groups:
            return
        hits: dict[_Group, list[tuple[int, list[Event]]]] = {}
        exact, prefixes = self.exact, self.prefixes
        for rev, events in batch:
            for ev in events:
                key = ev.kv.key
                groups = exact.get(key)
                if groups:
                    for g in groups:
                        _add_hit(hits, g, rev, ev)
                for length, by_prefix in prefixes.items():
                    if len(key) >= length:
                        groups = by_prefix.get(key[:length])
                        if groups:
                            for g in groups:
                                _add_hit(hits, g, rev, ev)
        touched: dict[WatchConnection, None] = {}
        for g, revs in hits.items():
            prev_kv = g.spec[2]
            frames = _chunks(revs)
            encoded = [(r, evs, _encode_events(evs, prev_kv)) for r, evs in frames]
            encoded[-1] = (last, encoded[-1][1], encoded[-1][2])
            for w in list(g.watchers):
                if not w.synced or w.canceled:
                    continue
                conn = w.conn
                for r, evs, body in encoded:
                    if w.canceled:
                        break
                    if evs[0].kv.mod_revision >= w.next_rev:
                        conn.send_frame(w, r, evs, body)
                    else:  # a watcher that starts later than this batch
                        mine = [e for e in evs if e.kv.mod_revision >= w.next_rev]
                        if mine:
                            conn.send_frame(w, r, mine)
                touched[conn] = None
        for conn in touched:
            conn.flush_writes()

    def catch_up_step(self, w: Watcher) -> None:
        """Send ``w`` the next chunk of history (up to what the live path has covered);
        mark it synced once it reaches that point."""
        if w.next_rev > self.flushed:
            w.synced = True
            return
        try:
            revs = self.sm.events_since(
                w.next_rev, min(self.limits.catchup_events, self.limits.buffer_events))
        except Compacted as exc:
            w.conn.cancel(w, p.COMPACTED, f"compacted at {exc.compact_revision}: the history "
                          f"from revision {w.next_rev} is gone",
                          compact_revision=exc.compact_revision)
            return
        mine: list[tuple[int, list[Event]]] = []
        last = None
        for rev, events in revs:
            if rev > self.flushed:
                break
            last = rev
            matching = [ev for ev in events if w.matches(ev.kv.key)]
            if matching:
                mine.append((rev, matching))
        if last is None:  # no history left at or below the flushed revision
            w.next_rev = max(w.next_rev, self.flushed + 1)
            w.synced = True
            return
        frames = _chunks(mine)
        for i, (r, evs) in enumerate(frames):
            w.conn.send_frame(w, last if i == len(frames) - 1 else r, evs)
        w.next_rev = last + 1
        if w.next_rev > self.flushed:
            w.synced = True

    # -- requests ----------------------------------------------------------------------------

    def handle(self, op: str, rid: Any, body: dict[str, Any],
               conn: WatchConnection | None) -> dict[str, Any]:
        """A watch request of ``conn`` -> its reply. Raises ProtocolError/CommandError
        for bad input (the server turns those into error replies)."""
        if conn is None:
            raise p.ProtocolError(p.BAD_REQUEST, f"{op} needs a client connection")
        if op == "watch":
            return self._watch(rid, body, conn)
        if op == "watch_cancel":
            wid = body.get("watch_id")
            w = conn.watchers.get(wid) if isinstance(wid, int) else None
            if w is None:
                return p.error_reply(rid, p.NOT_FOUND, f"no watch {wid!r} on this connection")
            conn.drop(w)
            return p.ok_reply(rid, {})
        # watch_progress: the reply first, then a progress frame for every caught-up watch
        assert self._loop is not None
        self._loop.call_soon(self._progress_now, conn)
        return p.ok_reply(rid, {"revision": self.sm.revision})

    def _progress_now(self, conn: WatchConnection) -> None:
        if conn.closed:
            return
        self.flush()
        for w in conn.watchers.values():
            if w.synced and not w.queue and conn.has_room():
                conn.progress(w)
            else:  # sent once it has caught up and the client reads again
                w.progress_wanted = True
                conn.want_pump(w)
        conn.flush_writes()

    def _watch(self, rid: Any, body: dict[str, Any], conn: WatchConnection) -> dict[str, Any]:
        flags = {}
        for name, default in (("prefix", False), ("prev_kv", False), ("progress_notify", True)):
            v = body.get(name, default)
            if not isinstance(v, bool):
                raise p.ProtocolError(p.BAD_REQUEST, f"{name} must be true or false")
            flags[name] = v
        raw = body.get("key")
        if flags["prefix"]:
            key = validate_prefix(raw, self.sm.limits)
        else:
            key = validate_key(raw, self.sm.limits)
        start = body.get("start_revision", 0)
        if start is None:
            start = 0
        if not isinstance(start, int) or isinstance(start, bool) or start < 0 or start >= 2**63:
            raise p.ProtocolError(p.BAD_REQUEST,
                                  "start_revision must be a non-negative integer "
                                  "(0: from the next revision)")
        if self.unavailable is not None or self.stopping:
            return p.error_reply(rid, p.UNAVAILABLE,
                                 f"{self.unavailable or 'this member is shutting down'}; "
                                 "watch on another member")
        limit = self.limits.max_watches_per_connection
        if len(conn.watchers) >= limit:
            return p.error_reply(
                rid, p.BAD_REQUEST,
                f"this connection already has {len(conn.watchers)} watches, the limit "
                f"(max watches per connection, serve --max-watches-per-connection) is "
                f"{limit}; cancel one or open another connection")
        current = self.sm.revision
        if start and start < self.sm.compact_revision:
            cr = self.sm.compact_revision
            return p.error_reply(rid, p.COMPACTED, f"compacted at {cr}: the history from "
                                 f"revision {start} is gone", compact_revision=cr,
                                 revision=current)
        self.flush()  # so that "from now" and the live path agree on what now is
        conn.ids += 1
        w = Watcher(conn.ids, key, flags["prefix"], flags["prev_kv"],
                    flags["progress_notify"], start or current + 1, conn)
        conn.watchers[w.id] = w
        self.add(w)
        if w.next_rev > self.flushed:
            w.synced = True
        else:
            # The history goes out after the reply (the pump runs once this returns).
            conn.want_pump(w)
        return p.ok_reply(rid, {"watch_id": w.id, "revision": current})

    def status(self) -> dict[str, Any]:
        return {**self.stats, "connections": len(self.connections), "groups": len(self.groups),
                "flushed_revision": self.flushed, "unavailable": self.unavailable}


def _add_hit(hits: dict[_Group, list[tuple[int, list[Event]]]], g: _Group, rev: int,
             ev: Event) -> None:
    revs = hits.get(g)
    if revs is None:
        hits[g] = [(rev, [ev])]
    elif revs[-1][0] == rev:
        revs[-1][1].append(ev)
    else:
        revs.append((rev, [ev]))

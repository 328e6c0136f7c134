"""The ``watch`` workload: writers put increasing integers to a few keys while watchers
follow the keys' prefix in sessions of random length, each reopened from the last
revision it delivered plus one.

Owns: the writer workers (the register workload's shape: one logical process at a time,
bound to one node's client port, the shared rate limit, the per-operation timeout, a
new process id after an unknown outcome), the watcher workers (a client on every node,
its own node first, so the watch can move when its node fails), the session schedule,
and writing both to the history in the format docs/architecture.md#jepsen-lite
describes ("watch workload"):

- a write: ``invoke`` ``f="write"``, ``key`` the key's number, ``value`` the integer;
  ``ok`` adds ``revision`` (the put's revision); ``fail``/``info`` as the register
  workload's (value repeated, ``error``). Values of one key go 1, 2, 3, ... in invoke
  order, so a (key, value) names one write. A share of the writes (TXN_SHARE, with two
  keys or more) is a transaction putting two keys at one revision: no ``key``, and
  ``value`` the list ``[[key, value], [key, value]]``; its two events must arrive
  together (etcd's atomic guarantee).
- a watch session: ``invoke`` ``f="watch"``, ``value`` the start revision; its
  completion repeats it and adds ``events`` (``[revision, key, value, type]`` in
  delivery order, the key's number and the integer decoded), ``progress`` (the watch's
  ``revision``: everything up to it was delivered), when it ended with ``Compacted``,
  ``compact_revision``, and when it was closed between two events of one revision,
  ``unfinished``: the events of that revision it had taken (left out of ``events``;
  the next session opens at that revision and delivers all of it). ``ok``: the
  workload closed it; ``fail``: it ended with an error (a watch changes nothing, so
  never ``info``).

Must never: send to anything but the endpoints it is given, reopen a watch anywhere but
at its last delivered revision + 1 (or, after ``Compacted``, at the compaction point),
close a session between two events of one revision (it waits for the watch's
``revision`` to reach the last one), hold more than MAX_SESSION_EVENTS events of a
session plus the rest of one revision, or run unbounded (every loop stops at its
deadline or when asked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jepsen_lite.history import HistoryWriter
from jepsen_lite.workload import (
    RateLimiter,
    WorkerStats,
    classify,
    close_client,
    decode_value,
    kv_client,
)

log = logging.getLogger("jepsen_lite.watch_workload")

PREFIX = "jw/"  # server keys are PREFIX + the key's number; the watchers watch PREFIX
#: a session closes itself after this many events (and reopens from the last + 1)
MAX_SESSION_EVENTS = 5000
#: writes per second over all writers when the run gives no --rate: every watcher logs
#: every write, so an unlimited rate would grow the history by watchers x writes
DEFAULT_RATE = 200.0
#: the share of writes that are a transaction of two puts (with two keys or more)
TXN_SHARE = 0.25


@dataclass
class WatchWorkloadConfig:
    concurrency: int = 10  # writers + watchers
    keys: int = 4
    rate: float | None = DEFAULT_RATE
    op_timeout: float = 2.0
    watchers: int | None = None  # default: half the workers (at least 1)
    session: tuple[float, float] = (0.5, 5.0)  # seconds a session stays open
    pause: tuple[float, float] = (0.0, 1.0)  # seconds between a close and the reopen
    txn_share: float = TXN_SHARE

    def split(self) -> tuple[int, int]:
        """(watchers, writers); both at least one."""
        if self.concurrency < 2:
            raise ValueError("the watch workload needs --concurrency 2 or more "
                             "(a writer and a watcher)")
        watchers = self.watchers if self.watchers is not None else self.concurrency // 2
        watchers = min(max(1, watchers), self.concurrency - 1)
        return watchers, self.concurrency - watchers


def decode_key(key: bytes) -> Any:
    """``jw/3`` -> 3; anything else is kept as text (the checker then objects)."""
    text = key.decode("utf-8", "replace")
    if text.startswith(PREFIX):
        rest = text[len(PREFIX):]
        if rest.isdigit():
            return int(rest)
    return text


def watch_client(endpoints: Sequence[str], home: int, op_timeout: float) -> Any:
    """A client on every endpoint, ``endpoints[home]`` first (where the watch opens)."""
    from meshraft.kv.client import AsyncClient

    ordered = list(endpoints[home:]) + list(endpoints[:home])
    return AsyncClient(ordered, timeout=op_timeout, attempt_timeout=op_timeout,
                       connect_timeout=min(1.0, op_timeout), prefer_leader=False)


def _mid_revision(w: Any, events: list[list[Any]]) -> bool:
    """Whether the last event taken may have more events of its revision still to come:
    the watch's ``revision`` (every event up to it delivered) is below it."""
    return bool(events) and getattr(w, "revision", 0) < events[-1][0]


class WatchWorkload:
    """Worker w (0 <= w < concurrency) talks to ``endpoints[w % len(endpoints)]`` (a
    watcher: first); workers below ``watchers`` watch, the rest write."""

    def __init__(self, config: WatchWorkloadConfig, endpoints: Sequence[str],
                 history: HistoryWriter, rng: random.Random,
                 client_factory: Callable[[str, float], Any] | None = None,
                 watch_client_factory: Callable[[Sequence[str], int, float], Any] | None = None
                 ) -> None:
        self.config = config
        self.n_watchers, self.n_writers = config.split()
        self.endpoints = list(endpoints)
        self.history = history
        self.rng = rng
        self.client_factory = client_factory or kv_client
        self.watch_client_factory = watch_client_factory or watch_client
        self.limiter = RateLimiter(config.rate)
        self.stats = [WorkerStats() for _ in range(config.concurrency)]
        self.completed = 0  # writes and sessions, for the progress bar
        self.events_delivered = 0
        self.next_value = dict.fromkeys(range(config.keys), 1)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def _running(self, deadline: float) -> bool:
        return not self._stop.is_set() and time.monotonic() < deadline

    async def run(self, deadline: float) -> None:
        """Run every worker until ``deadline`` (monotonic) or :meth:`stop`."""
        workers = [asyncio.create_task(
            self._watcher(w, deadline) if w < self.n_watchers else self._writer(w, deadline),
            name=f"{'watcher' if w < self.n_watchers else 'writer'}-{w}")
            for w in range(self.config.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    # ------------------------------------------------------------ writers

    async def _writer(self, w: int, deadline: float) -> None:
        rng = random.Random(self.rng.getrandbits(64))
        endpoint = self.endpoints[w % len(self.endpoints)]
        process = w
        stats = self.stats[w]
        stats.processes.append(process)
        client = self.client_factory(endpoint, self.config.op_timeout)
        try:
            while self._running(deadline):
                await self.limiter.wait()
                if not self._running(deadline):
                    break
                if self.config.keys >= 2 and rng.random() < self.config.txn_share:
                    pairs = [[k, self._next(k)] for k in rng.sample(range(self.config.keys), 2)]
                    outcome = await self._write(client, process, None, pairs)
                else:
                    key = rng.randrange(self.config.keys)
                    outcome = await self._write(client, process, key, self._next(key))
                stats.ops += 1
                self.completed += 1
                if outcome == "info":
                    process += self.config.concurrency
                    stats.processes.append(process)
                    await close_client(client)
                    client = self.client_factory(endpoint, self.config.op_timeout)
        finally:
            await close_client(client)

    def _next(self, key: int) -> int:
        value = self.next_value[key]
        self.next_value[key] = value + 1
        return value

    async def _write(self, client: Any, process: int, key: int | None, value: Any) -> str:
        """A put of ``value`` to ``key``, or (``key`` None) a transaction putting every
        ``[key, value]`` of ``value``."""
        h = self.history
        kw: dict[str, Any] = {} if key is None else {"key": key}
        h.invoke(process, "write", value, **kw)
        t = self.config.op_timeout
        try:
            if key is None:
                from meshraft.kv.txn import Op

                ops = [Op.put(f"{PREFIX}{k}", str(v)) for k, v in value]
                call = client.txn(success=ops, timeout=t)
            else:
                call = client.put(f"{PREFIX}{key}", str(value), timeout=t)
            res = await asyncio.wait_for(call, t + 2.0)
        except asyncio.CancelledError:
            h.info(process, "write", value, error="run ended", **kw)
            raise
        except Exception as exc:
            kind = classify(exc, "write")
            err = f"{type(exc).__name__}: {exc}"[:300]
            if kind == "fail":
                h.fail(process, "write", value, error=err, **kw)
            else:
                h.info(process, "write", value, error=err, **kw)
            return kind
        h.ok(process, "write", value, revision=res.revision, **kw)
        return "ok"

    # ------------------------------------------------------------ watchers

    async def _watcher(self, w: int, deadline: float) -> None:
        rng = random.Random(self.rng.getrandbits(64))
        home = w % len(self.endpoints)
        stats = self.stats[w]
        stats.processes.append(w)
        start = 1  # the whole history under the prefix (the run starts with none)
        lo, hi = self.config.session
        plo, phi = self.config.pause
        while self._running(deadline):
            seconds = min(rng.uniform(lo, hi), deadline - time.monotonic())
            if seconds <= 0:
                break
            client = self.watch_client_factory(self.endpoints, home, self.config.op_timeout)
            try:
                start = await self._session(client, w, start, seconds)
            finally:
                await close_client(client)
            stats.ops += 1
            self.completed += 1
            pause = min(rng.uniform(plo, phi), max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)

    async def _session(self, client: Any, process: int, start: int, seconds: float) -> int:
        """One session from ``start`` for ``seconds``; returns where the next one opens."""
        from meshraft.kv.errors import Compacted

        h = self.history
        h.invoke(process, "watch", start)
        events: list[list[Any]] = []
        error: str | None = None
        compacted: int | None = None
        w = None
        reader: asyncio.Task | None = None
        try:
            w = client.watch(PREFIX, prefix=True, start_revision=start)
            over = asyncio.Event()
            reader = asyncio.create_task(self._read(w, events, over), name=f"watch-{process}")
            done, _ = await asyncio.wait({reader}, timeout=seconds)
            if not done:
                # The session is over, but only between two revisions: the reader
                # stops once the watch says its last revision is complete, then the
                # watch is closed, which ends its iteration. (A task cancellation is not
                # relied on: one can be lost in a race with a frame arriving, as in
                # Python 3.11's asyncio.wait_for.)
                over.set()
                if not _mid_revision(w, events):
                    await self._close_watch(w)
                done, _ = await asyncio.wait({reader}, timeout=self.config.op_timeout)
                if not done:
                    await self._close_watch(w)
                    done, _ = await asyncio.wait({reader}, timeout=self.config.op_timeout)
                while not done:
                    reader.cancel()
                    done, _ = await asyncio.wait({reader}, timeout=1.0)
            if not reader.cancelled():
                reader.result()
        except asyncio.CancelledError:
            if reader is not None:
                reader.cancel()
            self._record(process, start, events, w, "run ended", None)
            raise
        except Compacted as exc:
            compacted = exc.compact_revision if isinstance(exc.compact_revision, int) else 0
            error = f"Compacted: {exc}"[:300]
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            if w is not None:
                await self._close_watch(w)
        self._record(process, start, events, w, error, compacted)
        self.events_delivered += len(events)
        if events:
            return int(events[-1][0]) + 1
        if compacted is not None:
            return max(start, compacted)
        return start

    async def _read(self, w: Any, events: list[list[Any]], over: asyncio.Event) -> None:
        """Take the watch's events into ``events`` until it ends, or the session is over
        or full and the last revision taken is complete (so that the reopen at last + 1
        loses no event of it)."""
        async for ev in w:
            events.append([ev.revision, decode_key(ev.key),
                           decode_value(ev.value) if ev.type == "PUT" else None, ev.type])
            if ((over.is_set() or len(events) >= MAX_SESSION_EVENTS)
                    and not _mid_revision(w, events)):
                return

    async def _close_watch(self, w: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(w.cancel(), self.config.op_timeout)

    def _record(self, process: int, start: int, events: list[list[Any]], w: Any,
                error: str | None, compacted: int | None) -> None:
        """Write the session's completion. A last revision the watch had not finished
        delivering when it was closed (its ``revision`` below it) is taken off
        ``events`` (in place) into ``unfinished``: the next session opens at it."""
        progress = getattr(w, "revision", None) if w is not None else None
        unfinished: list[list[Any]] = []
        if _mid_revision(w, events):
            last = events[-1][0]
            while events and events[-1][0] == last:
                unfinished.insert(0, events.pop())
        extra: dict[str, Any] = {"events": events,
                                 "progress": progress if isinstance(progress, int) else None}
        if unfinished:
            extra["unfinished"] = unfinished
        if error is None:
            self.history.ok(process, "watch", start, **extra)
            return
        if compacted is not None:
            extra["compact_revision"] = compacted
        self.history.fail(process, "watch", start, error=error, **extra)

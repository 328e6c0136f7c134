"""The client workload: concurrent register operations against a real cluster.

Owns: the client workers (one logical *process* at a time each, bound to one
node's client port), the choice of operations (read / write / cas on uniform
random small integers over ``keys`` keys, from a seeded RNG), the shared rate
limit, the per-operation timeout, and writing every invoke and completion to the
history in the cas-register model's format.

Outcome rules (docs/architecture.md#jepsen-lite): an answer is ``ok``; a cas
mismatch, or an error that certainly did not take effect (``Unavailable``, a read
that got no answer: reads change nothing) is ``fail``; a write or cas whose outcome
is unknown is ``info``, and the worker continues under a new process id (old +
concurrency) with a new client session.

Must never: send to anything but the endpoints it is given, retry an operation
under the same process after an ``info``, or run unbounded (every loop stops at
its deadline or when asked).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("jepsen_lite.workload")

KEY_PREFIX = "jl/"  # server keys are KEY_PREFIX + the history key
MAX_VALUE = 5  # values are uniform in [0, MAX_VALUE)


class Recorder(Protocol):
    def invoke(self, process: int, f: str, value: Any = None, *, key: Any = ...) -> Any: ...
    def ok(self, process: int, f: str, value: Any = None, *, key: Any = ...) -> Any: ...
    def fail(self, process: int, f: str, value: Any = None, *, key: Any = ...,
             error: str | None = None) -> Any: ...
    def info(self, process: int | str, f: str, value: Any = None, *, key: Any = ...,
             error: str | None = None) -> Any: ...


class RateLimiter:
    """A shared schedule of invoke slots: at most ``rate`` invokes per second overall
    (0 or None: no limit). Single event loop, so no lock is needed."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock = clock
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class WorkloadConfig:
    concurrency: int = 10
    keys: int = 8
    rate: float | None = None
    op_timeout: float = 2.0
    serializable_reads: bool = False
    mix: tuple[str, ...] = ("read", "write", "cas")


@dataclass
class WorkerStats:
    ops: int = 0
    processes: list[int] = field(default_factory=list)


def decode_value(value: bytes) -> Any:
    """Our values are decimal ints; anything else is reported as the text it is."""
    try:
        return int(value)
    except ValueError:
        return value.decode("utf-8", "replace")


class Workload:
    """``concurrency`` workers; worker w talks only to ``endpoints[w % len(endpoints)]``,
    so a partitioned or paused node shows up as that node's clients' failures."""

    def __init__(self, config: WorkloadConfig, endpoints: Sequence[str], history: Recorder,
                 rng: random.Random, client_factory: Callable[[str, float], Any] | None = None
                 ) -> None:
        self.config = config
        self.endpoints = list(endpoints)
        self.history = history
        self.rng = rng
        self.client_factory = client_factory or kv_client
        self.limiter = RateLimiter(config.rate)
        self.stats = [WorkerStats() for _ in range(config.concurrency)]
        self.completed = 0  # all workers, for the progress bar
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, deadline: float) -> None:
        """Run every worker until ``deadline`` (monotonic) or :meth:`stop`."""
        workers = [asyncio.create_task(self._worker(w, deadline), name=f"client-{w}")
                   for w in range(self.config.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def _next_op(self, rng: random.Random) -> tuple[str, int, Any]:
        f = rng.choice(self.config.mix)
        key = rng.randrange(self.config.keys)
        if f == "read":
            return f, key, None
        if f == "write":
            return f, key, rng.randrange(MAX_VALUE)
        return f, key, [rng.randrange(MAX_VALUE), rng.randrange(MAX_VALUE)]

    async def _worker(self, w: int, deadline: float) -> None:
        # each worker has its own RNG, drawn from the run's, so op choice replays by seed
        rng = random.Random(self.rng.getrandbits(64))
        endpoint = self.endpoints[w % len(self.endpoints)]
        process = w
        stats = self.stats[w]
        stats.processes.append(process)
        client = self.client_factory(endpoint, self.config.op_timeout)
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                await self.limiter.wait()
                if self._stop.is_set() or time.monotonic() >= deadline:
                    break
                f, key, value = self._next_op(rng)
                outcome = await self._invoke(client, process, f, key, value)
                stats.ops += 1
                self.completed += 1
                if outcome == "info":
                    # this process may still have an op in flight: continue as a new one,
                    # with a new client session so nothing of the old one is retried
                    process += self.config.concurrency
                    stats.processes.append(process)
                    await close_client(client)
                    client = self.client_factory(endpoint, self.config.op_timeout)
        finally:
            await close_client(client)

    async def _invoke(self, client: Any, process: int, f: str, key: int, value: Any) -> str:
        h = self.history
        h.invoke(process, f, value, key=key)
        skey = f"{KEY_PREFIX}{key}"
        t = self.config.op_timeout
        try:
            # the client bounds itself by t; the outer bound is only a safety net
            if f == "read":
                kv = await asyncio.wait_for(
                    client.get(skey, serializable=self.config.serializable_reads, timeout=t),
                    t + 2.0)
                h.ok(process, f, None if kv is None else decode_value(kv.value), key=key)
                return "ok"
            if f == "write":
                await asyncio.wait_for(client.put(skey, str(value), timeout=t), t + 2.0)
                h.ok(process, f, value, key=key)
                return "ok"
            old, new = value
            res = await asyncio.wait_for(client.cas(skey, str(old), str(new), timeout=t),
                                         t + 2.0)
            if res.succeeded:
                h.ok(process, f, value, key=key)
                return "ok"
            h.fail(process, f, value, key=key, error="cas-mismatch")
            return "fail"
        except asyncio.CancelledError:
            # the run is ending with this op in flight: its outcome is unknown
            h.info(process, f, value, key=key, error="run ended")
            raise
        except Exception as exc:
            kind = classify(exc, f)
            err = f"{type(exc).__name__}: {exc}"[:300]
            if kind == "fail":
                h.fail(process, f, value, key=key, error=err)
            else:
                h.info(process, f, value, key=key, error=err)
            return kind


def classify(exc: BaseException, f: str) -> str:
    """fail: certainly had no effect; info: may have had one."""
    if f == "read":
        return "fail"  # a read changes nothing, whatever happened to it
    try:
        from meshraft.kv.client import BadRequest, OutcomeUnknown, Unavailable
    except ImportError:  # pragma: no cover - the kv package is part of this distribution
        return "info"
    if isinstance(exc, OutcomeUnknown):
        return "info"
    if isinstance(exc, (Unavailable, BadRequest)):
        return "fail"
    return "info"  # anything unexpected on a write: we cannot know it did not apply


def kv_client(endpoint: str, op_timeout: float) -> Any:
    from meshraft.kv.client import AsyncClient

    # one endpoint only: the worker is bound to its node; one attempt per op timeout
    return AsyncClient([endpoint], timeout=op_timeout, attempt_timeout=op_timeout,
                       connect_timeout=min(1.0, op_timeout), prefer_leader=False)


async def close_client(client: Any) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        try:
            await close()
        except Exception as exc:  # closing a broken connection must not end the run
            log.debug("closing client: %s", exc)

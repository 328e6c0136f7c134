"""The lock-set and fenced-set workloads: a read-modify-write of a set under a lock.

Owns the clients of ``jepsen-lite run --workload lock-set|fenced-set``. Each
worker is its own thread with its own event loop, client and
``meshraft.recipes.Session`` (a process of its own, as far as the cluster and the
other workers can tell). In a loop it takes the lock ``jl-lockset``
(``meshraft.recipes.Lock``), reads the set, checks that it still holds the lock
(``ensure_held``: the careful holder), adds its own unique number, writes the set
back, and releases the lock.

- lock-set: the set lives OUTSIDE meshraft, in ``ExternalStore`` (an object of the
  runner's process standing for any external store: ``read()`` returns the set,
  ``write(s)`` replaces it; it knows nothing of locks or tokens).
- fenced-set: the set lives in the meshraft key ``jl-fenced/set``, and the write
  is a transaction guarded by the lock's fencing token (``Lock.fence()``): it only
  applies while the lock key still has the token as its create revision.

Stalls: when the nemesis includes ``pause``, a holder sometimes stalls between its
check and its write for ``2 * TTL + 1`` seconds, like a process in a long GC pause
or SIGSTOPped: the worker blocks its whole thread (``time.sleep``), so its
session's keepalives stop too, its lease lapses, and another worker takes the
lock meanwhile. The unfenced write then overwrites the newer set (a lost update);
the fenced one is refused. History ops (``jepsen_lite.lockset_checker`` checks):

- ``add`` value N (``token`` field: the fencing token): ``ok`` once the write is
  done (fenced: the transaction succeeded), ``fail`` when it certainly did not
  apply (a refused fenced write: error "fenced"), ``info`` when unknown;
  the completion of an add whose holder stalled has a ``stalled`` field (seconds);
- ``final-read`` value the sorted set, at the end, after every worker stopped.

Must never: send to anything but its endpoints, run past its deadline (a stall
ends the worker's loop if it passes the deadline), or keep more than one add per
worker in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jepsen_lite.workload import Recorder

log = logging.getLogger("jepsen_lite.lockset_workload")

LOCK_NAME = "jl-lockset"
SET_KEY = "jl-fenced/set"
FINAL_PROCESS = "final"


class ExternalStore:
    """A set kept outside meshraft (thread-safe, but with no notion of a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set: frozenset[int] = frozenset()

    def read(self) -> frozenset[int]:
        with self._lock:
            return self._set

    def write(self, s: frozenset[int]) -> None:
        with self._lock:
            self._set = frozenset(s)


@dataclass
class LockSetConfig:
    concurrency: int = 5
    ttl: int = 2  # seconds of every session's lease
    op_timeout: float = 2.0
    fenced: bool = False
    stall: bool = False  # holders sometimes stall 2*TTL+1 s between check and write
    stall_share: float = 0.25  # of the lock holds, with stall


class LockSetWorkload:
    def __init__(self, config: LockSetConfig, endpoints: Sequence[str], history: Recorder,
                 rng: random.Random) -> None:
        self.config = config
        self.endpoints = list(endpoints)
        self.history = history
        self.rng = rng
        self.store = ExternalStore()
        self.completed = 0
        self.stalls = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, deadline: float) -> None:
        seeds = [self.rng.getrandbits(64) for _ in range(self.config.concurrency)]
        threads = [asyncio.to_thread(self._thread, w, seeds[w], deadline)
                   for w in range(self.config.concurrency)]
        try:
            await asyncio.gather(*threads)
        finally:
            self._stop.set()  # a cancelled run: the threads end at their next step
        await self._final_read()

    def _done(self, deadline: float) -> bool:
        return self._stop.is_set() or time.monotonic() >= deadline

    def _thread(self, w: int, seed: int, deadline: float) -> None:
        asyncio.run(self._worker(w, random.Random(seed), deadline))

    def _client(self, endpoint: str | list[str]) -> Any:
        from meshraft.kv.client import AsyncClient

        t = self.config.op_timeout
        return AsyncClient(endpoint if isinstance(endpoint, list) else [endpoint],
                           timeout=t, attempt_timeout=t, connect_timeout=min(1.0, t))

    async def _worker(self, w: int, rng: random.Random, deadline: float) -> None:
        from meshraft.kv.errors import MeshraftError
        from meshraft.recipes import Session

        c = self.config
        # every worker can reach every member (a lock holder must follow the leader)
        eps = self.endpoints[w % len(self.endpoints):] + self.endpoints[:w % len(self.endpoints)]
        process, n = w, 0
        async with self._client(eps) as client:
            session: Any = None
            while not self._done(deadline):
                if session is None or session.expired.is_set():
                    if session is not None:
                        await _quietly(session.close(revoke=False))
                    session = Session(client, c.ttl)
                    try:
                        await session.open()
                    except MeshraftError:
                        session = None
                        await asyncio.sleep(0.2)
                        continue
                n += 1
                value = w * 1_000_000 + n
                if await self._hold(client, session, process, value, rng, deadline):
                    process += c.concurrency  # an unknown outcome: a new process
            if session is not None:
                await _quietly(session.close())

    async def _hold(self, client: Any, session: Any, process: int, value: int,
                    rng: random.Random, deadline: float) -> bool:
        """One lock hold and add; True when the add's outcome is unknown."""
        from meshraft.kv.errors import MeshraftError, OutcomeUnknown
        from meshraft.kv.txn import Op
        from meshraft.recipes import Lock, LockNotHeld, SessionExpired

        c, h = self.config, self.history
        lock = Lock(session, LOCK_NAME)
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            token = await lock.acquire(timeout=left)
        except (MeshraftError, TimeoutError):
            return False  # not holding: nothing was tried
        h.invoke(process, "add", value, token=token)
        extra: dict[str, Any] = {"token": token}
        outcome = "fail"
        try:
            if c.fenced:
                kv = await client.get(SET_KEY)
                current = set(json.loads(kv.value)) if kv is not None else set()
            else:
                current = set(self.store.read())
            await lock.ensure_held()  # the careful holder checks before it acts ...
            if c.stall and rng.random() < c.stall_share:
                # ... and then stalls (a GC pause): the whole thread, keepalives too
                secs = 2 * c.ttl + 1.0
                extra["stalled"] = secs
                self.stalls += 1
                time.sleep(secs)  # noqa: ASYNC251  (blocking on purpose: the stall)
            new = sorted(current | {value})
            if c.fenced:
                outcome = "info"
                r = await client.txn([lock.fence()], [Op.put(SET_KEY, json.dumps(new))], [])
                if not r.succeeded:
                    h.fail(process, "add", value, **extra,
                           error="fenced: the lock key no longer has this token")
                    return False
            else:
                self.store.write(frozenset(new))  # no fencing: nothing can refuse it
            h.ok(process, "add", value, **extra)
            return False
        except (LockNotHeld, SessionExpired) as exc:
            if outcome == "info":  # cannot happen after the write began; for safety
                h.info(process, "add", value, **extra, error=str(exc)[:300])
                return True
            h.fail(process, "add", value, **extra, error=f"lock lost: {exc}"[:300])
            return False
        except OutcomeUnknown as exc:
            h.info(process, "add", value, **extra, error=str(exc)[:300])
            return True
        except MeshraftError as exc:
            (h.fail if outcome == "fail" else h.info)(process, "add", value, **extra,
                                                       error=str(exc)[:300])
            return outcome == "info"
        finally:
            self.completed += 1
            await _quietly(lock.release())

    async def _final_read(self) -> None:
        """The set as it ended (fenced: read from the cluster, retried for a while)."""
        h = self.history
        h.invoke(FINAL_PROCESS, "final-read", None)
        if not self.config.fenced:
            h.ok(FINAL_PROCESS, "final-read", sorted(self.store.read()))
            return
        from meshraft.kv.errors import MeshraftError

        end = time.monotonic() + 30
        async with self._client(self.endpoints) as client:
            while True:
                try:
                    kv = await client.get(SET_KEY)
                except MeshraftError as exc:
                    if time.monotonic() < end:
                        await asyncio.sleep(0.5)
                        continue
                    h.fail(FINAL_PROCESS, "final-read", None, error=str(exc)[:300])
                    return
                h.ok(FINAL_PROCESS, "final-read",
                     sorted(json.loads(kv.value)) if kv is not None else [])
                return


async def _quietly(aw: Any) -> None:
    try:
        await aw
    except Exception as exc:  # cleanup of a broken session must not end the worker
        log.debug("cleanup: %s", exc)

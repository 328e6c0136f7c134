"""The lease workload: clients grant leases, keep them alive, and let them lapse.

Owns the lease clients of ``jepsen-lite run --workload lease``: each worker runs
one session after another. A session grants a lease (TTL ``ttl`` seconds), puts
one key attached to it, then keeps it alive (a keepalive every TTL/4, a read of
its key after each) for a random time, and then either revokes it or lets it
lapse (a ``lapse`` marker in the history) and reads the key until it is gone.
Every operation goes to the history in the format ``jepsen_lite.lease_checker``
checks (see there for the ops and their values).

Outcome rules as in ``jepsen_lite.workload``: an answer is ``ok``; an error that
certainly had no effect is ``fail`` (a keepalive refused with "lease not found"
is a fail whose error says so); an unknown outcome is ``info``, after which the
worker goes on as a new process with a new client. Worker w talks to
``endpoints[w % len(endpoints)]`` only, so keepalives reach the leader directly
or through a follower (forwarded through the log).

Must never: send to anything but its endpoints, run past its deadline, or keep
more than one operation per process in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jepsen_lite.workload import RateLimiter, Recorder

log = logging.getLogger("jepsen_lite.lease_workload")

KEY_PREFIX = "jl-lease/"
NOT_FOUND = "lease not found"


@dataclass
class LeaseWorkloadConfig:
    concurrency: int = 10
    ttl: int = 2  # seconds
    op_timeout: float = 2.0
    rate: float | None = None
    revoke_share: float = 0.2  # sessions that end with a revoke instead of a lapse
    # Sessions keep their lease alive for uniform(0, max_hold_ttls * TTL) seconds.
    max_hold_ttls: float = 3.0
    # How long a worker watches a lapsed lease's key before it moves on (beyond TTL).
    lapse_watch: float = 8.0


class _Outcome(Exception):
    """An op ended the session (info, or the lease is gone)."""


class LeaseWorkload:
    def __init__(self, config: LeaseWorkloadConfig, endpoints: Sequence[str],
                 history: Recorder, rng: random.Random,
                 client_factory: Callable[[str, float], Any] | None = None) -> None:
        self.config = config
        self.endpoints = list(endpoints)
        self.history = history
        self.rng = rng
        self.client_factory = client_factory or _lease_client
        self.limiter = RateLimiter(config.rate)
        self.completed = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, deadline: float) -> None:
        workers = [asyncio.create_task(self._worker(w, deadline), name=f"lease-client-{w}")
                   for w in range(self.config.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def _done(self, deadline: float) -> bool:
        return self._stop.is_set() or time.monotonic() >= deadline

    async def _worker(self, w: int, deadline: float) -> None:
        rng = random.Random(self.rng.getrandbits(64))
        endpoint = self.endpoints[w % len(self.endpoints)]
        state = {"process": w, "client": self.client_factory(endpoint, self.config.op_timeout)}
        n = 0
        try:
            while not self._done(deadline):
                await self._session(w, f"w{w}-{n}", rng, state, endpoint, deadline)
                n += 1
        finally:
            await _close(state["client"])

    async def _op(self, state: dict[str, Any], endpoint: str, f: str, session: str,
                  value: Any, call: Callable[[Any], Any]) -> tuple[str, Any]:
        """One recorded operation; ("ok", result) / ("fail", error) / ("info", error)."""
        await self.limiter.wait()
        h, p, t = self.history, state["process"], self.config.op_timeout
        h.invoke(p, f, value, key=session)
        try:
            result = await asyncio.wait_for(call(state["client"]), t + 2.0)
        except asyncio.CancelledError:
            h.info(p, f, value, key=session, error="run ended")
            raise
        except Exception as exc:
            kind, err = _classify(exc, f)
            (h.fail if kind == "fail" else h.info)(p, f, value, key=session, error=err)
            self.completed += 1
            if kind == "info":  # a new process and client: nothing of the old is retried
                state["process"] += self.config.concurrency
                await _close(state["client"])
                state["client"] = self.client_factory(endpoint, t)
            return kind, err
        out = _record_value(f, result)
        h.ok(p, f, out, key=session)
        self.completed += 1
        return "ok", out

    async def _session(self, w: int, session: str, rng: random.Random,
                       state: dict[str, Any], endpoint: str, deadline: float) -> None:
        c = self.config
        ttl = c.ttl
        kind, lease = await self._op(state, endpoint, "grant", session, ttl,
                                     lambda cl: cl.lease_grant(ttl, timeout=c.op_timeout))
        if kind != "ok":
            await asyncio.sleep(0.1)
            return
        key = KEY_PREFIX + session
        kind, _ = await self._op(state, endpoint, "put", session, lease,
                                 lambda cl: cl.put(key, session, lease=lease,
                                                   timeout=c.op_timeout))
        if kind != "ok":
            return
        hold_until = time.monotonic() + rng.uniform(0, c.max_hold_ttls * ttl)
        while time.monotonic() < hold_until and not self._done(deadline):
            sent = time.monotonic()
            kind, err = await self._op(state, endpoint, "keepalive", session, lease,
                                       lambda cl: cl.lease_keepalive(lease,
                                                                     timeout=c.op_timeout))
            if kind == "fail" and err == NOT_FOUND:
                return  # the lease is gone (the checker decides whether too early)
            await self._op(state, endpoint, "read", session, None,
                           lambda cl: cl.get(key, timeout=c.op_timeout))
            await asyncio.sleep(max(0.0, ttl / 4 - (time.monotonic() - sent)))
        if self._done(deadline):
            return
        if rng.random() < c.revoke_share:
            await self._op(state, endpoint, "revoke", session, lease,
                           lambda cl: cl.lease_revoke(lease, timeout=c.op_timeout))
            return
        h = self.history
        h.invoke(state["process"], "lapse", lease, key=session)
        h.ok(state["process"], "lapse", lease, key=session)
        watch_until = time.monotonic() + ttl + c.lapse_watch
        while time.monotonic() < watch_until and not self._done(deadline):
            kind, present = await self._op(state, endpoint, "read", session, None,
                                           lambda cl: cl.get(key, timeout=c.op_timeout))
            if kind == "ok" and present is None:
                return
            await asyncio.sleep(0.2)


def _record_value(f: str, result: Any) -> Any:
    if f == "grant":
        return result.id
    if f == "read":
        return None if result is None else result.lease  # the lease it is attached to
    if f == "keepalive":
        return result  # the TTL
    return None


def _classify(exc: BaseException, f: str) -> tuple[str, str]:
    """fail: certainly had no effect; info: may have had one."""
    from meshraft.kv.client import BadRequest, OutcomeUnknown, Unavailable
    from meshraft.kv.errors import LeaseNotFound

    if isinstance(exc, LeaseNotFound):
        return "fail", NOT_FOUND
    err = f"{type(exc).__name__}: {exc}"[:300]
    if f == "read":
        return "fail", err
    if isinstance(exc, OutcomeUnknown):
        return "info", err
    if isinstance(exc, Unavailable | BadRequest):
        return "fail", err
    return "info", err


def _lease_client(endpoint: str, op_timeout: float) -> Any:
    from meshraft.kv.client import AsyncClient

    return AsyncClient([endpoint], timeout=op_timeout, attempt_timeout=op_timeout,
                       connect_timeout=min(1.0, op_timeout), prefer_leader=False)


async def _close(client: Any) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        try:
            await close()
        except Exception as exc:  # closing a broken connection must not end the run
            log.debug("closing client: %s", exc)

"""The ``txn`` workload: multi-key conditional transactions and multi-key reads against a
real cluster, recorded for the ``txn`` model (``jepsen_lite.txn_model``).

Owns: the client workers of ``jepsen-lite run --workload txn`` (the same shape as
``jepsen_lite.workload.Workload``: one logical process at a time per worker, each
worker bound to one node's client port, a shared rate limit, a per-operation timeout),
the translation of a model transaction into a meshraft transaction, and writing every
invoke and completion to the history.

A model transaction on group g, registers r0..r2, becomes one ``client.txn``: a compare
``[r, v]`` is ``Compare.value(KEY) == str(v)`` (``v`` null: ``Compare.version(KEY) ==
0``, absent), a write ``Op.put(KEY, str(v))``, a read ``Op.get(KEY)``, with KEY =
``jl/txn/g/r``. Reads of every register of a group (no compares, no writes) are the
workload's multi-key reads.

Outcome rules (docs/architecture.md#jepsen-lite): an answer is ``ok`` (either branch:
the output says which ran); an error that certainly did not take effect
(``Unavailable``, ``BadRequest``, or any error of a read-only transaction) is ``fail``;
a transaction with writes whose outcome is unknown is ``info``, and the worker goes on
as a new process (old + concurrency) with a new client session.

Must never: send to anything but the endpoints it is given, retry an operation under the
same process after an ``info``, or run unbounded (every loop stops at its deadline or
when asked).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from jepsen_lite.txn_model import MAX_VALUE, REGISTERS_PER_GROUP, random_txn
from jepsen_lite.workload import RateLimiter, Recorder, WorkerStats, WorkloadConfig

__all__ = ["KEY_PREFIX", "TxnWorkload", "to_client_txn"]

log = logging.getLogger("jepsen_lite.txn_workload")

KEY_PREFIX = "jl/txn/"


def _key(group: str, register: str) -> str:
    return f"{KEY_PREFIX}{group}/{register}"


def to_client_txn(group: str, value: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """A model transaction as meshraft's ``client.txn`` arguments."""
    from meshraft.kv.client import Compare, Op

    compares, then, other = value
    cmp = [Compare.version(_key(group, r)) == 0 if v is None
           else Compare.value(_key(group, r)) == str(v) for r, v in compares]

    def ops(branch: list[Any]) -> list[Any]:
        return [Op.get(_key(group, r)) if f == "r" else Op.put(_key(group, r), str(v))
                for f, r, v in branch]

    return cmp, ops(then), ops(other)


def _decode(kv: Any) -> Any:
    if kv is None:
        return None
    try:
        return int(kv.value)
    except ValueError:
        return kv.value.decode("utf-8", "replace")  # not ours: the checker will object


class TxnWorkload:
    """``concurrency`` workers over ``max(1, keys // 3)`` groups of three registers;
    worker w talks only to ``endpoints[w % len(endpoints)]``."""

    def __init__(self, config: WorkloadConfig, endpoints: Sequence[str], history: Recorder,
                 rng: random.Random, client_factory: Callable[[str, float], Any] | None = None
                 ) -> None:
        self.config = config
        self.endpoints = list(endpoints)
        self.history = history
        self.rng = rng
        self.client_factory = client_factory or _kv_client
        self.limiter = RateLimiter(config.rate)
        self.groups = max(1, config.keys // REGISTERS_PER_GROUP)
        self.stats = [WorkerStats() for _ in range(config.concurrency)]
        self.completed = 0
        self.stopped = asyncio.Event()

    def stop(self) -> None:
        self.stopped.set()

    async def run(self, deadline: float) -> None:
        workers = [asyncio.create_task(self.worker(w, deadline), name=f"txn-client-{w}")
                   for w in range(self.config.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def next_op(self, rng: random.Random) -> tuple[str, list[Any]]:
        return f"g{rng.randrange(self.groups)}", random_txn(rng, REGISTERS_PER_GROUP,
                                                             MAX_VALUE)

    async def worker(self, w: int, deadline: float) -> None:
        rng = random.Random(self.rng.getrandbits(64))  # replays by seed
        endpoint = self.endpoints[w % len(self.endpoints)]
        process = w
        stats = self.stats[w]
        stats.processes.append(process)
        client = self.client_factory(endpoint, self.config.op_timeout)
        try:
            while not self.stopped.is_set() and time.monotonic() < deadline:
                await self.limiter.wait()
                if self.stopped.is_set() or time.monotonic() >= deadline:
                    break
                group, value = self.next_op(rng)
                outcome = await self.invoke(client, process, group, value)
                stats.ops += 1
                self.completed += 1
                if outcome == "info":
                    process += self.config.concurrency
                    stats.processes.append(process)
                    await _close(client)
                    client = self.client_factory(endpoint, self.config.op_timeout)
        finally:
            await _close(client)

    async def invoke(self, client: Any, process: int, group: str, value: list[Any]) -> str:
        h = self.history
        h.invoke(process, "txn", value, key=group)
        t = self.config.op_timeout
        writes = any(m[0] == "w" for m in (*value[1], *value[2]))
        try:
            compare, success, failure = to_client_txn(group, value)
            res = await asyncio.wait_for(client.txn(compare, success, failure, timeout=t),
                                         t + 2.0)
            reads = [_decode(kv) for kv, m in zip(
                res.responses, value[1] if res.succeeded else value[2], strict=True)
                if m[0] == "r"]
            h.ok(process, "txn", [res.succeeded, reads], key=group)
            return "ok"
        except asyncio.CancelledError:
            h.info(process, "txn", value, key=group, error="run ended")
            raise
        except Exception as exc:
            kind = _classify(exc, writes)
            err = f"{type(exc).__name__}: {exc}"[:300]
            if kind == "fail":
                h.fail(process, "txn", value, key=group, error=err)
            else:
                h.info(process, "txn", value, key=group, error=err)
            return kind


def _classify(exc: BaseException, writes: bool) -> str:
    """fail: certainly had no effect; info: may have had one."""
    if not writes:
        return "fail"
    from meshraft.kv.client import BadRequest, OutcomeUnknown, Unavailable

    if isinstance(exc, OutcomeUnknown):
        return "info"
    if isinstance(exc, (Unavailable, BadRequest)):
        return "fail"
    return "info"


def _kv_client(endpoint: str, op_timeout: float) -> Any:
    from meshraft.kv.client import AsyncClient

    return AsyncClient([endpoint], timeout=op_timeout, attempt_timeout=op_timeout,
                       connect_timeout=min(1.0, op_timeout), prefer_leader=False)


async def _close(client: Any) -> None:
    try:
        await client.close()
    except Exception as exc:  # closing a broken connection must not end the run
        log.debug("closing client: %s", exc)

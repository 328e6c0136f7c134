"""Sessions and locks against three real `meshraft serve` processes: mutual
exclusion with increasing fencing tokens, handoff in queue order, a session that
expires, the fencing compare, and the blocking (sync) twins."""

from __future__ import annotations

import asyncio
import time

import pytest
from recipes_helpers import cluster  # noqa: F401  (the fixture)

from meshraft.kv.client import AsyncClient
from meshraft.kv.txn import Op
from meshraft.recipes import (
    Lock,
    LockNotHeld,
    Session,
    SessionExpired,
    SyncLock,
    SyncSession,
)


async def test_mutual_exclusion_with_increasing_tokens(cluster):  # noqa: F811
    inside: list[int] = []
    tokens: list[int] = []
    overlaps = 0

    async def contender(i: int) -> None:
        nonlocal overlaps
        async with AsyncClient(cluster.endpoints()) as c, Session(c, 5) as s:
            for _ in range(3):
                async with Lock(s, "mx") as token:
                    inside.append(i)
                    if len(inside) > 1:
                        overlaps += 1
                    tokens.append(token)
                    await asyncio.sleep(0.02)
                    inside.remove(i)

    await asyncio.gather(*(contender(i) for i in range(4)))
    assert overlaps == 0
    assert len(tokens) == 12
    assert tokens == sorted(tokens) and len(set(tokens)) == 12


async def test_waiters_are_served_in_queue_order(cluster):  # noqa: F811
    async with AsyncClient(cluster.endpoints()) as c:
        sessions = [await Session(c, 10).open() for _ in range(4)]
        first = Lock(sessions[0], "order")
        t0 = await first.acquire()
        order: list[int] = []
        tasks = []
        for i in (1, 2, 3):
            lock = Lock(sessions[i], "order")

            async def take(lock=lock, i=i) -> None:
                await lock.acquire()
                order.append(i)
                await lock.release()

            tasks.append(asyncio.create_task(take()))
            # queued before the next one starts: its key exists under the prefix
            await _wait_for(lambda n=i: _count(c, b"order/", n + 1))
        assert order == []
        await first.release()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        assert order == [1, 2, 3]
        assert t0 > 0
        for s in sessions:
            await s.close()


async def test_a_waiter_that_gives_up_does_not_let_the_next_one_in(cluster):  # noqa: F811
    async with AsyncClient(cluster.endpoints()) as c:
        s1, s2, s3 = [await Session(c, 10).open() for _ in range(3)]
        holder = Lock(s1, "leave")
        t1 = await holder.acquire()
        middle = asyncio.create_task(Lock(s2, "leave").acquire())
        await _wait_for(lambda: _count(c, b"leave/", 2))
        last_lock = Lock(s3, "leave")
        last = asyncio.create_task(last_lock.acquire())
        await _wait_for(lambda: _count(c, b"leave/", 3))
        middle.cancel()  # the one just ahead of `last` leaves the queue
        with pytest.raises(asyncio.CancelledError):
            await middle
        await _wait_for(lambda: _count(c, b"leave/", 2, exactly=True))
        assert await holder.is_held()
        done, _ = await asyncio.wait({last}, timeout=1.0)  # it must still be waiting
        assert not done
        await holder.release()
        t3 = await asyncio.wait_for(last, 10)
        assert t3 > t1 and await last_lock.is_held()
        await last_lock.release()
        for s in (s1, s2, s3):
            await s.close()


async def _count(c: AsyncClient, prefix: bytes, n: int, exactly: bool = False) -> bool:
    got = len(await c.list(prefix))
    return got == n if exactly else got >= n


async def _wait_for(pred, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_fence_guards_writes_and_a_lapsed_holder_learns_it(cluster):  # noqa: F811
    async with AsyncClient(cluster.endpoints()) as c:
        s1 = await Session(c, 2).open()
        lock = Lock(s1, "fence")
        token = await lock.acquire()
        r = await c.txn([lock.fence()], [Op.put("guarded", "1")], [])
        assert r.succeeded
        assert await lock.is_held() and await lock.ensure_held() == token
        # The holder stops renewing (as a stalled process would): the lease lapses.
        await s1.close(revoke=False)
        s2 = await Session(c, 5).open()
        other = Lock(s2, "fence")
        started = time.monotonic()
        token2 = await asyncio.wait_for(other.acquire(), 15)
        assert time.monotonic() - started <= 2 + 5
        assert token2 > token
        # The old holder's guarded write no longer applies; the new holder's does.
        r = await c.txn([lock.fence()], [Op.put("guarded", "old")], [])
        assert not r.succeeded
        assert (await c.txn([other.fence()], [Op.put("guarded", "new")], [])).succeeded
        assert (await c.get("guarded")).value == b"new"
        assert not await lock.is_held()
        with pytest.raises(SessionExpired):
            await lock.ensure_held()
        await other.release()
        with pytest.raises(LockNotHeld):
            other.fence()
        await s2.close()


async def test_session_expired_signal_when_the_lease_is_revoked(cluster):  # noqa: F811
    async with AsyncClient(cluster.endpoints()) as c:
        s = await Session(c, 3).open()
        waiter = Session(c, 3)
        holder = Lock(s, "revoked")
        await holder.acquire()
        queued = asyncio.create_task(Lock(await waiter.open(), "revoked").acquire())
        await _wait_for(lambda: _count(c, b"revoked/", 2))
        await c.lease_revoke(waiter.lease)  # the waiter's lease goes: it must be told
        with pytest.raises(SessionExpired):
            await asyncio.wait_for(queued, 10)
        await asyncio.wait_for(waiter.expired.wait(), 5)  # next keepalive says so
        assert "no longer knows" in waiter.reason
        await s.close()
        assert s.expired.is_set()


def test_sync_lock_and_session(cluster):  # noqa: F811
    with cluster.client_for() as c:
        with SyncSession(c, 5) as s:
            lock = SyncLock(s, "sync")
            with lock as token:
                assert token > 0 and lock.is_held()
                assert c.txn([lock.fence()], [Op.put("k", "v")], []).succeeded
            assert not lock.is_held()
            assert not s.expired.is_set()
        assert s.expired.is_set()  # closed
        assert c.list("sync/") == []

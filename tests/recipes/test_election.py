"""Elections against three real members: the queue decides the leader, proclaim only
while leading, observe sees each new leader (a resign and a lapsed session too)."""

from __future__ import annotations

import asyncio

import pytest
from recipes_helpers import cluster  # noqa: F401  (the fixture)

from meshraft.kv.client import AsyncClient
from meshraft.recipes import Election, LockNotHeld, Session, SyncElection, SyncSession


async def test_campaign_proclaim_observe_resign(cluster):  # noqa: F811
    async with AsyncClient(cluster.endpoints()) as c:
        s1, s2, s3 = [await Session(c, 10).open() for _ in range(3)]
        e1, e2 = Election(s1, "el"), Election(s2, "el")
        seen: list[bytes] = []
        got = asyncio.Event()

        async def watch() -> None:
            async for ld in Election(s3, "el").observe():
                seen.append(ld.value)
                got.set()

        await e1.campaign("one")
        obs = asyncio.create_task(watch())
        await asyncio.wait_for(got.wait(), 10)  # observing from the current leader on
        assert seen == [b"one"]
        second = asyncio.create_task(e2.campaign("two"))
        await e1.proclaim("one-b")
        assert (await e1.leader()).value == b"one-b"
        assert not second.done()
        await e1.resign()
        with pytest.raises(LockNotHeld):
            await e1.proclaim("late")
        rev2 = await asyncio.wait_for(second, 10)
        assert (await e2.leader()).create_revision == rev2
        # a leader whose session lapses is no longer leader: observers see nobody new,
        # and its proclaim fails
        await s2.close(revoke=True)
        with pytest.raises(LockNotHeld):
            await e2.proclaim("gone")
        async with asyncio.timeout(10):
            while seen[-1:] != [b"two"]:
                got.clear()
                await got.wait()
        obs.cancel()
        assert seen == [b"one", b"one-b", b"two"]
        assert await e1.leader() is None
        await s1.close()
        await s3.close()


def test_sync_election(cluster):  # noqa: F811
    with cluster.client_for() as c, SyncSession(c, 10) as s:
        e = SyncElection(s, "sel")
        rev = e.campaign("v")
        ld = e.leader()
        assert ld is not None and ld.value == b"v" and ld.create_revision == rev
        first = next(iter(e.observe()))
        assert first.value == b"v"
        e.resign()
        assert e.leader() is None

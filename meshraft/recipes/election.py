"""Leader election on a session's lease.

This module owns ``Election`` (asyncio) and ``SyncElection``. Candidates stand in
the same queue as a lock's contenders (``meshraft.recipes.lock.wait_turn``): the
key ``NAME/<lease id in hex>`` holds the candidate's value, and the leader is the
key with the smallest create revision under the prefix. ``campaign(value)`` waits
to lead; ``proclaim(value)`` changes the leader's value only while it still leads
(a transaction guarded by its key's create revision); ``resign()`` steps down;
``leader()`` reads the current leader; ``observe()`` yields each new leader (or
new value) as it happens, by watch. A leader whose session expired is no longer
leader, whatever it believes: ``proclaim`` then fails with ``LockNotHeld``.
See docs/architecture.md#recipes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from meshraft.kv.txn import Compare, Op
from meshraft.recipes.lock import (
    LockNotHeld,
    claim,
    contenders,
    prefix_of,
    remove,
    wait_turn,
)
from meshraft.recipes.session import Session, SyncSession

__all__ = ["Election", "Leader", "SyncElection"]


@dataclass(frozen=True, slots=True)
class Leader:
    """A leader as read or observed: its key, value, and create revision (its term's
    fencing token)."""

    key: bytes
    value: bytes
    create_revision: int


def _first(kvs: list[Any]) -> Leader | None:
    if not kvs:
        return None
    kv = min(kvs, key=lambda kv: kv.create_revision)
    return Leader(kv.key, kv.value, kv.create_revision)


class Election:
    """An election named ``name`` on ``session``'s lease."""

    def __init__(self, session: Session, name: bytes | str) -> None:
        self.session = session
        self.prefix = prefix_of(name)
        self.key = b""
        self.revision = 0  # our key's create revision while we lead (or campaign)

    async def campaign(self, value: bytes | str, *,
                       timeout: float | None = None) -> int:  # noqa: ASYNC109
        """Stand with ``value`` and wait until leading; returns the create revision.
        Campaigning again on the same session takes the new value."""
        v = value.encode() if isinstance(value, str) else bytes(value)
        key, rev = await claim(self.session, self.prefix, v)
        self.key, self.revision = key, rev
        try:
            await self.proclaim(v)  # the key may have existed with an older value
            async with asyncio.timeout(timeout):
                await wait_turn(self.session, self.prefix, key, rev)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(remove(self.session, key, rev))
            self.key, self.revision = b"", 0
            raise
        return rev

    async def proclaim(self, value: bytes | str) -> None:
        """Set our value, only if our key is still the one we created."""
        if not self.revision:
            raise LockNotHeld(f"not campaigning in election {self.prefix!r}")
        v = value.encode() if isinstance(value, str) else bytes(value)
        r = await self.session.client.txn(
            [Compare.create(self.key) == self.revision],
            [Op.put(self.key, v, lease=self.session.lease)], [])
        if not r.succeeded:
            raise LockNotHeld(f"no longer a candidate in election {self.prefix!r}")

    async def resign(self) -> None:
        """Step down (delete our key if it is still ours)."""
        if not self.revision:
            return
        key, rev, self.key, self.revision = self.key, self.revision, b"", 0
        await remove(self.session, key, rev)

    async def leader(self) -> Leader | None:
        """The current leader, or None when nobody campaigns."""
        return _first(contenders(self.prefix, await self.session.client.list(self.prefix)))

    async def observe(self) -> AsyncIterator[Leader]:
        """Each new leader (or new value of the leader), in order, starting with the
        current one; runs until cancelled."""
        client = self.session.client
        # One transaction reads the candidates and tells at which revision.
        r = await client.txn([], [Op.list(self.prefix)], [])
        cands = {kv.key: kv for kv in contenders(self.prefix, r.responses[0].kvs)}
        last = _first(list(cands.values()))
        if last is not None:
            yield last
        async with client.watch(self.prefix, prefix=True, start_revision=r.revision + 1) as w:
            async for ev in w:
                if b"/" in ev.key[len(self.prefix):]:
                    continue
                if ev.type == "DELETE":
                    cands.pop(ev.key, None)
                else:
                    cands[ev.key] = ev
                now = _first(list(cands.values()))
                if now is not None and now != last:
                    last = now
                    yield now

    async def __aenter__(self) -> Election:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.resign()


class SyncElection:
    """``Election`` for the synchronous client; ``observe()`` is a blocking iterator."""

    def __init__(self, session: SyncSession, name: bytes | str) -> None:
        self.sync_session = session
        self.election = Election(session.session, name)

    def _run(self, make: Any) -> Any:
        return self.sync_session.client.run_async(lambda _ac: make())

    def campaign(self, value: bytes | str, *, timeout: float | None = None) -> int:
        return self._run(lambda: self.election.campaign(value, timeout=timeout))

    def proclaim(self, value: bytes | str) -> None:
        self._run(lambda: self.election.proclaim(value))

    def resign(self) -> None:
        self._run(self.election.resign)

    def leader(self) -> Leader | None:
        return self._run(self.election.leader)

    def observe(self) -> Any:
        it = self.election.observe()
        try:
            while True:
                try:
                    yield self._run(it.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(Exception):
                self._run(it.aclose)

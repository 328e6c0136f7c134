"""Automatic compaction: the leader keeps about the last N revisions of history.

This module owns the ``serve --auto-compact-retention N`` loop: every ``interval``
seconds, if this member leads, it proposes the replicated command ``{"op":
"compact", "revision": current - N}`` once that is at least ``step`` revisions past
the compaction point. Followers do nothing (the compaction reaches them through the
log, like any write). It never changes the state machine itself, never proposes
while this member is not the leader, and stops with the member.

With a write rate W per second, history holds at most about N + W * interval + step
revisions (see docs/architecture.md#history and the README's "History").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from meshraft.kv.state_machine import KVStateMachine, encode_command

log = logging.getLogger("meshraft.kv.compactor")

# Revisions kept by default: at a few thousand writes/s that is seconds of history for
# a watcher to resume from, and tens of MB at most for small values (README "History").
DEFAULT_RETENTION = 10_000
DEFAULT_INTERVAL = 1.0
PROPOSE_TIMEOUT = 5.0


class _NodeLog(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[node {self.extra['node']}] {msg}", kwargs


class Compactor:
    """Proposes compactions while ``node`` leads. ``retention``: revisions to keep (>= 1);
    ``step``: the least progress worth a log entry (default: a tenth of ``retention``)."""

    def __init__(self, node: Any, sm: KVStateMachine, retention: int, *,
                 interval: float = DEFAULT_INTERVAL, step: int | None = None) -> None:
        if retention < 1:
            raise ValueError("retention must be at least 1 revision")
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.node = node
        self.sm = sm
        self.retention = retention
        self.interval = interval
        self.step = max(1, step if step is not None else retention // 10)
        self.proposed = 0  # compactions proposed (for tests and status)
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self.log = _NodeLog(log, {"node": getattr(node, "node_id", "?")})

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="meshraft-compactor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def target(self) -> int | None:
        """The revision to compact at now, or None (not worth it yet)."""
        target = self.sm.revision - self.retention
        if target <= 0 or target - self.sm.compact_revision < self.step:
            return None
        return target

    async def tick(self) -> bool:
        """One check: propose a compaction if this member leads and it is due.
        True if one was proposed and applied."""
        target = self.target()
        # The role is checked right before proposing, with no await in between.
        if target is None or getattr(self.node, "role", None) != "leader":
            return False
        data = encode_command({"op": "compact", "revision": target})
        try:
            fut = self.node.propose_future(data)
            result = await asyncio.wait_for(fut, PROPOSE_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # lost leadership, timeout: the next tick tries again
            self.failed += 1
            self.log.debug("compaction at %d not done: %s", target, exc)
            return False
        self.proposed += 1
        if isinstance(result, dict) and "error" in result:
            # compacted: someone compacted further meanwhile (`meshraft compact`); fine.
            self.log.debug("compaction at %d: %s", target, result.get("message"))
            return False
        self.log.debug("compacted history below revision %d", target)
        return True

    async def _run(self) -> None:
        self.log.info("auto-compaction: keeping the last %d revisions (checked every %gs)",
                      self.retention, self.interval)
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not go unnoticed, nor stop the member
                self.log.exception("auto-compaction check failed")

"""The nemesis: faults, their schedule, and their record in the history.

Owns:
- the shapes of the network partitions (``halves``, ``majorities_ring``, ``bridge``,
  ``isolate``), as pure functions of the node list and a seeded ``random.Random``;
- the fault families (partition-halves, partition-ring, partition-bridge,
  isolate-leader, kill, pause, loss) and a registry others may add to (issue 12
  adds ``member`` through :func:`register_fault`);
- ``Nemesis``: one fault at a time, chosen and timed by the seeded RNG, each healed
  after a random interval, every start and stop written to the history as a
  ``process: "nemesis"`` info event (``start-X`` / ``stop-X`` with a value), and a
  final heal that leaves every node running, resumed and reachable.

Must never: know how the processes or the network are made (that is the cluster's
and netns' job), block the event loop (subprocess work goes to a thread), or leave a
fault in place when it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from jepsen_lite.netns import Net

log = logging.getLogger("jepsen_lite.nemesis")

Grudge = dict[str, list[str]]  # node -> the nodes it can neither hear nor reach


class Cluster(Protocol):
    """What the nemesis needs from the runner's cluster."""

    net: Net
    node_ids: list[str]

    def kill(self, node: str) -> None: ...
    def restart(self, node: str) -> None: ...
    def pause(self, node: str) -> None: ...
    def resume(self, node: str) -> None: ...
    async def find_leader(self) -> str | None: ...


class Recorder(Protocol):
    def info(self, process: int | str, f: str, value: Any = None, **extra: Any) -> Any: ...


# ---------------------------------------------------------------- partition shapes


def _sym(nodes: Sequence[str], cut_pairs: set[tuple[str, str]]) -> Grudge:
    g: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in cut_pairs:
        g[a].add(b)
        g[b].add(a)
    return {n: sorted(v, key=_nkey) for n, v in g.items() if v}


def _nkey(n: str) -> tuple[int, str]:
    return (int(n), n) if n.isdigit() else (1 << 30, n)


def halves(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """Random halves (the smaller first when odd): no traffic between them."""
    s = list(nodes)
    rng.shuffle(s)
    a, b = s[: len(s) // 2], s[len(s) // 2 :]
    return _sym(nodes, {(x, y) for x in a for y in b})


def majorities_ring(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """Each node sees a majority (itself included) and no two see the same one.

    Nodes sit on a shuffled ring and each keeps links to its ring neighbours within
    distance d, the least d that gives a majority. For three nodes (where a ring
    gives everyone everything) it is a path a-b-c: views {a,b}, {a,b,c}, {b,c}."""
    s = list(nodes)
    rng.shuffle(s)
    n = len(s)
    if n < 3:
        return halves(nodes, rng)
    if n == 3:
        return _sym(nodes, {(s[0], s[2])})
    majority = n // 2 + 1
    d = (majority - 1 + 1) // 2  # neighbours on each side: ceil((majority - 1) / 2)
    keep = set()
    for i in range(n):
        for k in range(1, d + 1):
            keep.add(frozenset((s[i], s[(i + k) % n])))
    cuts = {(s[i], s[j]) for i in range(n) for j in range(i + 1, n)
            if frozenset((s[i], s[j])) not in keep}
    return _sym(nodes, cuts)


def bridge(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """Two halves that cannot talk, joined by one node that sees both."""
    s = list(nodes)
    rng.shuffle(s)
    if len(s) < 3:
        return halves(nodes, rng)
    mid, rest = s[0], s[1:]
    a, b = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    del mid  # the bridge keeps every link
    return _sym(nodes, {(x, y) for x in a for y in b})


def isolate(node: str, nodes: Sequence[str]) -> Grudge:
    return _sym(nodes, {(node, other) for other in nodes if other != node})


def views(nodes: Sequence[str], grudge: Grudge) -> dict[str, set[str]]:
    """What each node can reach (itself included) under ``grudge``."""
    return {n: {m for m in nodes if m not in grudge.get(n, [])} for n in nodes}


# ---------------------------------------------------------------- faults


class Fault:
    """One kind of fault. ``plan`` decides what to do (and may ask the cluster, e.g. who
    leads) and returns the value to record; ``apply`` does it; ``stop`` undoes it and
    returns the value to record. The start event is written between plan and apply, so
    a fault period never begins after the fault does."""

    name = "fault"

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng

    async def plan(self) -> Any:
        raise NotImplementedError

    async def apply(self) -> None:
        raise NotImplementedError

    async def stop(self) -> Any:
        raise NotImplementedError


class _NetFault(Fault):
    grudge: Grudge | None = None

    async def apply(self) -> None:
        assert self.grudge is not None
        cuts = {k: set(v) for k, v in self.grudge.items()}
        await asyncio.to_thread(self.cluster.net.partition, cuts)

    async def stop(self) -> Any:
        await asyncio.to_thread(self.cluster.net.heal)
        return None


class PartitionFault(_NetFault):
    def __init__(self, cluster: Cluster, rng: random.Random, name: str,
                 shape: Callable[[Sequence[str], random.Random], Grudge]) -> None:
        super().__init__(cluster, rng)
        self.name = name
        self.shape = shape

    async def plan(self) -> Any:
        self.grudge = self.shape(self.cluster.node_ids, self.rng)
        return self.grudge


class IsolateLeaderFault(_NetFault):
    """Cut the current leader off from every other node. Clients still reach it (so
    its clients see what an isolated leader answers)."""

    name = "isolate-leader"

    async def plan(self) -> Any:
        leader = await self.cluster.find_leader()
        target = leader if leader is not None else self.rng.choice(self.cluster.node_ids)
        self.grudge = isolate(target, self.cluster.node_ids)
        return {"leader": leader, "isolated": target, "cuts": self.grudge}


class LossFault(_NetFault):
    """Random drop of node<->node packets at every node (client traffic untouched)."""

    name = "loss"
    probability = 0.0

    async def plan(self) -> Any:
        self.probability = round(self.rng.uniform(0.1, 0.4), 2)
        return {"probability": self.probability, "nodes": list(self.cluster.node_ids)}

    async def apply(self) -> None:
        await asyncio.to_thread(self.cluster.net.loss, self.probability)


class _ProcessFault(Fault):
    """Targets: one random node, the leader, or a random minority."""

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        super().__init__(cluster, rng)
        self.targets: list[str] = []

    async def plan(self) -> Any:
        nodes = self.cluster.node_ids
        mode = self.rng.choice(["one", "leader", "minority"])
        targets: list[str] | None = None
        if mode == "leader":
            leader = await self.cluster.find_leader()
            if leader is not None:
                targets = [leader]
            else:
                mode = "one"
        if targets is None and mode == "minority" and len(nodes) >= 3:
            k = self.rng.randint(1, (len(nodes) - 1) // 2)
            targets = sorted(self.rng.sample(nodes, k), key=_nkey)
        if targets is None:
            mode, targets = "one", [self.rng.choice(nodes)]
        self.targets = targets
        return {"mode": mode, "nodes": list(targets)}


class KillFault(_ProcessFault):
    """SIGKILL, then (at stop) restart on the same data dir. Both run on the event
    loop's thread: a server's parent-death signal is tied to the thread that started it."""

    name = "kill"

    async def apply(self) -> None:
        for n in self.targets:
            self.cluster.kill(n)

    async def stop(self) -> Any:
        for n in self.targets:
            self.cluster.restart(n)
        done, self.targets = self.targets, []
        return {"nodes": done}


class PauseFault(_ProcessFault):
    """SIGSTOP, then (at stop) SIGCONT."""

    name = "pause"

    async def apply(self) -> None:
        for n in self.targets:
            self.cluster.pause(n)

    async def stop(self) -> Any:
        for n in self.targets:
            self.cluster.resume(n)
        done, self.targets = self.targets, []
        return {"nodes": done}


class MemberFault(Fault):
    """Issue 12's ``member`` nemesis: remove a random node from the Raft configuration
    (through the cluster's client protocol) and stop its process; at stop, add a fresh
    node in the same slot (address, namespace, client port — so the workers bound to
    it carry on) under a NEW id, since ids are never reused, with an empty data dir:
    it joins, is added as a learner and promoted once caught up.

    Needs from the cluster, beyond the Cluster protocol: ``endpoints()``,
    ``start(node)``, ``extra_args`` (``--join`` is added: a no-op for members that
    restart on their own data) and ``net.nodes`` (the slot is renamed)."""

    name = "member"
    step_timeout = 20.0  # seconds each membership step may take, retries included

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        super().__init__(cluster, rng)
        self.target: str | None = None
        self.removed = False
        self.ever: set[str] = set()  # every id ever used: never handed out again

    async def plan(self) -> Any:
        self.removed = False
        if not all(hasattr(self.cluster, a) for a in ("endpoints", "start", "extra_args")):
            return {"error": "this cluster cannot add members"}
        nodes = list(self.cluster.node_ids)
        self.ever |= set(nodes)
        if len(nodes) < 3:
            return {"error": "the member nemesis needs at least 3 nodes"}
        self.target = self.rng.choice(nodes)
        return {"remove": self.target}

    async def apply(self) -> None:
        node = self.target
        assert node is not None
        await self._admin(lambda c: c.remove_member(node), f"remove {node}",
                          done_if=f"{node} is not a member")
        self.removed = True
        # Let it learn it was removed (it then serves nothing) before it is stopped.
        status = getattr(self.cluster, "node_status", None)
        deadline = time.monotonic() + 3.0
        while status is not None and time.monotonic() < deadline:
            st = await status(node, 0.5)
            if st is not None and st.get("role") == "removed":
                break
            await asyncio.sleep(0.1)
        self.cluster.kill(node)

    async def stop(self) -> Any:
        if not self.removed or self.target is None:
            return {"skipped": "nothing was removed"}
        old, self.removed = self.target, False
        new = str(max(int(n) for n in self.ever if n.isdigit()) + 1)
        self.ever.add(new)
        c: Any = self.cluster
        if "--join" not in c.extra_args:
            c.extra_args = (*c.extra_args, "--join")
        nodes = c.net.nodes
        slots = list(nodes.items())
        nodes.clear()
        for k, a in slots:  # the new id takes the old one's place (and position)
            nodes[new if k == old else k] = (
                type(a)(new, a.host, a.port, a.client_port, a.namespace) if k == old else a)
        c.start(new)  # a new data dir of its own: empty
        peer = nodes[new].peer_addr
        await self._admin(lambda cl: cl.add_member(new, peer, learner=True), f"add {new}",
                          done_if=f"{new} is already a")
        await self._admin(lambda cl: cl.promote_member(new), f"promote {new}",
                          done_if=f"{new} is already a voter", retry_if="not caught up")
        return {"removed": old, "added": new}

    async def _admin(self, call: Callable[[Any], Awaitable[Any]], what: str,
                     done_if: str, retry_if: str | None = None) -> None:
        """Retry a membership change through any member until it is done; an answer
        containing ``done_if`` means an earlier attempt (outcome unknown) took effect."""
        from meshraft.kv.client import AsyncClient, BadRequest, MeshraftError

        deadline = time.monotonic() + self.step_timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            client = AsyncClient(self.cluster.endpoints(),  # type: ignore[attr-defined]
                                 timeout=min(3.0, max(0.5, deadline - time.monotonic())),
                                 attempt_timeout=1.0, connect_timeout=0.5)
            try:
                await call(client)
                return
            except BadRequest as exc:
                if done_if in exc.message:
                    return
                if retry_if is None or retry_if not in exc.message:
                    raise RuntimeError(f"{what} refused: {exc.message}") from None
                last = exc.message
            except MeshraftError as exc:  # busy, no leader yet, outcome unknown: again
                last = exc.message
            finally:
                with contextlib.suppress(Exception):
                    await client.close()
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{what} did not succeed within {self.step_timeout:g}s: {last}")


FaultFactory = Callable[[Cluster, random.Random], Fault]

FAULTS: dict[str, FaultFactory] = {
    "partition-halves": lambda c, r: PartitionFault(c, r, "partition-halves", halves),
    "partition-ring": lambda c, r: PartitionFault(c, r, "partition-ring", majorities_ring),
    "partition-bridge": lambda c, r: PartitionFault(c, r, "partition-bridge", bridge),
    "isolate-leader": IsolateLeaderFault,
    "kill": KillFault,
    "pause": PauseFault,
    "loss": LossFault,
    "member": MemberFault,
}
# Asked for by name only: a membership change reshapes the cluster for the rest of
# the run, so ``all`` (and the runs that rely on its mix) does not draw it.
NOT_IN_ALL = {"member"}
NETWORK_FAULTS = {"partition-halves", "partition-ring", "partition-bridge", "isolate-leader",
                  "loss"}


def register_fault(name: str, factory: FaultFactory, network: bool = False) -> None:
    """Add a fault family (e.g. issue 12's ``member``). ``all`` includes it."""
    FAULTS[name] = factory
    if network:
        NETWORK_FAULTS.add(name)


def nemesis_names() -> list[str]:
    return ["none", *FAULTS, "all"]


def families_for(name: str, network_faults: bool) -> list[str]:
    """The fault families ``--nemesis name`` draws from. Raises ValueError for a name
    that is unknown or needs network faults the net cannot make."""
    if name == "none":
        return []
    if name == "all":
        return [f for f in FAULTS if (network_faults or f not in NETWORK_FAULTS)
                and f not in NOT_IN_ALL]
    if name not in FAULTS:
        raise ValueError(f"unknown nemesis {name!r}: one of {', '.join(nemesis_names())}")
    if name in NETWORK_FAULTS and not network_faults:
        raise ValueError(f"--nemesis {name} needs network faults: use --net netns (root); "
                         "--net local has kill and pause only")
    return [name]


# ---------------------------------------------------------------- schedule


@dataclass
class Period:
    """One fault, from its start to its stop (monotonic seconds since the run began)."""

    f: str
    start: float
    stop: float | None = None
    value: Any = None


@dataclass
class Schedule:
    fault_min: float = 2.0
    fault_max: float = 8.0
    gap_min: float = 1.0
    gap_max: float = 4.0

    @classmethod
    def for_duration(cls, seconds: float) -> Schedule:
        """Faults long enough to force elections (several election timeouts), short
        enough that a short run still sees several of them."""
        top = max(3.0, min(10.0, seconds / 4))
        return cls(fault_min=min(2.5, top), fault_max=top, gap_min=1.0,
                   gap_max=max(1.5, min(4.0, seconds / 10)))


@dataclass
class Nemesis:
    families: list[str]
    cluster: Cluster
    rng: random.Random
    history: Recorder
    schedule: Schedule = field(default_factory=Schedule)
    clock: Callable[[], float] = time.monotonic
    t0: float = field(default_factory=time.monotonic)
    periods: list[Period] = field(default_factory=list)
    _active: Fault | None = None
    _active_period: Period | None = None

    @property
    def active(self) -> str | None:
        """The name of the fault active now (None: none), for the progress line."""
        return self._active.name if self._active is not None else None

    async def run(self, duration: float) -> None:
        """Start and stop faults until ``duration`` seconds after ``t0``; always
        leaves no fault active (also when cancelled)."""
        if not self.families:
            return
        faults = {name: FAULTS[name](self.cluster, self.rng) for name in self.families}
        end = self.t0 + duration
        try:
            while True:
                gap = self.rng.uniform(self.schedule.gap_min, self.schedule.gap_max)
                if self.clock() + gap + self.schedule.fault_min > end:
                    break
                await self._sleep_until(self.clock() + gap)
                name = self.rng.choice(self.families)
                hold = self.rng.uniform(self.schedule.fault_min, self.schedule.fault_max)
                hold = min(hold, end - self.clock())
                await self._start(faults[name])
                await self._sleep_until(self.clock() + hold)
                await self._stop()
        finally:
            if self._active is not None:
                await asyncio.shield(self._stop())

    async def _sleep_until(self, t: float) -> None:
        delay = t - self.clock()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _start(self, fault: Fault) -> None:
        self._active = fault  # from here on, a cancel still runs fault.stop()
        try:
            value = await fault.plan()
        except Exception as exc:  # a fault that cannot be planned is recorded, not fatal
            log.warning("nemesis: planning %s failed: %s", fault.name, exc)
            value = {"error": str(exc)}
        period = Period(fault.name, self.clock() - self.t0, None, value)
        self._active_period = period
        self.periods.append(period)
        self.history.info("nemesis", f"start-{fault.name}", value)
        if isinstance(value, dict) and "error" in value:
            return
        try:
            await fault.apply()
        except Exception as exc:
            log.warning("nemesis: start-%s failed: %s", fault.name, exc)
            self.history.info("nemesis", f"error-{fault.name}", {"error": str(exc)})
        log.info("nemesis: start-%s %s", fault.name, value)

    async def _stop(self) -> None:
        fault, period = self._active, self._active_period
        if fault is None:
            return
        try:
            value = await fault.stop()
        except Exception as exc:
            log.warning("nemesis: stop-%s failed: %s", fault.name, exc)
            value = {"error": str(exc)}
        if period is not None:
            period.stop = self.clock() - self.t0
        self._active = self._active_period = None
        self.history.info("nemesis", f"stop-{fault.name}", value)
        log.info("nemesis: stop-%s %s", fault.name, value)

    async def final_heal(self, heal_all: Callable[[], Awaitable[Any]]) -> None:
        """Whatever happened: no network fault, every node resumed and running."""
        await self._stop()
        value = await heal_all()
        self.history.info("nemesis", "final-heal", value)


def periods_from_history(events: Sequence[dict[str, Any]]) -> list[Period]:
    """Fault periods (in seconds since the first event) from a history's nemesis events:
    a ``start-X`` opens one (its first event, before the fault is applied), the next
    ``stop-X`` closes it; one still open at the end is closed at the last event."""
    if not events:
        return []
    times = [e.get("time") for e in events if e.get("time") is not None]
    if not times:
        return []
    t0 = min(times)
    last = max(times)
    out: list[Period] = []
    open_: dict[str, Period] = {}
    for e in events:
        if e.get("process") != "nemesis" or e.get("time") is None:
            continue
        f = str(e.get("f", ""))
        t = (e["time"] - t0) / 1e9
        if f.startswith("start-"):
            name = f[len("start-"):]
            if name in open_:
                continue
            p = Period(name, t, None, e.get("value"))
            open_[name] = p
            out.append(p)
        elif f.startswith("stop-"):
            p2 = open_.pop(f[len("stop-"):], None)
            if p2 is not None:
                p2.stop = t
    for p in open_.values():
        p.stop = (last - t0) / 1e9
    with contextlib.suppress(TypeError):
        out.sort(key=lambda p: p.start)
    return out

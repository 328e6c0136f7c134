"""Leader moves and rolling restarts (real processes, the CLI as an operator uses it).

- A rolling restart under write load: each member in turn is made to lead if it does
  not, leadership is moved away from it (`meshraft move-leader`), it gets SIGTERM, is
  started again on the same data dir, and the next one waits until it has caught up.
  No write fails, and none takes longer than one second end to end (client retries
  included).
- `move-leader` refuses an unknown id, a learner and a voter that is far behind, with
  exit code 2 and a message saying which; `status` and `member list` show a transfer
  while it is in progress.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time

from e2e_cluster import Cluster, free_ports, wait_until

from meshraft.cli import format_status, normalise_status
from meshraft.kv.client import AsyncClient, Client, MeshraftError

WRITERS = 8
MAX_STALL = 1.0


class WriteLoad:
    """Writers in a thread of their own, each putting in a loop; every write's latency
    (end to end, client retries included) and every failure is recorded."""

    def __init__(self, endpoints: str) -> None:
        self.endpoints = endpoints
        self.latencies: list[tuple[float, float, str]] = []  # (start, seconds, key)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with AsyncClient(self.endpoints, timeout=10) as client:
            await asyncio.gather(*(self._writer(client, w) for w in range(WRITERS)))

    async def _writer(self, client: AsyncClient, w: int) -> None:
        n = 0
        while not self._stop.is_set():
            key = f"w{w}-{n}"
            t0 = time.monotonic()
            try:
                await client.put(key, str(n))
            except MeshraftError as exc:
                self.failures.append(f"{key}: {exc!r}")
            self.latencies.append((t0, time.monotonic() - t0, key))
            n += 1

    def __enter__(self) -> WriteLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def move_leader(c: Cluster, to: str) -> None:
    r = c.cli("move-leader", to, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["leader"] == to
    assert c.leader() == to


def caught_up(c: Cluster, i: str) -> bool:
    leader = c.leader()
    commit = c.status(leader)["commit_index"]
    return c.status(i)["applied_index"] >= commit


def test_rolling_restart_under_write_load_with_leader_moves(procs):
    c = Cluster(procs, n=3)
    c.start_all()
    c.leader()
    restarted: list[str] = []
    with WriteLoad(c.endpoints()) as load:
        wait_until(lambda: len(load.latencies) > 200, 30, what="writes flowing")
        for _ in c.ids:
            todo = [i for i in c.ids if i not in restarted]
            m = todo[0]
            if c.leader() != m:
                move_leader(c, m)  # so that every round moves leadership away from it
            target = next(i for i in c.ids if i != m)
            move_leader(c, target)
            assert c.stop(m) == 0  # SIGTERM: a clean stop
            c.start(m)
            wait_until(lambda m=m: caught_up(c, m), 30, 0.1, what=f"member {m} caught up")
            restarted.append(m)
        n_before = len(load.latencies)
        wait_until(lambda: len(load.latencies) > n_before + 200, 30,
                   what="writes flowing after the last restart")
    assert sorted(restarted) == sorted(c.ids)
    assert not load.failures, load.failures[:5]
    worst = max(load.latencies, key=lambda x: x[1])
    assert worst[1] < MAX_STALL, (f"write {worst[2]} took {worst[1]:.3f}s "
                                  f"({len(load.latencies)} writes)\n{c.logs()}")
    with Client(c.endpoints()) as client:  # every acknowledged write is there
        sample = [key for _, _, key in load.latencies[:: max(1, len(load.latencies) // 200)]]
        for key in sample:
            assert client.get(key) is not None, key


def test_move_leader_refusals_and_a_transfer_in_progress(procs):
    c = Cluster(procs, n=3)
    c.start_all()
    leader = c.leader()
    others = [i for i in c.ids if i != leader]

    r = c.cli("move-leader", "9")
    assert r.returncode == 2 and "9 is not a member" in r.stderr, r.stderr
    r = c.cli("move-leader", leader, "--json")  # already leads: nothing to do
    assert r.returncode == 0 and json.loads(r.stdout)["leader"] == leader

    (peer_port,) = free_ports(1)
    r = c.cli("member", "add", "4", f"127.0.0.1:{peer_port}", "--learner")
    assert r.returncode == 0, r.stderr
    r = c.cli("move-leader", "4")
    assert r.returncode == 2 and "learner" in r.stderr, r.stderr

    # A paused voter falls behind: refused until it caught up again.
    lagging = others[0]
    c.members[lagging].signal(signal.SIGSTOP)
    try:
        with Client(c.endpoints([leader])) as client:
            for i in range(1100):
                client.put(f"lag{i}", "x")
        r = c.cli("move-leader", lagging, ids=[leader])
        assert r.returncode == 2 and "entries behind" in r.stderr, r.stderr
    finally:
        c.members[lagging].signal(signal.SIGCONT)
    wait_until(lambda: caught_up(c, lagging), 30, 0.1, what="the paused member caught up")

    # A caught-up voter that stops answering: the transfer is in progress (status and
    # member list say so) until the leader gives it up; move-leader then fails (exit 3).
    target = others[1]
    wait_until(lambda: caught_up(c, target), 30, 0.1, what="the target caught up")
    c.members[target].signal(signal.SIGSTOP)
    try:
        mover = subprocess.Popen(
            [sys.executable, "-m", "meshraft.cli", "move-leader", target, "--timeout", "4",
             "--endpoints", c.endpoints([leader])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with Client(c.endpoints([leader]), timeout=2) as client:
            st = wait_until(lambda: (lambda s: s if s.get("lead_transferee") else None)(
                client.status()), 10, 0.02, what="status shows the transfer")
            assert "transfer:       leadership moving to " + target in format_status(
                normalise_status(st))
            members = wait_until(lambda: (lambda m: m if m.get("lead_transferee") else None)(
                client.members()), 10, 0.02, what="members shows the transfer")
            assert members["lead_transferee"] == target
        _, err = mover.communicate(timeout=30)
        assert mover.returncode == 3 and f"did not move to {target}" in err, err
    finally:
        c.members[target].signal(signal.SIGCONT)
    # (The resumed target may still act on the TimeoutNow it got while paused and take
    # over: either way, one leader and no transfer left in progress.)
    c.leader()
    listing = wait_until(lambda: (lambda r: r if r.returncode == 0 else None)(
        c.cli("member", "list", "--json")), 30, 0.2, what="member list answers")
    assert json.loads(listing.stdout)["lead_transferee"] is None

"""Local clusters of ``meshraft serve`` processes, for ``meshraft cluster``,
``meshraft bench``, jepsen-lite, the benchmarks and the end-to-end tests.

Owns the one way a local member is planned, started, asked and stopped:

- addresses: :func:`plan_members` takes ports from the OS (:mod:`meshraft.ports`);
  a :class:`MemberAddr` says what a member advertises to its peers, what it binds
  (when that differs, as inside a network namespace) and where clients reach it;
- the command line of a member (:func:`serve_argv`), which a caller may wrap (to
  run it under ``ip netns exec`` or a profiler);
- child processes (:func:`start_process`): output to a log file, optionally in a
  session of their own (a Ctrl-C at the terminal reaches only the parent, which
  then stops them in order) and optionally dying with their parent even if it is
  SIGKILLed (``PR_SET_PDEATHSIG``, :func:`die_with_parent`);
- who leads (:func:`pick_leader` decides from the members' status replies, so sync
  and async callers agree), and waiting until a cluster is ready
  (:meth:`LocalCluster.wait_ready`);
- stopping by PID (:func:`stop_processes`: SIGCONT + SIGTERM to all, then SIGKILL
  what did not exit in time).

It must never signal a process it did not start, bind a port for longer than the
asking, or reach into raft, mesh or kv internals: it talks to members only through
their command line and the public client (:mod:`meshraft.kv.client`). See
docs/architecture.md#local-clusters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from meshraft.ports import free_ports

__all__ = [
    "ClusterContext",
    "ClusterNotReady",
    "LocalCluster",
    "MemberAddr",
    "MemberProcess",
    "die_with_parent",
    "member_status",
    "peers_arg",
    "pick_leader",
    "plan_members",
    "serve_argv",
    "start_process",
    "stop_processes",
    "try_put",
]

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class MemberAddr:
    """Where one member is: ``peer`` is the HOST:PORT the others dial, ``client``
    the HOST:PORT clients use, ``listen`` the HOST:PORT its peer socket binds when
    that is not ``peer`` (None: bind ``peer``)."""

    id: str
    peer: str
    client: str
    listen: str | None = None


def plan_members(n: int, host: str = "127.0.0.1",
                 ids: Sequence[str] | None = None) -> list[MemberAddr]:
    """``n`` members on ``host`` with a peer and a client port each, all free right
    now (for TCP and UDP: the peer port serves either transport). Ids "1".."n"
    unless given."""
    names = list(ids) if ids is not None else [str(i) for i in range(1, n + 1)]
    if len(names) != n:
        raise ValueError(f"{n} members but {len(names)} ids")
    ports = free_ports(2 * n, host)
    return [MemberAddr(i, f"{host}:{ports[2 * k]}", f"{host}:{ports[2 * k + 1]}")
            for k, i in enumerate(names)]


def peers_arg(members: Iterable[MemberAddr]) -> str:
    """The ``--peers`` value: ``ID=HOST:PORT,...``."""
    return ",".join(f"{m.id}={m.peer}" for m in members)


def serve_argv(member: MemberAddr, members: Sequence[MemberAddr], data_dir: Path,
               transport: str = "mesh", extra_args: Sequence[str] = (),
               python: str = sys.executable) -> list[str]:
    """The ``meshraft serve`` command line of ``member`` in a cluster of ``members``."""
    argv = [python, "-m", "meshraft.cli", "serve", "--id", member.id,
            "--peers", peers_arg(members)]
    if member.listen is not None:
        argv += ["--listen", member.listen]
    return [*argv, "--client", member.client, "--data-dir", str(data_dir),
            "--transport", transport, *extra_args]


def die_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when its parent dies, even by SIGKILL
    (Linux ``PR_SET_PDEATHSIG``; elsewhere a no-op)."""

    def preexec() -> None:  # pragma: no cover - runs in the child
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)

    return preexec


@dataclass
class MemberProcess:
    """A child process started here, with the file its output goes to."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this PID if it still runs."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def kill(self, wait: float = 10.0) -> None:
        """SIGKILL and reap (within ``wait`` seconds)."""
        if self.alive():
            self.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(wait)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGCONT + SIGTERM, then SIGKILL after ``timeout``."""
        stop_processes([self], timeout)

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def start_process(name: str, argv: Sequence[str], log_path: Path, *, append: bool = False,
                  header: str | None = None, env: Mapping[str, str] | None = None,
                  cwd: Path | None = None, new_session: bool = True,
                  pdeathsig: int | None = None) -> MemberProcess:
    """Start ``argv`` with stdout and stderr into ``log_path`` (appended to with
    ``append``, after a ``header`` line when given), stdin from /dev/null and
    ``PYTHONUNBUFFERED=1`` on top of ``env`` (over this environment).

    ``new_session``: a session of its own, so a terminal's Ctrl-C reaches only the
    parent, which then stops it in order. ``pdeathsig``: the signal it gets if the
    parent dies without stopping it."""
    with open(log_path, "ab" if append else "wb") as logf:
        if header is not None:
            logf.write(header.encode())
            logf.flush()
        popen = subprocess.Popen(
            list(argv), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=cwd,
            start_new_session=new_session,
            preexec_fn=die_with_parent(pdeathsig) if pdeathsig is not None else None,
        )
    return MemberProcess(name, popen, log_path)


def stop_processes(procs: Iterable[MemberProcess], timeout: float = 10.0,
                   on_kill: Callable[[MemberProcess], None] | None = None) -> None:
    """SIGCONT (a paused process cannot die of SIGTERM) and SIGTERM to every live
    one first, so they shut down in parallel; then wait for each until ``timeout``
    and SIGKILL (after ``on_kill(p)``) what is still running. Only these PIDs."""
    procs = list(procs)
    for p in procs:
        p.signal(signal.SIGCONT)
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(max(0.1, deadline - time.monotonic()))
        if p.alive():
            if on_kill is not None:
                on_kill(p)
            p.kill(wait=5.0)


def pick_leader(statuses: Mapping[str, Mapping[str, Any] | None], *,
                hearsay: bool = True) -> str | None:
    """The leader, from members' status replies (None: no reply): the one of the
    highest term anyone reports, a member that says it is leader winning over one
    that only names a leader. With ``hearsay=False`` only a member that says it is
    the leader counts."""
    best: tuple[int, int, str] | None = None
    for member, st in statuses.items():
        if not st:
            continue
        term = int(st.get("term") or 0)
        if st.get("role") == "leader":
            cand = (term, 1, str(st.get("id", member)))
        elif hearsay and st.get("leader") is not None:
            cand = (term, 0, str(st["leader"]))
        else:
            continue
        if best is None or cand[:2] > best[:2]:
            best = cand
    return best[2] if best else None


async def member_status(client_addr: str, wait: float = 1.0) -> dict[str, Any] | None:
    """A member's status over the public client, None if it does not answer within
    ``wait`` seconds."""
    from meshraft.kv.client import AsyncClient

    client = AsyncClient([client_addr], timeout=wait, attempt_timeout=wait,
                         connect_timeout=min(0.5, wait))
    try:
        return await client.status(timeout=wait)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def try_put(endpoints: Sequence[str], key: str | bytes, value: str | bytes,
                  wait: float = 2.0) -> str | None:
    """Write once through ``endpoints`` (retries included, within ``wait`` seconds);
    None when it committed, else why not."""
    from meshraft.kv.client import AsyncClient

    client = AsyncClient(list(endpoints), timeout=wait, attempt_timeout=wait / 2)
    try:
        await client.put(key, value)
        return None
    except Exception as exc:  # still electing, still binding
        return repr(exc)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


class ClusterNotReady(Exception):
    """A cluster that did not become ready: ``exited`` names members that exited
    (empty when it ran out of time); ``last`` is the last thing that went wrong."""

    def __init__(self, message: str, exited: Sequence[str] = (), last: str = "") -> None:
        super().__init__(message)
        self.exited = list(exited)
        self.last = last


class ClusterContext:
    """``async with`` for a cluster with ``start()`` and ``stop()``: a cluster that
    fails half-way through starting is stopped too, so no process is left behind."""

    async def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


def _default_data_dir(root: Path) -> Callable[[str], Path]:
    return lambda member: root / f"node-{member}"


def _default_log(root: Path) -> Callable[[str], Path]:
    return lambda member: root / f"node-{member}.log"


@dataclass
class LocalCluster:
    """The ``meshraft serve`` processes of ``members``, started and stopped by PID.

    ``root``: where data dirs and logs go by default (``node-ID`` and
    ``node-ID.log``); ``data_dir_of``/``log_of`` place them elsewhere. ``wrap(id,
    argv)`` rewrites a member's command (``ip netns exec``, a profiler).
    ``append_logs``: a restarted member appends to its log; ``log_header`` (who
    starts it, e.g. "jepsen-lite"): after a line saying which start it is.
    ``on_spawn`` sees every process started (a run registry records its PID).
    ``with`` starts every member and stops them all."""

    members: list[MemberAddr]
    root: Path
    transport: str = "mesh"
    extra_args: Sequence[str] = ()
    data_dir_of: Callable[[str], Path] | None = None
    log_of: Callable[[str], Path] | None = None
    wrap: Callable[[str, list[str]], list[str]] | None = None
    python: str = sys.executable
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    append_logs: bool = True
    log_header: str | None = None
    new_session: bool = True
    pdeathsig: int | None = None
    on_spawn: Callable[[MemberProcess], None] | None = None
    procs: dict[str, MemberProcess] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data_dir_of is None:
            self.data_dir_of = _default_data_dir(self.root)
        if self.log_of is None:
            self.log_of = _default_log(self.root)

    def addrs(self) -> list[MemberAddr]:
        """The members now; a subclass whose membership changes derives them anew."""
        return self.members

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.addrs()]

    def member(self, member: str) -> MemberAddr:
        for m in self.addrs():
            if m.id == member:
                return m
        raise KeyError(member)

    def endpoints(self, ids: Iterable[str] | None = None) -> list[str]:
        """Client HOST:PORTs of ``ids`` (default: every member), in member order."""
        wanted = set(ids) if ids is not None else None
        return [m.client for m in self.addrs() if wanted is None or m.id in wanted]

    def data_dir(self, member: str) -> Path:
        assert self.data_dir_of is not None
        return self.data_dir_of(member)

    def log_path(self, member: str) -> Path:
        assert self.log_of is not None
        return self.log_of(member)

    def argv(self, member: str) -> list[str]:
        argv = serve_argv(self.member(member), self.addrs(), self.data_dir(member),
                          self.transport, self.extra_args, self.python)
        return self.wrap(member, argv) if self.wrap is not None else argv

    def start(self, member: str) -> MemberProcess:
        """Start (or start again, on the same data dir) one member."""
        self.data_dir(member).mkdir(parents=True, exist_ok=True)
        argv = self.argv(member)
        self.starts[member] = self.starts.get(member, 0) + 1
        header = (f"\n=== {self.log_header}: start #{self.starts[member]} of node {member}: "
                  f"{shlex.join(argv)}\n") if self.log_header is not None else None
        p = start_process(f"node{member}", argv, self.log_path(member),
                          append=self.append_logs, header=header, env=self.env, cwd=self.cwd,
                          new_session=self.new_session, pdeathsig=self.pdeathsig)
        self.procs[member] = p
        if self.on_spawn is not None:
            self.on_spawn(p)
        return p

    def start_all(self) -> None:
        for m in self.ids:
            self.start(m)

    def alive(self, member: str) -> bool:
        p = self.procs.get(member)
        return p is not None and p.alive()

    def exited(self) -> list[str]:
        """Members that were started and are not running now."""
        return [m for m, p in self.procs.items() if not p.alive()]

    def signal(self, member: str, sig: int) -> None:
        p = self.procs.get(member)
        if p is not None:
            p.signal(sig)

    def kill(self, member: str) -> None:
        """SIGKILL one member and reap it."""
        p = self.procs.get(member)
        if p is not None:
            p.kill()

    def stop(self, timeout: float = 10.0,
             on_kill: Callable[[MemberProcess], None] | None = None) -> None:
        """Stop every member this cluster started (see :func:`stop_processes`)."""
        stop_processes(self.procs.values(), timeout, on_kill)

    def __enter__(self) -> Self:
        try:
            self.start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def status(self, member: str, wait: float = 1.0) -> dict[str, Any] | None:
        return await member_status(self.member(member).client, wait)

    async def statuses(self, ids: Iterable[str] | None = None,
                       wait: float = 1.0) -> dict[str, dict[str, Any] | None]:
        """Status replies of the running members among ``ids``, asked in parallel."""
        wanted = [m for m in (ids if ids is not None else self.ids) if self.alive(m)]
        got = await asyncio.gather(*(self.status(m, wait) for m in wanted))
        return dict(zip(wanted, got, strict=True))

    async def find_leader(self, ids: Iterable[str] | None = None, *, hearsay: bool = True,
                          wait: float = 1.0) -> str | None:
        """The leader as the running members among ``ids`` see it (:func:`pick_leader`),
        each given ``wait`` seconds to answer."""
        return pick_leader(await self.statuses(ids, wait), hearsay=hearsay)

    async def wait_leader(self, within: float = 30.0, ids: Iterable[str] | None = None,
                          poll: float = 0.05) -> str:
        """Until a member among ``ids`` says it is the leader; its id."""
        wanted = list(ids) if ids is not None else None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            gone = self.exited()
            if self.procs and len(gone) == len(self.procs):
                raise ClusterNotReady("every member exited", gone)
            leader = await self.find_leader(wanted, hearsay=False, wait=0.5)
            if leader is not None:
                return leader
            await asyncio.sleep(poll)
        raise ClusterNotReady(f"no leader among {wanted or self.ids} within {within:g}s")

    async def wait_ready(self, within: float, *, write_key: str | bytes | None = None,
                         through_each: bool = False, fail_on_exit: bool = True,
                         stopping: Callable[[], bool] | None = None,
                         status_timeout: float = 1.0, poll: float = 0.3) -> str | None:
        """Until a leader is known (and, with ``write_key``, a write of it commits:
        through any member, or with ``through_each`` through every member in turn);
        returns the leader, or None if ``stopping()`` says to give up.

        Raises :class:`ClusterNotReady` when time runs out, or when a member exited
        (``fail_on_exit``) or every member did."""
        deadline = time.monotonic() + within
        pending = self.endpoints()
        last = "no leader yet"
        while True:
            if stopping is not None and stopping():
                return None
            gone = self.exited()
            if gone and (fail_on_exit or len(gone) == len(self.procs)):
                raise ClusterNotReady(f"member(s) {', '.join(gone)} exited", gone, last)
            if time.monotonic() > deadline:
                raise ClusterNotReady(
                    f"the cluster did not become ready within {within:g}s ({last})", (), last)
            if through_each and write_key is not None:
                why = await try_put(pending[:1], write_key, b"1")
                if why is None:
                    pending.pop(0)
                    if not pending:
                        return await self.find_leader(wait=status_timeout)
                    continue
                last = why
            else:
                leader = await self.find_leader(wait=status_timeout)
                if leader is not None:
                    if write_key is None:
                        return leader
                    why = await try_put(self.endpoints(), write_key, b"1")
                    if why is None:
                        return leader
                    last = f"write failed: {why}"
            await asyncio.sleep(poll)

"""The network a jepsen-lite run lives in: namespaces, veths, iptables faults, cleanup.

Owns:
- ``NetnsNet`` (root): a hub namespace with a bridge, one namespace per node joined
  to it by a veth pair, and one veth from the root namespace to the bridge so the
  clients (which run in the root namespace) reach every node's client port.
  Addresses come from 10.77.0.0/24, split into eight /27 *slots* so that several
  runs can coexist: slot k gives node i the address 10.77.0.(32k+i) and the root
  veth end 10.77.0.(32k+30). Partitions and packet loss are iptables rules inside
  the node namespaces that only ever match *peer node* addresses, so they cut
  node<->node traffic and never client<->node traffic.
- ``LocalNet`` (no root): every node on 127.0.0.1 with OS-assigned ports; it cannot
  partition or drop, and says so.
- The run registry under ``/tmp/jepsen-lite/runs``: one JSON state file per run that
  names its namespaces, its root veth and the PIDs it started (with their start
  times, so a recycled PID is never signalled), and ``clean_stale`` which removes
  what crashed runs left behind.

Must never: touch anything in the root namespace but the one veth end it creates,
add rules outside its own namespaces, signal a process it did not record, or send
traffic anywhere but its own namespaces and loopback.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from meshraft.ports import free_ports

log = logging.getLogger("jepsen_lite.netns")

STATE_ROOT = Path(os.environ.get("JEPSEN_LITE_STATE", "/tmp/jepsen-lite"))
PREFIX = "jl"
SUBNET = "10.77.0"  # the one private /24 jepsen-lite uses; see the module docstring
SLOT_SIZE = 32
SLOTS = 256 // SLOT_SIZE
MAX_NODES = SLOT_SIZE - 3  # .0 network, .30 root veth, .31 broadcast
NODE_PORT = 7000  # mesh / raft port inside every node namespace
CLIENT_PORT = 7001  # client port inside every node namespace
_NAME_RE = re.compile(rf"^{PREFIX}-([0-9a-f]{{6}})-(hub|n\d+|r)$")


class NetError(RuntimeError):
    """A network operation failed, or is not possible with this kind of network."""


# ---------------------------------------------------------------- helpers


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _sh(argv: list[str], check: bool = True, input: str | None = None) -> str:
    """Run one command; a failure raises NetError naming the command and its stderr."""
    res = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=30)
    if check and res.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if gone.

    Recorded next to every PID so that clean never signals a recycled PID."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after it
    rest = raw[raw.rfind(")") + 2 :].split()
    try:
        return int(rest[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


def same_process(pid: int, start: int | None) -> bool:
    return start is not None and proc_start_time(pid) == start


def new_run_id() -> str:
    return secrets.token_hex(3)


def list_netns() -> list[str]:
    if not is_root():
        return []
    out = _sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def list_root_links() -> list[str]:
    out = _sh(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


# ---------------------------------------------------------------- run registry


@dataclass
class RunState:
    """What one run created, so that it (or a later ``clean``) can remove it."""

    run_id: str
    net: str  # "netns" | "local"
    owner_pid: int
    owner_start: int | None
    created: float
    out_dir: str = ""
    slot: int | None = None
    namespaces: list[str] = field(default_factory=list)
    root_veth: str | None = None
    pids: list[list[int | None]] = field(default_factory=list)  # [pid, start_time]

    @property
    def path(self) -> Path:
        return runs_dir() / f"{self.run_id}.json"

    def save(self) -> None:
        runs_dir().mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, self.path)

    def add_pid(self, pid: int) -> None:
        self.pids.append([pid, proc_start_time(pid)])
        self.save()

    def owner_alive(self) -> bool:
        return same_process(self.owner_pid, self.owner_start)

    @classmethod
    def load(cls, path: Path) -> RunState:
        data = json.loads(path.read_text())
        return cls(**data)


def runs_dir() -> Path:
    return STATE_ROOT / "runs"


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_runs() -> list[RunState]:
    runs = []
    d = runs_dir()
    if not d.exists():
        return runs
    for p in sorted(d.glob("*.json")):
        try:
            runs.append(RunState.load(p))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable run state %s: %s", p, exc)
    return runs


def kill_recorded(pids: Iterable[list[int | None]]) -> list[int]:
    """SIGKILL each recorded process that is still the same process; return those killed."""
    killed = []
    for pid, start in pids:
        if pid is None or not same_process(pid, start):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a stopped process still dies of SIGKILL, but be sure
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def clean_stale(force: bool = False) -> dict[str, list[str]]:
    """Remove what earlier runs left behind: recorded processes, namespaces, root veths,
    state files. A run whose owner is still alive is left alone unless ``force``.
    Also removes namespaces and root veths with jepsen-lite's name pattern that no
    live run owns (e.g. a state file lost with /tmp). Returns what was removed."""
    removed: dict[str, list[str]] = {"runs": [], "processes": [], "namespaces": [], "links": []}
    live_ids: set[str] = set()
    with _registry_lock():
        for run in load_runs():
            if run.owner_alive() and not force:
                live_ids.add(run.run_id)
                continue
            removed["processes"] += [str(p) for p in kill_recorded(run.pids)]
            removed["runs"].append(run.run_id)
            run.path.unlink(missing_ok=True)
        if is_root():
            for ns in list_netns():
                m = _NAME_RE.match(ns)
                if m and m.group(1) not in live_ids:
                    _sh(["ip", "netns", "del", ns], check=False)
                    removed["namespaces"].append(ns)
            for link in list_root_links():
                m = _NAME_RE.match(link)
                if m and m.group(1) not in live_ids:
                    _sh(["ip", "link", "del", link], check=False)
                    removed["links"].append(link)
    return removed


# ---------------------------------------------------------------- networks


@dataclass
class NodeAddr:
    node: str  # the node id, "1".."N"
    host: str  # where its mesh and client ports are reachable from the root namespace
    port: int  # mesh / raft port
    client_port: int
    namespace: str | None = None

    @property
    def peer_addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def client_addr(self) -> str:
        return f"{self.host}:{self.client_port}"


class Net:
    """What the nemesis and the runner need from a network."""

    kind = "base"

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.nodes: dict[str, NodeAddr] = {}

    def wrap(self, node: str, argv: list[str]) -> list[str]:
        """The argv that runs ``argv`` where ``node`` lives."""
        return argv

    def partition(self, cuts: dict[str, set[str]]) -> None:
        raise NetError(f"--net {self.kind} cannot partition; use --net netns (root)")

    def loss(self, probability: float, nodes: Iterable[str] | None = None) -> None:
        raise NetError(f"--net {self.kind} cannot drop packets; use --net netns (root)")

    def heal(self) -> None:
        """Remove every network fault. Safe to call at any time, any number of times."""

    def teardown(self) -> None:
        self.state.path.unlink(missing_ok=True)


class LocalNet(Net):
    """Every node on loopback with OS-assigned ports. Kill and pause only."""

    kind = "local"

    @classmethod
    def create(cls, n: int, out_dir: str = "", run_id: str | None = None) -> LocalNet:
        state = RunState(
            run_id=run_id or new_run_id(), net="local", owner_pid=os.getpid(),
            owner_start=proc_start_time(os.getpid()), created=time.time(), out_dir=out_dir,
        )
        state.save()
        net = cls(state)
        ports = free_ports(2 * n)
        for i in range(1, n + 1):
            net.nodes[str(i)] = NodeAddr(str(i), "127.0.0.1", ports[2 * i - 2], ports[2 * i - 1])
        return net




class NetnsNet(Net):
    """Namespaces, a bridge, veths and iptables. Needs root."""

    kind = "netns"

    def __init__(self, state: RunState) -> None:
        super().__init__(state)
        self.hub = ""
        self.client_ip = ""
        self._torn_down = False

    @classmethod
    def create(cls, n: int, out_dir: str = "", run_id: str | None = None) -> NetnsNet:
        if not is_root():
            raise NetError("--net netns needs root (network namespaces, iptables); "
                           "use --net local for kill and pause on loopback")
        if not 1 <= n <= MAX_NODES:
            raise NetError(f"--net netns supports 1..{MAX_NODES} nodes, not {n}")
        for tool in ("ip", "iptables-restore"):
            if subprocess.run(["which", tool], capture_output=True).returncode != 0:
                raise NetError(f"{tool} not found: install iproute2 and iptables")
        rid = run_id or new_run_id()
        with _registry_lock():
            slot = _free_slot()
            state = RunState(
                run_id=rid, net="netns", owner_pid=os.getpid(),
                owner_start=proc_start_time(os.getpid()), created=time.time(),
                out_dir=out_dir, slot=slot,
            )
            state.save()  # recorded before anything exists, so clean can always find it
        net = cls(state)
        try:
            net._build(n)
        except BaseException:
            net.teardown()
            raise
        return net

    def _ip(self, i: int) -> str:
        assert self.state.slot is not None
        return f"{SUBNET}.{self.state.slot * SLOT_SIZE + i}"

    def _build(self, n: int) -> None:
        rid = self.state.run_id
        self.hub = f"{PREFIX}-{rid}-hub"
        self.client_ip = self._ip(SLOT_SIZE - 2)
        self.state.namespaces.append(self.hub)
        self.state.save()
        _sh(["ip", "netns", "add", self.hub])
        _sh(["ip", "-n", self.hub, "link", "set", "lo", "up"])
        _sh(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        _sh(["ip", "-n", self.hub, "link", "set", "br0", "up"])
        # the one thing in the root namespace: our veth end, with an address in our slot
        root_veth = f"{PREFIX}-{rid}-r"
        self.state.root_veth = root_veth
        self.state.save()
        _sh(["ip", "link", "add", root_veth, "type", "veth", "peer", "name", "rh",
             "netns", self.hub])
        _sh(["ip", "-n", self.hub, "link", "set", "rh", "master", "br0"])
        _sh(["ip", "-n", self.hub, "link", "set", "rh", "up"])
        _sh(["ip", "addr", "add", f"{self.client_ip}/27", "dev", root_veth])
        _sh(["ip", "link", "set", root_veth, "up"])
        for i in range(1, n + 1):
            ns = f"{PREFIX}-{rid}-n{i}"
            self.state.namespaces.append(ns)
            self.state.save()
            _sh(["ip", "netns", "add", ns])
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            # created directly in hub and node namespaces: nothing of it ever in root
            _sh(["ip", "link", "add", f"v{i}", "netns", self.hub, "type", "veth",
                 "peer", "name", "eth0", "netns", ns])
            _sh(["ip", "-n", self.hub, "link", "set", f"v{i}", "master", "br0"])
            _sh(["ip", "-n", self.hub, "link", "set", f"v{i}", "up"])
            _sh(["ip", "-n", ns, "addr", "add", f"{self._ip(i)}/27", "dev", "eth0"])
            _sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
            self.nodes[str(i)] = NodeAddr(str(i), self._ip(i), NODE_PORT, CLIENT_PORT, ns)
        self.heal()

    def wrap(self, node: str, argv: list[str]) -> list[str]:
        ns = self.nodes[node].namespace
        assert ns is not None
        return ["ip", "netns", "exec", ns, *argv]

    def _apply(self, node: str, input_rules: list[str], output_rules: list[str]) -> None:
        """Replace the whole filter table of ``node``'s namespace, atomically."""
        ns = self.nodes[node].namespace
        assert ns is not None
        lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                 ":OUTPUT ACCEPT [0:0]"]
        lines += [f"-A INPUT {r}" for r in input_rules]
        lines += [f"-A OUTPUT {r}" for r in output_rules]
        lines.append("COMMIT")
        _sh(["ip", "netns", "exec", ns, "iptables-restore"], input="\n".join(lines) + "\n")

    def partition(self, cuts: dict[str, set[str]]) -> None:
        """``cuts[a]`` is the set of nodes ``a`` can neither hear nor reach. Applied to
        both ends, so a cut is symmetric even if ``cuts`` is not. Replaces any earlier
        network fault."""
        sym: dict[str, set[str]] = {n: set() for n in self.nodes}
        for a, bs in cuts.items():
            for b in bs:
                if a != b:
                    sym[a].add(b)
                    sym[b].add(a)
        for node, peers in sym.items():
            ips = [self.nodes[p].host for p in sorted(peers, key=_node_key)]
            self._apply(node, [f"-s {ip} -j DROP" for ip in ips],
                        [f"-d {ip} -j DROP" for ip in ips])

    def loss(self, probability: float, nodes: Iterable[str] | None = None) -> None:
        """Drop each node<->node packet arriving at ``nodes`` (default all) with
        ``probability``. Client traffic is left alone. Replaces any earlier fault."""
        if not 0.0 <= probability <= 1.0:
            raise NetError(f"loss probability must be in [0, 1], not {probability}")
        targets = set(nodes) if nodes is not None else set(self.nodes)
        for node in self.nodes:
            rules = []
            if node in targets:
                for peer in sorted(self.nodes, key=_node_key):
                    if peer != node:
                        rules.append(f"-s {self.nodes[peer].host} -m statistic --mode random "
                                     f"--probability {probability:.4f} -j DROP")
            self._apply(node, rules, [])

    def heal(self) -> None:
        for node in self.nodes:
            self._apply(node, [], [])

    def rules(self, node: str) -> str:
        """The node's iptables rules as ``iptables -S`` prints them (for tests, reports)."""
        ns = self.nodes[node].namespace
        assert ns is not None
        return _sh(["ip", "netns", "exec", ns, "iptables", "-S"])

    def teardown(self) -> None:
        """Delete every namespace and the root veth this run made. Idempotent; never raises
        for something already gone."""
        if self._torn_down:
            return
        for ns in reversed(self.state.namespaces):
            _sh(["ip", "netns", "del", ns], check=False)
        if self.state.root_veth and self.state.root_veth in list_root_links():
            _sh(["ip", "link", "del", self.state.root_veth], check=False)
        self._torn_down = True
        super().teardown()


def _node_key(node: str) -> tuple[int, str]:
    return (int(node), node) if node.isdigit() else (1 << 30, node)


def _free_slot() -> int:
    """A /27 of our /24 that no live run holds and no root route overlaps. Caller holds
    the registry lock."""
    held = {r.slot for r in load_runs() if r.net == "netns" and r.owner_alive()}
    routes = _sh(["ip", "-4", "route", "show"], check=False)
    taken = []
    for line in routes.splitlines():
        words = line.split()
        # a broader route (a default, a 10.0.0.0/8) is shadowed by our /27 only for our
        # own namespaces' addresses; a route inside our /24 means someone else uses it
        if words and words[0] != "default":
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(words[0], strict=False)
                if net.prefixlen >= 24:
                    taken.append(net)
    for slot in range(SLOTS):
        mine = ipaddress.ip_network(f"{SUBNET}.{slot * SLOT_SIZE}/27")
        if slot not in held and not any(mine.overlaps(t) for t in taken):
            return slot
    raise NetError(f"every {SUBNET}.0/24 slot is in use: run `jepsen-lite clean` "
                   "or wait for the other runs")


def create_net(kind: str, n: int, out_dir: str = "", run_id: str | None = None) -> Net:
    if kind == "netns":
        return NetnsNet.create(n, out_dir=out_dir, run_id=run_id)
    if kind == "local":
        return LocalNet.create(n, out_dir=out_dir, run_id=run_id)
    raise NetError(f"unknown --net {kind!r}: netns or local")

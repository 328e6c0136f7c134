"""PySyncObj for the side-by-side benchmark: a 3-node ``ReplDict`` cluster, each
node a process with a small TCP front end, and the benchmark client for it.

How PySyncObj is driven (also in benchmarks/README.md):

- Each node is ``python benchmarks/pysyncobj_frontend.py node ...``: a ``SyncObj``
  (autoTick thread, TCP transport between the nodes on loopback ports from the OS)
  with one consumer, ``BenchDict`` (a ``ReplDict`` plus a log-replicated read and a
  cas), ``journalFile`` and ``fullDumpFile`` in a temp dir (journal on; PySyncObj's
  journal is an mmap it never fsyncs), ``appendEntriesUseBatch`` off by default
  (``--batch`` turns it on).
- The front end is an asyncio TCP server in the node process. Frames are a 4-byte
  big-endian length and a msgpack array (strict size limits, never pickle):
  ``["put", key, value]``, ``["get", key]`` (a read through the Raft log, the only
  linearizable read PySyncObj has), ``["sget", key]`` (a local ``ReplDict.get``,
  serializable), ``["cas", key, expected, new]``, ``["status"]``. A write calls the
  replicated method with a ``callback``; PySyncObj's thread hands the result back
  to the event loop with ``call_soon_threadsafe``; the reply goes out when the
  command is committed and applied on that node. Followers forward commands to the
  leader (PySyncObj's own behaviour).
- Each benchmark client owns one connection to one node (round-robin over the
  nodes) and has one request in flight at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from meshraft.bench import BenchError, make_tempdir, remove_tree
from meshraft.localcluster import ClusterContext, MemberProcess, start_process, stop_processes
from meshraft.ports import free_ports

_THIS = Path(__file__).resolve()

log = logging.getLogger("bench.pysyncobj")

MAX_FRAME = 2 << 20
_LEN = struct.Struct(">I")


def _unpack(frame: bytes) -> Any:
    return msgpack.unpackb(frame, raw=False, max_bin_len=MAX_FRAME, max_str_len=4096,
                           max_array_len=16, max_map_len=16, max_ext_len=0)


# --------------------------------------------------------------------------------------
# The node process
# --------------------------------------------------------------------------------------

def _make_dict_class():
    from pysyncobj import replicated
    from pysyncobj.batteries import ReplDict

    class BenchDict(ReplDict):
        """``ReplDict`` plus a read and a cas that go through the Raft log."""

        @replicated
        def read(self, key):
            return self.get(key)

        @replicated
        def cas(self, key, expected, new):
            data = self.rawData()
            if data.get(key) != expected:
                return False
            data[key] = new
            return True

    return BenchDict


async def _serve_node(args: argparse.Namespace) -> None:
    """One PySyncObj member and its client port. Over 80 lines: the SyncObj callbacks
    and the request handler close over the same objects, as PySyncObj's API wants."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf

    name = f"pso-{args.self_addr}"
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(asctime)s {name} %(levelname)s %(message)s")
    data_dir = Path(args.data_dir)  # made by main(), before the loop runs
    conf = SyncObjConf(
        journalFile=str(data_dir / "journal.bin"),
        fullDumpFile=str(data_dir / "dump.bin"),
        appendEntriesUseBatch=args.batch,
        dynamicMembershipChange=False,
    )
    d = _make_dict_class()()
    partners = [p for p in args.partners.split(",") if p]
    sync = SyncObj(args.self_addr, partners, conf=conf, consumers=[d])
    loop = asyncio.get_running_loop()

    def call(method, *margs) -> asyncio.Future:
        fut = loop.create_future()

        def done(result, err) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if err == FAIL_REASON.SUCCESS:
                    fut.set_result(result)
                else:
                    fut.set_exception(RuntimeError(f"pysyncobj fail reason {err}"))
            loop.call_soon_threadsafe(settle)

        method(*margs, callback=done)
        return fut

    async def handle(req: list) -> list:
        op = req[0] if req else None
        if op == "put" and len(req) == 3:
            await call(d.set, bytes(req[1]), bytes(req[2]))
            return [True, None]
        if op == "get" and len(req) == 2:
            return [True, await call(d.read, bytes(req[1]))]
        if op == "sget" and len(req) == 2:
            return [True, d.get(bytes(req[1]))]
        if op == "cas" and len(req) == 4:
            exp = None if req[2] is None else bytes(req[2])
            return [True, await call(d.cas, bytes(req[1]), exp, bytes(req[3]))]
        if op == "status":
            leader = sync._getLeader()
            ready = bool(sync.isReady())
            return [True, {"ready": ready, "leader": str(leader) if leader else None}]
        return [False, f"bad request {str(req)[:60]}"]

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                hdr = await reader.readexactly(4)
                (n,) = _LEN.unpack(hdr)
                if n > MAX_FRAME:
                    return
                try:
                    req = _unpack(await reader.readexactly(n))
                    if not isinstance(req, list):
                        raise ValueError("request is not an array")
                    async with asyncio.timeout(args.op_timeout):
                        resp = await handle(req)
                except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                        msgpack.StackError) as exc:
                    resp = [False, f"bad request: {exc}"]
                except (RuntimeError, TimeoutError) as exc:
                    resp = [False, str(exc) or "timeout"]
                out = msgpack.packb(resp, use_bin_type=True)
                writer.write(_LEN.pack(len(out)) + out)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, args.host, args.front_port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        sync.destroy()


# --------------------------------------------------------------------------------------
# The benchmark side
# --------------------------------------------------------------------------------------

class PySyncObjError(Exception):
    """The front end answered with an error."""


class PySyncObjClient:
    """One benchmark client: one connection to one node's front end."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _call(self, *req: Any) -> Any:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        out = msgpack.packb(list(req), use_bin_type=True)
        self.writer.write(_LEN.pack(len(out)) + out)
        try:
            (n,) = _LEN.unpack(await self.reader.readexactly(4))
            if n > MAX_FRAME:
                raise PySyncObjError("oversized response")
            ok, value = _unpack(await self.reader.readexactly(n))
        except BaseException:
            self.writer.close()  # unknown state: start over on the next call
            self.writer = None
            raise
        if not ok:
            raise PySyncObjError(str(value))
        return value

    async def put(self, key: bytes, value: bytes) -> None:
        await self._call("put", key, value)

    async def get(self, key: bytes, serializable: bool = False) -> bytes | None:
        return await self._call("sget" if serializable else "get", key)

    async def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        return bool(await self._call("cas", key, expected, new))

    async def status(self) -> dict:
        return await self._call("status")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.writer = None


@dataclass
class PySyncObjCluster(ClusterContext):
    """A local PySyncObj cluster started by this process. Use as an async context manager."""

    nodes: int = 3
    batch: bool = False
    host: str = "127.0.0.1"
    root: Path | None = None
    procs: list[MemberProcess] = field(default_factory=list)
    front_ports: list[int] = field(default_factory=list)
    version: str = ""

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [(self.host, p) for p in self.front_ports]

    async def start(self, ready_within: float = 30.0) -> None:
        try:
            import pysyncobj.version
        except ImportError:
            raise BenchError("pysyncobj is not installed: pip install pysyncobj") from None
        self.version = pysyncobj.version.VERSION
        self.root = make_tempdir("meshraft-bench-pysyncobj-")
        ports = free_ports(2 * self.nodes, self.host)
        raft_addrs = [f"{self.host}:{p}" for p in ports[: self.nodes]]
        self.front_ports = ports[self.nodes:]
        for i, (addr, fport) in enumerate(zip(raft_addrs, self.front_ports, strict=True)):
            argv = [sys.executable, str(_THIS), "node",
                    "--self", addr, "--partners", ",".join(a for a in raft_addrs if a != addr),
                    "--host", self.host, "--front-port", str(fport),
                    "--data-dir", str(self.root / f"n{i + 1}")]
            if self.batch:
                argv.append("--batch")
            self.procs.append(start_process(f"pso{i + 1}", argv, self.root / f"pso{i + 1}.log"))
        await self._wait_ready(ready_within)

    async def _wait_ready(self, ready_within: float) -> None:
        deadline = time.monotonic() + ready_within
        last: object = None
        while True:
            for p in self.procs:
                if not p.alive():
                    raise BenchError(f"pysyncobj {p.name} exited: {p.log_tail()}")
            ready = 0
            for host, port in self.endpoints:
                c = PySyncObjClient(host, port)
                try:
                    async with asyncio.timeout(2.0):
                        st = await c.status()
                        if st["ready"] and st["leader"]:
                            await c.put(b"bench-ready", b"1")
                            ready += 1
                        else:
                            last = st
                except (OSError, PySyncObjError, TimeoutError) as exc:
                    last = exc
                finally:
                    await c.close()
            if ready == len(self.endpoints):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"pysyncobj cluster not ready after {ready_within}s: {last!r}")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        stop_processes(self.procs)
        self.procs.clear()
        remove_tree(self.root)
        self.root = None



def client_factory(endpoints: list[tuple[str, int]]):
    """A :data:`meshraft.bench.ClientFactory`: client ``i`` talks to node ``i % n``."""

    async def make(i: int) -> PySyncObjClient:
        host, port = endpoints[i % len(endpoints)]
        return PySyncObjClient(host, port)

    return make


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("node", help="run one PySyncObj node with its TCP front end")
    n.add_argument("--self", dest="self_addr", required=True, help="HOST:PORT for Raft")
    n.add_argument("--partners", required=True, help="HOST:PORT,... of the other nodes")
    n.add_argument("--host", default="127.0.0.1")
    n.add_argument("--front-port", type=int, required=True)
    n.add_argument("--data-dir", required=True)
    n.add_argument("--batch", action="store_true", help="appendEntriesUseBatch=True")
    n.add_argument("--op-timeout", type=float, default=10.0)
    args = p.parse_args(argv)
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve_node(args))


if __name__ == "__main__":
    main()

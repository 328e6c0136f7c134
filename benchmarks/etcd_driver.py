"""etcd 3.4 for the side-by-side benchmark: a throw-away 3-member cluster on
loopback, and a benchmark client that talks to etcd's JSON gateway.

How etcd is driven (also in benchmarks/README.md):

- ``etcd`` from Debian's ``etcd-server`` (3.4.x), three members, each with its own
  data dir in a temp dir, client and peer URLs on loopback ports handed out by the
  OS, default durability (every write fsynced by etcd's WAL), default heartbeat and
  election timeouts, ``--log-level warn``.
- Each benchmark client owns one persistent HTTP/1.1 keep-alive connection to one
  member (clients are spread round-robin over the members) and has one request in
  flight at a time. Requests go to the gRPC JSON gateway that etcd serves on its
  client port: ``POST /v3/kv/put`` ``{"key","value"}`` (base64), ``POST
  /v3/kv/range`` ``{"key"}`` (linearizable: etcd's default; ``"serializable": true``
  for serializable gets), and ``POST /v3/kv/txn`` for cas.
- The HTTP client is aiohttp: one session with a pool of one connection per
  benchmark client.

This module never touches any etcd it did not start: it stops its members by PID
in ``finally`` blocks and removes its temp dir.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

from meshraft.bench import BenchError, make_tempdir, remove_tree
from meshraft.localcluster import ClusterContext, MemberProcess, start_process, stop_processes
from meshraft.ports import free_ports

log = logging.getLogger("bench.etcd")

MAX_RESPONSE = 16 << 20  # bytes; anything larger is a protocol error here


class HttpError(Exception):
    """A malformed or oversized HTTP response, or a closed connection."""


class HttpConnection:
    """One persistent HTTP/1.1 keep-alive connection (aiohttp, a pool of one) to one
    server, reopened when the server closed it. Only connecting is bounded here
    (``timeout``); the load runner bounds each operation, so a slow answer counts as
    its timeout. Every failure of the exchange is an :class:`HttpError`."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}  # built once per path: the hot path only looks up

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # no cookies, no decompression, no auto headers: the load generator's
            # cost per request is part of what the comparison measures
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout),
                headers={"Content-Type": "application/json"},
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            )
        return self._session

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL.build(scheme="http", host=self.host, port=self.port,
                                               path=path)
        return url

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            async with self._open().post(self._url(path), data=body) as resp:
                if (resp.content_length or 0) > MAX_RESPONSE:
                    raise HttpError("response too large")
                data = bytearray()
                async for chunk in resp.content.iter_any():
                    data += chunk
                    if len(data) > MAX_RESPONSE:
                        raise HttpError("response too large")
                return resp.status, bytes(data)
        except aiohttp.ClientError as exc:
            # the connection is in an unknown state: the next request opens a new one
            await self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:  # cancelled (the runner's timeout) mid-exchange
            await self.close()
            raise

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None


class EtcdError(Exception):
    """etcd answered with an error."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


class EtcdClient:
    """One benchmark client: one keep-alive connection to one member."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.conn = HttpConnection(host, port, timeout)

    async def _call(self, path: str, req: dict) -> dict:
        status, body = await self.conn.post(path, json.dumps(req).encode())
        if status != 200:
            raise EtcdError(f"{path}: HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    async def put(self, key: bytes, value: bytes) -> None:
        await self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    async def get(self, key: bytes, serializable: bool = False) -> bytes | None:
        req: dict = {"key": _b64(key)}
        if serializable:
            req["serializable"] = True
        resp = await self._call("/v3/kv/range", req)
        kvs = resp.get("kvs")
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", ""))

    async def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        k = _b64(key)
        if expected is None:
            compare = {"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        else:
            compare = {"key": k, "target": "VALUE", "result": "EQUAL", "value": _b64(expected)}
        resp = await self._call("/v3/kv/txn", {
            "compare": [compare],
            "success": [{"request_put": {"key": k, "value": _b64(new)}}],
        })
        return bool(resp.get("succeeded", False))

    async def status(self) -> dict:
        return await self._call("/v3/maintenance/status", {})

    async def close(self) -> None:
        await self.conn.close()


@dataclass
class EtcdCluster(ClusterContext):
    """A local etcd cluster started by this process. Use as an async context manager."""

    nodes: int = 3
    binary: str = "etcd"
    host: str = "127.0.0.1"
    root: Path | None = None
    procs: list[MemberProcess] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)
    version: str = ""

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [(self.host, p) for p in self.client_ports]

    async def start(self, ready_within: float = 30.0) -> None:
        exe = shutil.which(self.binary)
        if exe is None:
            raise BenchError("etcd not found: apt-get install -y etcd-server (Debian's etcd 3.4)")
        self.version = await _etcd_version(exe)
        self.root = make_tempdir("meshraft-bench-etcd-")
        ports = free_ports(2 * self.nodes, self.host)
        self.client_ports = ports[: self.nodes]
        peer_ports = ports[self.nodes:]
        names = [f"e{i + 1}" for i in range(self.nodes)]
        initial = ",".join(f"{n}=http://{self.host}:{p}"
                           for n, p in zip(names, peer_ports, strict=True))
        token = "bench-" + secrets.token_hex(4)
        for name, cport, pport in zip(names, self.client_ports, peer_ports, strict=True):
            argv = [
                exe, "--name", name, "--data-dir", str(self.root / name),
                "--listen-client-urls", f"http://{self.host}:{cport}",
                "--advertise-client-urls", f"http://{self.host}:{cport}",
                "--listen-peer-urls", f"http://{self.host}:{pport}",
                "--initial-advertise-peer-urls", f"http://{self.host}:{pport}",
                "--initial-cluster", initial, "--initial-cluster-token", token,
                "--initial-cluster-state", "new",
                "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
            ]
            self.procs.append(start_process(name, argv, self.root / f"{name}.log"))
        await self._wait_ready(ready_within)

    async def _wait_ready(self, ready_within: float) -> None:
        deadline = time.monotonic() + ready_within
        pending = list(self.endpoints)
        last: Exception | None = None
        while pending:
            for p in self.procs:
                if not p.alive():
                    raise BenchError(f"etcd {p.name} exited: {p.log_tail()}")
            host, port = pending[0]
            c = EtcdClient(host, port, timeout=2.0)
            try:
                await c.put(b"bench-ready", b"1")
                await c.get(b"bench-ready")
                pending.pop(0)
            except (OSError, HttpError, EtcdError, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(0.1)
            finally:
                await c.close()
            if time.monotonic() > deadline:
                raise BenchError(f"etcd cluster not ready after {ready_within}s: {last!r}")

    async def leader_endpoint(self) -> tuple[str, int]:
        """The client endpoint of the current leader."""
        for host, port in self.endpoints:
            c = EtcdClient(host, port)
            try:
                st = await c.status()
            finally:
                await c.close()
            if st.get("leader") == st.get("header", {}).get("member_id"):
                return host, port
        raise BenchError("no etcd leader found")

    def stop(self) -> None:
        stop_processes(self.procs)
        self.procs.clear()
        remove_tree(self.root)
        self.root = None



async def _etcd_version(exe: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        exe, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def client_factory(endpoints: list[tuple[str, int]], timeout: float = 10.0):
    """A :data:`meshraft.bench.ClientFactory`: client ``i`` talks to member ``i % n``."""

    async def make(i: int) -> EtcdClient:
        host, port = endpoints[i % len(endpoints)]
        return EtcdClient(host, port, timeout)

    return make
